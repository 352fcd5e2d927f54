"""Random-walk recursive NCut (docs/design.md §5.3 "Random-walk NCut") on small hand-made attention with known regions.

These tests pin the random-walk settings that were the defaults before DiffCut's (``RANDOM_WALK``:
the random-walk affinity, the eigengap tau, min_size 8, nearest upsampling, the clipped cosine);
``RecursiveNCut`` below is the estimator with those settings unless a test overrides one.
test_ncut_diffcut.py covers DiffCut's affinity, cut and assignment, the defaults since.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from diffparts.segment.hierarchy import check_nested, reproduce_levels, transition_matrices
from diffparts.segment.ncut import (
    NCutConfig,
    attention_affinity,
    auto_tau,
    best_threshold_cut,
    cosine_affinity,
    fiedler_vector,
    ncut_partition,
    random_walk_affinity,
    stationary_distribution,
    transition_matrix,
)


from diffparts.segment.ncut import RecursiveNCut as Estimator

RANDOM_WALK = dict(tau=0.3, tau_mode="auto", affinity="random_walk", min_size=8, assign="nearest",
                   rescale="clip")


def RecursiveNCut(**kwargs) -> Estimator:
    """The estimator with the random-walk settings (module docstring), overridden by kwargs."""
    return Estimator(**{**RANDOM_WALK, **kwargs})


def matched_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pixel accuracy after the best one-to-one matching of predicted to true labels."""
    pred, truth = pred.ravel(), truth.ravel()
    overlap = np.zeros((pred.max() + 1, truth.max() + 1))
    np.add.at(overlap, (pred, truth), 1)
    rows, cols = linear_sum_assignment(-overlap)
    return overlap[rows, cols].sum() / pred.size


def ncut_value(W: np.ndarray, mask: np.ndarray) -> float:
    """NCut(A, B) by its definition (Shi & Malik eq. 2)."""
    cut = W[mask][:, ~mask].sum()
    return cut / W[mask].sum() + cut / W[~mask].sum()


# -- regions known in advance are recovered -----------------------------------------------------


@pytest.mark.parametrize("affinity", ["random_walk", "cosine"])
@pytest.mark.parametrize("tau_mode", ["constant", "auto"])
def test_quadrants_recovered(four_regions, affinity, tau_mode):
    attn, labels = four_regions  # (16, 16, 16, 16), four quadrants
    model = RecursiveNCut(tau=0.2, tau_mode=tau_mode, affinity=affinity, walk_steps=3,
                          random_state=0).fit(attn)
    assert model.labels_.shape == (16, 16)
    assert model.n_segments_[0] == 4
    assert matched_accuracy(model.labels_, labels) > 0.97  # soft boundaries blur ~1 px
    assert model.n_segments_[-1] == 2  # coarsest level = the root's two-way cut


def test_voronoi_regions_recovered_with_auto_tau(region_attention, voronoi_labels):
    attn, labels = region_attention(voronoi_labels(24, 5, 3), seed=3)
    model = RecursiveNCut(tau_mode="auto", random_state=0).fit(attn)
    assert model.n_segments_[0] == 5
    assert matched_accuracy(model.labels_, labels) > 0.95


def test_auto_tau_adapts_where_a_constant_does_not(region_attention):
    # diffuse attention (a small model): the between-region cuts cost more than 0.2 after a
    # 3-step walk, so the constant stops at one segment while the eigengap rule still finds 4
    attn, labels = region_attention(sharpness=4.0, locality=1.0, seed=0)
    const = RecursiveNCut(tau_mode="constant", tau=0.2, walk_steps=3, random_state=0).fit(attn)
    auto = RecursiveNCut(tau_mode="auto", walk_steps=3, random_state=0).fit(attn)
    assert const.n_segments_[0] < 4
    assert auto.n_segments_[0] >= 3
    assert 0.2 < auto.tau_ <= 0.8
    assert auto.spectrum_[0] == 0 and np.all(np.diff(auto.spectrum_) >= -1e-9)
    assert matched_accuracy(auto.labels_, labels) > matched_accuracy(const.labels_, labels)


