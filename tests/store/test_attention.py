"""attention/ group: schema, quantisation round-trip, per-image writes and reads."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from diffparts.store import (
    create_attention_arrays,
    dequantise_key_maps,
    dequantise_key_maps_log,
    mark_done,
    open_store,
    prepare_store,
    quantise_key_maps,
    quantise_key_maps_log,
    read_cross_attention,
    read_self_attention,
    write_attention,
)
from diffparts.store.manifest import build_manifest

R, T = 4, 3


def random_attention(rng, n=1, r=R, t=T):
    """(image, qy, qx, ky, kx) key maps summing to 1 and (image, token, qy, qx) over tokens."""
    logits = rng.normal(scale=3.0, size=(n, r, r, r * r))
    self_attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    cross = rng.random((n, t, r, r))
    cross /= cross.sum(1, keepdims=True)
    return self_attn.reshape(n, r, r, r, r).astype(np.float32), cross.astype(np.float32)


def make_store(tmp_path, precision="float16", n=3):
    images = [{"image_id": i + 1, "name": f"b/{i}.png", "sha256": f"h{i}"} for i in range(n)]
    identity = build_manifest("m", "sha256:m", {"precision": precision})
    prepare_store(tmp_path / "s.zarr", images, identity)
    root = open_store(tmp_path / "s.zarr", "r+")
    create_attention_arrays(root, R, ["<s>", "bird", "</s>"], 32, precision)
    return root


@pytest.mark.parametrize("precision", ["float16", "uint8", "uint8-log"])
def test_schema_names_shapes_chunks_dtypes(tmp_path, precision):
    root = make_store(tmp_path, precision)
    self_arr, cross = root["attention/self"], root["attention/cross"]
    assert self_arr.metadata.dimension_names == ("image", "qy", "qx", "ky", "kx")
    assert self_arr.shape == (3, R, R, R, R) and self_arr.chunks == (1, R, R, R, R)
    assert self_arr.dtype == np.dtype(precision.split("-")[0])
    assert cross.metadata.dimension_names == ("image", "token", "qy", "qx")
    assert cross.shape == (3, T, R, R) and cross.dtype == np.float16 and cross.chunks[0] == 1
    assert ("self_scale" in root["attention"]) == precision.startswith("uint8")
    if precision.startswith("uint8"):
        scale = root["attention/self_scale"]
        assert scale.metadata.dimension_names == ("image", "qy", "qx") and scale.dtype == np.float32
    assert root["attention/done"].dtype == bool and root["attention/done"].chunks == (1,)
    # every array of the store names its axes
    for _, node in root.members(max_depth=None):
        if isinstance(node, zarr.Array):
            assert node.metadata.dimension_names, node.path
    assert root["attention"].attrs["tokens"] == ["<s>", "bird", "</s>"]


def test_quantise_max_is_255_and_round_trip_close():
    rng = np.random.default_rng(0)
    attn, _ = random_attention(rng, n=2)
    q, scale = quantise_key_maps(attn)
    assert q.dtype == np.uint8 and scale.shape == attn.shape[:-2]
    assert np.all(q.max(axis=(-2, -1)) == 255)
    back = dequantise_key_maps(q, scale)
    np.testing.assert_allclose(back.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
    # error per value at most half a quantisation step of that map (plus renormalisation)
    step = attn.max(axis=(-2, -1), keepdims=True) / 255
    assert np.all(np.abs(back - attn) <= 0.6 * step + 0.02 * attn.max(axis=(-2, -1), keepdims=True))
    # argmax of every key map survives
    flat = lambda a: a.reshape(*a.shape[:-2], -1).argmax(-1)  # noqa: E731
    assert np.mean(flat(back) == flat(attn)) > 0.95


def test_log_quantisation_keeps_small_values_relative():
    rng = np.random.default_rng(2)
    attn, _ = random_attention(rng, n=1)
    q, scale = quantise_key_maps_log(attn)
    assert q.dtype == np.uint8 and np.all(q.max(axis=(-2, -1)) == 255)
    np.testing.assert_allclose(scale, attn.max(axis=(-2, -1)), rtol=1e-6)
    back = dequantise_key_maps_log(q, scale)
    np.testing.assert_allclose(back.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
    # every value above max * e^-20 within ~4 % (half a log step, plus renormalisation)
    visible = attn > attn.max(axis=(-2, -1), keepdims=True) * np.exp(-19.0)
    rel = np.abs(back[visible] / attn[visible] - 1)
    assert rel.max() < 0.1 and np.median(rel) < 0.03
    # linear uint8 zeroes the small values instead
    lin = dequantise_key_maps(*quantise_key_maps(attn))
    assert np.sum(lin == 0) > np.sum(back == 0)


def test_quantise_rejects_negative_and_keeps_zero_maps():
    with pytest.raises(ValueError, match="non-negative"):
        quantise_key_maps(-np.ones((2, 2, 2)))
    q, scale = quantise_key_maps(np.zeros((1, 2, 2)))
    assert scale[0] == 0 and np.all(dequantise_key_maps(q, scale) == 0)


@pytest.mark.parametrize("precision", ["float16", "uint8", "uint8-log"])
def test_write_read_one_image_normalised(tmp_path, precision):
    root = make_store(tmp_path, precision)
    rng = np.random.default_rng(1)
    attn, cross = random_attention(rng)
    nbytes = write_attention(root, 1, attn[0], cross[0])
    assert nbytes > 0
    mark_done(root, "attention", 1)
    back = read_self_attention(open_store(tmp_path / "s.zarr"), 1)
    assert back.dtype == np.float32 and back.shape == (R, R, R, R)
    np.testing.assert_allclose(back.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
    tol = {"float16": 2e-3, "uint8": 2e-2, "uint8-log": 2e-2}[precision]
    np.testing.assert_allclose(back, attn[0], atol=tol)
    np.testing.assert_allclose(read_cross_attention(root, 1), cross[0], atol=1e-3)
    # other images untouched: only image 1's chunks exist
    assert not np.any(root["attention/self"][0]) and not np.any(root["attention/self"][2])


def test_write_rejects_wrong_shape(tmp_path):
    root = make_store(tmp_path)
    with pytest.raises(ValueError, match="shape"):
        write_attention(root, 0, np.zeros((R, R, R, R + 1)), np.zeros((T, R, R)))


def test_write_refuses_nan_and_nothing_is_written(tmp_path):
    root = make_store(tmp_path)
    self_attn, cross = random_attention(np.random.default_rng(0))
    self_attn[0, 1, 2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_attention(root, 1, self_attn[0], cross[0])
    assert not np.any(root["attention/self"][1])


def test_nan_key_map_stays_nan_on_read_so_the_reader_can_refuse_it():
    maps = np.full((2, 2, 2), 0.25, dtype=np.float16)  # (q, ky, kx)
    maps[1, 0, 0] = np.nan
    out = dequantise_key_maps(maps, None)
    assert np.allclose(out[0], 0.25) and np.isnan(out[1]).all()
    assert not np.any(dequantise_key_maps(np.zeros((1, 2, 2), np.float16), None))  # zero maps stay 0


def test_attention_arrays_refuse_other_resolution(tmp_path):
    root = make_store(tmp_path)
    with pytest.raises(ValueError, match="R=4"):
        create_attention_arrays(root, 8, ["<s>", "bird", "</s>"], 64, "float16")
    with pytest.raises(ValueError, match="precision"):
        create_attention_arrays(root, R, ["a"], 32, "bfloat16")


def test_float16_conversion_matches_numpy_bits_on_subnormals():
    from diffparts.store.attention import to_float16, to_float32

    values = np.array([1e-9, 3e-8, 5.9e-5, 6.2e-5, 0.1, 0.3333, 1e-3, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(to_float16(values).view(np.uint16), values.astype(np.float16).view(np.uint16))
    half = values.astype(np.float16)
    np.testing.assert_array_equal(to_float32(half), half.astype(np.float32))
