"""Segment descriptors and foreground/background (diffparts.parts.descriptors)."""

import numpy as np
import pytest

from diffparts.parts.descriptors import (DescriptorConfig, area_weights, border_share, describe_image,
                                         estimate_foreground_box, feature_layout, scale_box, unit_map)
from diffparts.parts.synthetic import draw_object


def _uniform_attn(res):
    a = np.ones((res, res, res, res), np.float32)
    return a / a[0, 0].sum()


def _local_attn(res):
    """Each query attends only to itself."""
    a = np.zeros((res * res, res * res), np.float32)
    a[np.arange(res * res), np.arange(res * res)] = 1.0
    return a.reshape(res, res, res, res)


def test_position_and_size_in_box_units():
    seg = draw_object(16, (2, 2, 10, 10))          # head: x 2..5, y 2..5 (4 x 4 px of a 10 x 10 box)
    config = DescriptorConfig(mirror_invariant=False, split_at_box=False, connected_units=False)
    d = describe_image(seg, _uniform_attn(8), box=(2, 2, 10, 10), config=config)
    names, _ = feature_layout(config, 0)
    f = dict(zip(names, d.features[list(d.segment_ids).index(2)]))   # head
    assert f["cx"] == pytest.approx(0.2) and f["cy"] == pytest.approx(0.2)
    assert f["extent_w"] == pytest.approx(0.4) and f["extent_h"] == pytest.approx(0.4)
    assert f["log_area"] == pytest.approx(np.log(0.16), abs=1e-6)
    assert d.features.shape == (5, len(names))
    np.testing.assert_array_equal(d.segment_ids, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(d.foreground, [False, False, True, True, True])
    # mirror-invariant (default): x folded about the box centre
    d = describe_image(seg, _uniform_attn(8), box=(2, 2, 10, 10),
                       config=DescriptorConfig(split_at_box=False, connected_units=False))
    names, _ = feature_layout(DescriptorConfig(), 0)
    assert dict(zip(names, d.features[list(d.segment_ids).index(2)]))["cx"] == pytest.approx(0.3)


def test_mirrored_object_has_the_same_descriptors():
    rng = np.random.default_rng(0)
    attn = rng.random((8, 8, 8, 8)).astype(np.float32)
    attn /= attn.sum((2, 3), keepdims=True)
    seg = draw_object(8, (0, 0, 8, 8))
    mirrored = seg[:, ::-1].copy()
    mirrored = np.select([mirrored == 0, mirrored == 1], [1, 0], mirrored)   # keep background ids apart
    a = describe_image(seg, attn, box=(0, 0, 8, 8))
    b = describe_image(mirrored, attn[:, ::-1, :, ::-1].copy(), box=(0, 0, 8, 8))
    np.testing.assert_allclose(a.features[2:], b.features[2:], atol=1e-5)


def test_key_map_binned_in_the_box_frame():
    # With each query attending to itself, a segment's mean key map is its own area: the tail
    # (right strip u >= 0.7 of an 8-px box: columns 6, 7) puts all its mass in the last column
    # of a 4x4 grid, a quarter per row.
    seg = draw_object(8, (0, 0, 8, 8))
    raw = {"split_at_box": False, "connected_units": False}
    d = describe_image(seg, _local_attn(8), box=(0, 0, 8, 8), config=DescriptorConfig(mirror_invariant=False, **raw))
    tail = d.features[list(d.segment_ids).index(3), :17]
    grid = tail[:16].reshape(4, 4)
    np.testing.assert_allclose(grid[:, 3], 0.25, atol=1e-6)
    assert grid[:, :3].sum() == pytest.approx(0)
    assert tail[16] == pytest.approx(0)           # nothing outside the box
    # folded (default): columns 0+3 and 1+2 -> the tail's mass sits in folded column 0
    d = describe_image(seg, _local_attn(8), box=(0, 0, 8, 8), config=DescriptorConfig(**raw))
    folded = d.features[list(d.segment_ids).index(3), :8].reshape(4, 2)
    np.testing.assert_allclose(folded[:, 0], 0.25, atol=1e-6)


def test_cross_attention_pooled_per_token():
    seg = draw_object(8, (1, 1, 6, 6))
    cross = np.zeros((3, 8, 8), np.float32)
    cross[1] = (seg == 4)                          # token 1 lives on the body
    config = DescriptorConfig(cross_tokens=2, weight_cross=0.5)
    d = describe_image(seg, _uniform_attn(8), cross, box=(1, 1, 6, 6), config=config)
    names, _ = feature_layout(config, 3)
    col = names.index("cross_1")
    body, head = list(d.segment_ids).index(4), list(d.segment_ids).index(2)
    assert d.features[body, col] == pytest.approx(1.0) and d.features[head, col] == pytest.approx(0.0)
    # weight 0 (default): no cross-attention features at all
    assert not any(n.startswith("cross") for n in feature_layout(DescriptorConfig(), 3)[0])


def test_split_at_box_makes_outside_pixels_background():
    seg = np.zeros((8, 8), int)
    seg[:, 4:] = 1                                  # segment 1: right half, box covers x 2..6
    d = describe_image(seg, _uniform_attn(4), box=(2, 0, 4, 8), config=DescriptorConfig(inside_box_min=0.4, border_share_max=1.0))
    # units by (segment, inside): 0 = seg 0 outside (x 0..1), 1 = seg 0 inside (x 2..3),
    # 2 = seg 1 outside (x 6..7), 3 = seg 1 inside (x 4..5)
    np.testing.assert_array_equal(d.segment_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(d.pixels, [16, 16, 16, 16])
    np.testing.assert_array_equal(d.foreground, [False, True, False, True])


def test_scattered_segment_becomes_connected_units():
    seg = np.zeros((8, 8), int)
    seg[1:3, 1:3] = 1
    seg[5:7, 5:7] = 1                               # segment 1 in two pieces
    units, parent, inside = unit_map(seg, None, connected=True)
    np.testing.assert_array_equal(parent, [0, 1, 1])
    assert inside.all() and units[1, 1] == 1 and units[6, 6] == 2
    d = describe_image(seg, _uniform_attn(4), box=(0, 0, 8, 8), config=DescriptorConfig(border_share_max=1.0))
    assert len(d.segment_ids) == 3 and d.pixels.tolist() == [56, 4, 4]


def test_foreground_estimate_without_box():
    seg = draw_object(16, (4, 3, 8, 9))
    box = estimate_foreground_box(seg)
    np.testing.assert_allclose(box, [4, 3, 8, 9])
    d = describe_image(seg, _uniform_attn(8))
    assert d.box_estimated and d.foreground.tolist() == [False, False, True, True, True]
    share = border_share(seg, np.array([0, 1, 2]))
    assert share[:2].sum() == pytest.approx(1.0) and share[2] == 0


def test_area_weights_cover_cells():
    seg = np.array([[0, 0, 1, 1], [0, 2, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]])
    w = area_weights(seg, np.array([0, 1, 2]), 2)
    np.testing.assert_allclose(w.sum(1), 1.0)
    np.testing.assert_allclose(w[2], [1, 0, 0, 0])      # segment 2 lies in cell (0, 0)


def test_scale_box_and_errors():
    np.testing.assert_allclose(scale_box((10, 20, 30, 40), (100, 200), (50, 50)), [5, 5, 15, 10])
    seg = draw_object(8, (1, 1, 6, 6))
    with pytest.raises(ValueError, match="box"):
        describe_image(seg, _uniform_attn(8), box=(0, 0, 0, 5))
    with pytest.raises(ValueError, match="self_attn"):
        describe_image(seg, np.ones((8, 8, 4, 4), np.float32))
    with pytest.raises(ValueError, match="box_grid"):
        describe_image(seg, _uniform_attn(8), config=DescriptorConfig(box_grid=0))


def test_pooled_unet_features_are_the_unit_mean_normalised():
    seg = np.zeros((8, 8), np.int64)
    seg[:, 4:] = 1                                   # two halves
    feats = np.zeros((2, 4, 4), np.float32)          # (channel, y, x) on a coarser 4 x 4 grid
    feats[0, :, :2] = 3.0                            # left half: channel 0
    feats[1, :, 2:] = 0.5                            # right half: channel 1
    config = DescriptorConfig(weight_unet=2.0, split_at_box=False, connected_units=False)
    d = describe_image(seg, _uniform_attn(4), box=(0, 0, 8, 8), config=config, unet_features=feats)
    names, weights = feature_layout(config, 0, n_channels=2)
    cols = [names.index("unet_0"), names.index("unet_1")]
    np.testing.assert_allclose(d.features[:, cols], [[1.0, 0.0], [0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(weights[cols], 2.0 / np.sqrt(2))
    with pytest.raises(ValueError, match="weight_unet > 0 needs unet_features"):
        describe_image(seg, _uniform_attn(4), box=(0, 0, 8, 8), config=config)
    assert "unet_0" not in feature_layout(DescriptorConfig(), 0, n_channels=2)[0]   # None: off in the library
