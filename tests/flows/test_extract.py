"""The extract flow end to end on a few synthetic birds with a tiny random model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr

from diffparts.corpus import SynthConfig, generate_birds
from diffparts.store import (
    StoreMismatchError,
    done_mask,
    failures,
    image_table,
    open_store,
    read_cross_attention,
    read_self_attention,
)
from flows.extract import extract_attention, fixed_batches

pytestmark = pytest.mark.flow
N_BIRDS = 5


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    """Five synthetic birds in the CUB layout, 32 px."""
    return generate_birds(tmp_path_factory.mktemp("birds"), n=N_BIRDS, seed=0, config=SynthConfig(image_size=32))


@pytest.fixture(scope="module")
def reference(prefect_server, birds, tiny_pipeline, tmp_path_factory):
    """One uninterrupted run: (store path, flow result)."""
    store = str(tmp_path_factory.mktemp("ref") / "attention.zarr")
    result = extract_attention(str(birds), str(tiny_pipeline[0]), store, batch_size=2)
    return store, result


def all_arrays(path) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(path), mode="r")
    return {p: node[:] for p, node in root.members(max_depth=None) if isinstance(node, zarr.Array)}


def test_fixed_batches_follow_store_indices():
    images = [{"index": k} for k in range(5)]
    assert [[i["index"] for i in b] for b in fixed_batches(images, [1, 4], 2)] == [[0, 1], [4]]


def test_end_to_end_shapes_names_normalisation(reference, birds):
    store, result = reference
    assert (result["written"], result["skipped"], result["failed"], result["batches"]) == (N_BIRDS, 0, 0, 3)
    assert result["stored_bytes"] > 0
    root = open_store(store)
    r = root["attention"].attrs["resolution"]
    tokens = root["attention"].attrs["tokens"]
    assert r == 16 and root["attention/self"].shape == (N_BIRDS, r, r, r, r)
    assert root["attention/self"].metadata.dimension_names == ("image", "qy", "qx", "ky", "kx")
    assert root["attention/cross"].shape == (N_BIRDS, len(tokens), r, r)
    assert root["attention/self"].dtype == np.float16
    assert done_mask(root, "attention").all() and failures(root) == []
    names = sorted(p.relative_to(birds / "images").as_posix() for p in (birds / "images").rglob("*.png"))
    assert sorted(row["name"] for row in image_table(root)) == names
    manifest = root.attrs["manifest"]
    assert manifest["config"]["precision"] == "float16" and manifest["config"]["capture"]["timestep"] == 300
    assert len(manifest["images"]) == N_BIRDS and all(len(i["sha256"]) == 64 for i in manifest["images"])
    for k in range(N_BIRDS):
        attn = read_self_attention(root, k)
        np.testing.assert_allclose(attn.sum(axis=(-2, -1)), 1.0, rtol=1e-5)
        assert np.ptp(attn) > 0  # not a blank chunk
        np.testing.assert_allclose(read_cross_attention(root, k).sum(0), 1.0, atol=2e-2)


def test_rerun_skips_everything_and_refuses_other_config(reference, birds, tiny_pipeline):
    store, _ = reference
    before = all_arrays(store)
    again = extract_attention(str(birds), str(tiny_pipeline[0]), store, batch_size=2)
    assert (again["written"], again["skipped"], again["batches"]) == (0, N_BIRDS, 0)
    after = all_arrays(store)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    with pytest.raises(StoreMismatchError, match="capture.timestep: 300 -> 100"):
        extract_attention(str(birds), str(tiny_pipeline[0]), store, batch_size=2, timestep=100)
    # batch make-up and dtype change the values too (issue 12, item 8)
    with pytest.raises(StoreMismatchError, match="compute changed: batch_size: 2 -> 3"):
        extract_attention(str(birds), str(tiny_pipeline[0]), store, batch_size=3)
    with pytest.raises(StoreMismatchError, match="dtype: 'float32' -> 'bfloat16'"):
        extract_attention(str(birds), str(tiny_pipeline[0]), store, batch_size=2, dtype="bfloat16")


def test_corrupt_image_fails_alone_and_added_images_run_alone(prefect_server, birds, tiny_pipeline, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    pngs = sorted((birds / "images").rglob("*.png"))
    for k, path in enumerate(pngs[:3]):
        shutil.copy(path, folder / f"bird_{k}.png")
    (folder / "bird_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    store = str(tmp_path / "s.zarr")
    first = extract_attention(str(folder), str(tiny_pipeline[0]), store, batch_size=2)
    assert (first["written"], first["failed"]) == (3, 1)
    [failure] = failures(open_store(store))
    assert failure["name"] == "bird_corrupt.png" and "load" in failure["reason"]
    # a new image that sorts first (the folder reader's ids shift): only it is extracted
    shutil.copy(pngs[3], folder / "a_new.png")
    second = extract_attention(str(folder), str(tiny_pipeline[0]), store, batch_size=2)
    assert (second["written"], second["skipped"], second["failed"]) == (1, 3, 1)
    root = open_store(store)
    table = {row["name"]: row for row in image_table(root)}
    assert table["a_new.png"]["index"] == 4 and table["a_new.png"]["image_id"] == 1
    assert table["bird_0.png"]["image_id"] == 2
    assert done_mask(root, "attention").tolist() == [True, True, True, False, True]


def test_failed_batch_is_recorded_and_the_others_finish(prefect_server, birds, tiny_pipeline, tmp_path, monkeypatch):
    import diffparts.model.extract as library

    real = library.extract_attention

    def flaky(pipe, images, config, *rest):
        if len(images) == 1 and images.any():  # the last batch (the shape probe is blank)
            raise RuntimeError("boom: out of memory")
        return real(pipe, images, config, *rest)

    monkeypatch.setattr(library, "extract_attention", flaky)
    store = tmp_path / "s.zarr"
    result = extract_attention(str(birds), str(tiny_pipeline[0]), str(store), batch_size=2)
    assert (result["written"], result["failed"]) == (N_BIRDS - 1, 1)
    [failure] = failures(open_store(store))
    assert failure["index"] == N_BIRDS - 1 and "boom: out of memory" in failure["reason"]


def _api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


def test_kill_9_then_rerun_equals_uninterrupted(reference, birds, tiny_pipeline, tmp_path):
    ref_store, _ = reference
    store = tmp_path / "killed.zarr"
    # a slow extractor, so that the run is surely in the middle when the first batch is done
    (tmp_path / "run.py").write_text(textwrap.dedent("""
        import sys
        import time

        import diffparts.model.extract as library
        from flows.extract import extract_attention

        real = library.extract_attention

        def slow(*args):
            time.sleep(1.0)
            return real(*args)

        if __name__ == "__main__":
            library.extract_attention = slow
            extract_attention(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=2, max_workers=1)
    """))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PREFECT_API_URL": _api_url()}
    with open(tmp_path / "run.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(tmp_path / "run.py"), str(birds), str(tiny_pipeline[0]), str(store)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if done_mask(open_store(store), "attention").any():
                    break
            except Exception:  # store not created yet, or a chunk being written
                pass
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    done = done_mask(open_store(store), "attention")
    assert done.any() and not done.all()
    resumed = extract_attention(str(birds), str(tiny_pipeline[0]), str(store), batch_size=2)
    assert resumed["written"] == int((~done).sum())
    ref, got = all_arrays(ref_store), all_arrays(store)
    assert ref.keys() == got.keys()
    for key in ref:
        np.testing.assert_array_equal(got[key], ref[key], err_msg=key)


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_store(reference, birds, tiny_pipeline, tmp_path, monkeypatch):
    """The batches on a one-worker Dask cluster write what the thread pool writes.

    Dask workers run torch with one thread (OMP_NUM_THREADS=1), so float sums may round
    differently: values agree to a float16 step, everything else exactly.
    """
    monkeypatch.setenv("PREFECT_API_URL", _api_url())  # for the worker process
    store = tmp_path / "dask.zarr"
    result = extract_attention(str(birds), str(tiny_pipeline[0]), str(store), batch_size=2, dask_workers=1)
    assert result["written"] == N_BIRDS
    ref, got = all_arrays(reference[0]), all_arrays(store)
    assert ref.keys() == got.keys()
    for key in ref:
        if ref[key].dtype.kind == "f":
            np.testing.assert_allclose(got[key], ref[key], rtol=2e-3, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=key)


def test_flow_stores_features_and_a_store_without_them_refuses_feature_settings(reference, birds, tiny_pipeline,
                                                                                tmp_path):
    from diffparts.store import read_features

    store = str(tmp_path / "f.zarr")
    result = extract_attention(str(birds), str(tiny_pipeline[0]), store, batch_size=2, features={})
    assert result["written"] == N_BIRDS
    root = open_store(store)
    assert root.attrs["manifest"]["corpus"] == {"path": str(birds.resolve()), "kind": "cub"}
    assert done_mask(root, "features").all() and root["features"].attrs["blocks"] == [0]
    c = tiny_pipeline[1].unet.config.block_out_channels[-1]
    assert root["features/up_0"].shape == (N_BIRDS, c, 16, 16) and root["features/up_0"].chunks == (1, c, 16, 16)
    assert np.ptp(read_features(root, N_BIRDS - 1)) > 0
    # the store of the reference run has no features: asking for them is another config
    with pytest.raises(StoreMismatchError, match="features"):
        extract_attention(str(birds), str(tiny_pipeline[0]), reference[0], batch_size=2, features={})


def test_parameter_chunks_keep_every_item_in_order_under_the_budget():
    import json

    from flows.fanout import parameter_chunks

    items = [[{"name": f"img_{i:04d}.png", "index": i}] * (1 + i % 3) for i in range(50)]
    runs = parameter_chunks(items, budget=400)
    assert [x for run in runs for x in run] == items and len(runs) > 1
    assert all(len(json.dumps(run)) <= 400 or len(run) == 1 for run in runs)
    assert parameter_chunks([], budget=10) == [] and parameter_chunks([[1] * 500], budget=10) == [[[1] * 500]]


def test_a_fan_out_over_the_parameter_budget_runs_in_parts(reference, birds, tiny_pipeline, tmp_path, monkeypatch):
    """Prefect's API refuses a flow run whose parameters pass 512 KiB, which a large corpus's
    image lists do: the extract and segment stages fan out in parts under a budget. A budget of
    one batch gives one subflow per batch and the same store as one fan-out."""
    import flows.extract as extract_flow
    import flows.fanout as fanout
    import flows.segment as segment_flow
    from flows.segment import segment_dataset

    parts = []

    def spy(items, budget=None):
        parts.append(len(fanout.parameter_chunks(items, budget)))
        return fanout.parameter_chunks(items, budget)

    monkeypatch.setattr(fanout, "PARAMETER_BUDGET", 1)
    monkeypatch.setattr(extract_flow, "parameter_chunks", spy)
    monkeypatch.setattr(segment_flow, "parameter_chunks", spy)
    store = str(tmp_path / "parts.zarr")
    result = extract_attention(str(birds), str(tiny_pipeline[0]), store, batch_size=2)
    assert (result["written"], result["batches"]) == (N_BIRDS, 3) and parts == [3]   # three subflows
    expected = all_arrays(reference[0])
    for name, value in all_arrays(store).items():
        if name.startswith("attention/"):
            np.testing.assert_array_equal(value, expected[name], err_msg=name)
    seg = segment_dataset(store, method="diffseg", thresholds="sd", batch_size=2)
    assert seg["done"] == N_BIRDS and done_mask(open_store(store), "segments").all() and parts == [3, 3]