def test_auto_tau_is_the_eigenvalue_after_the_largest_log_gap():
    # three blocks of a noisy graph: l_2, l_3 small (between blocks), l_4 large (within a block)
    rng = np.random.default_rng(0)
    blocks = np.repeat(np.arange(3), 20)
    W = np.where(blocks[:, None] == blocks[None, :], 1.0, 0.01) * rng.uniform(0.5, 1.0, (60, 60))
    W = ((W + W.T) / 2).astype(np.float32)
    tau, lam = auto_tau(W, tau_cap=2.0)
    assert lam[0] == 0 and lam[1] < lam[2] < 0.1 < lam[3]
    assert tau == pytest.approx(lam[3])  # K = 3: tau = l_4
    part = ncut_partition(W, tau_mode="auto", min_size=5, random_state=0)
    assert part.level_labels[0].max() + 1 == 3
    for b in range(3):
        assert len(set(part.level_labels[0][blocks == b])) == 1
    # one block: the largest ratio is l_2 / l_1, tau = l_2 / 2 and nothing is cut
    one = rng.uniform(0.5, 1.0, (40, 40))
    one = ((one + one.T) / 2).astype(np.float32)
    tau, lam = auto_tau(one, tau_cap=2.0)
    assert tau == pytest.approx(lam[1] / 2)
    assert ncut_partition(one, tau_mode="auto", min_size=5).level_labels.shape == (1, 40)


def test_constant_tau_controls_depth(four_regions):
    attn, _ = four_regions
    tiny = RecursiveNCut(tau_mode="constant", tau=1e-4, random_state=0).fit(attn)
    loose = RecursiveNCut(tau_mode="constant", tau=0.95, min_size=4, max_depth=4, random_state=0).fit(attn)
    assert tiny.n_segments_ == (1,)  # no cut is that cheap
    assert loose.n_segments_[0] > 4  # cuts through regions are accepted too


# -- affinities ---------------------------------------------------------------------------------


def test_random_walk_affinity_is_symmetric_with_stationary_degrees(four_regions):
    attn, _ = four_regions
    P, shape = transition_matrix(attn)
    assert shape == (16, 16)
    pi = stationary_distribution(P, random_state=0)
    np.testing.assert_allclose(pi @ P, pi, atol=1e-7)  # pi P = pi
    W = random_walk_affinity(P, pi=pi)
    np.testing.assert_allclose(W, W.T, rtol=1e-6)
    np.testing.assert_allclose(W.sum(1), pi, rtol=1e-4)  # D = Pi
    # NCut on W = P(A -> B | A) + P(B -> A | B) (Meila-Shi)
    mask = np.zeros(256, bool)
    mask[:128] = True
    flow = (pi[mask, None] * P[mask][:, ~mask]).sum()
    expected = flow / pi[mask].sum() + flow / pi[~mask].sum()
    assert ncut_value(W.astype(np.float64), mask) == pytest.approx(expected, rel=1e-4)


def test_walk_steps_use_matrix_power(four_regions):
    attn, labels = four_regions
    P, _ = transition_matrix(attn)
    pi = stationary_distribution(P, random_state=0)
    W3 = random_walk_affinity(P, walk_steps=3, pi=pi)
    P3 = np.linalg.matrix_power(P.astype(np.float64), 3)
    np.testing.assert_allclose(W3, (pi[:, None] * P3 + (pi[:, None] * P3).T) / 2, atol=1e-8)
    # longer walks smooth inside regions: the within-region cut gets dearer relative to the
    # between-region cut, and the regions are still recovered
    model = RecursiveNCut(tau_mode="constant", tau=0.3, walk_steps=4, random_state=0).fit(attn)
    assert model.n_segments_[0] == 4
    assert matched_accuracy(model.labels_, labels) > 0.97


