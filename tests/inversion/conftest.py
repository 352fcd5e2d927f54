"""Fixtures of the embeddings-stage tests (``fresh_pipe`` and ``parts_store`` live in tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture()
def examples():
    """Six 32 px images with a part mask in the upper left quarter."""
    from diffparts.inversion.data import CategoryExamples

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((6, 32, 32), np.float32)
    masks[:, 4:14, 6:16] = 1.0
    return CategoryExamples(1, np.arange(6), images, masks)
