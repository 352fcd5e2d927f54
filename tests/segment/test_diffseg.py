"""DiffSeg merge (docs/design.md §5.2 "DiffSeg merge") on hand-made attention whose regions are known in advance."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from diffparts.segment.diffseg import (
    DiffSeg,
    DiffSegConfig,
    anchor_grid,
    anchor_kl_distances,
    diffseg_segment,
    merge_proposals,
    proposals_to_labels,
    symmetric_kl,
)
from diffparts.segment.synthetic import make_region_attention


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label maps are equal up to a renaming of the labels."""
    return adjusted_rand_score(a.ravel(), b.ravel()) == 1.0


def blocky(labels, **kwargs):
    """Attention where every query of a region has the same map (exact recovery expected)."""
    return make_region_attention(labels, noise=0.0, locality=0.0, boundary_blur=0.0, **kwargs)


def reference_style(attn: np.ndarray, thresholds, anchors_per_side: int = 16):
    """The reference's arithmetic (google/diffseg segmentor.py) in numpy: round 0 in float16,
    later rounds in float64, log of zeros giving NaN that silently fails the threshold test.
    Returns (labels (ky, kx) relabelled 0..K-1, or None when every proposal was dropped;
    number of proposals after each round)."""
    qy, qx, ky, kx = attn.shape
    maps = attn.reshape(qy * qx, ky * kx).astype(np.float64)
    anchors = anchor_grid(qy, qx, anchors_per_side)
    counts = []
    with np.errstate(all="ignore"):
        a16, m16 = maps[anchors].astype(np.float16), maps.astype(np.float16)
        quotient = np.log(a16)[:, None, :] - np.log(m16)[None, :, :]  # anchor q k, float16
        kl = (a16[:, None, :] * quotient).sum(-1) / 2 - (m16[None, :, :] * quotient).sum(-1) / 2
        kl_bin = (kl < thresholds[0]).astype(np.float64)
        props = kl_bin @ maps / kl_bin.sum(1, keepdims=True)  # NaN rows where nothing matched
        counts.append(len(props))
        for threshold in thresholds[1:]:
            matched, new = set(), []
            for i, anchor in enumerate(props):
                if i in matched:
                    continue
                matched.add(i)
                q = np.log(anchor)[None, :] - np.log(props)
                d = (anchor[None, :] * q).sum(-1) / 2 - (props * q).sum(-1) / 2
                hit = d < threshold
                if hit.sum() > 0:
                    matched.update(np.flatnonzero(hit).tolist())
                    new.append(props[hit].mean(0))
            props = np.array(new)
            counts.append(len(props))
    if len(props) == 0:
        return None, counts
    raw = props.reshape(-1, ky, kx).argmax(0)
    return np.unique(raw, return_inverse=True)[1].reshape(ky, kx), counts


# ---------------------------------------------------------------------------- building blocks


def test_anchor_grid_matches_reference_coordinates():
    grid = anchor_grid(64, 64, 16)
    ys, xs = np.divmod(grid, 64)
    assert sorted(set(ys.tolist())) == list(range(1, 62, 4))
    assert sorted(set(xs.tolist())) == list(range(1, 62, 4))
    assert grid[:3].tolist() == [1 * 64 + 1, 1 * 64 + 5, 1 * 64 + 9]  # row-major over (qy, qx)
    assert anchor_grid(16, 16, 16).tolist() == list(range(256))
    assert len(anchor_grid(8, 8, 16)) == 64  # clamped: one anchor per query
    assert anchor_grid(9, 9, 1).tolist() == [4 * 9 + 4]
    with pytest.raises(ValueError, match="anchors_per_side"):
        anchor_grid(8, 8, 0)


def test_symmetric_kl_equals_direct_sum():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(20), size=5).astype(np.float32)
    q = rng.dirichlet(np.ones(20), size=7).astype(np.float32)
    direct = np.array(
        [[0.5 * (a * np.log(a / b)).sum() + 0.5 * (b * np.log(b / a)).sum() for b in q] for a in p]
    )
    got = symmetric_kl(p, q)
    np.testing.assert_allclose(got, direct, rtol=1e-4, atol=1e-5)
    assert (got > 0).all()
    np.testing.assert_allclose(np.diag(symmetric_kl(p, p)), 0.0, atol=1e-5)


