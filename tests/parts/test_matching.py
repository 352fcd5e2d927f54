"""Keypoint transfer by feature matching (diffparts.parts.matching)."""

import numpy as np
import pytest

from diffparts.parts.matching import dense_features, match_points, transfer_by_features


def unique_features(side: int = 8, channels: int = 16, seed: int = 0) -> np.ndarray:
    """(channel, y, x) random features: every pixel's unit vector differs from every other's."""
    return np.random.default_rng(seed).normal(size=(channels, side, side)).astype(np.float32)


def test_match_returns_the_exact_point_of_a_shifted_copy():
    src = unique_features()
    dy, dx = 2, 3
    tgt = np.roll(src, (dy, dx), axis=(1, 2))          # target pixel (y + dy, x + dx) = source (y, x)
    points = np.array([[1.5, 0.5], [3.5, 2.5], [4.5, 5.5]])   # pixel centres, image = grid = 8 x 8
    pred = match_points(src, tgt, points, (8, 8), (8, 8), (8, 8))
    np.testing.assert_array_equal(pred, (points + [dx, dy]) % 8)
    # image pixels twice the grid: the same cells, in image pixels
    pred = match_points(src, tgt, points * 2, (16, 16), (16, 16), (8, 8))
    np.testing.assert_array_equal(pred, ((points + [dx, dy]) % 8) * 2)


def test_dense_features_are_unit_vectors_on_the_grid():
    dense = dense_features(unique_features(side=4), (8, 8))
    assert dense.shape == (8, 8, 16)
    np.testing.assert_allclose(np.linalg.norm(dense, axis=-1), 1.0, atol=1e-5)


def test_within_part_restricts_the_search_and_falls_back_to_relative_position():
    src = unique_features()
    tgt = src.copy()
    tgt[:, 6, 6] = src[:, 1, 1]                        # a decoy: the best match of (1, 1) sits outside part 1
    tgt[:, 1, 1] = 0.9 * src[:, 1, 1] + 0.1 * src[:, 2, 2]
    part = np.zeros((8, 8), np.int64)
    part[0:4, 0:4] = 1                                 # part 1: top-left, the same in both images
    part[4:8, 4:8] = 2
    box = (0, 0, 8, 8)
    points = np.array([[1.5, 1.5], [0.5, 6.5]])        # in part 1; on background
    globally, used = transfer_by_features(src, tgt, points, part, part, box, box, (8, 8), (8, 8), within="image")
    np.testing.assert_array_equal(globally[0], [6.5, 6.5])     # the decoy wins over the whole image
    assert (used == -1).all()
    within, used = transfer_by_features(src, tgt, points, part, part, box, box, (8, 8), (8, 8), within="part",
                                        flip=False)
    np.testing.assert_array_equal(within[0], [1.5, 1.5])       # the part decides where, features decide the point
    np.testing.assert_allclose(within[1], [0.5, 6.5])          # background: same relative place in the box
    assert used.tolist() == [1, 0]
    with pytest.raises(ValueError, match="within must be one of"):
        transfer_by_features(src, tgt, points, part, part, box, box, (8, 8), (8, 8), within="bogus")


def test_large_part_maps_are_matched_on_a_subsampled_grid():
    """SD-1.5-sized maps (512 x 512) are matched on at most MATCH_GRID_MAX a side: the point
    lands on the right cell, within one subsampling step of the full-grid answer."""
    from diffparts.parts.matching import MATCH_GRID_MAX, match_grid

    assert match_grid(np.zeros((64, 64))).shape == (64, 64)                  # the toy's maps: untouched
    assert match_grid(np.zeros((512, 512))).shape == (MATCH_GRID_MAX, MATCH_GRID_MAX)
    assert match_grid(np.zeros((500, 300))).shape == (125, 75)
    src = unique_features(side=8)
    tgt = np.roll(src, (2, 3), axis=(1, 2))
    maps = np.zeros((512, 512), np.int64)
    points = np.array([[96.0, 32.0], [224.0, 160.0]])                      # image = 512 px, cells of 64 px
    pred, used = transfer_by_features(src, tgt, points, maps, maps, (0, 0, 512, 512), (0, 0, 512, 512),
                                      (512, 512), (512, 512), within="image")
    truth = points + [3 * 64, 2 * 64]
    assert (used == -1).all() and np.abs(pred - truth).max() <= 512 / MATCH_GRID_MAX
