"""The set-up lock (issue 12, item 9): stale-lock rule, and two processes setting up one store."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from diffparts import REPO_ROOT
from diffparts.store import LockConfig, done_mask, failures, image_table, lock_path, manifest, open_store, setup_lock
from diffparts.store.lock import stale_reason

FAST = LockConfig(stale_after_s=600.0, poll_s=0.02)


def write_lock(store: Path, pid: int, host: str | None = None, age_s: float = 0.0, token: str = "theirs") -> Path:
    path = lock_path(store)
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "created": time.time() - age_s, "token": token}))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_file_beside_a_local_store_holds_pid_and_host_and_goes_away(tmp_path):
    store = tmp_path / "s.zarr"
    assert lock_path(store) == tmp_path / "s.zarr.lock" and lock_path(f"file://{store}") == lock_path(store)
    with setup_lock(store, FAST) as held:
        content = json.loads(lock_path(store).read_text())
        assert content == held and (content["pid"], content["host"]) == (os.getpid(), socket.gethostname())
    assert not lock_path(store).exists()
    assert lock_path("memory://s.zarr") is None and lock_path("s3://bucket/s.zarr") is None
    with setup_lock("memory://s.zarr") as held:  # fsspec stores take no lock
        assert held is None


def test_stale_rule():
    host = socket.gethostname()
    config = LockConfig(stale_after_s=60.0)
    assert "is gone" in stale_reason({"pid": dead_pid(), "host": host}, 1.0, config)
    assert stale_reason({"pid": os.getpid(), "host": host}, 1.0, config) is None  # alive, young
    assert "61 s old" in stale_reason({"pid": os.getpid(), "host": host}, 61.0, config)  # alive, too old
    # another host: its pid means nothing here, only the age counts
    assert stale_reason({"pid": dead_pid(), "host": "elsewhere"}, 1.0, config) is None
    assert "elsewhere" in stale_reason({"pid": 1, "host": "elsewhere"}, 61.0, config)
    with pytest.raises(ValueError, match="stale_after_s"):
        LockConfig(stale_after_s=0)


def test_lock_of_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path, caplog):
    store = tmp_path / "s.zarr"
    write_lock(store, dead_pid())
    with caplog.at_level(logging.WARNING, logger="diffparts.store.lock"), setup_lock(store, FAST) as held:
        assert json.loads(lock_path(store).read_text())["token"] == held["token"]
    # taken over because its holder is gone, not because it aged out (young: FAST.stale_after_s is 600 s)
    assert "is gone" in caplog.text
    assert not lock_path(store).exists()


def test_old_lock_of_a_live_or_remote_holder_is_taken_over(tmp_path):
    store = tmp_path / "s.zarr"
    write_lock(store, os.getpid(), age_s=700.0)  # alive but hung for longer than stale_after_s
    with setup_lock(store, FAST) as held:
        assert held["token"] != "theirs"
    write_lock(store, 12345, host="elsewhere", age_s=700.0)
    with setup_lock(store, FAST) as held:
        assert held["token"] != "theirs"


def _finish_later(seconds: float, path: Path) -> threading.Event:
    """Remove ``path`` after ``seconds`` (another holder finishing); the event is set just before,
    so whoever gets in after the removal sees it set (no clock involved in the check)."""
    finished = threading.Event()

    def finish():
        finished.set()
        path.unlink()

    threading.Timer(seconds, finish).start()
    return finished


def test_young_lock_of_a_live_holder_is_waited_for(tmp_path):
    store = tmp_path / "s.zarr"
    path = write_lock(store, os.getpid())  # this process: alive
    finished = _finish_later(0.5, path)  # the holder finishes after 0.5 s
    with setup_lock(store, FAST):
        assert finished.is_set()           # entered only once the holder had finished
    write_lock(store, 12345, host="elsewhere")  # young, on another host: waited for too
    finished = _finish_later(0.3, lock_path(store))
    with setup_lock(store, FAST):
        assert finished.is_set()


def test_take_over_waits_for_another_breaker_and_a_crashed_breaker_ages_out(tmp_path):
    store = tmp_path / "s.zarr"
    write_lock(store, dead_pid())
    breaker = lock_path(store).with_name("s.zarr.lock.break")
    breaker.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}))
    finished = _finish_later(0.3, breaker)  # another run is taking over for 0.3 s
    with setup_lock(store, FAST):
        assert finished.is_set()           # entered only once the other breaker had finished
    write_lock(store, dead_pid())
    breaker.write_text(json.dumps({"pid": 12345, "host": "elsewhere", "created": time.time() - 700}))
    with setup_lock(store, FAST):  # a breaker left by a crash is older than stale_after_s: removed
        assert not breaker.exists()


def test_release_leaves_a_lock_that_another_run_took_over(tmp_path):
    store = tmp_path / "s.zarr"
    with setup_lock(store, FAST):
        write_lock(store, 12345, host="elsewhere", token="newer")  # we were judged stale meanwhile
    assert json.loads(lock_path(store).read_text())["token"] == "newer"


# Two processes: each sets up the store with its own (overlapping) images, with a slow image-axis
# growth that shows whether the set-ups overlap, then extracts its pending batches.
RUN = textwrap.dedent("""
    import importlib, json, os, sys, time
    from flows.extract import fixed_batches
    from tasks.extract import create_attention_arrays, describe_images, extract_batch, identify_run, prepare_store

    corpus, model, store, log, go, first, last = sys.argv[1:8]
    manifest = importlib.import_module("diffparts.store.manifest")  # the package exports a function of that name
    grow = manifest.grow_image_axis

    def slow_grow(root, n):
        with open(log, "a") as f:
            f.write(f"enter {os.getpid()} {time.time()}\\n")
        time.sleep(1.0)
        grow(root, n)
        with open(log, "a") as f:
            f.write(f"exit {os.getpid()} {time.time()}\\n")

    manifest.grow_image_axis = slow_grow
    capture = {"timestep": 300, "prompt": ""}
    images = describe_images.fn(corpus)[int(first):int(last)]
    identity = identify_run.fn(model, capture, "float16", batch_size=2)
    open(f"{go}.{first}", "w").close()  # ready
    while not os.path.exists(go):
        time.sleep(0.01)
    prepared = prepare_store.fn(store, images, identity, False)
    create_attention_arrays.fn(store, prepared["version"], model, capture, "float16", "cpu", "float32")
    written = 0
    for batch in fixed_batches(prepared["images"], prepared["pending"], 2):
        written += extract_batch.fn(store, prepared["version"], batch, model, capture, "cpu", "float32")["written"]
    print(json.dumps({"written": written}))
