"""Measures of the occlusion stage (docs/design.md §5.7 and §8): detection and completion.

Detection of missing part categories, per case a predicted set against the true set (a
category is *hidden* when at least ``min_fraction`` of its pixels in that image are covered):

- ``detection_scores``: precision, recall and F1 with TP/FP/FN summed over the cases (micro);
- ``roc_auc``: ROC AUC of the per-(case, category) missing score against hidden or not (the
  Mann-Whitney statistic, ties counted one half; NaN when one class is empty);
  ``roc_auc_per_category``: the same per category (column); ``roc_auc_interval``: its
  bootstrap interval over cases (the cases are the sample: a case's categories are drawn
  together, so the interval is not the narrower one of independent pairs);
  ``roc_auc_difference``: two detectors' AUC difference on the same cases with its paired
  bootstrap interval (the same resampled cases for both); ``interval_text``: an interval as
  the tables and the dashboard print it;
- ``false_alarm_rate``: the share of cases that hide no category (background controls, or a
  part covering less than ``min_fraction`` of every category) where any category is predicted;
- ``hidden_greyish``: whether the pixels an occluder hid were grey-ish (low saturation), so a
  grey fill there is a plausible grey part and cannot be told from it by its colour.

Completion, per case and prompt, against the unoccluded original:

- ``masked_psnr``: PSNR over the hidden pixels (all channels), data range 255;
- ``masked_ssim``: scikit-image's ``structural_similarity`` map (Wang et al. 2004, uniform
  window) averaged over the hidden pixels; the window is the largest odd side up to 7 that
  fits the hidden region's bounding box (at least 3), so a 3 px eye still gets a window that
  is mostly the eye;
- ``restoration_scores``: the completed image's category map against the hidden part: the IoU
  of the restored category's pixels with the part's true mask (whole image), the share of hidden
  pixels given that category, and whether the hidden region holds it at all;
- ``mean_difference``: a per-case measure of two variants or runs on the same cases, the mean
  difference with its paired bootstrap interval (e.g. a completion's judge IoU against the
  occluded input's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from diffparts.metrics._checks import _check_same_shape


@dataclass(frozen=True)
class DetectionScores:
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    cases: int


def hidden_categories(fractions: dict[int, float], min_fraction: float = 0.5) -> set[int]:
    """Categories with at least ``min_fraction`` of their pixels hidden."""
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    return {int(k) for k, f in fractions.items() if int(k) > 0 and f >= min_fraction}


def detection_scores(predicted: Sequence[Iterable[int]], truth: Sequence[Iterable[int]]) -> DetectionScores:
    """Micro precision / recall / F1 of predicted missing sets against true hidden sets.

    Undefined ratios (nothing predicted, nothing hidden) are NaN, not 0.
    """
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} cases")
    tp = fp = fn = 0
    for p, t in zip(predicted, truth):
        p, t = set(int(v) for v in p), set(int(v) for v in t)
        tp, fp, fn = tp + len(p & t), fp + len(p - t), fn + len(t - p)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    return DetectionScores(precision, recall, f1, tp, fp, fn, len(truth))


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (ties count one half)."""
    from scipy.stats import rankdata

    s, y = np.asarray(scores, np.float64).ravel(), np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores for {y.size} labels")
    y = y.astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(s)                     # average ranks: ties count one half
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def roc_auc_interval(scores, labels, level: float = 0.95, n_boot: int = 1000,
                     seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``roc_auc`` over (case, category) ``scores`` and bool
    ``labels``: the cases (rows) are resampled with replacement ``n_boot`` times (seeded), the
    AUC recomputed on each resample that has both classes, and the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles returned. With 32 cases of which about 19 hide a category, the
    interval is about 0.2 wide (docs/occlusion.md "Detection"): differences of a few hundredths
    between two such rows are not evidence. (NaN, NaN) when fewer than half the resamples have
    both classes."""
    _check_level(level)
    aucs = _bootstrap_aucs([scores], labels, n_boot, seed)[:, 0]
    if len(aucs) < n_boot / 2:
        return float("nan"), float("nan")
    return _percentile_interval(aucs, level)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _percentile_interval(resampled: np.ndarray, level: float) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap ``resampled`` statistics."""
    lo, hi = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _bootstrap_aucs(score_sets, labels, n_boot: int, seed: int) -> np.ndarray:
    """(resample, set) AUCs of each (case, category) array in ``score_sets`` on the same
    ``n_boot`` resamples of the cases (rows; seeded); resamples with one class only are dropped."""
    y = np.asarray(labels, bool)
    sets = [np.asarray(s, np.float64) for s in score_sets]
    for s in sets:
        if s.shape != y.shape or s.ndim != 2:
            raise ValueError(f"scores {s.shape} and labels {y.shape} must be the same (case, category) shape")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = len(y)
    out = []
    for _ in range(n_boot):
        rows = rng.integers(0, n, n)
        if 0 < y[rows].sum() < y[rows].size:                  # both classes: the AUC is defined
            out.append([roc_auc(s[rows], y[rows]) for s in sets])
    return np.asarray(out, np.float64).reshape(-1, len(sets))


def roc_auc_difference(scores_a, scores_b, labels, level: float = 0.95, n_boot: int = 1000,
                       seed: int = 0) -> tuple[float, float, float]:
    """(AUC of b - AUC of a, low, high): two detectors' (case, category) scores on the same cases
    and ``labels``, the interval a paired percentile bootstrap over the cases (each resample
    scores both on the same cases, so what the cases share cancels and the interval is much
    narrower than either AUC's own). An interval that excludes 0 is a difference these cases
    support; (diff, NaN, NaN) when fewer than half the resamples have both classes."""
    _check_level(level)
    diff = roc_auc(scores_b, labels) - roc_auc(scores_a, labels)
    aucs = _bootstrap_aucs([scores_a, scores_b], labels, n_boot, seed)
    if len(aucs) < n_boot / 2:
        return float(diff), float("nan"), float("nan")
    return (float(diff), *_percentile_interval(aucs[:, 1] - aucs[:, 0], level))


def mean_difference(a, b, level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean of b - a, low, high, n): a per-case measure of two variants (or two runs) on the
    same cases, e.g. the judge's IoU of a completion against that of the occluded input; the
    interval a percentile bootstrap of the cases (seeded), paired: each case's difference is
    resampled whole. Cases where either value is missing (None or NaN) are left out; (NaN, NaN,
    NaN, 0) when none is left, (diff, NaN, NaN, 1) with one."""
    _check_level(level)
    a = np.asarray([np.nan if v is None else v for v in a], np.float64)
    b = np.asarray([np.nan if v is None else v for v in b], np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"the two measures must be per case and of the same length, got {a.shape} and {b.shape}")
    d = (b - a)[np.isfinite(a) & np.isfinite(b)]
    if len(d) < 2:
        return (float(d[0]) if len(d) else float("nan")), float("nan"), float("nan"), int(len(d))
    means = d[np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))].mean(1)
    return (float(d.mean()), *_percentile_interval(means, level), int(len(d)))


def interval_text(interval) -> str | None:
    """"0.60-0.92" for a (low, high) interval (``roc_auc_interval``, as stored: a list), None
    where there is none (None or NaN ends: no case hides a category)."""
    if not interval or any(v is None or not np.isfinite(v) for v in interval):
        return None
    return f"{interval[0]:.2f}-{interval[1]:.2f}"


def roc_auc_per_category(scores, labels) -> list[float]:
    """ROC AUC of each column of (case, category) ``scores`` against (case, category) bool
    ``labels`` (NaN for a category never or always hidden)."""
    s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
    if s.shape != y.shape or s.ndim != 2:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be the same (case, category) shape")
    return [roc_auc(s[:, k], y[:, k]) for k in range(s.shape[1])]


def false_alarm_rate(predicted: Sequence[Iterable[int]], truth: Sequence[Iterable[int]]) -> float:
    """Share of the cases with an empty true set that predict at least one missing category
    (NaN when every case hides something)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} cases")
    clean = [bool(set(p)) for p, t in zip(predicted, truth) if not set(t)]
    return float(np.mean(clean)) if clean else float("nan")


