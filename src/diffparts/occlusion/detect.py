"""Missing-part detection (docs/design.md §5.7 "Occlusion"): which part categories does an occluded image lack?

1. The occluded image goes through the corpus's own capture, segmentation and descriptor code
   and its segments are assigned to the store's **fitted** categories, no refit
   (:func:`diffparts.parts.assign.assign_image`).
2. Each category k has a dataset expectation: its prevalence p_k (``parts/prevalence``, the
   fraction of images that contain it) and its typical size n_k (the median pixel count of k in
   the images that contain it, training images only when the store has a held-out split).
3. The missing score of k is ``p_k * max(0, 1 - present_k / n_k)``: 0 for a category present at
   its typical size, p_k for one that is absent; a category rarely seen anyway scores low
   because its absence says little. Categories scoring at least ``threshold`` are predicted
   missing, ranked by score.
4. "Unknown" (``DetectConfig.unknown_quantile``, with the store's threshold from
   :func:`diffparts.parts.assign.unknown_threshold`): a foreground pixel whose unit is farther
   from its nearest centre than that quantile of the corpus's own units is not evidence of any
   category (label -1, so present_k counts only confidently assigned pixels), and these unknown
   pixels are the per-pixel occlusion map (``Detection.occlusion_map``). Without a threshold
   the map is None and every unit counts for its nearest centre.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DetectConfig:
    threshold: float = 0.1    # missing when score >= this (best F1 on the validation birds, seed 999: 0.085)
    min_pixels: int = 4       # a category counts as present in a dataset image from this many pixels
    unknown_quantile: float | None = None   # corpus-distance quantile beyond which a unit is unknown; None = off
                                            # (validation birds: no quantile helps, see docs/occlusion.md)


@dataclass(frozen=True)
class Expectation:
    """What a complete image of the dataset holds, per category (index = category, 0 unused)."""

    prevalence: np.ndarray    # (category,) float32, fraction of images containing the category
    typical: np.ndarray       # (category,) float32, median pixels where present (segment-map pixels)


@dataclass(frozen=True)
class Detection:
    labels: np.ndarray = field(repr=False)   # (y, x) int16 categories of the occluded image
    scores: np.ndarray                       # (category,) float32 missing score, [0] = 0 (background)
    ranking: tuple[int, ...]                 # categories 1..K by decreasing score (ties: smaller k)
    missing: tuple[int, ...]                 # predicted missing (score >= threshold), ranked
    occlusion_map: np.ndarray | None = None  # (y, x) bool where occluded, if the method gives one

    def top(self, n: int) -> tuple[int, ...]:
        """The predicted missing categories, at least one and at most ``n`` (best ranked)."""
        return (self.missing or self.ranking[:1])[:max(1, n)]


def dataset_expectation(labels: np.ndarray, prevalence: np.ndarray | None = None,
                        min_pixels: int = 4) -> Expectation:
    """Prevalence and typical size from (image, y, x) category maps (-1 = unlabelled: skipped).

    prevalence: the store's ``parts/prevalence`` to use instead of recounting it.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (image, y, x) category maps, got shape {labels.shape}")
    k1 = int(max(labels.max(initial=0) + 1, 0 if prevalence is None else len(prevalence)))
    counts = np.stack([np.bincount(m[m >= 0].ravel(), minlength=k1)[:k1] for m in labels if (m >= 0).any()])
    if len(counts) == 0:
        raise ValueError("no labelled image to learn the categories' expectations from")
    present = counts >= min_pixels                                    # image part
    typical = np.array([np.median(counts[present[:, k], k]) if present[:, k].any() else 0.0 for k in range(k1)],
                       np.float32)
    prev = present.mean(0).astype(np.float32) if prevalence is None else np.asarray(prevalence, np.float32)
    if len(prev) != k1:
        raise ValueError(f"prevalence has {len(prev)} categories, the labels {k1}")
    prev, typical = prev.copy(), typical.copy()
    prev[0], typical[0] = 0.0, 0.0                                   # background is never missing
    return Expectation(prev, typical)


