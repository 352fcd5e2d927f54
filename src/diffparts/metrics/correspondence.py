"""Correspondence: PCK@alpha (Hedlin et al., CUB protocol).

PCK@alpha: a transferred keypoint is correct when its distance to the target keypoint is at
most alpha * max(width, height) of the target's bounding box, over keypoints visible in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from diffparts.metrics._checks import _check_keypoints

PCK_ALPHAS = (0.05, 0.1)  # docs/design.md §8 "Measures": PCK@0.05 and PCK@0.1
_PCK_TOLERANCE = 1e-9  # the threshold is inclusive; absorb float rounding at the boundary


def normalized_keypoint_distances(
    predicted, source_keypoints, target_keypoints, target_bbox
) -> tuple[np.ndarray, np.ndarray]:
    """Distances of transferred keypoints to the target's, in units of the target box size.

    Args:
        predicted: (part, 2) x, y in the target image where each source keypoint was
            transferred; nan for no prediction (never correct).
        source_keypoints: (part, 3) x, y, visible of the source image.
        target_keypoints: (part, 3) x, y, visible of the target image.
        target_bbox: (x, y, width, height) of the target (CUB convention).

    Returns:
        identity (keypoint,) the rows visible in both images, and distance (keypoint,)
        ||predicted - target|| / max(width, height) (inf where the prediction is nan).
    """
    pred = np.asarray(predicted, dtype=np.float64)
    src = _check_keypoints(source_keypoints, "source_keypoints")
    tgt = _check_keypoints(target_keypoints, "target_keypoints")
    if pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"predicted must be (part, 2) rows of x, y; got shape {pred.shape}")
    if not (pred.shape[0] == src.shape[0] == tgt.shape[0]):
        raise ValueError(
            f"predicted has shape {pred.shape}, source_keypoints {src.shape} and "
            f"target_keypoints {tgt.shape}: the part counts differ"
        )
    bbox = np.asarray(target_bbox, dtype=np.float64).reshape(-1)
    if bbox.shape != (4,):
        raise ValueError(f"target_bbox must be (x, y, width, height), got {target_bbox!r}")
    size = max(bbox[2], bbox[3])
    if not size > 0:
        raise ValueError(f"target_bbox {target_bbox!r} has no positive width or height")
    both = (src[:, 2] > 0.5) & (tgt[:, 2] > 0.5)
    identity = np.flatnonzero(both)
    dist = np.hypot(*(pred[both] - tgt[both, :2]).T) / size
    dist = np.where(np.isnan(dist), np.inf, dist)
    return identity, dist


@dataclass(frozen=True)
class PCKResult:
    """Percentage of correct keypoints over image pairs."""

    pck: dict  # alpha -> correct / keypoints, pooled over all pairs' keypoints visible in both
    pck_per_pair: dict  # alpha -> mean over pairs of each pair's fraction (pairs with keypoints)
    n_keypoints: int  # keypoints visible in both images, over all pairs
    n_pairs: int  # pairs passed to update (pairs without shared keypoints included)

    def as_dict(self) -> dict:
        return {
            "pck": {str(a): v for a, v in self.pck.items()},
            "pck_per_pair": {str(a): v for a, v in self.pck_per_pair.items()},
            "n_keypoints": self.n_keypoints,
            "n_pairs": self.n_pairs,
        }


class PCKScores:
    """Streaming PCK@alpha: ``update(predicted, source_keypoints, target_keypoints,
    target_bbox)`` per same-class pair; correct when distance <= alpha * max(w, h) of the
    target box (inclusive)."""

    def __init__(self, alphas: Sequence[float] = PCK_ALPHAS):
        alphas = tuple(float(a) for a in alphas)
        if not alphas or any(not a > 0 for a in alphas):
            raise ValueError(f"alphas must be positive, got {alphas}")
        self.alphas = alphas
        self.reset()

    def reset(self) -> None:
        self._distances: list[np.ndarray] = []
        self._n_pairs = 0

    def update(self, predicted, source_keypoints, target_keypoints, target_bbox) -> None:
        _, dist = normalized_keypoint_distances(
            predicted, source_keypoints, target_keypoints, target_bbox
        )
        self._distances.append(dist)
        self._n_pairs += 1

    def result(self) -> PCKResult:
        pooled = np.concatenate(self._distances) if self._distances else np.zeros(0)
        per_pair = [d for d in self._distances if d.size]
        pck, pck_pair = {}, {}
        for alpha in self.alphas:
            limit = alpha + _PCK_TOLERANCE
            pck[alpha] = float((pooled <= limit).mean()) if pooled.size else float("nan")
            pck_pair[alpha] = (
                float(np.mean([(d <= limit).mean() for d in per_pair]))
                if per_pair
                else float("nan")
            )
        return PCKResult(pck, pck_pair, int(pooled.size), self._n_pairs)


def pck_scores(
    predicted: Iterable,
    source_keypoints: Iterable,
    target_keypoints: Iterable,
    target_bboxes: Iterable,
    alphas: Sequence[float] = PCK_ALPHAS,
) -> PCKResult:
    """PCK@alpha over lists of pairs (one entry per pair in each argument)."""
    scores = PCKScores(alphas)
    args = [list(predicted), list(source_keypoints), list(target_keypoints), list(target_bboxes)]
    if len({len(a) for a in args}) != 1:
        raise ValueError(
            f"pair lists differ in length: predicted {len(args[0])}, source_keypoints "
            f"{len(args[1])}, target_keypoints {len(args[2])}, target_bboxes {len(args[3])}"
        )
    for pred, src, tgt, bbox in zip(*args):
        scores.update(pred, src, tgt, bbox)
    return scores.result()


def same_class_pairs(
    class_ids: Sequence[int], *, max_pairs: int | None = None, random_state: int = 0
) -> np.ndarray:
    """Ordered (source, target) index pairs of different images with the same class.

    Returns (pair, 2) int64 in lexicographic order; with ``max_pairs``, a sorted random subset
    of that many (drawn without replacement with ``random_state``).
    """
    class_ids = np.asarray(class_ids)
    if class_ids.ndim != 1:
        raise ValueError(f"class_ids must be 1-d, got shape {class_ids.shape}")
    same = class_ids[:, None] == class_ids[None, :]  # image image
    np.fill_diagonal(same, False)
    pairs = np.argwhere(same).astype(np.int64)  # pair (source target)
    if max_pairs is not None:
        if max_pairs < 0:
            raise ValueError(f"max_pairs must be >= 0, got {max_pairs}")
        if max_pairs < len(pairs):
            rng = np.random.default_rng(random_state)
            pairs = pairs[np.sort(rng.choice(len(pairs), size=max_pairs, replace=False))]
    return pairs
