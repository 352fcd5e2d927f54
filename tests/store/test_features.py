"""The features/ group (diffparts.store.features): shape, names, chunks, round trip."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.store import (build_manifest, create_feature_arrays, has_features, mark_done, open_store,
                             prepare_store, read_features, write_features)


def make_store(tmp_path, n=3):
    images = [{"image_id": i + 1, "name": f"{i}.png", "sha256": f"{i:064x}"} for i in range(n)]
    path = tmp_path / "s.zarr"
    prepare_store(path, images, build_manifest("m", "sha256:0", {"c": 1}), stages=("attention", "features"))
    return path


def test_features_are_stored_with_shape_names_and_read_back_equal(tmp_path):
    path = make_store(tmp_path)
    root = open_store(path, "r+")
    assert not has_features(root)
    with pytest.raises(ValueError, match="no features/ group"):
        read_features(root, 0)
    create_feature_arrays(root, {0: (6, 4, 4), 1: (3, 8, 8)}, {"blocks": [0, 1]})
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
