"""Manifest: hashes, refusal on a model, config or compute change, new versions, changed images."""

from __future__ import annotations

import pytest

from diffparts.store import (
    COMPUTE_DEFAULTS,
    StoreMismatchError,
    build_manifest,
    compute_settings,
    config_hash,
    done_mask,
    failures,
    manifest,
    manifest_compute,
    mark_done,
    model_hash,
    open_store,
    prepare_store,
    record_failure,
)

IMAGES = [{"image_id": i + 1, "name": f"{i}.png", "sha256": f"h{i}"} for i in range(3)]


def test_model_hash_follows_content_not_docs(tmp_path):
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "w.safetensors").write_bytes(b"abc")
    first = model_hash(folder)
    (folder / "README.md").write_text("card")
    assert model_hash(folder) == first
    (folder / "unet" / "w.safetensors").write_bytes(b"abd")
    assert model_hash(folder) != first and first.startswith("sha256:")


def test_model_hash_of_a_diffusers_folder_ignores_card_samples_and_reports(tmp_path):
    folder = tmp_path / "sd"
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"w1")
    first = model_hash(folder)
    (folder / "samples.png").write_bytes(b"png")
    (folder / "quality.json").write_text("{}")
    assert model_hash(folder) == first  # beside the components: not the model
    (folder / "unet" / "config.json").write_text("{}")
    assert model_hash(folder) != first  # inside a component: the model
    changed = model_hash(folder)
    (folder / "model_index.json").write_text('{"unet": 1}')
    assert model_hash(folder) != changed


def test_model_hash_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="no-such/model"):
        model_hash("no-such/model")


def test_config_hash_is_order_free():
    assert config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_manifest_contents(tmp_path):
    prepare_store(tmp_path / "s.zarr", IMAGES, build_manifest("model-x", "sha256:1", {"t": 300}))
    m = open_store(tmp_path / "s.zarr").attrs["manifest"]
    assert m["model"] == "model-x" and m["model_hash"] == "sha256:1"
    assert m["config"] == {"t": 300} and m["config_hash"] == config_hash({"t": 300})
    assert m["images"][1] == {"image_id": 2, "name": "1.png", "sha256": "h1"}
    assert m["code_version"].startswith("0.")


def test_refuses_other_model_or_config_then_new_version(tmp_path):
    path = tmp_path / "s.zarr"
    prepare_store(path, IMAGES, build_manifest("m1", "sha256:1", {"t": 300}))
    mark_done(open_store(path, "r+"), "attention", 0)
    with pytest.raises(StoreMismatchError, match="m1.*m2.*--new-version"):
        prepare_store(path, IMAGES, build_manifest("m2", "sha256:2", {"t": 300}))
    with pytest.raises(StoreMismatchError, match=r"config changed: t: 300 -> 100"):
        prepare_store(path, IMAGES, build_manifest("m1", "sha256:1", {"t": 100}))
    report = prepare_store(path, IMAGES, build_manifest("m2", "sha256:2", {"t": 300}), new_version=True)
    assert report.version == 2
    new = open_store(path)
    assert new.path == "versions/2" and new.attrs["manifest"]["model"] == "m2"
    assert not done_mask(new, "attention").any()
    old = open_store(path, version=1)
    assert old.attrs["manifest"]["model"] == "m1" and done_mask(old, "attention")[0]
    # the new version is now the current one: the old identity is refused in turn
    with pytest.raises(StoreMismatchError):
        prepare_store(path, IMAGES, build_manifest("m1", "sha256:1", {"t": 300}))


def test_changed_image_content_is_redone(tmp_path):
    path = tmp_path / "s.zarr"
    identity = build_manifest("m", "sha256:1", {})
    prepare_store(path, IMAGES, identity)
    root = open_store(path, "r+")
    mark_done(root, "attention", 0)
    mark_done(root, "attention", 1)
    record_failure(root, "attention", 3, "2.png", "unreadable")
    changed = [dict(IMAGES[0]), dict(IMAGES[1], sha256="new"), dict(IMAGES[2], sha256="fixed")]
    report = prepare_store(path, changed, identity)
    assert report.changed == [1, 2] and report.added == []
    assert done_mask(open_store(path), "attention").tolist() == [True, False, False]
    assert failures(open_store(path)) == []
    assert open_store(path).attrs["manifest"]["images"][1]["sha256"] == "new"