def hidden_greyish(image, mask, max_range: float = 40.0) -> bool:
    """True when the (y, x, 3) ``image``'s pixels under ``mask`` are grey-ish: their mean
    channel range (max - min of R, G, B, in 0-255) is below ``max_range``."""
    image, mask = np.asarray(image, np.float64), np.asarray(mask, bool)
    if image.ndim != 3 or image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape} must be (y, x, 3) with the mask's size {mask.shape}")
    if not mask.any():
        raise ValueError("mask is empty: no hidden pixel")
    px = image[mask]
    return bool((px.max(1) - px.min(1)).mean() < max_range)


def _check_images(pred, target, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, target, mask = np.asarray(pred), np.asarray(target), np.asarray(mask)
    _check_same_shape(pred, target, "pred", "target")
    if pred.ndim not in (2, 3):
        raise ValueError(f"images must be (y, x) or (y, x, channel), got shape {pred.shape}")
    _check_same_shape(mask, pred[..., 0] if pred.ndim == 3 else pred, "mask", "image (y, x)")
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean (True = hidden), got dtype {mask.dtype}")
    if not mask.any():
        raise ValueError("mask is empty: no hidden pixel to measure")
    return pred.astype(np.float64), target.astype(np.float64), mask


def masked_psnr(pred, target, mask, data_range: float = 255.0) -> float:
    """PSNR in dB over the ``mask`` pixels (inf when they are equal)."""
    p, t, m = _check_images(pred, target, mask)
    mse = float(np.mean((p[m] - t[m]) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range ** 2 / mse))


def ssim_window(mask, largest: int = 7) -> int:
    """The largest odd window side <= ``largest`` that fits the mask's bounding box (>= 3)."""
    ys, xs = np.nonzero(np.asarray(mask, bool))
    if len(ys) == 0:
        raise ValueError("mask is empty")
    side = min(largest, int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
    side = side if side % 2 else side - 1
    return max(3, side)


def masked_ssim(pred, target, mask, data_range: float = 255.0, largest_window: int = 7) -> float:
    """Mean SSIM over the ``mask`` pixels of scikit-image's full SSIM map (channels averaged)."""
    from skimage.metrics import structural_similarity

    p, t, m = _check_images(pred, target, mask)
    win = min(ssim_window(m, largest_window), *(s if s % 2 else s - 1 for s in p.shape[:2]))
    _, smap = structural_similarity(p, t, win_size=win, data_range=data_range, full=True,
                                    channel_axis=-1 if p.ndim == 3 else None)
    smap = smap.mean(-1) if smap.ndim == 3 else smap                       # y x
    return float(smap[m].mean())


def category_of_part(labels, part_mask) -> int:
    """The category (>= 1) covering most of ``part_mask`` in a (y, x) category map; 0 if none."""
    labels, part_mask = np.asarray(labels), np.asarray(part_mask, bool)
    _check_same_shape(labels, part_mask, "labels", "part_mask")
    under = labels[part_mask & (labels > 0)]
    return int(np.bincount(under).argmax()) if under.size else 0


def restoration_scores(labels, category: int, part_mask, hidden, min_pixels: int = 4) -> dict:
    """How the completed image's (y, x) category map restores ``category`` at the hidden part.

    iou: IoU of ``labels == category`` with the part's true mask over the whole image;
    hidden_share: the fraction of ``hidden`` pixels labelled ``category``; assigned: at least
    ``min_pixels`` hidden pixels (or all of them, if fewer) carry ``category``.
    """
    labels, part_mask, hidden = np.asarray(labels), np.asarray(part_mask, bool), np.asarray(hidden, bool)
    _check_same_shape(labels, part_mask, "labels", "part_mask")
    _check_same_shape(labels, hidden, "labels", "hidden")
    if not hidden.any():
        raise ValueError("hidden is empty: no restored region to measure")
    pred = labels == int(category)
    union = int((pred | part_mask).sum())
    n = int((pred & hidden).sum())
    return {"iou": float((pred & part_mask).sum() / union) if union else float("nan"),
            "hidden_share": n / int(hidden.sum()),
            "assigned": bool(category > 0 and n >= min(min_pixels, int(hidden.sum())))}
