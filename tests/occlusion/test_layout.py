"""Where a lost category is looked for (occlusion.layout): constructed maps whose answer is known,
a bird whose tail the assignment calls background."""

import numpy as np
import pytest

from diffparts.occlusion.layout import layout_prior, lost_places, object_frame, place_shares

K1 = 4


def _map(dy: int = 0, dx: int = 0, tail: bool = True) -> np.ndarray:
    """40 x 40: body (1), head (2) at its top left, tail (3) off its right side; shifted by (dy, dx)."""
    m = np.zeros((40, 40), np.int16)
    m[15 + dy:30 + dy, 8 + dx:32 + dx] = 1
    m[8 + dy:15 + dy, 8 + dx:16 + dx] = 2
    if tail:
        m[20 + dy:26 + dy, 32 + dx:38 + dx] = 3
    return m


@pytest.fixture(scope="module")
def prior():
    rng = np.random.default_rng(0)
    return layout_prior([_map(*rng.integers(-2, 3, 2)) for _ in range(12)], K1)


def test_the_prior_knows_where_each_category_lies(prior):
    assert prior.images == 12 and prior.share.shape[0] == K1
    shares = place_shares(prior, _map(1, -1))
    m = _map(1, -1)
    for k in range(1, K1):                                  # each category is the likeliest in its own region
        assert (shares.argmax(0)[m == k] == k).mean() > 0.7
    assert shares[:, 0, 0].sum() == pytest.approx(1.0, abs=1e-4) and shares[0, 0, 0] > 0.99   # far corner: background
    assert object_frame(np.zeros((5, 5))) is None and not place_shares(prior, np.zeros((5, 5), int)).any()


def test_a_lost_tail_gets_its_place_where_the_pixels_are_not_clearly_background(prior):
    m = _map(-1, 1, tail=False)                             # the assignment called the tail background
    place = _map(-1, 1) == 3
    p_background = np.where(place, 0.3, 0.99)               # the classifier: something is there, not sky
    out = lost_places(m, p_background, prior)
    assert (out[place] == 3).mean() > 0.7                   # found where the tail lies ...
    assert np.array_equal(out[~place], m[~place])           # ... and nothing else changed
    sky = np.where(place, 0.95, 0.99)                       # clearly background there: nothing to judge
    assert np.array_equal(lost_places(m, sky, prior), m)
    whole = _map(-1, 1)                                     # the tail is there: nothing is lost
    assert lost_places(whole, np.full(m.shape, 0.3), prior) is whole
    with pytest.raises(ValueError, match="map's size"):
        lost_places(m, p_background[:20], prior)
    with pytest.raises(ValueError, match="no training map"):
        layout_prior([np.zeros((8, 8), int)], K1)