def test_cosine_affinity_values_and_given_features():
    F = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])
    W = cosine_affinity(F, power=2.0, rescale="clip")
    np.testing.assert_allclose(W[0], [1.0, 0.5, 0.0, 0.0], atol=1e-6)  # cos^2, negatives -> 0
    np.testing.assert_allclose(W, W.T)
    # DiffCut's min-max rescaling: cos in [-1, 1] here, so ((cos + 1) / 2) ** 2
    W = cosine_affinity(F, power=2.0)
    np.testing.assert_allclose(W[0], ((np.array([1.0, 0.5**0.5, 0.0, -1.0]) + 1) / 2) ** 2, atol=1e-6)
    # given features instead of attention rows: two blocks of features, any attention
    attn = np.full((4, 4, 4, 4), 1 / 16, np.float32)
    feats = np.zeros((16, 3))
    feats[:8, 0] = 1.0
    feats[8:, 1] = 1.0
    feats += 0.01 * np.random.default_rng(0).standard_normal(feats.shape)
    model = RecursiveNCut(affinity="cosine", tau_mode="constant", tau=0.1, min_size=2, random_state=0).fit(attn, features=feats)
    assert model.n_segments_[0] == 2
    assert len(set(model.labels_.ravel()[:8])) == 1 and len(set(model.labels_.ravel()[8:])) == 1


# -- the cut ------------------------------------------------------------------------------------


def test_threshold_sweep_is_exact_and_minimal():
    rng = np.random.default_rng(1)
    A = rng.random((12, 12))
    W = (A + A.T).astype(np.float32)
    lam, y = fiedler_vector(W, random_state=0)
    assert 0 < lam < 1
    value, mask = best_threshold_cut(W, y, min_size=2)
    W64 = W.astype(np.float64)
    assert value == pytest.approx(ncut_value(W64, mask), rel=1e-6)
    order = np.argsort(y)
    candidates = [ncut_value(W64, np.isin(np.arange(12), order[:m])) for m in range(2, 11)]
    assert value == pytest.approx(min(candidates), rel=1e-6)
    assert value >= lam - 1e-6  # NCut of any bipartition >= the relaxed eigenvalue


def test_dense_and_arpack_paths_agree(four_regions):
    attn, _ = four_regions
    dense = RecursiveNCut(tau_mode="constant", tau=0.2, dense_max=10_000, random_state=0).fit(attn)
    arpack = RecursiveNCut(tau_mode="constant", tau=0.2, dense_max=16, random_state=0).fit(attn)
    np.testing.assert_array_equal(dense.level_labels_, arpack.level_labels_)
    for a, b in zip(dense.tree_, arpack.tree_):
        assert a.ncut == pytest.approx(b.ncut, rel=1e-3, nan_ok=True)


# -- tree and levels ----------------------------------------------------------------------------


def test_tree_and_levels_are_nested(region_attention, voronoi_labels):
    attn, _ = region_attention(voronoi_labels(16, 6, 1), seed=1)
    model = RecursiveNCut(tau_mode="constant", tau=0.5, min_size=4, max_depth=4, random_state=0).fit(attn)
    tree, levels = model.tree_, model.level_labels_
    deepest = max(node.depth for node in tree)
    assert levels.shape == (deepest, 16, 16)
    check_nested(levels)  # raises if a fine segment straddles two coarse ones
    np.testing.assert_array_equal(reproduce_levels(levels[0], transition_matrices(levels)), levels)
    for node in tree:
        if node.children:
            a, b = (tree[c] for c in node.children)
            assert a.parent == b.parent == node.id and a.depth == b.depth == node.depth + 1
            np.testing.assert_array_equal(np.union1d(a.members, b.members), node.members)
            assert np.intersect1d(a.members, b.members).size == 0
            assert node.ncut < 0.5 and min(a.size, b.size) >= 4
        elif node.depth < 4 and node.size >= 8:
            assert not node.ncut < 0.5  # a leaf that could be cut was refused by tau
    # level l = cut depth (deepest - l); leaves stopped shallower keep their own segment
    for level in range(deepest):
        depth = deepest - level
        segs = [n for n in tree if n.depth == depth or (not n.children and n.depth < depth)]
        assert levels[level].max() + 1 == len(segs)
        for seg in segs:
            assert len(set(levels[level].ravel()[seg.members])) == 1


