"""NFCovering over a hierarchy (HSG, Ke et al. 2022).

NFCovering(S' -> S_fg) = 1/|S_fg| sum_{R in S_fg} max_{R' in S'} IoU(R, R'), where S' holds
every predicted region of every level, averaged over images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from diffparts.metrics._checks import (
    IGNORE_INDEX,
    _as_label_map,
    _check_same_shape,
    _valid_pixels,
)


def _as_levels(level_labels) -> np.ndarray:
    arr = np.asarray(level_labels)
    if arr.ndim == 2:
        arr = arr[None]  # level y x
    if arr.ndim != 3:
        raise ValueError(
            f"level_labels must be (level, y, x) or (y, x), got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"level_labels must hold integer labels, got dtype {arr.dtype}")
    return arr


def region_best_iou(
    level_labels,
    gt,
    *,
    background_index: int | None = 0,
    ignore_index: int | None = IGNORE_INDEX,
    mask=None,
) -> tuple[np.ndarray, np.ndarray]:
    """For each foreground ground-truth region of one image, its best IoU with any predicted
    region at any level.

    A region is the set of pixels with one label value (not a connected component). Only
    counted pixels (not ``ignore_index``, inside ``mask``) enter both regions; background
    pixels do count inside predicted regions, so a region spilling into the background loses
    IoU. The background region itself (``background_index``) is not scored.

    Args:
        level_labels: (level, y, x) or (y, x) integer predicted labels per level.
        gt: (y, x) integer ground-truth labels.

    Returns:
        region_ids (region,) and best_iou (region,) float64, over the foreground regions.
    """
    levels = _as_levels(level_labels)
    gt = _as_label_map(gt, "gt")
    _check_same_shape(levels[0], gt, "level_labels[0]", "gt")
    valid = _valid_pixels(gt, None, ignore_index, mask)
    region_ids, g = np.unique(gt[valid], return_inverse=True)  # region; (pixel,)
    g = g.reshape(-1)
    region_size = np.bincount(g, minlength=len(region_ids))  # (region,)
    best = np.zeros(len(region_ids))
    for labels in levels:  # y x
        seg_ids, p = np.unique(labels[valid], return_inverse=True)
        p = p.reshape(-1)
        n_seg = len(seg_ids)
        inter = np.bincount(g * n_seg + p, minlength=len(region_ids) * n_seg).reshape(
            len(region_ids), n_seg
        )  # region segment
        seg_size = np.bincount(p, minlength=n_seg)  # (segment,)
        union = region_size[:, None] + seg_size[None, :] - inter
        iou = inter / np.maximum(union, 1)
        if n_seg:
            best = np.maximum(best, iou.max(axis=1))
    keep = np.ones(len(region_ids), dtype=bool)
    if background_index is not None:
        keep = region_ids != background_index
    return region_ids[keep], best[keep]


def nf_covering(
    level_labels,
    gt,
    *,
    background_index: int | None = 0,
    ignore_index: int | None = IGNORE_INDEX,
    mask=None,
) -> float:
    """NFCovering of one image: mean over foreground regions of ``region_best_iou``.

    Background (``background_index``, 0 in the bird part masks) does not count, following HSG's
    covering of S_fg; pass ``background_index=None`` to score every region. Returns nan when
    the image has no foreground region.
    """
    _, best = region_best_iou(
        level_labels, gt, background_index=background_index, ignore_index=ignore_index, mask=mask
    )
    return float(best.mean()) if best.size else float("nan")


@dataclass(frozen=True)
class CoveringResult:
    """NFCovering over a set of images."""

    covering: float  # mean over images of each image's mean best IoU over its fg regions
    n_images: int  # images that had at least one foreground region
    n_regions: int  # foreground regions scored
    n_skipped: int  # images without any foreground region (left out of the mean)

    def as_dict(self) -> dict:
        return {
            "nf_covering": self.covering,
            "n_images": self.n_images,
            "n_regions": self.n_regions,
            "n_skipped": self.n_skipped,
        }


class CoveringScores:
    """Streaming NFCovering: ``update(level_labels, gt)`` per image, ``result()`` at the end."""

    def __init__(
        self, *, background_index: int | None = 0, ignore_index: int | None = IGNORE_INDEX
    ):
        self.background_index = background_index
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self._per_image: list[float] = []
        self._n_regions = 0
        self._n_skipped = 0

    def update(self, level_labels, gt, mask=None) -> None:
        """Add one image: level_labels (level, y, x) or (y, x), gt (y, x)."""
        _, best = region_best_iou(
            level_labels,
            gt,
            background_index=self.background_index,
            ignore_index=self.ignore_index,
            mask=mask,
        )
        if best.size == 0:
            self._n_skipped += 1
            return
        self._per_image.append(float(best.mean()))
        self._n_regions += int(best.size)

    def result(self) -> CoveringResult:
        covering = float(np.mean(self._per_image)) if self._per_image else float("nan")
        return CoveringResult(covering, len(self._per_image), self._n_regions, self._n_skipped)


def nf_covering_scores(
    level_labels: Iterable,
    gts: Iterable,
    *,
    background_index: int | None = 0,
    ignore_index: int | None = IGNORE_INDEX,
) -> CoveringResult:
    """NFCovering over a list of images (each (level, y, x) or (y, x)) and their ground truth."""
    scores = CoveringScores(background_index=background_index, ignore_index=ignore_index)
    level_labels, gts = list(level_labels), list(gts)
    if len(level_labels) != len(gts):
        raise ValueError(f"got {len(level_labels)} predictions but {len(gts)} ground truths")
    for levels, gt in zip(level_labels, gts):
        scores.update(levels, gt)
    return scores.result()
