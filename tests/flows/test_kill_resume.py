"""``kill -9`` of a pipeline run in the middle of two stages, then a resume (issue 13, item 7).

One uninterrupted run of ``flows.pipeline.bird_parts`` into store A. The same run into store B
is killed (SIGKILL to its whole process group) in the middle of the extract stage (some images
done, others not), resumed and killed again in the middle of the embeddings stage (some tokens
done, one mid-training with a checkpoint), then resumed to the end. After each kill what was
finished is still there and equals A; at the end every array of every group of B equals A's,
and so do the files beside the store: every ``.safetensors`` (tokens and training checkpoints),
the token index and every picture.

Each run is a child process on the test session's Prefect server (no temporary server per
child) with one torch thread, as the reference, so floats are compared exactly.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr

from diffparts import REPO_ROOT

N_BIRDS = 8
STEPS = 12            # optimiser steps per token: several checkpoints, so a kill lands mid-training
#: Small and fast (tests/flows/test_pipeline.py's FAST), extraction in 4 batches of 2, a
#: checkpoint every 2 steps.
SETTINGS = {"embed_steps": STEPS, "occlusion_cases": 2, "max_workers": 1, "extract_batch_size": 2,
            "report": False,
            "stage_options": {"embeddings": {"picture_config": {"n_images": 1, "generate_steps": 2},
                                             "config": {"checkpoint_every": 2}},
                              "occlusion": {"config": {"completion": {"steps": 2}}, "grid_cases": 2}}}

CHILD = """
import json, sys
from flows.pipeline import bird_parts
args = json.loads(sys.argv[1])
result = bird_parts(**args)
with open(sys.argv[2], "w") as out:
    json.dump(result, out, default=str)
"""


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    """8 synthetic birds of 4 species: half of each species held out (occlusion needs some)."""
    from diffparts.corpus import SynthConfig, generate_birds

    return generate_birds(tmp_path_factory.mktemp("birds") / "corpus", n=N_BIRDS, seed=3,
                          config=SynthConfig(image_size=64, n_classes=4))


class Run:
    """One ``bird_parts`` child process in its own process group (so ``killpg`` ends all of it)."""

    def __init__(self, tmp: Path, name: str, corpus: Path, store: Path):
        from prefect.settings import get_current_settings

        self.log, self.out = tmp / f"{name}.log", tmp / f"{name}.json"
        env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url),
               "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        args = {"corpus": str(corpus), "store": str(store), **SETTINGS}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args), str(self.out)],
                                         cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def tail(self) -> str:
        return self.log.read_text()[-4000:]

    def finish(self, timeout: float = 420) -> dict:
        assert self.proc.wait(timeout=timeout) == 0, self.tail()
        return json.loads(self.out.read_text())

    def kill_when(self, condition, timeout: float = 300) -> float:
        """SIGKILL the process group as soon as ``condition()`` holds; the seconds it took."""
        start = time.monotonic()
        try:
            while time.monotonic() - start < timeout and self.proc.poll() is None:
                try:
                    if condition():
                        os.killpg(self.proc.pid, signal.SIGKILL)
                        break
                except (FileNotFoundError, KeyError, OSError, ValueError):
                    pass  # the store or the group is not there yet
                time.sleep(0.05)
            assert self.proc.poll() is None or self.proc.returncode == -signal.SIGKILL, \
                f"the run ended before the kill:\n{self.tail()}"
        finally:
            if self.proc.poll() is None and time.monotonic() - start >= timeout:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()   # reaped: a zombie's pid would look alive to the set-up lock
        assert self.proc.returncode == -signal.SIGKILL, self.tail()
        return time.monotonic() - start


def all_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of every group of the store, by path."""
    root = zarr.open_group(str(path), mode="r")
    return {name: node[:] for name, node in root.members(max_depth=None) if isinstance(node, zarr.Array)}


