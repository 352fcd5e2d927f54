"""A compact store (issue 20, item 3): segments and pooled attention written by the extract
workers, equal to the two-step path (kept tensor, then the segment stage, then descriptors) on
the same attention; read by the same stage code; refused by name where the full tensor is needed.

Both stores come from one tiny random model and the same birds with the same batches, so the
forwards, and hence the attention, are the same; thresholds are low fixed ones (the tiny
model's maps are diffuse) so that images have several segments.
"""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.corpus import SynthConfig, generate_birds
from diffparts.store import done_mask, is_compact, open_store
from flows.extract import extract_attention
from flows.segment import segment_dataset

pytestmark = pytest.mark.flow

SEGMENT = {"method": "diffseg", "thresholds": "auto", "quantile": 0.05}


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return generate_birds(tmp_path_factory.mktemp("birds"), n=4, seed=1, config=SynthConfig(image_size=32))


@pytest.fixture(scope="module")
def stores(prefect_server, birds, tiny_pipeline, tmp_path_factory):
    """(compact store, kept store): the compact one extracted only; the kept one extracted and segmented."""
    base = tmp_path_factory.mktemp("stores")
    compact, kept = str(base / "compact.zarr"), str(base / "kept.zarr")
    model = str(tiny_pipeline[0])
    extract_attention(str(birds), model, compact, batch_size=2, keep_attention=False, segment=SEGMENT,
                      features=None)
    extract_attention(str(birds), model, kept, batch_size=2, keep_attention=True, features=None)
    segment_dataset(kept, **SEGMENT)
    return compact, kept


def test_compact_store_has_segments_not_the_tensor(stores):
    compact, kept = stores
    root = open_store(compact)
    assert is_compact(root) and not is_compact(open_store(kept))
    assert "attention/self" not in root and "attention/box_bins" in root
    assert done_mask(root, "segments").all() and done_mask(root, "attention").all()
    assert root["segments"].attrs["settings"]["made_by"] == "extract"


def test_segments_identical_to_the_two_step_path(stores):
    a, b = (open_store(s) for s in stores)
    for name in ("labels", "n_segments", "n_levels", "parent"):
        np.testing.assert_array_equal(a[f"segments/{name}"][:], b[f"segments/{name}"][:])
    assert a["segments/n_segments"][:, 0].max() > 1  # there is something to compare
    settings = {k: v for k, v in a["segments"].attrs["settings"].items() if k != "made_by"}
    assert settings == b["segments"].attrs["settings"]


def test_segment_stage_finds_them_done_and_refuses_other_settings(stores):
    compact, _ = stores
    summary = segment_dataset(compact, **SEGMENT)
    assert summary["done"] == 0 and summary["skipped"] == 4
    with pytest.raises(ValueError, match="compact store .* needs the full tensor"):
        segment_dataset(compact, method="ncut")


def test_descriptors_match_within_float16(stores):
    from diffparts.parts.dataset import build_descriptors, load_infos

    roots = [open_store(s, mode="r+") for s in stores]
    for root in roots:
        build_descriptors(root, load_infos(root))
    a, b = (r["parts/descriptors"] for r in roots)
    for name in ("image_index", "segment_id", "foreground", "pixels", "small"):
        np.testing.assert_array_equal(a[name][:], b[name][:])
    fa, fb = a["features"][:], b["features"][:]
    assert fa.shape == fb.shape and len(fa) > 4
    np.testing.assert_allclose(fa, fb, rtol=2e-3, atol=2e-4)   # float16 box bins against float32 sums


def test_reading_the_tensor_of_a_compact_store_is_refused(stores):
    from diffparts.store import read_self_attention

    with pytest.raises(ValueError, match="compact store"):
        read_self_attention(open_store(stores[0]), 0)


CHILD = """
import json, sys
from flows.extract import extract_attention
args = json.loads(sys.argv[1])
json.dump(extract_attention(**args), open(sys.argv[2], "w"), default=str)
"""


