"""Tests of diffparts.metrics against small cases worked out by hand (see the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.metrics import (
    CoveringScores,
    KeypointPartScores,
    PCKScores,
    SegmentationScores,
    cluster_agreement,
    keypoint_nmi_ari,
    keypoint_part_labels,
    match_segments,
    nf_covering,
    nf_covering_scores,
    normalized_keypoint_distances,
    pck_scores,
    region_best_iou,
    relabel_to_classes,
    same_class_pairs,
    segment_confusion,
    segmentation_scores,
)


def row(*values) -> np.ndarray:
    """A (1, x) label map: the hand cases are easiest to read as one row of pixels."""
    return np.array([values], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# Segmentation, per-image Hungarian


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


# ---------------------------------------------------------------------------------------------
# NFCovering


GT_COVER = np.array([[0, 0, 1, 1], [0, 0, 2, 2]])  # background 4 px, region 1: 2 px, region 2: 2 px
LEVELS_COVER = np.array(
    [
        [[0, 0, 1, 1], [0, 0, 1, 2]],  # level 0 (fine): s1 = 3 px, s2 = 1 px
        [[0, 0, 1, 1], [0, 0, 1, 1]],  # level 1 (coarse): s1 = 4 px
    ]
)


def test_nf_covering_by_hand():
    # Region 1 (2 px): level 0 s1: inter 2, union 3 -> 2/3; level 1 s1: 2/4. Best 2/3.
    # Region 2 (2 px): level 0 s1: 1/4, s2: 1/2; level 1 s1: 2/4. Best 1/2.
    # Background not scored: NFCovering = (2/3 + 1/2) / 2 = 7/12.
    ids, best = region_best_iou(LEVELS_COVER, GT_COVER)
    np.testing.assert_array_equal(ids, [1, 2])
    np.testing.assert_allclose(best, [2 / 3, 1 / 2])
    assert nf_covering(LEVELS_COVER, GT_COVER) == pytest.approx(7 / 12)
    # Scoring background too: its best IoU is 1 (s0 equals it): (1 + 2/3 + 1/2) / 3 = 13/18.
    assert nf_covering(LEVELS_COVER, GT_COVER, background_index=None) == pytest.approx(13 / 18)
    # A single level is a hierarchy of one: level 1 alone gives (1/2 + 1/2) / 2.
    assert nf_covering(LEVELS_COVER[1], GT_COVER) == pytest.approx(0.5)


def test_nf_covering_means_over_regions_then_images():
    # Image 1: 7/12 (2 regions); image 2: perfect, 1 region -> 1.0; image 3: no foreground,
    # skipped. Mean over images (19/24), not over the 3 regions pooled ((2/3+1/2+1)/3).
    scores = CoveringScores()
    scores.update(LEVELS_COVER, GT_COVER)
    scores.update(np.array([[0, 5]]), np.array([[0, 3]]))
    scores.update(np.array([[0, 1]]), np.array([[0, 0]]))
    res = scores.result()
    assert res.covering == pytest.approx(19 / 24)
    assert (res.n_images, res.n_regions, res.n_skipped) == (2, 3, 1)
    res2 = nf_covering_scores([LEVELS_COVER, np.array([[0, 5]])], [GT_COVER, np.array([[0, 3]])])
    assert res2.covering == pytest.approx(19 / 24)


def test_nf_covering_ignores_unlabelled_pixels():
    # gt 1 1 255, one predicted region over all 3 pixels: over labelled pixels it is exact.
    assert nf_covering(row(0, 0, 0), row(1, 1, 255)) == 1.0
    with pytest.raises(ValueError, match=r"\(1, 3\).*\(1, 2\)"):
        nf_covering(row(0, 0, 0), row(1, 1))


# ---------------------------------------------------------------------------------------------
# NMI / ARI at visible keypoints


def test_keypoint_part_labels_reads_the_map_with_scaling():
    part_map = np.array([[0, 1], [2, 3]])  # 2 x 2 map for a 100 x 100 image
    kp = np.array(
        [
            [75.0, 10.0, 1.0],  # col floor(75*2/100)=1, row 0 -> 1
            [10.0, 60.0, 1.0],  # col 0, row 1 -> 2
            [50.0, 50.0, 0.0],  # invisible: dropped
            [100.0, 100.0, 1.0],  # on the far border: clipped to (1, 1) -> 3
        ]
    )
    ids, labels = keypoint_part_labels(part_map, kp, image_shape=(100, 100))
    np.testing.assert_array_equal(ids, [0, 1, 3])
    np.testing.assert_array_equal(labels, [1, 2, 3])
    with pytest.raises(ValueError, match="outside"):
        keypoint_part_labels(part_map, np.array([[101.0, 0.0, 1.0]]), image_shape=(100, 100))


def test_nmi_ari_perfect_with_renamed_parts():
    # Keypoint k always falls on part label 10 + k (names differ, partition equal): 1 and 1.
    maps = [np.array([[10, 11, 12]]), np.array([[12, 11, 10]])]
    kps = [
        np.array([[0.5, 0.5, 1], [1.5, 0.5, 1], [2.5, 0.5, 1]]),
        np.array([[2.5, 0.5, 1], [1.5, 0.5, 1], [0.5, 0.5, 1]]),
    ]
    res = keypoint_nmi_ari(maps, kps)
    assert res.nmi == pytest.approx(1.0)
    assert res.ari == pytest.approx(1.0)
    assert (res.n_keypoints, res.n_images) == (6, 2)


def test_nmi_ari_independent():
    # Image A: keypoint 0 on part 0, keypoint 1 on part 1; image B: the other way round.
    # Pooled identity [0,1,0,1], labels [0,1,1,0]: every contingency cell is 1 -> MI = 0, NMI 0.
    # ARI: sum C(n_ij,2) = 0; rows sum C(2,2)*2 = 2; cols 2; C(4,2) = 6; expected 2*2/6 = 2/3;
    # max (2+2)/2 = 2; ARI = (0 - 2/3) / (2 - 2/3) = -0.5.
    scores = KeypointPartScores()
    part_map = np.array([[0, 1]])
    scores.update(part_map, np.array([[0.5, 0.5, 1], [1.5, 0.5, 1]]))
    scores.update(part_map, np.array([[1.5, 0.5, 1], [0.5, 0.5, 1]]))
    res = scores.result()
    assert res.nmi == pytest.approx(0.0, abs=1e-12)
    assert res.ari == pytest.approx(-0.5)


def test_nmi_ari_partial_by_hand():
    # identity [0,0,1,1], labels [0,0,0,1].
    # ARI: cells C(2,2)+0+0 = 1; rows 1+1 = 2; cols C(3,2)+0 = 3; expected 2*3/6 = 1;
    # max (2+3)/2 = 2.5 -> ARI = (1-1)/(2.5-1) = 0.
    # NMI: H(id) = ln 2 = 0.693147; H(lab) = -(.75 ln .75 + .25 ln .25) = 0.562335;
    # MI = .5 ln(4/3) + .25 ln(2/3) + .25 ln 2 = 0.215762; NMI = MI / mean(H) = 0.34372.
    nmi, ari = cluster_agreement([0, 0, 1, 1], [0, 0, 0, 1])
    assert ari == pytest.approx(0.0, abs=1e-12)
    assert nmi == pytest.approx(0.34372, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# PCK


def test_pck_threshold_boundary_and_target_box():
    # Target box (x, y, w, h) = (0, 0, 100, 40): normaliser max(w, h) = 100 (of the TARGET).
    # alpha 0.1 -> 10 px, alpha 0.05 -> 5 px, both inclusive.
    target = np.array(
        [[50, 50, 1], [20, 20, 1], [0, 0, 1], [5, 5, 1], [7, 7, 0], [30, 30, 1]], float
    )
    source = np.array(
        [[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 1, 1], [1, 1, 1]], float
    )
    predicted = np.array(
        [
            [56, 58],  # dist 10 (6-8-10): exactly at 0.1 -> correct; wrong at 0.05
            [20, 30.5],  # dist 10.5 -> wrong at both
            [3, 4],  # dist 5: exactly at 0.05 -> correct at both
            [5, 5],  # invisible in source -> not counted
            [7, 7],  # invisible in target -> not counted
            [np.nan, np.nan],  # no prediction -> counted, wrong
        ]
    )
    ids, dist = normalized_keypoint_distances(predicted, source, target, (0, 0, 100, 40))
    np.testing.assert_array_equal(ids, [0, 1, 2, 5])
    np.testing.assert_allclose(dist, [0.1, 0.105, 0.05, np.inf])
    scores = PCKScores(alphas=(0.05, 0.1))
    scores.update(predicted, source, target, (0, 0, 100, 40))
    res = scores.result()
    assert res.pck[0.1] == pytest.approx(2 / 4)
    assert res.pck[0.05] == pytest.approx(1 / 4)
    assert res.n_keypoints == 4
    # Had the normaliser been the height (40), keypoint 0 (10 px) would fail at 0.1 (4 px).


def test_pck_pools_keypoints_and_reports_per_pair_mean():
    # Pair 1: keypoints 0, 1 visible; one correct at 0.1 -> 1/2. Pair 2: one keypoint, correct.
    # Tall target box (w 20, h 50): normaliser 50, 0.1 -> 5 px.
    # Pooled: 2/3; mean over pairs: (1/2 + 1) / 2 = 3/4.
    kp = np.array([[10, 10, 1], [40, 40, 1]], float)
    res = pck_scores(
        predicted=[np.array([[10, 15], [40, 46]], float), np.array([[13, 14], [0, 0]], float)],
        source_keypoints=[kp, np.array([[10, 10, 1], [40, 40, 0]], float)],
        target_keypoints=[kp, kp],
        target_bboxes=[(10, 10, 20, 50), (10, 10, 20, 50)],
        alphas=(0.1,),
    )
    # pair 1: dists 5 (correct, boundary) and 6 (wrong); pair 2: dist 5 (3-4-5, correct).
    assert res.pck[0.1] == pytest.approx(2 / 3)
    assert res.pck_per_pair[0.1] == pytest.approx(3 / 4)
    assert (res.n_pairs, res.n_keypoints) == (2, 3)


def test_pck_bad_inputs():
    kp = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        normalized_keypoint_distances(np.zeros((3, 2)), kp, kp, (0, 0, 1, 1))
    with pytest.raises(ValueError, match="positive"):
        normalized_keypoint_distances(np.zeros((2, 2)), kp, kp, (0, 0, 0, 0))


def test_same_class_pairs():
    pairs = same_class_pairs([3, 5, 3, 3])
    np.testing.assert_array_equal(pairs, [[0, 2], [0, 3], [2, 0], [2, 3], [3, 0], [3, 2]])
    some = same_class_pairs([3, 5, 3, 3], max_pairs=2, random_state=1)
    assert some.shape == (2, 2)
    assert {tuple(p) for p in some} <= {tuple(p) for p in pairs}
    np.testing.assert_array_equal(some, same_class_pairs([3, 5, 3, 3], max_pairs=2, random_state=1))
    assert same_class_pairs([1, 2]).shape == (0, 2)