def test_out_size_upsamples_nearest(four_regions):
    attn, _ = four_regions
    model = RecursiveNCut(tau_mode="constant", tau=0.2, out_size=32, random_state=0).fit(attn)
    small = RecursiveNCut(tau_mode="constant", tau=0.2, random_state=0).fit(attn)
    assert model.level_labels_.shape == (small.level_labels_.shape[0], 32, 32)
    np.testing.assert_array_equal(model.level_labels_[:, ::2, ::2], small.level_labels_)
    np.testing.assert_array_equal(model.level_labels_[:, 1::2, 1::2], small.level_labels_)


def test_plain_function_matches_estimator_and_flat_input(four_regions):
    attn, _ = four_regions
    model = RecursiveNCut(tau_mode="constant", tau=0.2, random_state=0).fit(attn)
    flat = RecursiveNCut(tau_mode="constant", tau=0.2, random_state=0).fit(attn.reshape(256, 256))
    np.testing.assert_array_equal(model.level_labels_, flat.level_labels_)
    W, shape = attention_affinity(attn)
    part = ncut_partition(W, tau_mode="constant", tau=0.2, random_state=0)
    np.testing.assert_array_equal(part.level_labels.reshape(-1, *shape), model.level_labels_)
    config = NCutConfig(**{**RANDOM_WALK, "tau_mode": "constant", "tau": 0.2, "random_state": 0})
    assert Estimator.from_config(config).fit(attn).n_segments_ == model.n_segments_


def test_config_and_estimator_share_names_and_defaults():
    import inspect

    params = inspect.signature(Estimator.__init__).parameters
    config = NCutConfig()
    assert {f for f in config.__dict__} == {p for p in params if p != "self"}
    for name, value in config.__dict__.items():
        assert params[name].default == value, name
    # the defaults chosen on validation birds (docs/segment.md): DiffCut's affinity and assignment
    assert (config.affinity, config.rescale, config.tau_mode, config.assign) == ("cosine", "minmax", "constant", "concept")


def test_min_size_and_max_depth_bound_the_tree(four_regions):
    attn, _ = four_regions
    model = RecursiveNCut(tau_mode="constant", tau=0.99, min_size=20, max_depth=3, random_state=0).fit(attn)
    assert max(n.depth for n in model.tree_) <= 3
    assert min(n.size for n in model.tree_) >= 20
    assert model.n_segments_[0] <= 8


# -- edge cases ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tau_mode", ["constant", "auto"])
def test_one_region_gives_one_segment(region_attention, tau_mode):
    attn, _ = region_attention(np.zeros((12, 12), np.int64), noise=0.0, locality=0.0)
    model = RecursiveNCut(tau=0.2, tau_mode=tau_mode, random_state=0).fit(attn)
    assert model.level_labels_.shape == (1, 12, 12)
    assert np.all(model.labels_ == 0)


@pytest.mark.parametrize("affinity", ["random_walk", "cosine"])
@pytest.mark.parametrize("tau_mode", ["constant", "auto"])
def test_all_equal_attention_is_one_segment(affinity, tau_mode):
    attn = np.full((8, 8, 8, 8), 1 / 64, np.float32)
    model = RecursiveNCut(tau=0.9, tau_mode=tau_mode, affinity=affinity).fit(attn)
    assert model.n_segments_ == (1,)
    assert len(model.tree_) == 1 and model.tree_[0].size == 64


