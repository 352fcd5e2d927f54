"""DiffSeg aggregation (docs/design.md §5.1 "Extract") on small cases whose answer is computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffparts.attention.aggregate import (
    aggregate_cross_attention,
    aggregate_self_attention,
    resolution_weights,
)

# Bilinear upsampling 2 -> 4 with align_corners=False puts source pixel 0 at output positions
# with weights [1, .75, .25, 0] (output centres (x + .5) / 2 - .5 = -.25 (clamped), .25, .75, 1.25).
PROFILE = np.array([1.0, 0.75, 0.25, 0.0])


def onehot(n: int, index: int) -> np.ndarray:
    v = np.zeros(n, np.float32)
    v[index] = 1.0
    return v


def hand_maps():
    """Resolutions 4 and 2, one image: fine maps attend to their own position, coarse ones to key 0."""
    fine = np.eye(16, dtype=np.float32)[None]  # image q k at r=4: query i -> key i
    coarse = np.zeros((1, 4, 4), np.float32)
    coarse[0, :, 0] = 1.0  # image q k at r=2: every query -> key (0, 0)
    coarse[0, 3] = [0.25, 0.25, 0.25, 0.25]  # query (1, 1) -> uniform
    return {4: fine, 2: coarse}


def test_resolution_weights_presets_and_mapping():
    assert resolution_weights([64, 32, 16, 8]) == pytest.approx({64: 64 / 120, 32: 32 / 120, 16: 16 / 120, 8: 8 / 120})
    assert resolution_weights([4, 2], "uniform") == {4: 0.5, 2: 0.5}
    assert resolution_weights([4, 2], "inverse") == pytest.approx({4: 1 / 3, 2: 2 / 3})
    assert resolution_weights([4, 2], {4: 1, "2": 3}) == {4: 0.25, 2: 0.75}
    with pytest.raises(ValueError, match="'nope'"):
        resolution_weights([4, 2], "nope")
    with pytest.raises(ValueError, match="exactly the captured resolutions"):
        resolution_weights([4, 2], {4: 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        resolution_weights([4, 2], {4: 1.0, 2: -1.0})


def test_self_attention_by_hand():
    out = aggregate_self_attention(hand_maps())  # weights 4/6, 2/6
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (1, 4, 4, 4, 4)  # image qy qx ky kx

    # Query (0, 0): fine one-hot at key (0, 0); coarse query (0, 0) -> key (0, 0), upsampled to
    # the outer product of PROFILE (sum 4), renormalised.
    expected = 4 / 6 * onehot(16, 0).reshape(4, 4) + 2 / 6 * np.outer(PROFILE, PROFILE) / 4
    np.testing.assert_allclose(out[0, 0, 0], expected, atol=1e-6)
    # Query (1, 0) repeats coarse query (0, 0) (nearest): fine one-hot at key (1, 0).
    expected = 4 / 6 * onehot(16, 4).reshape(4, 4) + 2 / 6 * np.outer(PROFILE, PROFILE) / 4
    np.testing.assert_allclose(out[0, 1, 0], expected, atol=1e-6)
    # Query (3, 2) repeats coarse query (1, 1): uniform stays uniform (1/16 per key).
    expected = 4 / 6 * onehot(16, 14).reshape(4, 4) + 2 / 6 * np.full((4, 4), 1 / 16)
    np.testing.assert_allclose(out[0, 3, 2], expected, atol=1e-6)
    np.testing.assert_allclose(out.sum((-1, -2)), 1.0, atol=1e-6)


def test_self_attention_custom_weights_and_layer_head_means():
    maps = hand_maps()
    only_coarse = aggregate_self_attention(maps, {4: 0.0, 2: 1.0})
    np.testing.assert_allclose(only_coarse[0, 0, 1], np.outer(PROFILE, PROFILE) / 4, atol=1e-6)
    # (image, head, q, k) and lists of layers are averaged before aggregation.
    fine = maps[4]
    split = {4: [np.stack([fine, fine], 1), fine], 2: np.stack([maps[2], maps[2] * 0 + 0.25], 1)}
    mixed = {4: fine, 2: (maps[2] + 0.25) / 2}
    np.testing.assert_allclose(aggregate_self_attention(split), aggregate_self_attention(mixed), atol=1e-6)


def test_self_attention_torch_in_torch_out_and_non_divisible_sizes():
    rng = np.random.default_rng(0)
    maps = {}
    for r in (3, 2):  # R = 3 is not a multiple of 2: the nearest index path
        m = rng.random((2, r * r, r * r)).astype(np.float32)
        maps[r] = torch.from_numpy(m / m.sum(-1, keepdims=True))
    out = aggregate_self_attention(maps, "uniform")
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 3, 3, 3)
    torch.testing.assert_close(out.sum((-1, -2)), torch.ones(2, 3, 3))
    # nearest: R position i takes r position floor(i * r / R) -> 0, 0, 1 for r=2, R=3
    up = torch.nn.functional.interpolate(maps[2].reshape(8, 1, 2, 2), size=(3, 3), mode="bilinear", align_corners=False)
    up = (up / up.sum((-1, -2), keepdim=True)).reshape(2, 2, 2, 3, 3)
    torch.testing.assert_close(out[:, 2, 1], 0.5 * maps[3].reshape(2, 3, 3, 3, 3)[:, 2, 1] + 0.5 * up[:, 1, 0])


def test_self_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="resolution 4 have 9 queries"):
        aggregate_self_attention({4: np.ones((1, 9, 9), np.float32)})
    with pytest.raises(ValueError, match="no attention maps"):
        aggregate_self_attention({})


def test_cross_attention_by_hand():
    fine = np.zeros((1, 16, 2), np.float32)  # image q token at r=4
    fine[..., 0] = 1.0
    coarse = np.zeros((1, 4, 2), np.float32)  # image q token at r=2
    coarse[0, 0] = [0.0, 1.0]  # query (0, 0) -> token 1; the others -> token 0
    coarse[0, 1:, 0] = 1.0
    out = aggregate_cross_attention({4: fine, 2: coarse})
    assert out.shape == (1, 2, 4, 4)  # image token qy qx
    # token 1's coarse map is one-hot at query (0, 0): bilinear up -> outer(PROFILE, PROFILE)
    np.testing.assert_allclose(out[0, 1], 2 / 6 * np.outer(PROFILE, PROFILE), atol=1e-6)
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-6)  # still a distribution per query
