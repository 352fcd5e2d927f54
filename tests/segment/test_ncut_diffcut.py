"""DiffCut's procedure (Couairon et al., NeurIPS 2024) in the recursive NCut: faithfulness, concept assignment, PAMR.

The faithfulness tests compare our cut with a straightforward dense implementation of DiffCut's
recursive NCut written here from its description: the Fiedler vector of ``(D - W) y = lambda D y``
(dense generalised eigh), 100 thresholds evenly spaced over [min y, max y), A = {y > t}, the
lowest Shi-Malik NCut wins, a segment is split while that NCut is below tau, recursively.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from diffparts.segment.hierarchy import check_nested, reproduce_levels, transition_matrices
from diffparts.segment.ncut import (
    RecursiveNCut,
    attention_affinity,
    concept_assignment,
    cosine_affinity,
    ncut_partition,
    pamr,
)

RECORDED = Path(__file__).parent / "data" / "bird_attention_seed999_0.npz"


def diffcut_reference(W: np.ndarray, tau: float, n_thresholds: int = 100) -> set[frozenset]:
    """DiffCut's recursive NCut, dense and literal: the partition as a set of node sets."""
    W = W.astype(np.float64)
    leaves = []

    def split(idx):
        if len(idx) < 2:
            leaves.append(idx)
            return
        sub = W[np.ix_(idx, idx)]
        d = sub.sum(1)
        _, vecs = scipy.linalg.eigh(np.diag(d) - sub, np.diag(d))
        y = vecs[:, 1]  # Fiedler vector (second smallest generalised eigenvalue)
        y = y if y[np.argmax(np.abs(y))] >= 0 else -y  # fixed sign (the solver's is arbitrary)
        best, best_mask = np.inf, None
        for t in np.linspace(y.min(), y.max(), n_thresholds, endpoint=False):
            A = y > t
            if A.all() or not A.any():
                continue
            cut = sub[A][:, ~A].sum()
            value = cut / d[A].sum() + cut / d[~A].sum()
            if value < best:
                best, best_mask = value, A
        if best < tau:
            split(idx[best_mask])
            split(idx[~best_mask])
        else:
            leaves.append(idx)

    split(np.arange(W.shape[0]))
    return {frozenset(leaf.tolist()) for leaf in leaves}


def our_partition(W: np.ndarray, tau: float, **kwargs) -> set[frozenset]:
    part = ncut_partition(W, tau=tau, tau_mode="constant", min_size=1, max_depth=64,
                          n_thresholds=100, random_state=0, **kwargs)
    return {frozenset(node.members.tolist()) for node in part.tree if not node.children}


def block_graph(sizes, within, between, noise, seed):
    """A symmetric affinity with blocks of the given sizes (unequal: no degenerate eigenvalues)."""
    rng = np.random.default_rng(seed)
    blocks = np.repeat(np.arange(len(sizes)), sizes)
    W = np.where(blocks[:, None] == blocks[None, :], within, between)
    W = W * rng.uniform(1 - noise, 1 + noise, W.shape)
    return ((W + W.T) / 2).astype(np.float32), blocks


# -- faithfulness: our cut == DiffCut's procedure, partition for partition ---------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_blocks_are_found_as_diffcut_finds_them(seed):
    W, blocks = block_graph([7, 13, 19, 29], within=1.0, between=0.02, noise=0.3, seed=seed)
    expected = {frozenset(np.flatnonzero(blocks == b).tolist()) for b in range(4)}
    reference = diffcut_reference(W, tau=0.3)
    assert reference == expected  # the answer is known: the four blocks
    assert our_partition(W, tau=0.3) == reference


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_cosine_affinity_of_region_attention_matches_diffcut(region_attention, voronoi_labels, tau):
    attn, _ = region_attention(voronoi_labels(10, 5, 4), sharpness=4.0, locality=1.0, seed=4)
    P = attn.reshape(100, 100)
    W = cosine_affinity(P, power=10.0)  # DiffCut's min-max rescaled cosine ** alpha
    ours = our_partition(W, tau)
    assert len(ours) > 1  # something was cut
    assert ours == diffcut_reference(W, tau)


@pytest.mark.parametrize("tau", [0.2, 0.5])
def test_recorded_bird_attention_matches_diffcut(tau):
    # the embedded checkpoint's aggregated self-attention of one validation bird (seed 999),
    # stored as float16: the cut our default settings make on a real model's attention
    attn = np.load(RECORDED)["attn"].astype(np.float32)  # qy qx ky kx
    W, _ = attention_affinity(attn, affinity="cosine", power=10.0)
    ours = our_partition(W, tau)
    assert 3 <= len(ours) <= 64
    assert ours == diffcut_reference(W, tau)


