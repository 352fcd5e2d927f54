"""Nested levels and HSG transition matrices (docs/design.md §5.4 "Hierarchy")."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from diffparts.segment.hierarchy import (
    check_nested,
    diffseg_levels,
    parents_from_levels,
    relabel,
    reproduce_levels,
    transition_matrices,
)
from diffparts.segment.synthetic import make_region_attention


def hand_levels() -> np.ndarray:
    """(3, 4, 4): four quadrant segments -> left/right halves -> one segment."""
    fine = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    mid = np.array([[0, 0, 1, 1]] * 4)
    coarse = np.zeros((4, 4), dtype=int)
    return np.stack([fine, mid, coarse])


def test_transition_matrices_of_nested_levels():
    c01, c12 = transition_matrices(hand_levels())
    np.testing.assert_array_equal(c01, [[1, 0], [0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(c12, [[1], [1]])


def test_reproduce_levels_from_finest():
    levels = hand_levels()
    again = reproduce_levels(levels[0], transition_matrices(levels))
    np.testing.assert_array_equal(again, levels)
    assert again.dtype == np.int32


def test_soft_transitions_when_not_nested():
    fine = np.array([[0, 0, 0, 0]])
    coarse = np.array([[0, 0, 0, 1]])
    (c,) = transition_matrices(np.stack([fine, coarse]))
    np.testing.assert_allclose(c, [[0.75, 0.25]])  # P(G_1 = b | G_0 = 0)
    np.testing.assert_allclose(c.sum(1), 1.0)


def test_check_nested_names_the_straddling_segment():
    check_nested(hand_levels())
    bad = hand_levels()
    bad[1] = np.array([[0, 1, 1, 1]] * 4)  # fine segment 0 now straddles halves 0 and 1
    with pytest.raises(ValueError, match=r"segment 0 of level 0 straddles segments \[0, 1\]"):
        check_nested(bad)


def test_levels_must_be_labelled_0_to_k():
    levels = hand_levels()
    levels[2] = 5
    with pytest.raises(ValueError, match="level 2"):
        transition_matrices(levels)
    with pytest.raises(ValueError, match="shape"):
        check_nested(np.zeros((4, 4), dtype=int))
    with pytest.raises(ValueError, match="expected"):
        reproduce_levels(levels[0], [np.ones((3, 1))])


def test_parents_and_relabel():
    parents = parents_from_levels(hand_levels())
    assert [p.tolist() for p in parents] == [[0, 1, 0, 1], [0, 0]]
    np.testing.assert_array_equal(relabel(np.array([[7, 3], [3, 9]])), [[1, 0], [0, 2]])


def nested_regions(size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Eight vertical stripes (fine truth) grouped pairwise into four (coarse truth)."""
    fine = np.repeat(np.arange(8)[None, :], size, axis=0).repeat(size // 8, axis=1)
    return fine, fine // 2


def test_diffseg_sweep_is_nested_and_coarsens():
    fine_truth, _ = nested_regions()
    attn = make_region_attention(fine_truth, sharpness=8.0, locality=6.0, seed=0)
    levels, transitions = diffseg_levels(attn, [0.3, 1.0, 3.0, 10.0], rounds=2)
    check_nested(levels)
    counts = [int(lv.max()) + 1 for lv in levels]
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    np.testing.assert_array_equal(reproduce_levels(levels[0], transitions), levels)
    for c in transitions:
        np.testing.assert_allclose(c.sum(1), 1.0)


def test_diffseg_sweep_recovers_known_regions():
    # one region set per level: blocky attention over 4 regions; every threshold finds them
    labels = np.zeros((16, 16), dtype=int)
    labels[:, 8:] = 1
    labels[8:, :] += 2
    attn = make_region_attention(labels, sharpness=10.0, noise=0.0, locality=0.0, boundary_blur=0.0)
    levels, _ = diffseg_levels(attn, [1.1, 1.1], rounds=2, out_size=32)
    assert levels.shape == (2, 32, 32)
    truth = np.kron(labels, np.ones((2, 2), dtype=int))
    for lv in levels:
        assert adjusted_rand_score(truth.ravel(), lv.ravel()) == 1.0


def test_diffseg_sweep_refuses_decreasing_thresholds():
    attn = make_region_attention(np.zeros((4, 4), dtype=int))
    with pytest.raises(ValueError, match="non-decreasing"):
        diffseg_levels(attn, [2.0, 1.0])
    with pytest.raises(ValueError, match="at least one"):
        diffseg_levels(attn, [])


def test_ncut_levels_are_nested(region_attention):
    ncut = pytest.importorskip("diffparts.segment.ncut")
    attn, _ = region_attention(sharpness=8.0, locality=1.0, seed=0)
    model = ncut.RecursiveNCut(tau=0.5, max_depth=3, min_size=4, random_state=0).fit(attn)
    check_nested(model.level_labels_)
    np.testing.assert_array_equal(
        reproduce_levels(model.level_labels_[0], transition_matrices(model.level_labels_)),
        model.level_labels_,
    )


def test_segment_levels_dispatches_and_refuses_unknown_methods(region_attention):
    from diffparts.segment.hierarchy import segment_levels

    attn, labels = region_attention(sharpness=10.0, noise=0.0, locality=0.0, boundary_blur=0.0)
    levels = segment_levels(attn, "diffseg", level_thresholds=[1.1, 1.1], rounds=2, out_size=(32, 32))
    assert levels.shape == (2, 32, 32)
    assert adjusted_rand_score(np.kron(labels, np.ones((2, 2), dtype=int)).ravel(), levels[0].ravel()) == 1.0
    ncut_levels = segment_levels(attn, "ncut", out_size=(32, 32), ncut_params={"max_depth": 2, "random_state": 0})
    assert ncut_levels.shape[1:] == (32, 32)
    check_nested(ncut_levels)
    with pytest.raises(ValueError, match="method"):
        segment_levels(attn, "kmeans")
