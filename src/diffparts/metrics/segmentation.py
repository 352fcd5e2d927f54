"""Segmentation: Hungarian-matched pixel accuracy and mIoU (the DiffSeg / DiffCut protocol).

Per image, the confusion matrix ``(class, segment)`` between ground-truth classes and
predicted segments is matched one-to-one with the Hungarian algorithm (scipy's
``linear_sum_assignment``, maximising overlap). Each class takes TP = overlap with its
segment, FN = its other pixels, FP = the other pixels of its segment; TP/FP/FN are summed
over the dataset. Pixel accuracy = sum TP / labelled pixels, so the pixels of unmatched
segments count as wrong; mIoU = mean over classes of TP / (TP + FP + FN). As in the
reference code, every one of the ``n_classes`` rows is matched, including classes absent
from the image: an extra segment may then be matched to an absent class and count as its FP
(``match_absent_classes=False`` matches only the classes present).
``matching="dataset"`` is the stricter variant: one matching for the whole dataset over the
confusion matrix summed across images, so predicted labels must mean the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy.optimize import linear_sum_assignment

from diffparts.metrics._checks import (
    IGNORE_INDEX,
    _as_label_map,
    _check_same_shape,
    _valid_pixels,
)

MATCHINGS = ("image", "dataset")


def segment_confusion(
    pred,
    gt,
    n_classes: int,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    mask=None,
    compact: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel counts shared by each ground-truth class and each predicted segment of one image.

    Args:
        pred: (y, x) integer segment labels.
        gt: (y, x) integer class labels in 0..n_classes-1, or ``ignore_index``.
        n_classes: number of ground-truth classes.
        ignore_index: gt value of unlabelled pixels (left out everywhere); None for none.
        mask: optional (y, x) bool, True where pixels count.
        compact: True numbers the segments present among counted pixels 0..S-1 (any integer
            labels, per-image matching); False keeps the label values as columns 0..max
            (labels must be >= 0; dataset-level matching needs this).

    Returns:
        confusion: (class, segment) int64 counts over counted pixels.
        segment_ids: (segment,) the predicted label of each column.
    """
    pred = _as_label_map(pred, "pred")
    gt = _as_label_map(gt, "gt")
    _check_same_shape(pred, gt, "pred", "gt")
    valid = _valid_pixels(gt, n_classes, ignore_index, mask)
    p = pred[valid]  # (pixel,)
    g = gt[valid].astype(np.int64)  # (pixel,)
    if compact:
        segment_ids, p = np.unique(p, return_inverse=True)
        p = p.reshape(-1)
    else:
        if p.size and p.min() < 0:
            raise ValueError(f"pred label {int(p.min())} is negative; labels must be >= 0")
        segment_ids = np.arange(int(p.max()) + 1 if p.size else 0)
    n_segments = len(segment_ids)
    confusion = np.bincount(
        g * n_segments + p.astype(np.int64), minlength=n_classes * n_segments
    ).reshape(n_classes, n_segments)  # class segment
    return confusion, segment_ids


def match_segments(confusion: np.ndarray, *, present_only: bool = False) -> np.ndarray:
    """One-to-one matching of classes to segments maximising the matched overlap.

    Args:
        confusion: (class, segment) overlap counts.
        present_only: match only classes with pixels (non-zero rows); by default every class
            takes part, as in the reference code, so a class absent from the image can take a
            spare segment.

    Returns:
        (class,) int64: the segment (column) matched to each class, -1 where a class gets no
        segment (fewer segments than classes, or an absent class with ``present_only``).
    """
    confusion = np.asarray(confusion)
    if confusion.ndim != 2:
        raise ValueError(f"confusion must be (class, segment), got shape {confusion.shape}")
    if present_only:
        present = np.flatnonzero(confusion.sum(axis=1) > 0)
        match = np.full(confusion.shape[0], -1, dtype=np.int64)
        match[present] = match_segments(confusion[present])
        return match
    n_classes, n_segments = confusion.shape
    # 1. Pad with empty segments so that every class has a partner (reference: _fast_hist
    #    makes max(n_class, max label + 1) columns).
    padded = confusion
    if n_segments < n_classes:
        padded = np.zeros((n_classes, n_classes), dtype=confusion.dtype)
        padded[:, :n_segments] = confusion
    # 2. Hungarian matching, maximising overlap; rows come back in order 0..n_classes-1.
    rows, cols = linear_sum_assignment(padded, maximize=True)
    match = np.full(n_classes, -1, dtype=np.int64)
    match[rows] = np.where(cols < n_segments, cols, -1)
    return match


