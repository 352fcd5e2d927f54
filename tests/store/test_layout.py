"""Store layout: stage arrays, done markers, failures, image axis growth."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from diffparts.store import (
    create_stage_array,
    done_mask,
    failures,
    image_table,
    is_done,
    mark_done,
    open_store,
    prepare_store,
    record_failure,
)
from diffparts.store.manifest import build_manifest


def images(n, start=0):
    return [{"image_id": i + 1, "name": f"c/{i:03d}.png", "sha256": f"h{i}"} for i in range(start, n)]


@pytest.fixture
def root(tmp_path):
    prepare_store(tmp_path / "s.zarr", images(4), build_manifest("m", "sha256:m", {"p": 1}))
    return open_store(tmp_path / "s.zarr", "r+")


def test_image_table_and_arrays(root):
    assert image_table(root)[2] == {"image_id": 3, "name": "c/002.png", "index": 2}
    for key in ("images/image_id", "images/name", "images/sha256", "attention/done", "failures/attention"):
        assert root[key].shape == (4,) and root[key].chunks == (1,)
        assert root[key].metadata.dimension_names == ("image",)


def test_open_store_modes(tmp_path, root):
    with pytest.raises(ValueError, match="mode"):
        open_store(tmp_path / "s.zarr", "w")
    with pytest.raises(FileNotFoundError):
        open_store(tmp_path / "nothing.zarr")


def test_done_markers(root):
    assert not is_done(root, "attention", 1)
    mark_done(root, "attention", 1)
    assert is_done(root, "attention", 1)
    assert done_mask(root, "attention").tolist() == [False, True, False, False]
    # only image 1's marker chunk exists on disk
    assert root["attention/done"].nchunks_initialized == 1
    assert not is_done(root, "segments", 0)  # absent stage: nothing done


def test_failures_from_threads(root):
    threads = [
        threading.Thread(target=record_failure, args=(root, "attention", i + 1, f"c/{i:03d}.png", f"bad {i}"))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = failures(root)
    assert [f["reason"] for f in got] == ["bad 0", "bad 1", "bad 2", "bad 3"]
    assert got[1] == {"image_id": 2, "name": "c/001.png", "index": 1, "stage": "attention", "reason": "bad 1"}
    with pytest.raises(ValueError, match="not in the store"):
        record_failure(root, "attention", 9, "nope.png", "x")
    with pytest.raises(ValueError, match="index"):
        record_failure(root, "attention", 1, "c/000.png", "x", index=2)


def test_create_stage_array_checks_and_grows(root):
    group = root.require_group("segments")
    arr = create_stage_array(group, "labels", (4, 8, 8), "int16", ("image", "y", "x"))
    assert arr.chunks == (1, 8, 8)
    again = create_stage_array(group, "labels", (6, 8, 8), "int16", ("image", "y", "x"))
    assert again.shape == (6, 8, 8)
    with pytest.raises(ValueError, match="dtype"):
        create_stage_array(group, "labels", (6, 8, 8), "int32", ("image", "y", "x"))
    with pytest.raises(ValueError, match="dimension_names"):
        create_stage_array(group, "labels", (6, 8, 8), "int16", ("image", "x", "y"))
    with pytest.raises(ValueError, match="chunks of one image"):
        create_stage_array(group, "other", (6, 8), "int16", ("image", "x"), chunks=(2, 8))


def test_growing_resizes_every_image_axis(tmp_path, root):
    create_stage_array(root.require_group("segments"), "labels", (4, 8, 8), "int16", ("image", "y", "x"))
    mark_done(root, "attention", 3)
    report = prepare_store(tmp_path / "s.zarr", images(6), build_manifest("m", "sha256:m", {"p": 1}))
    assert report.added == [4, 5] and report.indices == list(range(6))
    root = open_store(tmp_path / "s.zarr")
    assert root["segments/labels"].shape == (6, 8, 8)
    assert done_mask(root, "attention").tolist() == [False, False, False, True, False, False]
    assert [r["name"] for r in image_table(root)][-2:] == ["c/004.png", "c/005.png"]
    assert len(root.attrs["manifest"]["images"]) == 6
    np.testing.assert_array_equal(root["images/image_id"][:], np.arange(1, 7))


def test_fsspec_url_store():
    url = "memory://diffparts-test/s.zarr"
    prepare_store(url, images(2), build_manifest("m", "sha256:m", {}))
    mark_done(open_store(url, "r+"), "attention", 1)
    assert done_mask(open_store(url), "attention").tolist() == [False, True]


def test_reset_if_changed_deletes_only_a_group_made_otherwise(tmp_path):
    import zarr

    from diffparts.store import reset_if_changed

    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w")
    assert reset_if_changed(root, "stage", {"model": "a"}) is None          # nothing there yet
    root.require_group("stage").attrs.update({"model": "a", "k": 3})
    assert reset_if_changed(root, "stage", {"model": "a", "k": 3}) is None and "stage" in root
    reason = reset_if_changed(root, "stage", {"model": "b", "k": 3})
    assert reason == "stage/ was made with other model: redone" and "stage" not in root
