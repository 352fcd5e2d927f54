"""The features/ group (diffparts.store.features): shape, names, chunks, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.store import (build_manifest, create_feature_arrays, has_features, mark_done, open_store,
                             prepare_store, read_features, write_features)
from diffparts.store.features import dequantise_features, feature_precision, quantise_features


def make_store(tmp_path, n=3):
    images = [{"image_id": i + 1, "name": f"{i}.png", "sha256": f"{i:064x}"} for i in range(n)]
    path = tmp_path / "s.zarr"
    prepare_store(path, images, build_manifest("m", "sha256:0", {"c": 1}), stages=("attention", "features"))
    return path


def test_float16_features_are_stored_with_shape_names_and_read_back_equal(tmp_path):
    """The float16 form (every store with features before issue 20) is still written and read."""
    path = make_store(tmp_path)
    root = open_store(path, "r+")
    assert not has_features(root)
    with pytest.raises(ValueError, match="no features/ group"):
        read_features(root, 0)
    create_feature_arrays(root, {0: (6, 4, 4), 1: (3, 8, 8)}, {"blocks": [0, 1]}, precision="float16")
    rng = np.random.default_rng(0)
    values = {0: rng.normal(size=(6, 4, 4)).astype(np.float32), 1: rng.normal(size=(3, 8, 8)).astype(np.float32)}
    nbytes = write_features(root, 1, values)
    mark_done(root, "features", 1)
    assert nbytes == (6 * 16 + 3 * 64) * 2                          # float16
    root = open_store(path)
    arr = root["features/up_0"]
    assert arr.shape == (3, 6, 4, 4) and arr.dtype == np.float16 and arr.chunks == (1, 6, 4, 4)
    assert arr.metadata.dimension_names == ("image", "up_0_channel", "up_0_y", "up_0_x")   # blocks differ
    assert root["features"].attrs["shapes"] == {"up_0": [6, 4, 4], "up_1": [3, 8, 8]}
    assert root["features/done"][:].tolist() == [False, True, False]
    one = read_features(root, 1, block=0)
    np.testing.assert_array_equal(one, values[0].astype(np.float16).astype(np.float32))
    both = read_features(root, 1)                                   # up_0 repeated to 8 x 8, stacked
    assert both.shape == (9, 8, 8)
    np.testing.assert_array_equal(both[:6, ::2, ::2], one)


def test_wrong_shapes_and_blocks_are_refused(tmp_path):
    root = open_store(make_store(tmp_path), "r+")
    create_feature_arrays(root, {0: (2, 4, 4)}, {})
    with pytest.raises(ValueError, match="shape"):
        write_features(root, 0, {0: np.zeros((2, 5, 5))})
    with pytest.raises(ValueError, match=r"up_blocks \[1\]"):
        write_features(root, 0, {1: np.zeros((2, 4, 4))})
    with pytest.raises(ValueError, match="feature arrays exist"):
        create_feature_arrays(root, {1: (2, 4, 4)}, {})


def test_int8_is_the_default_and_reads_back_within_half_a_step(tmp_path):
    path = make_store(tmp_path)
    root = open_store(path, "r+")
    create_feature_arrays(root, {0: (6, 4, 4), 1: (3, 8, 8)}, {})
    rng = np.random.default_rng(1)
    values = {0: rng.normal(size=(6, 4, 4)).astype(np.float32) * 30,
              1: (rng.standard_t(2, size=(3, 8, 8)) * 1e-3).astype(np.float32)}   # heavy tails, small values
    values[0][:, 0, 0] = 0.0                                           # an all-zero cell stays exactly zero
    nbytes = write_features(root, 2, values)
    assert nbytes == 6 * 16 + 16 * 2 + 3 * 64 + 64 * 2               # int8 values + one float16 step per cell
    root = open_store(path)
    assert feature_precision(root) == "int8"
    assert root["features/up_0"].dtype == np.int8 and root["features/up_0_scale"].dtype == np.float16
    assert root["features/up_1_scale"].metadata.dimension_names == ("image", "up_1_y", "up_1_x")
    for b in (0, 1):
        back = read_features(root, 2, block=b)
        step = np.asarray(root[f"features/up_{b}_scale"][2], np.float32)
        peak = np.abs(values[b]).max(axis=0)
        err = np.abs(back - values[b])
        assert (err <= step[None] / 2 * (1 + 1e-6) + 1e-12).all()
        assert (err <= peak[None] / 254 * 1.002 + 1e-12).all()           # within 1/254 of the cell's largest
        assert (step >= peak / 127).all()                                 # rounded up: nothing clipped
    assert (read_features(root, 2, block=0)[:, 0, 0] == 0).all()
    # the direction of each cell's vector, which matching and descriptors compare, barely moves
    a, b = values[0].reshape(6, -1), read_features(root, 2, block=0).reshape(6, -1)
    norms = np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0)
    cos = (a * b).sum(0)[norms > 0] / norms[norms > 0]
    assert cos.min() > 0.9999


def test_quantise_round_trip_on_sd_shaped_values():
    rng = np.random.default_rng(2)
    values = (rng.normal(size=(1280, 8, 8)) * rng.gamma(1.0, size=(1280, 1, 1))).astype(np.float32)
    q, step = quantise_features(values)
    assert q.dtype == np.int8 and step.dtype == np.float16 and q.min() >= -127
    back = dequantise_features(q, step)
    rel = np.abs(back - values).max(axis=0) / np.abs(values).max(axis=0)
    assert rel.max() <= 1 / 254 * 1.002
    with pytest.raises(ValueError, match="too large"):
        quantise_features(np.full((2, 1, 1), 1e9, np.float32))


def test_an_old_float16_store_keeps_its_precision_when_extended(tmp_path):
    """Arrays created float16 (no precision attribute, as before issue 20) read as before and
    are grown and written in float16; asking them for int8 is refused by name."""
    path = make_store(tmp_path, n=2)
    root = open_store(path, "r+")
    create_feature_arrays(root, {0: (3, 4, 4)}, {}, precision="float16")
    del root["features"].attrs["precision"]                             # as written before issue 20
    values = np.random.default_rng(3).normal(size=(3, 4, 4)).astype(np.float32)
    write_features(root, 0, {0: values})
    images = [{"image_id": i + 1, "name": f"{i}.png", "sha256": f"{i:064x}"} for i in range(3)]
    prepare_store(path, images, build_manifest("m", "sha256:0", {"c": 1}), stages=("attention", "features"))
    root = open_store(path, "r+")
    create_feature_arrays(root, {0: (3, 4, 4)}, {})                     # a later extraction: same precision
    assert feature_precision(root) == "float16" and root["features/up_0"].shape == (3, 3, 4, 4)
    assert "up_0_scale" not in root["features"]
    write_features(root, 2, {0: values})
    for i in (0, 2):
        np.testing.assert_array_equal(read_features(root, i), values.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="precision 'float16'"):
        create_feature_arrays(root, {0: (3, 4, 4)}, {}, precision="int8")