def test_every_threshold_sweep_finds_at_least_as_cheap_cuts():
    # n_thresholds=0 tries every split of the sorted Fiedler vector: never a worse root cut
    W, _ = block_graph([11, 17, 23], within=1.0, between=0.2, noise=0.5, seed=5)
    exact = ncut_partition(W, tau=0.9, tau_mode="constant", min_size=1, n_thresholds=0)
    hundred = ncut_partition(W, tau=0.9, tau_mode="constant", min_size=1, n_thresholds=100)
    assert exact.tree[0].ncut <= hundred.tree[0].ncut + 1e-9


# -- concept assignment ---------------------------------------------------------------------------


def test_concept_assignment_picks_the_nearest_mean_on_upsampled_features():
    # 2 x 2 grid, two segments: the left column (0) and the right column (1). Position (1, 0)
    # belongs to segment 0 by its cut but its feature lies nearer segment 1's mean: at full
    # resolution the pixels dominated by it go to segment 1.
    F = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 1.0, 0.0], [0.0, 1.0, 0.1]])
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    labels = np.array([0, 1, 0, 1])  # q: (0,0) (0,1) (1,0) (1,1)
    out = concept_assignment(F, labels, (2, 2), 4)
    assert out.shape == (4, 4)
    assert out[0, 0] == 0  # near (0, 0): segment 0's own feature
    assert out[3, 0] == 1  # near (1, 0): its feature is nearer segment 1's mean
    # the rule itself, by brute force: upsample the features (torch's bilinear, an independent
    # implementation), then the nearest unit-length segment mean per pixel
    torch = pytest.importorskip("torch")
    up = torch.nn.functional.interpolate(torch.from_numpy(F.T.reshape(1, 3, 2, 2)).float(), size=(4, 4),
                                         mode="bilinear", align_corners=False)[0].numpy()  # d Y X
    means = np.stack([F[labels == s].mean(0) for s in (0, 1)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    dist = ((up[None] - means[:, :, None, None]) ** 2).sum(1)  # segment Y X
    np.testing.assert_array_equal(out, dist.argmin(0))


def test_concept_assignment_equals_brute_force_on_random_features():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    F = rng.standard_normal((36, 5)).astype(np.float32)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    labels = rng.integers(0, 4, 36)
    out = concept_assignment(F, labels, (6, 6), 15)
    up = torch.nn.functional.interpolate(torch.from_numpy(F.T.reshape(1, 5, 6, 6).copy()), size=(15, 15),
                                         mode="bilinear", align_corners=False)[0].numpy()
    means = np.stack([F[labels == s].mean(0) for s in range(4)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    upn = up / np.linalg.norm(up, axis=0, keepdims=True)
    np.testing.assert_array_equal(out, np.einsum("sd,dyx->syx", means, upn).argmax(0))


def test_levels_stay_nested_with_concept_assignment_and_pamr(region_attention, voronoi_labels):
    attn, labels = region_attention(voronoi_labels(16, 6, 1), seed=1)
    image = np.stack([labels * 40, 255 - labels * 40, labels * 20], -1).astype(np.uint8)
    image = image.repeat(4, 0).repeat(4, 1)  # 64 x 64 x 3
    for kwargs in (dict(), dict(refine_iters=5)):
        model = RecursiveNCut(affinity="cosine", tau_mode="constant", tau=0.5, min_size=1,
                              assign="concept", out_size=64, **kwargs).fit(attn, image=image)
        levels = model.level_labels_
        assert levels.shape[1:] == (64, 64)
        check_nested(levels)
        np.testing.assert_array_equal(reproduce_levels(levels[0], transition_matrices(levels)), levels)
        assert model.n_segments_[0] >= 6


def test_pamr_moves_a_shifted_boundary_to_the_colour_edge():
    image = np.zeros((24, 24, 3), np.uint8)
    image[:, 12:] = 200
    image += np.random.default_rng(0).integers(0, 6, image.shape).astype(np.uint8)
    labels = np.zeros((24, 24), np.int64)
    labels[:, 14:] = 1  # the boundary two pixels off the edge
    refined = pamr(image, labels, iterations=10)
    truth = (np.arange(24) >= 12).astype(np.int64)[None].repeat(24, 0)
    assert (refined == truth).mean() == 1.0
    assert (labels == truth).mean() < 0.95
    with pytest.raises(ValueError, match="differ in size"):
        pamr(image[:10], labels)


def test_refinement_without_an_image_is_refused(four_regions):
    with pytest.raises(ValueError, match="PAMR"):
        RecursiveNCut(refine_iters=3, out_size=32).fit(four_regions[0])
    for kwargs, message in [(dict(rescale="zscore"), "rescale"), (dict(assign="bicubic"), "assign"),
                            (dict(n_thresholds=-1), "n_thresholds")]:
        with pytest.raises(ValueError, match=message):
            RecursiveNCut(**kwargs).fit(four_regions[0])