def test_symmetric_kl_with_exact_zeros_is_finite():
    p = np.array([[0.5, 0.5, 0.0]], dtype=np.float32)
    q = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]], dtype=np.float32)
    d = symmetric_kl(p, q, eps=1e-10)
    assert np.isfinite(d).all()
    assert abs(d[0, 0]) < 1e-6  # 0 log 0 = 0: a map is at distance 0 from itself
    assert d[0, 1] > 5.0  # a zero against mass costs log(p / eps)


def test_merge_round_includes_already_matched_proposals():
    # A ~ B, B ~ C, A !~ C: A takes {A, B}; B is skipped; C takes {B, C} (B again, as the reference)
    props = np.array([[0.5, 0.5], [0.62, 0.38], [0.74, 0.26]], dtype=np.float32)
    d = symmetric_kl(props, props)
    threshold = (max(d[0, 1], d[1, 2]) + d[0, 2]) / 2
    assert d[0, 2] > threshold
    merged, members = merge_proposals(props, threshold)
    assert [m.tolist() for m in members] == [[0, 1], [1, 2]]
    np.testing.assert_allclose(merged[1], props[1:].mean(0), rtol=1e-6)


def test_proposals_to_labels_bilinear_half_pixel():
    props = np.zeros((2, 2, 2), dtype=np.float32)
    props[0, :, 0] = 1.0  # left column
    props[1, :, 1] = 1.0  # right column
    labels = proposals_to_labels(props, out_size=4)
    assert labels.tolist() == [[0, 0, 1, 1]] * 4
    with pytest.raises(ValueError, match="out_size"):
        proposals_to_labels(props, out_size=(0, 4))


# ---------------------------------------------------------------------------- recovery


def test_recovers_known_regions_exactly(voronoi_labels):
    labels = voronoi_labels(16, n_regions=5, seed=3)
    attn = blocky(labels, sharpness=10.0)
    model = DiffSeg(kl_thresholds=(1.1, 1.1, 1.1)).fit(attn)
    assert same_partition(model.labels_, labels)
    assert model.labels_.dtype == np.int32
    assert sorted(np.unique(model.labels_).tolist()) == list(range(5))
    assert model.proposals_.shape == (5, 16, 16)
    assert [h["n_out"] for h in model.merge_history_] == [256, 5, 5]
    # the plain function and the (q, k) layout agree with the estimator
    assert np.array_equal(diffseg_segment(attn.reshape(256, 256)), model.labels_)


def test_recovers_smooth_local_regions(four_regions):
    attn, labels = four_regions
    config = DiffSegConfig(kl_thresholds=(2.0, 2.0, 2.0))
    model = DiffSeg(kl_thresholds=config.kl_thresholds).fit(attn)
    assert adjusted_rand_score(labels.ravel(), model.labels_.ravel()) > 0.95
    assert len(model.proposals_) == 4


def test_round_zero_members_contain_their_anchor(four_regions):
    attn, _ = four_regions
    model = DiffSeg(kl_thresholds=(2.0, 2.0)).fit(attn)
    round0 = model.merge_history_[0]
    assert all(anchor in members for anchor, members in zip(model.anchors_, round0["members"]))
    assert model.merge_history_[1]["n_in"] == 256


def test_upsampled_mask_follows_regions(region_attention):
    attn, labels = region_attention(sharpness=10.0, noise=0.0, locality=0.0, boundary_blur=0.0)
    model = DiffSeg(kl_thresholds=(1.1, 1.1), out_size=32).fit(attn)
    assert model.labels_.shape == (32, 32)
    assert same_partition(model.labels_, np.kron(labels, np.ones((2, 2), dtype=int)))


