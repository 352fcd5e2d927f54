"""Shared synthetic attention for the segment tests (DiffSeg and random-walk NCut).

``region_attention`` is a factory fixture: ``region_attention(labels, **kwargs)`` returns
``(attn (qy, qx, ky, kx) float32, labels (y, x))``; see ``diffparts.segment.synthetic``.
``four_regions`` is a ready 16 x 16 map of four quadrant regions.
"""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.segment.synthetic import make_region_attention, make_region_labels


def quadrant_labels(size: int = 16) -> np.ndarray:
    """(y, x) labels 0..3: the four quadrants of a size x size image."""
    half = size // 2
    labels = np.zeros((size, size), dtype=np.int64)
    labels[:half, half:] = 1
    labels[half:, :half] = 2
    labels[half:, half:] = 3
    return labels


@pytest.fixture
def region_attention():
    """Factory: region_attention(labels, sharpness=..., locality=..., seed=...) -> (attn, labels)."""

    def make(labels=None, **kwargs):
        labels = quadrant_labels() if labels is None else np.asarray(labels)
        return make_region_attention(labels, **kwargs), labels

    return make


@pytest.fixture
def four_regions():
    """(attn (16, 16, 16, 16), labels (16, 16)) with four quadrant regions."""
    labels = quadrant_labels(16)
    return make_region_attention(labels, seed=0), labels


@pytest.fixture
def voronoi_labels():
    """Factory: voronoi_labels(size, n_regions, seed) -> (y, x) labels 0..n-1."""
    return make_region_labels