""")


def test_two_processes_set_up_one_store_in_turn_and_every_image_is_done_once(tmp_path, tiny_pipeline):
    from diffparts.corpus import SynthConfig, generate_birds

    birds = generate_birds(tmp_path / "birds", n=6, seed=2, config=SynthConfig(image_size=32))
    store, log, go = tmp_path / "s.zarr", tmp_path / "grow.log", tmp_path / "go"
    (tmp_path / "run.py").write_text(RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen([sys.executable, str(tmp_path / "run.py"), str(birds), str(tiny_pipeline[0]), str(store),
                          str(log), str(go), first, last], env=env, cwd=REPO_ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for first, last in (("0", "4"), ("2", "6"))  # images 2 and 3 in both runs
    ]
    deadline = time.monotonic() + 240
    while (not all(Path(f"{go}.{first}").exists() for first in ("0", "2")) and time.monotonic() < deadline
           and all(p.poll() is None for p in procs)):
        time.sleep(0.05)
    go.touch()  # both start their set-up together
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]

    # the slow growths never overlapped: the second set-up waited for the first
    events = [line.split() for line in log.read_text().splitlines()]
    assert [e[0] for e in events] == ["enter", "exit", "enter", "exit"]
    assert events[0][1] == events[1][1] and float(events[2][2]) >= float(events[1][2])
    root = open_store(store)
    names = [row["name"] for row in image_table(root)]
    assert len(names) == 6 == len(set(names))  # each image once on the image axis
    assert done_mask(root, "attention").all() and not failures(root)
    rows = manifest(root)["images"]
    assert [r["name"] for r in rows] == names and all(len(r["sha256"]) == 64 for r in rows)
    assert manifest(root)["compute"] == {"device": "cpu", "dtype": "float32", "batch_size": 2}
    written = sum(json.loads(out.strip().splitlines()[-1])["written"] for out, _ in outs)
    assert 6 <= written <= 8  # a shared batch is at most computed by both (same values, own chunks)
    assert not lock_path(store).exists()