def test_single_round_refines_the_regions(region_attention):
    # one round leaves near-duplicate proposals (as the reference would); each lies in one region
    attn, labels = region_attention(sharpness=10.0, noise=0.0, locality=0.0, boundary_blur=0.0)
    model = DiffSeg(kl_thresholds=(1.1,)).fit(attn)
    assert len(model.merge_history_) == 1
    for segment in np.unique(model.labels_):
        assert len(np.unique(labels[model.labels_ == segment])) == 1


def test_refinement_keeps_recovery(region_attention):
    attn, labels = region_attention(sharpness=6.0, locality=1.0, seed=1)
    model = DiffSeg(kl_thresholds=(1.1, 1.1), refine=True, random_state=0).fit(attn)
    assert model.merge_history_[-1]["round"] == "refine"
    assert adjusted_rand_score(labels.ravel(), model.labels_.ravel()) > 0.9


# ---------------------------------------------------------------------------- float16 reference


@pytest.mark.parametrize("threshold", [0.5, 1.1])
def test_float32_equals_float16_reference_on_well_behaved_maps(region_attention, threshold):
    attn, labels = region_attention(sharpness=5.0, locality=0.5, seed=2)
    assert attn.min() > 1e-6  # well behaved: nothing that float16 would flush to zero
    thresholds = (threshold,) * 3
    ref_labels, ref_counts = reference_style(attn, thresholds)
    model = DiffSeg(kl_thresholds=thresholds).fit(attn)
    assert [h["n_out"] for h in model.merge_history_] == ref_counts
    assert np.array_equal(model.labels_, ref_labels)


def test_peaky_attention_with_exact_zeros_still_segments(voronoi_labels):
    labels = voronoi_labels(16, n_regions=4, seed=0)
    attn = blocky(labels, sharpness=20.0, zero_below=1e-4)
    assert (attn == 0).mean() > 0.5
    ref_labels, ref_counts = reference_style(attn, (1.1, 1.1, 1.1))
    assert ref_labels is None and ref_counts[-1] == 0  # the reference drops every proposal
    model = DiffSeg(kl_thresholds=(1.1, 1.1, 1.1)).fit(attn)
    assert same_partition(model.labels_, labels)


# ---------------------------------------------------------------------------- edge cases


def test_one_region_gives_one_segment(region_attention):
    attn, _ = region_attention(np.zeros((8, 8), dtype=int))
    model = DiffSeg().fit(attn)
    assert np.all(model.labels_ == 0)
    assert len(model.proposals_) == 1


def test_all_equal_attention_gives_one_segment():
    attn = np.full((8, 8, 8, 8), 1.0 / 64, dtype=np.float32)
    model = DiffSeg(kl_thresholds=(0.01, 0.01)).fit(attn)
    assert np.all(model.labels_ == 0)
    assert [h["n_out"] for h in model.merge_history_] == [64, 1]


def test_nan_input_refused(four_regions):
    attn = four_regions[0].copy()
    attn[3, 4, 5, 6] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        DiffSeg().fit(attn)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kl_thresholds=()), "at least one"),
        (dict(kl_thresholds=(1.1, 0.0)), "kl_thresholds"),
        (dict(kl_thresholds=(float("nan"),)), "kl_thresholds"),
        (dict(eps=0.0), "eps"),
        (dict(anchors_per_side=0), "anchors_per_side"),
    ],
)
def test_bad_settings_refused(four_regions, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffSeg(**kwargs).fit(four_regions[0])


def test_bad_attention_refused():
    with pytest.raises(ValueError, match="shape"):
        DiffSeg().fit(np.ones((4, 4, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="square"):
        DiffSeg().fit(np.ones((6, 6), dtype=np.float32))
    with pytest.raises(ValueError, match="non-negative"):
        DiffSeg().fit(-np.ones((2, 2, 2, 2), dtype=np.float32))


def test_anchor_kl_distances_shape(four_regions):
    d = anchor_kl_distances(four_regions[0], anchors_per_side=4)
    assert d.shape == (16, 256)
    assert (d > -1e-5).all()
