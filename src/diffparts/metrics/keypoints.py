"""Parts: NMI / ARI at visible keypoints (SCOPS / PDiscoNet).

NMI and ARI between keypoint identity and the predicted part label at each visible keypoint,
pooled over a set. scikit-learn is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from diffparts.metrics._checks import _as_label_map, _check_keypoints, _check_same_shape


def keypoint_part_labels(
    part_map, keypoints, *, image_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted part label under each visible keypoint of one image.

    Args:
        part_map: (y, x) integer part labels (background included as a label, as PDiscoNet
            samples the map "with background").
        keypoints: (part, 3) x, y, visible in image pixels (CUB part_locs order); visible > 0.5.
        image_shape: (height, width) of the image the keypoints refer to, when the part map has
            another size; the keypoint at (x, y) reads map pixel
            (floor(y * h / height), floor(x * w / width)), clipped at the far border.

    Returns:
        identity (keypoint,) the row index of each visible keypoint, label (keypoint,) the part
        label found there.
    """
    part_map = _as_label_map(part_map, "part_map")
    kp = _check_keypoints(keypoints, "keypoints")
    h, w = part_map.shape
    height, width = image_shape if image_shape is not None else (h, w)
    visible = kp[:, 2] > 0.5
    identity = np.flatnonzero(visible)
    x, y = kp[visible, 0], kp[visible, 1]
    outside = (x < 0) | (x > width) | (y < 0) | (y > height) | ~np.isfinite(x) | ~np.isfinite(y)
    if outside.any():
        i = int(identity[np.flatnonzero(outside)[0]])
        raise ValueError(
            f"visible keypoint {i} at (x={kp[i, 0]}, y={kp[i, 1]}) lies outside the image of "
            f"(height, width) {(height, width)}"
        )
    col = np.minimum(np.floor(x * w / width).astype(np.int64), w - 1)
    row = np.minimum(np.floor(y * h / height).astype(np.int64), h - 1)
    return identity, part_map[row, col].astype(np.int64)


@dataclass(frozen=True)
class ClusterAgreement:
    """Agreement between keypoint identity and predicted part label, pooled over a set."""

    nmi: float  # sklearn normalized_mutual_info_score (arithmetic mean normalisation), 0..1
    ari: float  # sklearn adjusted_rand_score, ~0 for independent labels, 1 for perfect
    n_keypoints: int  # visible keypoints pooled
    n_images: int

    def as_dict(self) -> dict:
        return {"nmi": self.nmi, "ari": self.ari, "n_keypoints": self.n_keypoints,
                "n_images": self.n_images}


def cluster_agreement(identity, labels) -> tuple[float, float]:
    """(NMI, ARI) between two labelings of the same items (1-d integer arrays)."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    identity, labels = np.asarray(identity), np.asarray(labels)
    _check_same_shape(identity, labels, "identity", "labels")
    if identity.size == 0:
        return float("nan"), float("nan")
    return (
        float(normalized_mutual_info_score(identity, labels)),
        float(adjusted_rand_score(identity, labels)),
    )


class KeypointPartScores:
    """Streaming NMI/ARI at visible keypoints: ``update(part_map, keypoints)`` per image."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._identity: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._n_images = 0

    def update(self, part_map, keypoints, image_shape: tuple[int, int] | None = None) -> None:
        """Add one image: part_map (y, x), keypoints (part, 3) x, y, visible."""
        identity, labels = keypoint_part_labels(part_map, keypoints, image_shape=image_shape)
        self._identity.append(identity)
        self._labels.append(labels)
        self._n_images += 1

    def result(self) -> ClusterAgreement:
        identity = np.concatenate(self._identity) if self._identity else np.zeros(0, np.int64)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, np.int64)
        nmi, ari = cluster_agreement(identity, labels)
        return ClusterAgreement(nmi, ari, int(identity.size), self._n_images)


def keypoint_nmi_ari(
    part_maps: Iterable,
    keypoints: Iterable,
    image_shapes: Iterable | None = None,
) -> ClusterAgreement:
    """NMI and ARI at visible keypoints, pooled over a list of images."""
    scores = KeypointPartScores()
    part_maps, keypoints = list(part_maps), list(keypoints)
    if len(part_maps) != len(keypoints):
        raise ValueError(f"got {len(part_maps)} part maps but {len(keypoints)} keypoint arrays")
    shapes = [None] * len(part_maps) if image_shapes is None else list(image_shapes)
    for part_map, kp, shape in zip(part_maps, keypoints, shapes):
        scores.update(part_map, kp, image_shape=shape)
    return scores.result()