def test_manifest_records_the_corpus_and_a_moved_corpus_is_no_mismatch(tmp_path):
    from diffparts.store import describe_corpus

    folder = tmp_path / "birds"
    folder.mkdir()
    (folder / "images.txt").write_text("")
    identity = build_manifest("m", "sha256:0", {"c": 1})
    prepare_store(tmp_path / "s.zarr", IMAGES, identity, corpus=describe_corpus(folder))
    entry = open_store(tmp_path / "s.zarr").attrs["manifest"]["corpus"]
    assert entry == {"path": str(folder.resolve()), "kind": "cub"}
    moved = tmp_path / "moved"
    moved.mkdir()
    prepare_store(tmp_path / "s.zarr", IMAGES, identity, corpus=describe_corpus(moved))   # no StoreMismatchError
    assert open_store(tmp_path / "s.zarr").attrs["manifest"]["corpus"] == {"path": str(moved.resolve()),
                                                                          "kind": "folder"}
    prepare_store(tmp_path / "s.zarr", IMAGES, identity)                # not told: the entry stays
    assert open_store(tmp_path / "s.zarr").attrs["manifest"]["corpus"]["path"] == str(moved.resolve())
    with pytest.raises(ValueError, match="is not a folder"):
        describe_corpus(tmp_path / "nowhere")


def test_compute_settings_are_identity_and_a_change_is_refused_naming_it(tmp_path):
    path = tmp_path / "s.zarr"
    cpu = compute_settings("cpu", "float32", 4)
    prepare_store(path, IMAGES, build_manifest("m", "sha256:m", {"p": 1}, cpu))
    assert manifest(open_store(path))["compute"] == {"device": "cpu", "dtype": "float32", "batch_size": 4}
    assert compute_settings("cuda:1", "float16", 8) == {"device": "cuda", "dtype": "float16", "batch_size": 8}
    # another GPU of the same kind is the same compute; another dtype, kind or batch size is not
    prepare_store(path, IMAGES, build_manifest("m", "sha256:m", {"p": 1}, compute_settings("cpu:0", "float32", 4)))
    for changed, words in (((("cuda", "float32", 4)), "device: 'cpu' -> 'cuda'"),
                           (("cpu", "float16", 4), "dtype: 'float32' -> 'float16'"),
                           (("cpu", "float32", 2), "batch_size: 4 -> 2")):
        with pytest.raises(StoreMismatchError, match=f"compute changed: {words}"):
            prepare_store(path, IMAGES, build_manifest("m", "sha256:m", {"p": 1}, compute_settings(*changed)))
    gpu = build_manifest("m", "sha256:m", {"p": 1}, compute_settings("cuda", "float16", 4))
    report = prepare_store(path, IMAGES, gpu, new_version=True)
    assert report.version == 2 and manifest(open_store(path))["compute"]["dtype"] == "float16"
    assert manifest(open_store(path, version=1))["compute"] == cpu
    for bad in (("cpu", "float64", 4), ("cpu", "float32", 0), ("", "float32", 4)):
        with pytest.raises(ValueError):
            compute_settings(*bad)


def test_store_without_compute_counts_as_the_old_defaults(tmp_path):
    """A manifest written before compute was recorded goes on with the defaults, else says what to pass."""
    path = tmp_path / "old.zarr"
    prepare_store(path, IMAGES[:2], build_manifest("m", "sha256:m", {"p": 1}))  # no compute, as before
    assert "compute" not in manifest(open_store(path)) and manifest_compute({}) == COMPUTE_DEFAULTS
    report = prepare_store(path, IMAGES, build_manifest("m", "sha256:m", {"p": 1}, compute_settings()))
    assert report.added == [2]  # a plain re-run with the defaults extends it
    with pytest.raises(StoreMismatchError) as err:
        prepare_store(path, IMAGES, build_manifest("m", "sha256:m", {"p": 1}, compute_settings("cuda", "float16", 4)))
    message = str(err.value)
    assert "dtype: 'float32' -> 'float16'" in message and "before device, dtype and batch size were recorded" in message
    assert "--device cpu --dtype float32 --batch-size 4" in message and "--new-version" in message


