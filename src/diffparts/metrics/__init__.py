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

Modules: ``segmentation`` (Hungarian-matched pixel accuracy / mIoU), ``covering``
(NFCovering), ``keypoints`` (NMI/ARI at keypoints), ``correspondence`` (PCK); ``_checks`` holds
the input checks they share. Every public name is re-exported here.
"""

from diffparts.metrics._checks import IGNORE_INDEX
from diffparts.metrics.correspondence import (
    PCK_ALPHAS,
    PCKResult,
    PCKScores,
    normalized_keypoint_distances,
    pck_scores,
    same_class_pairs,
)
from diffparts.metrics.covering import (
    CoveringResult,
    CoveringScores,
    nf_covering,
    nf_covering_scores,
    region_best_iou,
)
from diffparts.metrics.keypoints import (
    ClusterAgreement,
    KeypointPartScores,
    cluster_agreement,
    keypoint_nmi_ari,
    keypoint_part_labels,
)
from diffparts.metrics.segmentation import (
    MATCHINGS,
    SegmentationResult,
    SegmentationScores,
    match_segments,
    relabel_to_classes,
    segment_confusion,
    segmentation_scores,
)

__all__ = [
    "IGNORE_INDEX",
    "MATCHINGS",
    "PCK_ALPHAS",
    "ClusterAgreement",
    "CoveringResult",
    "CoveringScores",
    "KeypointPartScores",
    "PCKResult",
    "PCKScores",
    "SegmentationResult",
    "SegmentationScores",
    "cluster_agreement",
    "keypoint_nmi_ari",
    "keypoint_part_labels",
    "match_segments",
    "nf_covering",
    "nf_covering_scores",
    "normalized_keypoint_distances",
    "pck_scores",
    "region_best_iou",
    "relabel_to_classes",
    "same_class_pairs",
    "segment_confusion",
    "segmentation_scores",
]
