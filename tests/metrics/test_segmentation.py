"""Tests of diffparts.metrics.segmentation (Segmentation: per-image and dataset-level Hungarian matching) against small cases worked out by hand
(see the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.metrics import (
    SegmentationScores,
    match_segments,
    relabel_to_classes,
    segment_confusion,
    segmentation_scores,
)


def row(*values) -> np.ndarray:
    """A (1, x) label map: the hand cases are easiest to read as one row of pixels."""
    return np.array([values], dtype=np.int64)


def test_perfect_prediction_scores_one():
    gt = np.array([[0, 0, 1], [1, 2, 2]])
    res = segmentation_scores([gt], [gt], n_classes=3)
    assert res.pixel_accuracy == 1.0
    assert res.miou == 1.0
    np.testing.assert_array_equal(res.tp, [2, 2, 2])
    np.testing.assert_array_equal(res.fp + res.fn, [0, 0, 0])


def test_permuted_labels_score_one():
    # Same partition, arbitrary label values (5, 3, 9 for classes 0, 1, 2): matching undoes it.
    gt = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[5, 5, 3], [3, 9, 9]])
    res = segmentation_scores([pred], [gt], n_classes=3)
    assert res.pixel_accuracy == 1.0
    assert res.miou == 1.0
    # Dataset-level: the same permutation in every image is still perfect.
    pred2 = np.array([[9, 3, 3], [5, 5, 5]])
    gt2 = np.array([[2, 1, 1], [0, 0, 0]])
    res = segmentation_scores([pred, pred2], [gt, gt2], n_classes=3, matching="dataset")
    assert (res.pixel_accuracy, res.miou) == (1.0, 1.0)


def test_more_segments_than_classes():
    # gt    0 0 0 0 0 1 1 1   (class 0: 5 px, class 1: 3 px)
    # pred  0 0 0 0 1 1 2 2   (3 segments)
    # confusion (class x segment):  c0: [4, 1, 0]   c1: [0, 1, 2]
    # Hungarian: c0->s0 (4) + c1->s2 (2) = 6 beats c0->s0 + c1->s1 = 5.
    # TP = [4, 2]; FN = [5-4, 3-2] = [1, 1]; FP = [|s0|-4, |s2|-2] = [0, 0].
    # The two pixels of unmatched s1 are wrong: accuracy = 6/8 = 0.75.
    # IoU = [4/5, 2/3], mIoU = (0.8 + 0.6667)/2 = 0.7333.
    res = segmentation_scores([row(0, 0, 0, 0, 1, 1, 2, 2)], [row(0, 0, 0, 0, 0, 1, 1, 1)], 2)
    np.testing.assert_array_equal(res.tp, [4, 2])
    np.testing.assert_array_equal(res.fn, [1, 1])
    np.testing.assert_array_equal(res.fp, [0, 0])
    assert res.pixel_accuracy == pytest.approx(0.75)
    np.testing.assert_allclose(res.iou, [0.8, 2 / 3])
    assert res.miou == pytest.approx((0.8 + 2 / 3) / 2)


def test_fewer_segments_than_classes():
    # gt    0 0 0 1 1 2 2 2   (3 classes)
    # pred  0 0 0 0 0 1 1 1   (2 segments)
    # confusion: c0: [3, 0]  c1: [2, 0]  c2: [0, 3]
    # Hungarian: c0->s0 (3), c2->s1 (3); c1 gets only an empty padding column (no segment).
    # TP = [3, 0, 3]; FN = [0, 2, 0]; FP = [|s0|-3 = 2, 0, 0].
    # accuracy = 6/8 = 0.75; IoU = [3/5, 0/2, 3/3] = [0.6, 0, 1]; mIoU = 1.6/3 = 0.5333.
    res = segmentation_scores([row(0, 0, 0, 0, 0, 1, 1, 1)], [row(0, 0, 0, 1, 1, 2, 2, 2)], 3)
    np.testing.assert_array_equal(res.tp, [3, 0, 3])
    np.testing.assert_array_equal(res.fn, [0, 2, 0])
    np.testing.assert_array_equal(res.fp, [2, 0, 0])
    assert res.pixel_accuracy == pytest.approx(0.75)
    np.testing.assert_allclose(res.iou, [0.6, 0.0, 1.0])
    assert res.miou == pytest.approx(1.6 / 3)
    np.testing.assert_array_equal(match_segments(np.array([[3, 0], [2, 0], [0, 3]])), [0, -1, 1])


def test_ignored_pixels_are_left_out():
    # gt    0 0 255 255 1 1 ; pred 0 0 1 1 1 1 : over the 4 labelled pixels it is perfect.
    gt, pred = row(0, 0, 255, 255, 1, 1), row(0, 0, 1, 1, 1, 1)
    res = segmentation_scores([pred], [gt], 2, ignore_index=255)
    assert (res.pixel_accuracy, res.miou, res.n_pixels) == (1.0, 1.0, 4)
    # A mask does the same job (True = evaluate).
    mask = np.array([[True, True, False, False, True, True]])
    res = segmentation_scores([pred], [row(0, 0, 0, 0, 1, 1)], 2, ignore_index=None, masks=[mask])
    assert (res.pixel_accuracy, res.n_pixels) == (1.0, 4)
    # An image with no labelled pixel adds nothing (and does not fail), in both matchings.
    for matching in ("image", "dataset"):
        scores = SegmentationScores(2, matching=matching)
        scores.update(row(0, 1), row(255, 255))
        scores.update(row(0, 1), row(0, 1))
        res = scores.result()
        assert (res.pixel_accuracy, res.n_pixels, res.n_images) == (1.0, 2, 2)
    # Without an ignore index, 255 is a bad class label and is named.
    with pytest.raises(ValueError, match="255"):
        segmentation_scores([pred], [gt], 2, ignore_index=None)


def test_counts_are_summed_over_images_not_averaged():
    # Image A = the "more segments" case: TP [4, 2], FN [1, 1], FP [0, 0] (8 px).
    # Image B: gt 0 1, pred 1 0 -> perfect after matching: TP [1, 1] (2 px).
    # Sums: TP [5, 3], FN [1, 1], FP [0, 0]; accuracy 8/10; IoU [5/6, 3/4]; mIoU 0.79167
    # (averaging the per-image mIoUs would give (0.7333 + 1)/2 = 0.8667 instead).
    scores = SegmentationScores(n_classes=2)
    scores.update(row(0, 0, 0, 0, 1, 1, 2, 2), row(0, 0, 0, 0, 0, 1, 1, 1))
    scores.update(row(1, 0), row(0, 1))
    res = scores.result()
    np.testing.assert_array_equal(res.tp, [5, 3])
    assert res.pixel_accuracy == pytest.approx(0.8)
    assert res.miou == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert res.n_images == 2


def test_absent_class_can_be_matched_to_an_extra_segment():
    # Reference behaviour (DiffSeg utils.hungarian_matching): all n_classes rows are matched.
    # gt 0 0 0 1 1 1 (class 2 absent), pred 0 0 0 1 1 2
    # confusion c0: [3,0,0] c1: [0,2,1] c2: [0,0,0] -> c0->s0, c1->s1, c2->s2 (square).
    # TP [3,2,0]; FN [0,1,0]; FP [0,0,1]: s2's pixel is an FP of absent class 2.
    # accuracy 5/6; IoU [1, 2/3, 0]; mIoU 5/9.
    res = segmentation_scores([row(0, 0, 0, 1, 1, 2)], [row(0, 0, 0, 1, 1, 1)], 3)
    np.testing.assert_array_equal(res.fp, [0, 0, 1])
    assert res.pixel_accuracy == pytest.approx(5 / 6)
    assert res.miou == pytest.approx(5 / 9)
    # Matching present classes only: s2 stays unmatched; its pixel is still wrong (FN of
    # class 1) but no FP of class 2, whose IoU is undefined: mIoU = (1 + 2/3) / 2 = 5/6.
    res = segmentation_scores(
        [row(0, 0, 0, 1, 1, 2)], [row(0, 0, 0, 1, 1, 1)], 3, match_absent_classes=False
    )
    np.testing.assert_array_equal(res.fp, [0, 0, 0])
    np.testing.assert_array_equal(res.fn, [0, 1, 0])
    assert res.pixel_accuracy == pytest.approx(5 / 6)
    assert np.isnan(res.iou[2])
    assert res.miou == pytest.approx(5 / 6)
    np.testing.assert_array_equal(
        match_segments(np.array([[3, 0, 0], [0, 2, 1], [0, 0, 0]]), present_only=True), [0, 1, -1]
    )


def test_dataset_level_matching_is_stricter():
    # A: gt 0 0 1 1,      pred 0 0 1 1        (label 0 = class 0)
    # B: gt 0 0 0 0 1 1,  pred 1 1 1 1 0 0    (label 0 = class 1: inconsistent with A)
    # Per image both are perfect. Summed confusion: c0: [2, 4]  c1: [2, 2].
    # One matching: c0->s1, c1->s0 gives 6 > 4. TP [4, 2]; FN [6-4, 4-2] = [2, 2];
    # FP [col s1 6 - 4, col s0 4 - 2] = [2, 2]. accuracy 6/10; IoU [4/8, 2/6]; mIoU 0.41667.
    preds = [row(0, 0, 1, 1), row(1, 1, 1, 1, 0, 0)]
    gts = [row(0, 0, 1, 1), row(0, 0, 0, 0, 1, 1)]
    per_image = segmentation_scores(preds, gts, 2)
    assert (per_image.pixel_accuracy, per_image.miou) == (1.0, 1.0)
    scores = SegmentationScores(2, matching="dataset")
    for p, g in zip(preds, gts):
        scores.update(p, g)
    res = scores.result()
    np.testing.assert_array_equal(res.tp, [4, 2])
    np.testing.assert_array_equal(res.fp, [2, 2])
    np.testing.assert_array_equal(res.fn, [2, 2])
    assert res.pixel_accuracy == pytest.approx(0.6)
    assert res.miou == pytest.approx((0.5 + 1 / 3) / 2)
    np.testing.assert_array_equal(scores.dataset_matching(), [1, 0])


def test_dataset_level_rejects_negative_labels():
    scores = SegmentationScores(2, matching="dataset")
    with pytest.raises(ValueError, match="-1"):
        scores.update(row(-1, 0), row(0, 1))


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        segmentation_scores([np.zeros((2, 3), int)], [np.zeros((3, 2), int)], 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="matching"):
        SegmentationScores(2, matching="global")
    with pytest.raises(ValueError, match="float"):
        segment_confusion(np.zeros((2, 2)), np.zeros((2, 2), int), 2)


def test_relabel_to_classes_marks_unmatched_segments():
    # The "more segments" case: s0 -> class 0, s2 -> class 1, s1 unmatched (-1).
    out = relabel_to_classes(row(0, 0, 0, 0, 1, 1, 2, 2), row(0, 0, 0, 0, 0, 1, 1, 1), 2)
    np.testing.assert_array_equal(out, row(0, 0, 0, 0, -1, -1, 1, 1))


def test_segmentation_result_as_dict_is_json_ready():
    import json

    res = segmentation_scores([row(0, 0)], [row(0, 0)], 2)
    d = json.loads(json.dumps(res.as_dict()))
    assert d["iou"] == [1.0, None]  # class 1 never seen: undefined, left out of the mean
    assert d["miou"] == 1.0
