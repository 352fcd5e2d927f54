"""Input checks shared by the measures: label maps, shapes, counted pixels, keypoint arrays."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255  # ground-truth value of unlabelled pixels (the usual VOC/COCO-Stuff convention)


def _check_same_shape(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{a_name} has shape {a.shape} but {b_name} has shape {b.shape}")


def _as_label_map(labels, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a (y, x) label map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr


def _valid_pixels(
    gt: np.ndarray, n_classes: int | None, ignore_index: int | None, mask
) -> np.ndarray:
    """Boolean (y, x): pixels that are labelled (not ``ignore_index``) and inside ``mask``."""
    valid = np.ones(gt.shape, dtype=bool)
    if ignore_index is not None:
        valid &= gt != ignore_index
    if mask is not None:
        mask = np.asarray(mask)
        _check_same_shape(mask, gt, "mask", "gt")
        if mask.dtype != bool:
            raise ValueError(f"mask must be boolean (True = evaluate), got dtype {mask.dtype}")
        valid &= mask
    if n_classes is not None:
        bad = valid & ((gt < 0) | (gt >= n_classes))
        if bad.any():
            value = int(gt[bad][0])
            raise ValueError(
                f"gt label {value} is outside 0..{n_classes - 1} and is not ignore_index "
                f"({ignore_index})"
            )
    return valid


def _check_keypoints(keypoints, name: str) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] != 3:
        raise ValueError(f"{name} must be (part, 3) rows of x, y, visible; got shape {kp.shape}")
    return kp