def _child(tmp, name, args):
    import json
    import os
    import subprocess
    import sys

    from prefect.settings import get_current_settings

    from diffparts import REPO_ROOT

    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url),
           "PREFECT_HOME": str(tmp / "prefect-home"), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args), str(tmp / f"{name}.json")], cwd=REPO_ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def test_kill_9_mid_compact_extraction_then_resume_equals_uninterrupted(prefect_server, birds, tiny_pipeline,
                                                                        tmp_path):
    """The compact form's kill -9 and resume: finished images intact, the rest redone, every
    array at the end equal to an uninterrupted compact extraction's."""
    import os
    import signal
    import time

    import zarr

    a, b = tmp_path / "A.zarr", tmp_path / "B.zarr"
    common = {"corpus": str(birds), "model": str(tiny_pipeline[0]), "batch_size": 1, "max_workers": 1,
              "keep_attention": False, "segment": SEGMENT, "features": None}
    assert _child(tmp_path, "reference", {**common, "store": str(a)}).wait(timeout=400) == 0
    proc = _child(tmp_path, "killed", {**common, "store": str(b)})
    start = time.monotonic()
    while time.monotonic() - start < 300 and proc.poll() is None:
        try:
            if 0 < int(np.asarray(zarr.open_group(str(b), mode="r")["attention/done"][:]).sum()) < 4:
                os.killpg(proc.pid, signal.SIGKILL)
                break
        except (FileNotFoundError, KeyError, OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    ref, root = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    done = np.asarray(root["attention/done"][:], bool)
    assert 0 < done.sum() < 4
    for i in np.flatnonzero(done):   # a finished image: its segments and pooled attention are there, as A's
        assert root["segments/done"][int(i)]
        for name in ("attention/box_bins", "attention/cross", "segments/labels"):
            assert np.array_equal(root[name][int(i)], ref[name][int(i)]), (name, i)
    assert _child(tmp_path, "resumed", {**common, "store": str(b)}).wait(timeout=400) == 0
    want = {n: x[:] for n, x in ref.members(max_depth=None) if isinstance(x, zarr.Array)}
    got = {n: x[:] for n, x in zarr.open_group(str(b), mode="r").members(max_depth=None) if isinstance(x, zarr.Array)}
    assert sorted(got) == sorted(want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name


def test_the_other_form_is_refused_on_an_existing_store(stores, tiny_pipeline):
    from tasks.extract import create_attention_arrays

    compact, kept = stores
    model = str(tiny_pipeline[0])
    args = (1, model, {"timestep": 300, "prompt": ""}, "float16", "cpu", "float32")
    with pytest.raises(ValueError, match="compact attention group; --keep-attention"):
        create_attention_arrays.fn(compact, *args, keep_attention=True)
    with pytest.raises(ValueError, match="full attention group; --no-keep-attention"):
        create_attention_arrays.fn(kept, *args, keep_attention=False)
    assert create_attention_arrays.fn(compact, *args)["form"] == "compact"   # default: the store's own form


def test_ncut_default_segments_identical_to_the_two_step_path(prefect_server, birds, tiny_pipeline, tmp_path):
    """The segment stage's default method (random-walk NCut since issue 17): a compact store made
    with the defaults holds the segments the kept path's segment stage makes with its defaults."""
    compact, kept = str(tmp_path / "compact.zarr"), str(tmp_path / "kept.zarr")
    model = str(tiny_pipeline[0])
    extract_attention(str(birds), model, compact, batch_size=2, keep_attention=False, features=None)
    extract_attention(str(birds), model, kept, batch_size=2, keep_attention=True, features=None)
    segment_dataset(kept)
    a, b = open_store(compact), open_store(kept)
    assert a["segments"].attrs["settings"]["method"] == b["segments"].attrs["settings"]["method"]
    for name in ("labels", "n_segments", "parent"):
        np.testing.assert_array_equal(a[f"segments/{name}"][:], b[f"segments/{name}"][:])
    assert segment_dataset(compact)["skipped"] == 4   # the segment stage's defaults: nothing to do