def test_exact_zeros_still_segment(region_attention):
    # peaky attention with exact zeros (as float16 at 64 x 64): rows stay well defined
    attn, labels = region_attention(zero_below=1e-3, seed=0)
    assert (attn == 0).mean() > 0.3
    model = RecursiveNCut(tau_mode="constant", tau=0.2, random_state=0).fit(attn)
    assert model.n_segments_[0] == 4
    assert matched_accuracy(model.labels_, labels) > 0.97


def test_disconnected_graph_is_cut_along_components():
    # two blocks with no transition between them: a reducible walk; pi must still be unique
    attn = np.zeros((8, 8, 8, 8), np.float32)
    attn[:4, :, :4, :] = 1 / 32
    attn[4:, :, 4:, :] = 1 / 32
    model = RecursiveNCut(tau_mode="constant", tau=0.1, min_size=4, random_state=0).fit(attn)
    assert model.n_segments_ == (2,)
    assert model.tree_[0].ncut == 0.0
    assert len(set(model.labels_[:4].ravel())) == 1 and model.labels_[0, 0] != model.labels_[7, 7]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.nan, "NaN"),
        (np.inf, "NaN/inf"),
        (-0.1, "non-negative"),
    ],
)
def test_bad_attention_is_refused(four_regions, bad, message):
    attn = four_regions[0].copy()
    attn[3, 4, 5, 6] = bad
    with pytest.raises(ValueError, match=message):
        RecursiveNCut().fit(attn)


def test_bad_shapes_rows_and_parameters_are_refused(four_regions):
    attn = four_regions[0]
    zero_row = attn.copy()
    zero_row[2, 2] = 0
    with pytest.raises(ValueError, match="sums to 0"):
        RecursiveNCut().fit(zero_row)
    with pytest.raises(ValueError, match="q = R"):
        RecursiveNCut().fit(np.ones((10, 10), np.float32))
    with pytest.raises(ValueError, match="query grid"):
        RecursiveNCut().fit(np.ones((4, 4, 2, 8), np.float32))
    for kwargs, message in [
        (dict(affinity="knn"), "affinity"),
        (dict(tau_mode="adaptive"), "tau_mode"),
        (dict(walk_steps=0), "walk_steps"),
        (dict(tau_mode="constant", tau=0.0), "tau"),
        (dict(min_size=0), "min_size"),
    ]:
        with pytest.raises(ValueError, match=message):
            RecursiveNCut(**kwargs).fit(attn)
    with pytest.raises(ValueError, match="symmetric"):
        ncut_partition(np.triu(np.ones((6, 6))))


def test_deterministic_given_random_state(region_attention, voronoi_labels):
    attn, _ = region_attention(voronoi_labels(16, 5, 2), seed=2)
    runs = [RecursiveNCut(tau_mode="auto", dense_max=32, random_state=7).fit(attn) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].level_labels_, runs[1].level_labels_)
    assert [n.size for n in runs[0].tree_] == [n.size for n in runs[1].tree_]


def test_arpack_is_seeded_from_the_config_so_reruns_are_identical(four_regions):
    """Issue 12 item 11: with the defaults, the ARPACK path (dense_max below the node count)
    starts from a seeded vector: two fits give the same tree, eigenvalues to the last bit."""
    attn, _ = four_regions
    assert NCutConfig().random_state is not None
    assert Estimator().random_state == NCutConfig().random_state
    for settings in ({}, RANDOM_WALK):  # the defaults, and the random walk with auto tau
        config = {k: v for k, v in {**NCutConfig().__dict__, **settings}.items() if k not in ("dense_max", "out_size")}
        fits = [Estimator(**config, dense_max=16).fit(attn) for _ in range(2)]
        np.testing.assert_array_equal(fits[0].level_labels_, fits[1].level_labels_)
        values = [[n.eigenvalue for n in fit.tree_] for fit in fits]
        np.testing.assert_array_equal(values[0], values[1])  # to the last bit (nan where not evaluated)
