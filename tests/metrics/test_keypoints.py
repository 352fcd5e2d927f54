"""Tests of diffparts.metrics.keypoints (NMI / ARI at visible keypoints) against small cases worked out by hand
(see the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.metrics import (
    KeypointPartScores,
    cluster_agreement,
    keypoint_nmi_ari,
    keypoint_part_labels,
)


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