def tensor_files(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every ``.safetensors`` file under ``path`` (tokens, checkpoints): relative path -> tensors."""
    from safetensors.numpy import load_file

    return {str(f.relative_to(path)): load_file(str(f)) for f in sorted(path.rglob("*.safetensors"))}


def beside(store: Path) -> list[str]:
    """The files the stages wrote beside the store (``<store>.<stage>/...``), without the prefix;
    not the temporary files of a write that a kill interrupted (``*.tmp*``: never read)."""
    return sorted(str(f.relative_to(store.parent))[len(store.name) + 1:]
                  for f in store.parent.glob(f"{store.name}.*/**/*") if f.is_file() and ".tmp" not in f.name)


def pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], where: str) -> None:
    assert sorted(got) == sorted(want), where
    for key in want:
        a, b = got[key], want[key]
        assert (a.dtype, a.shape) == (b.dtype, b.shape), f"{where}: {key}"
        same = np.array_equal(a, b, equal_nan=True) if b.dtype.kind in "fc" else np.array_equal(a, b)
        assert same, f"{where}: {key} differs"


def _count(root, path: str) -> int:
    return int(np.asarray(root[path][:], bool).sum())


@pytest.mark.slow
def test_kill_9_in_extract_and_embeddings_then_resume_equals_uninterrupted(prefect_server, birds, tmp_path):
    a, b = tmp_path / "A.zarr", tmp_path / "B.zarr"
    ckpts = Path(f"{b}.embeddings") / "noise" / "checkpoints"

    # 1. The uninterrupted reference.
    Run(tmp_path, "reference", birds, a).finish()
    ref = all_arrays(a)
    trained = int(ref["embeddings/noise/done"].sum())
    assert trained >= 3 and ref["occlusion/done"].all()

    # 2. kill -9 in the middle of extraction: some images done (1 .. N-1), not all.
    first = Run(tmp_path, "killed-extract", birds, b)
    first.kill_when(lambda: 0 < _count(zarr.open_group(str(b), mode="r"), "attention/done") < N_BIRDS)
    root = zarr.open_group(str(b), mode="r")
    attention, features = (np.asarray(root[f"{g}/done"][:], bool) for g in ("attention", "features"))
    both = attention & features
    assert 0 < attention.sum() < N_BIRDS and "segments" not in root
    for i in np.flatnonzero(attention):          # finished images are intact: equal to the reference
        for name in ("attention/self", "attention/cross"):
            assert np.array_equal(root[name][int(i)], ref[name][int(i)]), (name, i)
    # A kill during a set-up leaves its lock file, holder = the dead pid on this host: the
    # resume must take it over at once, not wait for it to age out (lock_stale_s).
    lock = Path(f"{b}.lock")
    if not lock.exists():
        lock.write_text(json.dumps({"pid": first.proc.pid, "host": socket.gethostname(),
                                    "created": time.time(), "token": uuid.uuid4().hex}))

    # 3. Resume; kill -9 again in the middle of the embeddings: a token or more done, and one
    #    not done whose checkpoint is past step 0 and short of the last step.
    def mid_training() -> bool:
        done = np.asarray(zarr.open_group(str(b), mode="r")["embeddings/noise/done"][:], bool)
        if not 0 < done.sum() < trained:
            return False
        for record in ckpts.glob("part-*.safetensors.json"):
            step, category = json.loads(record.read_text())["step"], int(record.name.split(".")[0][5:])
            if not done[category] and 0 < step < STEPS:
                return True
        return False

    second = Run(tmp_path, "killed-embeddings", birds, b)
    second.kill_when(mid_training)
    assert not lock.exists(), "the stale set-up lock was not taken over"
    assert f"{N_BIRDS} images, {N_BIRDS - int(both.sum())} pending" in second.log.read_text()  # only those redone
    root = zarr.open_group(str(b), mode="r")
    for group in ("attention", "features", "segments", "parts"):
        assert np.asarray(root[f"{group}/done"][:], bool).all(), group
    done = np.asarray(root["embeddings/noise/done"][:], bool)
    assert 0 < done.sum() < trained
    for c in np.flatnonzero(done):                 # finished tokens: rows and files intact
        assert np.array_equal(root["embeddings/noise/vectors"][int(c)], ref["embeddings/noise/vectors"][int(c)])
        assert (Path(f"{b}.embeddings") / "noise" / f"part-{c}.safetensors").is_file()
    steps_at_kill = {int(r.name.split(".")[0][5:]): json.loads(r.read_text())["step"]
                     for r in ckpts.glob("part-*.safetensors.json")}
    interrupted = {c: s for c, s in steps_at_kill.items() if not done[c]}
    assert any(0 < s < STEPS for s in interrupted.values()), steps_at_kill
    for c in np.flatnonzero(done):
        assert steps_at_kill[int(c)] == STEPS

    # 4. Resume to the end: only the unfinished work is done, from the checkpoints.
    result = Run(tmp_path, "resumed", birds, b).finish()
    stages = {s["name"]: s for s in result["stages"]}
    assert stages["extract"]["status"] == "skipped" and stages["parts"]["status"] == "skipped"
    rows = {r["category"]: r for r in stages["embeddings"]["summary"]["trained"]}
    assert sorted(rows) == sorted(int(c) for c in np.flatnonzero(ref["embeddings/noise/done"]) if not done[c])
    for c, step in interrupted.items():
        assert rows[c]["resumed_from"] == step, (c, rows[c])

    # 5. Every stored array, every tensor file, the token index and every picture beside the
    #    store equal the uninterrupted run's.
    assert_same(all_arrays(b), ref, "store")
    want, got = tensor_files(Path(f"{a}.embeddings")), tensor_files(Path(f"{b}.embeddings"))
    assert sorted(got) == sorted(want) and len(want) >= 2 * trained
    for name in want:
        assert_same(got[name], want[name], name)
    assert beside(b) == beside(a)
    index = Path("noise") / "index.json"
    assert (Path(f"{b}.embeddings") / index).read_text() == (Path(f"{a}.embeddings") / index).read_text()
    for name in (n for n in beside(a) if n.endswith(".png")):
        assert np.array_equal(pixels(Path(f"{b}.{name}")), pixels(Path(f"{a}.{name}"))), name
