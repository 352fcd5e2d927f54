"""prefect.yaml and `diffparts serve`: deployments that work from a fresh clone, on schedules
that do not collide on one store, under one GPU concurrency limit."""

import asyncio
import datetime as dt
import inspect
import os
import signal
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest

from flows.serve import PREFECT_YAML, build_deployments, gpu_limit_spec, load_flow, read_spec
from tests.waiting import wait_until

BIN = Path(sys.executable).parent


def test_every_deployment_builds_with_its_schedules():
    spec = read_spec()
    built = {d.name: d for d in build_deployments(spec)}
    assert set(built) == {"bird-parts", "extract", "segment", "parts", "embeddings", "occlusion"}
    assert [s.schedule.cron for s in built["bird-parts"].schedules] == ["0 3 * * *"]
    limit = built["bird-parts"].concurrency_limit
    assert getattr(limit, "limit", limit) == 1
    # the pipeline's default runs all five stages on a clone with no corpus: it renders one
    params = built["bird-parts"].parameters
    assert params["synthetic_birds"] > 0 and params["corpus"] == "data/corpus/synth-birds"
    assert params["extract_batch_size"] == built["extract"].parameters["batch_size"]   # same store identity


def test_schedules_on_one_store_never_fire_within_an_hour():
    from prefect.server.schemas.schedules import CronSchedule

    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    fires = {}
    for entry in read_spec()["deployments"]:
        for schedule in entry.get("schedules") or []:
            dates = CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone")).get_dates(60, start=start)
            if inspect.iscoroutine(dates):   # async in some Prefect releases
                dates = asyncio.run(dates)
            fires.setdefault(entry["parameters"]["store"], []).append((entry["name"], dates))
    assert len(fires["data/stores/attention.zarr"]) == 2
    for runs in fires.values():
        for (a, dates_a), (b, dates_b) in combinations(runs, 2):
            gap = min(abs((x - y).total_seconds()) for x in dates_a for y in dates_b)
            assert gap >= 3600, (a, b, gap)


def test_the_gpu_limit_is_the_one_the_tasks_take():
    from tasks.gpu import GPU_LIMIT, gpu_slot

    assert gpu_limit_spec(read_spec())["name"] == GPU_LIMIT
    with gpu_slot("cpu"):   # CPU tasks take no slot (and need no server)
        pass


def test_bad_deployment_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no deployment file .*nope.yaml"):
        read_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("deployments: {a: 1}\n")
    with pytest.raises(ValueError, match="bad.yaml has no 'deployments:' list"):
        read_spec(bad)
    with pytest.raises(ValueError, match="not a flow of this repository"):
        load_flow("os.py:system")
    with pytest.raises(ValueError, match="no deployment named nope"):
        build_deployments(read_spec(), ["nope"])


def _api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


@pytest.mark.flow
def test_serve_registers_the_deployments_and_runs_one(prefect_server, tmp_path):
    """`diffparts serve` against a real API: deployments and the GPU limit appear, and a run of
    the bird-parts deployment started through the API executes in the serving process."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    env = {**os.environ, "PREFECT_API_URL": _api_url(), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "diffparts"), "serve", "--only", "bird-parts", "extract", "--gpus", "2"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=str(PREFECT_YAML.parent))
    try:
        with get_client(sync_client=True) as client:
            found = {}

            def registered():                                   # registered one after the other
                for name in ("bird-parts/bird-parts", "extract-attention/extract"):
                    if name not in found:
                        found[name] = client.read_deployment_by_name(name)
                return len(found) == 2

            try:
                wait_until(registered, timeout=120, interval=0.5, what="both deployments", ignore=(Exception,),
                           alive=lambda: proc.poll() is None)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
            assert [s.schedule.cron for s in found["bird-parts/bird-parts"].schedules] == ["0 3 * * *"]
            assert [s.schedule.cron for s in found["extract-attention/extract"].schedules] == ["0 1 * * *"]
            assert client.read_global_concurrency_limit_by_name("diffparts-gpu").limit == 2

        params = {"corpus": str(tmp_path / "corpus"), "store": str(tmp_path / "store.zarr"), "synthetic_birds": 4,
                  "to_stage": "segment", "report": False, "max_workers": 1}
        run = run_deployment("bird-parts/bird-parts", parameters=params, timeout=300)
        assert run.state.is_completed(), (run.state, log.read_text()[-3000:])
        assert (tmp_path / "corpus" / "images.txt").is_file() and (tmp_path / "store.zarr" / "segments").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.flow
def test_gpu_tasks_queue_on_the_global_limit(prefect_server):
    """Two CUDA tasks under a 1-slot diffparts-gpu limit never hold the GPU at once; CPU tasks
    take no slot (the device string is all a task looks at: no GPU is needed here)."""
    import threading

    from flows.serve import ensure_gpu_limit
    from tasks.gpu import GPU_LIMIT, gpu_slot

    ensure_gpu_limit(GPU_LIMIT, 1)
    events = []                       # ("enter" | "exit", device), in order
    lock = threading.Lock()
    held = threading.Event()          # a CUDA task holds the only slot
    cpu_done = threading.Event()      # the CPU task has run

    def note(kind, device):
        with lock:
            events.append((kind, device))

    def gpu_work(device):
        with gpu_slot(device):
            note("enter", device)
            held.set()
            cpu_done.wait(60)         # keep the slot until the CPU task ran (bounded: it must not need it)
            note("exit", device)

    def cpu_work():
        held.wait(60)
        with gpu_slot("cpu"):
            note("enter", "cpu")
            note("exit", "cpu")
        cpu_done.set()

    threads = [threading.Thread(target=gpu_work, args=(d,)) for d in ("cuda:0", "cuda:1")]
    threads.append(threading.Thread(target=cpu_work))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    gpu = [e for e in events if e[1].startswith("cuda")]
    assert len(gpu) == 4 and gpu[0][1] == gpu[1][1] and gpu[2][1] == gpu[3][1], events   # one after the other
    assert [k for k, _ in gpu] == ["enter", "exit", "enter", "exit"], events
    first_exit = events.index(gpu[1])
    assert events.index(("exit", "cpu")) < first_exit, events   # the CPU task ran while a CUDA task held the slot
    ensure_gpu_limit(GPU_LIMIT, 2)                                    # as the serve test left it
