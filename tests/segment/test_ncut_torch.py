"""The recursive NCut's matrix work in torch (``device=``) gives the numpy path's labels (issue 20 item 4).

Inputs in the style of the other segment tests: synthetic region attention (quadrants, Voronoi
regions, diffuse and peaky, exact zeros) and a recorded bird's attention. On CPU here; the same
code runs on "cuda" where a GPU is present (the last test, skipped without one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from diffparts.segment.ncut import RecursiveNCut  # noqa: E402

RECORDED = Path(__file__).parent / "data" / "bird_attention_seed999_0.npz"
SETTINGS = {
    "defaults": dict(),
    "defaults at 64 px": dict(out_size=64),
    "tau 0.2, 100 thresholds": dict(tau=0.2, n_thresholds=100, out_size=48),
    "auto tau": dict(tau_mode="auto", out_size=32),
    "clipped cosine, nearest": dict(rescale="clip", tau=0.3, assign="nearest", out_size=32),
    "random walk, auto tau": dict(affinity="random_walk", tau_mode="auto", min_size=8),
    "random walk P^2, constant": dict(affinity="random_walk", tau_mode="constant", tau=0.5, walk_steps=2, min_size=4),
}


def inputs(region_attention, voronoi_labels):
    yield "quadrants", region_attention(seed=0)[0]
    yield "voronoi", region_attention(voronoi_labels(16, 6, 1), seed=1)[0]
    yield "diffuse", region_attention(voronoi_labels(12, 5, 2), sharpness=4.0, locality=1.0, seed=2)[0]
    yield "exact zeros", region_attention(zero_below=1e-3, seed=0)[0]
    yield "recorded bird", np.load(RECORDED)["attn"].astype(np.float32)


def assert_same(a: RecursiveNCut, b: RecursiveNCut, what: str) -> None:
    np.testing.assert_array_equal(a.level_labels_, b.level_labels_, err_msg=what)
    assert [n.size for n in a.tree_] == [n.size for n in b.tree_], what
    assert a.tau_ == pytest.approx(b.tau_, rel=1e-5, abs=1e-9), what
    for x, y in zip(a.tree_, b.tree_):
        assert x.ncut == pytest.approx(y.ncut, rel=1e-4, abs=1e-7, nan_ok=True), what


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_torch_labels_equal_numpy_labels(region_attention, voronoi_labels, setting):
    for name, attn in inputs(region_attention, voronoi_labels):
        kwargs = SETTINGS[setting]
        numpy_fit = RecursiveNCut(**kwargs).fit(attn)
        torch_fit = RecursiveNCut(**kwargs, device="cpu").fit(torch.from_numpy(attn))
        assert_same(numpy_fit, torch_fit, f"{setting} on {name}")
        if setting == "defaults":
            assert numpy_fit.n_segments_[0] > 1, name  # something to agree on


def test_torch_path_refuses_bad_attention_by_name(four_regions):
    attn = four_regions[0].copy()
    attn[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        RecursiveNCut(device="cpu").fit(attn)
    attn = four_regions[0].copy()
    attn[2, 2] = 0
    with pytest.raises(ValueError, match="sums to 0"):
        RecursiveNCut(device="cpu").fit(attn)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_labels_equal_numpy_labels(region_attention, voronoi_labels):
    for name, attn in inputs(region_attention, voronoi_labels):
        numpy_fit = RecursiveNCut(out_size=64).fit(attn)
        cuda_fit = RecursiveNCut(out_size=64, device="cuda").fit(torch.from_numpy(attn).cuda())
        assert_same(numpy_fit, cuda_fit, name)
