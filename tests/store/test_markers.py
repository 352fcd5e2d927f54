"""diffparts.store.markers: a whole per-image array read from its chunk files equals Zarr's read."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.store import build_manifest, done_mask, failures, mark_done, open_store, prepare_store, record_failure
from diffparts.store.markers import MAX_DISTINCT, _chunk_folder, read_image_vector


def make_store(tmp_path, n=100):
    images = [{"image_id": i + 1, "name": f"{i}.png", "sha256": f"{i:064x}"} for i in range(n)]
    path = tmp_path / "s.zarr"
    prepare_store(path, images, build_manifest("m", "sha256:0", {}), stages=("attention",))
    return path


def test_markers_flags_and_failures_read_like_zarr(tmp_path):
    path = make_store(tmp_path)
    root = open_store(path, "r+")
    arr = root["attention/done"]
    assert _chunk_folder(arr) is not None                         # the fast path is taken here
    np.testing.assert_array_equal(read_image_vector(arr), arr[:])  # nothing written: all fill
    for i in (0, 3, 50, 99):
        mark_done(root, "attention", i)
    mark_done(root, "attention", 50, False)                      # cleared again
    record_failure(root, "attention", 8, "7.png", "cannot decode", index=7)
    record_failure(root, "attention", 9, "8.png", "too large", index=8)
    root = open_store(path)
    got = read_image_vector(root["attention/done"])
    assert got.dtype == bool and np.flatnonzero(got).tolist() == [0, 3, 99]
    np.testing.assert_array_equal(got, root["attention/done"][:])
    np.testing.assert_array_equal(done_mask(root, "attention"), got)
    reasons = read_image_vector(root["failures/attention"])
    np.testing.assert_array_equal(reasons, root["failures/attention"][:])
    assert [(f["index"], f["reason"]) for f in failures(root)] == [(7, "cannot decode"), (8, "too large")]


def test_many_distinct_values_and_torn_chunks_fall_back_to_zarr(tmp_path):
    root = open_store(make_store(tmp_path, n=MAX_DISTINCT + 10))
    ids = root["images/image_id"]                                  # every chunk distinct: Zarr reads it
    np.testing.assert_array_equal(read_image_vector(ids), np.arange(1, MAX_DISTINCT + 11))
    root = open_store(tmp_path / "s.zarr", "r+")
    mark_done(root, "attention", 2)
    (_chunk_folder(root["attention/done"]) / "c" / "5").write_bytes(b"\x00garbage")   # caught mid-write
    arr = open_store(tmp_path / "s.zarr")["attention/done"]
    try:
        expected = arr[:]
    except Exception as err:                                       # Zarr cannot read it: neither do we
        with pytest.raises(type(err)):
            read_image_vector(arr)
    else:
        np.testing.assert_array_equal(read_image_vector(arr), expected)
