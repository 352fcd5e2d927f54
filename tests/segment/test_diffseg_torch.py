"""Torch DiffSeg (any device) equals numpy DiffSeg label for label (issue 20, item 4).

Inputs in the style of the numpy tests: Voronoi regions with noise, locality and blurred
boundaries, exact zeros, realistic 64 x 64 maps, a single region; the finest level (DiffSeg
itself) and the nested threshold sweep at an output size other than the key grid.
"""

import numpy as np
import pytest
import torch

from diffparts.segment.diffseg import DiffSeg, anchor_kl_distances, symmetric_kl
from diffparts.segment.diffseg_torch import diffseg_levels_torch, diffseg_torch, symmetric_kl_torch
from diffparts.segment.hierarchy import diffseg_levels
from diffparts.segment.synthetic import make_region_attention, make_region_labels, realistic_attention
from diffparts.segment.thresholds import threshold_from_distances

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def cases():
    """(name, attn (qy, qx, ky, kx) float32) of several kinds."""
    out = []
    for seed, (size, regions) in enumerate([(16, 4), (16, 7), (24, 5), (32, 9)]):
        labels = make_region_labels(size, regions, seed=seed)
        out.append((f"voronoi-{size}-{regions}", make_region_attention(labels, seed=seed)))
    labels = make_region_labels(16, 5, seed=3)
    out.append(("peaky-zeros", make_region_attention(labels, sharpness=40.0, noise=0.0, seed=3)))
    out.append(("one-region", make_region_attention(np.zeros((16, 16), np.int64), seed=1)))
    out.append(("realistic-64", realistic_attention(64, 6, seed=2)[0]))
    return out


CASES = cases()


def auto_levels(attn, quantiles=(0.05, 0.1, 0.2, 0.4)):
    """Thresholds by the quantile rule, each moved to the middle of the gap between the two round-0
    distances around it: a distance within float32 rounding of a threshold may fall on either side
    in either library (different summation orders), which no implementation can make identical."""
    distances = anchor_kl_distances(attn)
    distances = np.sort(distances[distances > 1e-6])
    if distances.size == 0:
        return [1.1, 2.2]
    out = []
    for q in quantiles:
        t = threshold_from_distances(distances, "quantile", q)
        i = np.searchsorted(distances, t)
        out.append(0.5 * (distances[max(i - 1, 0)] + distances[min(i, len(distances) - 1)]))
    return list(np.maximum.accumulate(out))


@pytest.mark.parametrize("device", DEVICES)
def test_symmetric_kl_matches_numpy(device):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(50), 7).astype(np.float32)
    q = rng.dirichlet(np.ones(50), 9).astype(np.float32)
    q[0, :5] = 0.0
    got = symmetric_kl_torch(torch.from_numpy(p).to(device), torch.from_numpy(q).to(device)).cpu().numpy()
    np.testing.assert_allclose(got, symmetric_kl(p, q), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, attn", CASES, ids=[c[0] for c in CASES])
def test_finest_level_labels_identical_to_numpy(name, attn, device):
    levels = auto_levels(attn)
    for out_size in (None, 2 * attn.shape[2] + 3):
        expected = DiffSeg((levels[0],) * 3, out_size=out_size).fit(attn)
        labels, proposals = diffseg_torch(torch.from_numpy(attn).to(device), (levels[0],) * 3, out_size=out_size)
        np.testing.assert_array_equal(labels.cpu().numpy(), expected.labels_)
        # a query map whose distance lies within float32 rounding of the threshold may join a
        # proposal in one library and not the other: the proposals agree to 1e-4, the labels exactly
        np.testing.assert_allclose(proposals.cpu().numpy(), expected.proposals_, rtol=0, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, attn", CASES, ids=[c[0] for c in CASES])
def test_nested_levels_identical_to_numpy(name, attn, device):
    levels = auto_levels(attn)
    out_size = 4 * attn.shape[2]
    expected, _ = diffseg_levels(attn, levels, rounds=3, out_size=out_size)
    got = diffseg_levels_torch(torch.from_numpy(attn).to(device), levels, rounds=3, out_size=out_size)
    assert got.dtype == np.int32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert got[0].max() >= 2 and got[-1].max() < got[0].max()  # several segments, merged further up


def test_bad_input_refused_like_numpy():
    attn = torch.ones(4, 4, 4, 4) / 16
    with pytest.raises(ValueError, match="non-finite"):
        diffseg_torch(attn * float("nan"))
    with pytest.raises(ValueError, match="non-negative"):
        diffseg_torch(-attn)
    with pytest.raises(ValueError, match="kl_thresholds"):
        diffseg_torch(attn, ())
    with pytest.raises(ValueError, match="non-decreasing"):
        diffseg_levels_torch(attn, [2.0, 1.0])