def missing_scores(labels: np.ndarray, expectation: Expectation) -> np.ndarray:
    """(category,) float32 ``p_k * max(0, 1 - present_k / n_k)`` of one (y, x) category map."""
    k1 = len(expectation.prevalence)
    labels = np.asarray(labels)
    if labels.max(initial=0) >= k1:
        raise ValueError(f"labels hold category {int(labels.max())}, the expectation only 0..{k1 - 1}")
    present = np.bincount(labels[labels >= 0].ravel(), minlength=k1)[:k1].astype(np.float64)
    typical = expectation.typical.astype(np.float64)
    short = np.where(typical > 0, np.clip(1.0 - present / np.maximum(typical, 1e-9), 0.0, 1.0), 0.0)
    scores = (expectation.prevalence * short).astype(np.float32)
    scores[0] = 0.0
    return scores


def rank_missing(labels: np.ndarray, expectation: Expectation, config: DetectConfig = DetectConfig(),
                 occlusion_map: np.ndarray | None = None) -> Detection:
    """Scores, ranking and the predicted missing categories of one category map."""
    scores = missing_scores(labels, expectation)
    order = sorted(range(1, len(scores)), key=lambda k: (-float(scores[k]), k))
    missing = tuple(k for k in order if scores[k] >= config.threshold and scores[k] > 0)
    return Detection(np.asarray(labels, np.int16), scores, tuple(order), missing, occlusion_map)


def rank_with_unknown(labels: np.ndarray, distance: np.ndarray, expectation: Expectation,
                      threshold: float | None, config: DetectConfig = DetectConfig()) -> Detection:
    """:func:`rank_missing` counting only confidently assigned pixels: a foreground pixel farther
    than ``threshold`` (squared distance to its nearest centre) is unknown (-1) and goes to the
    occlusion map. threshold None: plain :func:`rank_missing`, no map."""
    if threshold is None:
        return rank_missing(labels, expectation, config)
    from diffparts.parts.assign import mark_unknown

    confident = mark_unknown(labels, distance, threshold)
    return rank_missing(confident, expectation, config, occlusion_map=(confident < 0) & (np.asarray(labels) > 0))


def detect_missing(fitted, pipe, image: np.ndarray, expectation: Expectation,
                   config: DetectConfig = DetectConfig(), box=None,
                   unknown_threshold: float | None = None) -> Detection:
    """Assign the occluded (y, x, 3) uint8 ``image`` to the fitted categories and rank what is
    missing. box: the object box (x, y, w, h) in segment-map pixels, as for the corpus.
    unknown_threshold: the store's :func:`diffparts.parts.assign.unknown_threshold` (used when
    ``config.unknown_quantile`` is set); beyond it a pixel is unknown (step 4)."""
    from diffparts.parts.assign import assign_image

    if config.unknown_quantile is None or unknown_threshold is None:
        return rank_missing(assign_image(fitted, pipe, image, box=box), expectation, config)
    labels, distance = assign_image(fitted, pipe, image, box=box, return_distance=True)
    return rank_with_unknown(labels, distance, expectation, unknown_threshold, config)


def store_expectation(root, min_pixels: int = 4) -> Expectation:
    """:func:`dataset_expectation` of a store: ``parts/prevalence`` and the typical sizes of the
    labelled images, excluding held-out ones (``embeddings/held_out``) when the split exists."""
    from diffparts.store import done_mask

    done = done_mask(root, "parts")
    if "embeddings/held_out" in root:
        held = np.asarray(root["embeddings/held_out"][:], bool)
        done = done & ~np.pad(held, (0, max(0, len(done) - len(held))))[: len(done)]
    idx = np.flatnonzero(done)
    if len(idx) == 0:
        raise ValueError("the store has no labelled (training) image: run the parts stage first")
    labels = np.stack([np.asarray(root["parts/labels"][int(i)]) for i in idx])
    return dataset_expectation(labels, np.asarray(root["parts/prevalence"][:]), min_pixels)