def test_an_unchanged_file_is_not_hashed_again_and_a_changed_one_is(tmp_path):
    """Issue 20: the manifest keeps each file's size and mtime beside its hash; a re-run reuses
    the hash of a file whose stat is unchanged and hashes one whose stat changed."""
    import hashlib
    import os
    from types import SimpleNamespace

    from diffparts.store import describe_images, known_hashes

    files = []
    for i in range(3):
        path = tmp_path / "c" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes([i]) * 100)
        files.append(SimpleNamespace(image_id=i + 1, name=f"{i}.png", path=path, refused=None))
    first = describe_images(files)
    assert first[1]["sha256"] == hashlib.sha256(bytes([1]) * 100).hexdigest()
    assert first[1]["size"] == 100 and first[1]["mtime_ns"] == os.stat(files[1].path).st_mtime_ns
    store = tmp_path / "s.zarr"
    prepare_store(store, first, build_manifest("m", "sha256:0", {}))
    known = known_hashes(open_store(store))
    assert set(known) == {"0.png", "1.png", "2.png"} and known["2.png"]["size"] == 100
    # a recorded hash is used as it is when the stat matches (proof: a planted one comes back)
    planted = {**known, "0.png": {**known["0.png"], "sha256": "f" * 64}}
    assert describe_images(files, known=planted)[0]["sha256"] == "f" * 64
    # same size, new mtime: hashed again; new content: a new hash, and the store redoes the image
    stamp = known["1.png"]["mtime_ns"] + 5_000_000_000
    files[1].path.write_bytes(bytes([9]) * 100)
    os.utime(files[1].path, ns=(stamp, stamp))
    again = describe_images(files, known=known_hashes(open_store(store)))
    assert again[1]["sha256"] == hashlib.sha256(bytes([9]) * 100).hexdigest() and again[1]["mtime_ns"] == stamp
    assert [r["sha256"] for r in again[::2]] == [r["sha256"] for r in first[::2]]
    report = prepare_store(store, again, build_manifest("m", "sha256:0", {}))
    assert report.changed == [1]
    assert known_hashes(open_store(store))["1.png"]["mtime_ns"] == stamp
    # a manifest written before issue 20 (no stat): nothing is reused, every file is hashed
    assert known_hashes(None) == {}
    old = tmp_path / "old.zarr"
    prepare_store(old, IMAGES, build_manifest("m", "sha256:0", {}))
    assert known_hashes(open_store(old)) == {}


def test_a_set_up_cut_short_leaves_readers_on_the_arrays(tmp_path, monkeypatch):
    """The image table and hashes come from the manifest's list, except while a set-up is
    changing images/ (cut short, say): then from the arrays, until a set-up ends again."""
    import sys

    from diffparts.store import image_table
    from diffparts.store.layout import image_hashes

    path = tmp_path / "s.zarr"
    prepare_store(path, IMAGES, build_manifest("m", "sha256:0", {}))
    changed = [dict(IMAGES[0], sha256="new"), *IMAGES[1:], {"image_id": 9, "name": "9.png", "sha256": "h9"}]

    def cut(root, index, img):                                        # the process dies mid-set-up
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["diffparts.store.manifest"], "_reset_image", cut)
    with pytest.raises(KeyboardInterrupt):
        prepare_store(path, changed, build_manifest("m", "sha256:0", {}))
    root = open_store(path)
    assert len(manifest(root)["images"]) == 3                         # the list lags the arrays
    assert [r["name"] for r in image_table(root)] == ["0.png", "1.png", "2.png", "9.png"]
    assert image_hashes(root)[3] == "h9"
    monkeypatch.undo()
    report = prepare_store(path, changed, build_manifest("m", "sha256:0", {}))
    assert report.added == [] and report.changed == [0]               # 9.png is in the arrays already
    root = open_store(path)
    assert not root.attrs["images_pending"] and len(manifest(root)["images"]) == 4
    assert manifest(root)["images"][0]["sha256"] == "new"


def test_a_run_killed_while_resetting_a_changed_image_resets_it_again(tmp_path, monkeypatch):
    # kill -9 inside _reset_image, at its first marker write: the next run must still see the
    # image as changed and clear its marker (the new hash is the last write, not the first)
    import zarr

    path = tmp_path / "s.zarr"
    identity = build_manifest("m", "sha256:1", {})
    prepare_store(path, IMAGES, identity)
    mark_done(open_store(path, "r+"), "attention", 1)
    changed = [dict(IMAGES[0]), dict(IMAGES[1], sha256="new"), dict(IMAGES[2])]
    real_setitem = zarr.Array.__setitem__
    writes = []

    def killed_at_the_first_marker(self, key, value):
        if self.path.endswith("done"):
            raise KeyboardInterrupt("killed")
        writes.append(self.path)
        return real_setitem(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", killed_at_the_first_marker)
    with pytest.raises(KeyboardInterrupt):
        prepare_store(path, changed, identity)
    monkeypatch.setattr(zarr.Array, "__setitem__", real_setitem)
    assert not any(w.endswith("sha256") for w in writes)                # the hash was not written yet
    report = prepare_store(path, changed, identity)
    assert report.changed == [1]
    root = open_store(path)
    assert done_mask(root, "attention").tolist() == [False, False, False]
    assert root.attrs["manifest"]["images"][1]["sha256"] == "new"