def _matched_counts(
    confusion: np.ndarray, match: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN per class (each (class,) int64) for a given class -> segment matching."""
    confusion = np.asarray(confusion, dtype=np.int64)
    if confusion.shape[1] == 0:  # no counted pixel in the image (all ignored or masked)
        zeros = np.zeros(confusion.shape[0], dtype=np.int64)
        return zeros, zeros.copy(), zeros.copy()
    has = match >= 0
    safe = np.where(has, match, 0)
    tp = np.where(has, confusion[np.arange(len(match)), safe], 0)
    fn = confusion.sum(axis=1) - tp
    segment_size = confusion.sum(axis=0)  # (segment,)
    fp = np.where(has, segment_size[safe], 0) - tp
    return tp, fp, fn


@dataclass(frozen=True, eq=False)  # eq=False: the fields hold arrays
class SegmentationResult:
    """Dataset-level segmentation scores after Hungarian matching."""

    pixel_accuracy: float  # sum TP / labelled pixels (unmatched segments' pixels are wrong)
    miou: float  # mean of `iou` over classes where it is defined (nan if none)
    iou: np.ndarray  # (class,) TP / (TP + FP + FN); nan where TP + FP + FN = 0
    tp: np.ndarray  # (class,) int64, summed over images
    fp: np.ndarray  # (class,) int64
    fn: np.ndarray  # (class,) int64
    n_pixels: int  # labelled pixels counted
    n_images: int
    matching: str  # "image" (per-image Hungarian) or "dataset" (one matching for all)

    def as_dict(self) -> dict:
        """JSON-ready summary."""
        return {
            "pixel_accuracy": self.pixel_accuracy,
            "miou": self.miou,
            "iou": [None if np.isnan(v) else float(v) for v in self.iou],
            "n_pixels": self.n_pixels,
            "n_images": self.n_images,
            "matching": self.matching,
        }


def _result_from_counts(tp, fp, fn, n_pixels, n_images, matching) -> SegmentationResult:
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
    defined = ~np.isnan(iou)
    miou = float(iou[defined].mean()) if defined.any() else float("nan")
    accuracy = float(tp.sum() / n_pixels) if n_pixels else float("nan")
    return SegmentationResult(
        pixel_accuracy=accuracy,
        miou=miou,
        iou=iou,
        tp=tp,
        fp=fp,
        fn=fn,
        n_pixels=int(n_pixels),
        n_images=int(n_images),
        matching=matching,
    )


class SegmentationScores:
    """Streaming Hungarian-matched pixel accuracy and mIoU.

    ``matching="image"`` (default): each ``update`` matches that image's segments to classes
    and adds its TP/FP/FN (DiffSeg/DiffCut). ``matching="dataset"``: ``update`` only adds the
    image's (class, segment) confusion, indexed by label value, and ``result`` matches once.
    ``match_absent_classes=False`` matches only the classes present in the image (dataset), so
    a spare segment stays unmatched (its pixels still count as wrong) instead of becoming an FP
    of an absent class; the default True is the reference behaviour.

    Example::

        scores = SegmentationScores(n_classes=8, ignore_index=255)
        for pred, gt in pairs:
            scores.update(pred, gt)
        print(scores.result().miou)
    """

    def __init__(
        self,
        n_classes: int,
        *,
        ignore_index: int | None = IGNORE_INDEX,
        matching: str = "image",
        match_absent_classes: bool = True,
    ):
        if int(n_classes) < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes}")
        if matching not in MATCHINGS:
            raise ValueError(f"matching must be one of {MATCHINGS}, got {matching!r}")
        self.n_classes = int(n_classes)
        self.ignore_index = ignore_index
        self.matching = matching
        self.match_absent_classes = bool(match_absent_classes)
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        zeros = np.zeros(self.n_classes, dtype=np.int64)
        self._tp, self._fp, self._fn = zeros.copy(), zeros.copy(), zeros.copy()
        self._confusion = np.zeros((self.n_classes, 0), dtype=np.int64)  # class segment
        self._n_pixels = 0
        self._n_images = 0

    def update(self, pred, gt, mask=None) -> None:
        """Add one image: pred (y, x) segment labels, gt (y, x) classes, optional bool mask."""
        compact = self.matching == "image"
        confusion, _ = segment_confusion(
            pred, gt, self.n_classes, ignore_index=self.ignore_index, mask=mask, compact=compact
        )
        self._n_pixels += int(confusion.sum())
        self._n_images += 1
        if compact:
            match = match_segments(confusion, present_only=not self.match_absent_classes)
            tp, fp, fn = _matched_counts(confusion, match)
            self._tp += tp
            self._fp += fp
            self._fn += fn
            return
        # Dataset-level: grow the accumulated (class, segment) matrix to the largest label seen.
        width = max(self._confusion.shape[1], confusion.shape[1])
        grown = np.zeros((self.n_classes, width), dtype=np.int64)
        grown[:, : self._confusion.shape[1]] += self._confusion
        grown[:, : confusion.shape[1]] += confusion
        self._confusion = grown

    def result(self) -> SegmentationResult:
        """Scores over everything passed to ``update``."""
        if self.matching == "image":
            tp, fp, fn = self._tp.copy(), self._fp.copy(), self._fn.copy()
        else:
            match = match_segments(self._confusion, present_only=not self.match_absent_classes)
            tp, fp, fn = _matched_counts(self._confusion, match)
        return _result_from_counts(tp, fp, fn, self._n_pixels, self._n_images, self.matching)

    def state(self) -> dict:
        """What has been added so far, as plain JSON-able lists (per-image matching only), so a
        later process can go on adding images with :meth:`load_state` instead of re-reading them."""
        if self.matching != "image":
            raise ValueError(f"state needs matching='image', not {self.matching!r}")
        return {"n_classes": self.n_classes, "tp": self._tp.tolist(), "fp": self._fp.tolist(),
                "fn": self._fn.tolist(), "n_pixels": self._n_pixels, "n_images": self._n_images}

    def load_state(self, state: dict) -> None:
        """Continue from a :meth:`state` of scores with the same number of classes."""
        if self.matching != "image" or int(state["n_classes"]) != self.n_classes:
            raise ValueError(f"a state of {state['n_classes']} classes cannot continue scores of {self.n_classes} "
                             f"(matching {self.matching!r})")
        self._tp, self._fp, self._fn = (np.asarray(state[k], np.int64).copy() for k in ("tp", "fp", "fn"))
        self._n_pixels, self._n_images = int(state["n_pixels"]), int(state["n_images"])

    def dataset_matching(self) -> np.ndarray:
        """(class,) predicted label matched to each class (-1: none); dataset matching only."""
        if self.matching != "dataset":
            raise ValueError(f"dataset_matching needs matching='dataset', not {self.matching!r}")
        return match_segments(self._confusion, present_only=not self.match_absent_classes)


def segmentation_scores(
    preds: Iterable,
    gts: Iterable,
    n_classes: int,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    matching: str = "image",
    masks: Iterable | None = None,
    match_absent_classes: bool = True,
) -> SegmentationResult:
    """Hungarian-matched pixel accuracy and mIoU over a list (or (image, y, x) array) of images.

    See ``SegmentationScores`` for the protocol; ``masks`` is an optional matching list of
    (y, x) bool arrays (True = evaluate).
    """
    scores = SegmentationScores(
        n_classes,
        ignore_index=ignore_index,
        matching=matching,
        match_absent_classes=match_absent_classes,
    )
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise ValueError(f"got {len(preds)} predictions but {len(gts)} ground truths")
    masks = [None] * len(preds) if masks is None else list(masks)
    if len(masks) != len(preds):
        raise ValueError(f"got {len(masks)} masks for {len(preds)} images")
    for pred, gt, mask in zip(preds, gts, masks):
        scores.update(pred, gt, mask)
    return scores.result()


def relabel_to_classes(
    pred,
    gt,
    n_classes: int,
    *,
    ignore_index: int | None = IGNORE_INDEX,
    mask=None,
    match_absent_classes: bool = True,
) -> np.ndarray:
    """The prediction of one image with each segment renamed to its matched class.

    Returns (y, x) int64: the class matched by per-image Hungarian matching, -1 for pixels of
    unmatched segments (for figures and error maps).
    """
    confusion, segment_ids = segment_confusion(
        pred, gt, n_classes, ignore_index=ignore_index, mask=mask
    )
    match = match_segments(confusion, present_only=not match_absent_classes)
    pred = np.asarray(pred)
    out = np.full(pred.shape, -1, dtype=np.int64)
    for cls, col in enumerate(match):
        if col >= 0:
            out[pred == segment_ids[col]] = cls
    return out
