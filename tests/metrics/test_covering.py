"""Tests of diffparts.metrics.covering (NFCovering) against small cases worked out by hand
(see the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.metrics import (
    CoveringScores,
    nf_covering,
    nf_covering_scores,
    region_best_iou,
)


def row(*values) -> np.ndarray:
    """A (1, x) label map: the hand cases are easiest to read as one row of pixels."""
    return np.array([values], dtype=np.int64)


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
