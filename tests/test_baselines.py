"""Tests of diffparts.baselines: flat-colour halves must come back exactly."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.baselines import kmeans_features, kmeans_pixels, upsample_labels
from diffparts.metrics import segmentation_scores


def halves_image(y: int = 8, x: int = 8) -> np.ndarray:
    """(y, x, 3) uint8: left half red, right half blue."""
    image = np.zeros((y, x, 3), dtype=np.uint8)
    image[:, : x // 2] = (200, 30, 30)
    image[:, x // 2 :] = (30, 30, 200)
    return image


def halves_truth(y: int = 8, x: int = 8) -> np.ndarray:
    gt = np.zeros((y, x), dtype=np.int64)
    gt[:, x // 2 :] = 1
    return gt


@pytest.mark.parametrize("position_weight", [0.0, 1.0])
def test_kmeans_pixels_recovers_two_flat_halves(position_weight):
    labels = kmeans_pixels(halves_image(), 2, position_weight=position_weight)
    assert labels.shape == (8, 8)
    assert labels.dtype == np.int64
    # One label per half, and the two differ.
    assert len(np.unique(labels[:, :4])) == 1 and len(np.unique(labels[:, 4:])) == 1
    assert labels[0, 0] != labels[0, 7]
    res = segmentation_scores([labels], [halves_truth()], 2)
    assert (res.pixel_accuracy, res.miou) == (1.0, 1.0)


def test_kmeans_pixels_is_deterministic_for_a_seed():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    a = kmeans_pixels(image, 3, random_state=1)
    b = kmeans_pixels(image, 3, random_state=1)
    np.testing.assert_array_equal(a, b)


def test_position_splits_a_flat_image():
    # One flat colour: only position can separate; with k=2 the cut is left/right or top/bottom
    # (square image), so each cluster is a contiguous half of 32 pixels.
    image = np.full((8, 8, 3), 128, dtype=np.uint8)
    labels = kmeans_pixels(image, 2, position_weight=1.0)
    assert sorted(np.bincount(labels.ravel())) == [32, 32]


def test_kmeans_features_recovers_halves_and_upsamples():
    # (c, y, x) = (4, 4, 4) latent: channel 0 is 1 on the left half, -1 on the right; the other
    # channels are constant (standardised to 0). Upsampled 4 -> 8 by nearest: each label fills
    # a 2 x 2 block, so the halves stay halves.
    features = np.zeros((4, 4, 4), dtype=np.float32)
    features[0, :, :2], features[0, :, 2:] = 1.0, -1.0
    features[1] = 7.0
    labels = kmeans_features(features, 2, out_size=(8, 8))
    assert labels.shape == (8, 8)
    res = segmentation_scores([labels], [halves_truth()], 2)
    assert (res.pixel_accuracy, res.miou) == (1.0, 1.0)
    assert kmeans_features(features, 2).shape == (4, 4)


def test_upsample_labels_nearest():
    labels = np.array([[0, 1], [2, 3]])
    np.testing.assert_array_equal(
        upsample_labels(labels, (4, 4)),
        [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]],
    )
    # Non-integer factor: output row i takes input row floor(i * 2 / 3) -> rows 0, 0, 1.
    np.testing.assert_array_equal(upsample_labels(labels, (3, 2)), [[0, 1], [0, 1], [2, 3]])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="uint8"):
        kmeans_pixels(halves_image().astype(np.float32), 2)
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        kmeans_pixels(np.zeros((8, 8), np.uint8), 2)
    with pytest.raises(ValueError, match="k=100"):
        kmeans_pixels(halves_image(), 100)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        kmeans_features(np.zeros((4, 4)), 2)
    with pytest.raises(ValueError, match="nan"):
        kmeans_features(np.full((1, 2, 2), np.nan), 2)
