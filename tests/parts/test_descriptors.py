"""Segment descriptors and foreground/background (diffparts.parts.descriptors)."""

import numpy as np
import pytest

from diffparts.parts.descriptors import (DescriptorConfig, area_weights, border_share, describe_image,
                                         estimate_foreground_box, feature_layout, scale_box)
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
    seg = draw_object(16, (2, 2, 8, 8))            # head 2..6 x 2..6, tail 6..10 x 2..6, body below
    d = describe_image(seg, _uniform_attn(8), box=(2, 2, 8, 8))
    names, _ = feature_layout(DescriptorConfig(), 0)
    f = dict(zip(names, d.features[list(d.segment_ids).index(2)]))   # head
    assert f["cx"] == pytest.approx(0.25) and f["cy"] == pytest.approx(0.25)
    assert f["extent_w"] == pytest.approx(0.5) and f["extent_h"] == pytest.approx(0.5)
    assert f["log_area"] == pytest.approx(np.log(0.25), abs=1e-6)
    assert d.features.shape == (5, len(names))
    np.testing.assert_array_equal(d.foreground, [False, False, True, True, True])


def test_key_map_binned_in_the_box_frame():
    # With each query attending to itself, a segment's mean key map is its own area: the head
    # (top-left quarter of the box) puts all its mass in the top-left 2x2 bins of a 4x4 grid.
    seg = draw_object(8, (0, 0, 8, 8))
    d = describe_image(seg, _local_attn(8), box=(0, 0, 8, 8))
    head = d.features[list(d.segment_ids).index(2), :17].reshape(-1)
    grid = head[:16].reshape(4, 4)
    np.testing.assert_allclose(grid[:2, :2], 0.25, atol=1e-6)
    assert grid[2:].sum() == pytest.approx(0) and grid[:, 2:].sum() == pytest.approx(0)
    assert head[16] == pytest.approx(0)           # nothing outside the box


def test_cross_attention_pooled_per_token():
    seg = draw_object(8, (1, 1, 6, 6))
    cross = np.zeros((3, 8, 8), np.float32)
    cross[1] = (seg == 4)                          # token 1 lives on the body
    d = describe_image(seg, _uniform_attn(8), cross, box=(1, 1, 6, 6), config=DescriptorConfig(cross_tokens=2))
    names, _ = feature_layout(DescriptorConfig(cross_tokens=2), 3)
    col = names.index("cross_1")
    body, head = list(d.segment_ids).index(4), list(d.segment_ids).index(2)
    assert d.features[body, col] == pytest.approx(1.0) and d.features[head, col] == pytest.approx(0.0)


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
