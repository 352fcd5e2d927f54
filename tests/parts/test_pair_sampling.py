"""Same-class pair sampling of the parts stage's scoring: the old pairs, in linear time (issue 20, item 1)."""

import numpy as np
import pytest

from diffparts.metrics import same_class_pairs
from diffparts.parts.scoring import sample_same_class_pairs


@pytest.mark.parametrize("n, classes, cap", [(12, 3, None), (60, 4, 100), (200, 7, 2000), (90, 1, 500), (6, 6, 3)])
def test_same_pairs_as_the_matrix_version(n, classes, cap):
    ids = np.random.default_rng(n).integers(0, classes, n)
    pairs, total = sample_same_class_pairs(ids, cap, random_state=5)
    expected = same_class_pairs(ids, max_pairs=cap, random_state=5)
    assert total == len(same_class_pairs(ids))
    np.testing.assert_array_equal(pairs, expected)
    assert (ids[pairs[:, 0]] == ids[pairs[:, 1]]).all() and (pairs[:, 0] != pairs[:, 1]).all()


def test_cap_and_seed_at_a_size_the_matrix_would_not_fit():
    ids = np.arange(200_000) % 3  # 1.3e10 same-class pairs: no (image, image) matrix
    pairs, total = sample_same_class_pairs(ids, 2000, random_state=0)
    assert total == sum(c * (c - 1) for c in np.bincount(ids))
    assert pairs.shape == (2000, 2) and len({tuple(p) for p in pairs}) == 2000
    assert (ids[pairs[:, 0]] == ids[pairs[:, 1]]).all() and (pairs[:, 0] != pairs[:, 1]).all()
    again, _ = sample_same_class_pairs(ids, 2000, random_state=0)
    np.testing.assert_array_equal(pairs, again)
