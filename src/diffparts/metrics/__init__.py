"""Measures of segmentation, part discovery and correspondence (docs/design.md §8 "Measures").

Arrays in, numbers out; numpy and scipy (scikit-learn for NMI/ARI, scikit-image for SSIM, imported lazily).
Every measure comes twice: a streaming accumulator with ``update(...)`` / ``result()`` that a
pipeline feeds one image (or pair) at a time, and a plain function over whole lists. Each
module's docstring states its protocol:

- ``segmentation``: per-image (or dataset-level) Hungarian-matched pixel accuracy and mIoU,
  TP/FP/FN summed over the dataset (the DiffSeg / DiffCut protocol);
- ``covering``: NFCovering of a hierarchy of predictions (HSG, Ke et al. 2022);
- ``keypoints``: NMI and ARI between keypoint identity and predicted part (SCOPS / PDiscoNet);
- ``correspondence``: PCK@alpha on same-class pairs, target-box normaliser (Hedlin et al.);
- ``occlusion``: missing-part detection (P/R/F1, ROC AUC) and completion (IoU of the restored
  category, PSNR / SSIM inside the hidden region; docs/design.md §5.7 "Occlusion");
- ``_checks``: the input checks they share.

Every public name is re-exported here.
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
from diffparts.metrics.occlusion import (
    DetectionScores,
    category_of_part,
    detection_scores,
    hidden_categories,
    interval_text,
    masked_psnr,
    masked_ssim,
    mean_difference,
    restoration_scores,
    roc_auc,
    roc_auc_difference,
    roc_auc_interval,
    ssim_window,
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
    "DetectionScores",
    "KeypointPartScores",
    "PCKResult",
    "PCKScores",
    "SegmentationResult",
    "SegmentationScores",
    "category_of_part",
    "cluster_agreement",
    "detection_scores",
    "hidden_categories",
    "interval_text",
    "keypoint_nmi_ari",
    "keypoint_part_labels",
    "masked_psnr",
    "masked_ssim",
    "mean_difference",
    "match_segments",
    "nf_covering",
    "nf_covering_scores",
    "normalized_keypoint_distances",
    "pck_scores",
    "region_best_iou",
    "relabel_to_classes",
    "restoration_scores",
    "roc_auc",
    "roc_auc_difference",
    "roc_auc_interval",
    "same_class_pairs",
    "segment_confusion",
    "segmentation_scores",
    "ssim_window",
]
