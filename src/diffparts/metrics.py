"""Measures of segmentation, part discovery and correspondence (DESIGN.md section 8).

Arrays in, numbers out; numpy and scipy only (scikit-learn for NMI/ARI, imported lazily).
Every measure comes twice: a streaming accumulator with ``update(...)`` / ``result()`` that a
pipeline feeds one image (or pair) at a time, and a plain function over whole lists.

Segmentation (the DiffSeg / DiffCut protocol)
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
NFCovering (HSG, Ke et al. 2022)
    NFCovering(S' -> S_fg) = 1/|S_fg| sum_{R in S_fg} max_{R' in S'} IoU(R, R'), where S' holds
    every predicted region of every level, averaged over images.
Parts (SCOPS / PDiscoNet)
    NMI and ARI between keypoint identity and the predicted part label at each visible keypoint,
    pooled over a set.
Correspondence (Hedlin et al., CUB)
    PCK@alpha: a transferred keypoint is correct when its distance to the target keypoint is at
    most alpha * max(width, height) of the target's bounding box, over keypoints visible in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

IGNORE_INDEX = 255  # ground-truth value of unlabelled pixels (the usual VOC/COCO-Stuff convention)
MATCHINGS = ("image", "dataset")


# ---------------------------------------------------------------------------------------------
# Input checks


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


# ---------------------------------------------------------------------------------------------
# Segmentation: Hungarian matching (DiffSeg / DiffCut protocol)


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


# ---------------------------------------------------------------------------------------------
# NFCovering over a hierarchy (HSG)


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


# ---------------------------------------------------------------------------------------------
# Parts: NMI / ARI at visible keypoints (SCOPS / PDiscoNet)


def _check_keypoints(keypoints, name: str) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] != 3:
        raise ValueError(f"{name} must be (part, 3) rows of x, y, visible; got shape {kp.shape}")
    return kp


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


# ---------------------------------------------------------------------------------------------
# Correspondence: PCK@alpha (Hedlin et al. CUB protocol)

PCK_ALPHAS = (0.05, 0.1)  # DESIGN 8: PCK@0.05 and PCK@0.1
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
