"""Tests of diffparts.metrics.correspondence (PCK and same-class pairs) against small cases worked out by hand
(see the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.metrics import (
    PCKScores,
    normalized_keypoint_distances,
    pck_scores,
    same_class_pairs,
)


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
