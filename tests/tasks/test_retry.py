"""Retries with backoff on storage tasks only, never on bad input; timeouts only where they work
(issue 12 item 14, issue 13 item 7; tasks/retry.py, docs/operations.md)."""

from __future__ import annotations

import ast
import importlib
import threading
import time
from pathlib import Path

import pytest
from prefect import Task, flow, task
from prefect.states import Failed

from diffparts import REPO_ROOT
from tasks.retry import (NO_RETRIES, QUICK_STORAGE, STORAGE_RETRIES, STORAGE_TIMEOUT_S, retry_unless_bad_input,
                         storage_backoff)

MODULES = ["tasks.corpus", "tasks.extract", "tasks.segment", "tasks.parts", "tasks.embeddings",
           "tasks.occlusion", "flows.pipeline"]

#: The compute tasks: a UNet batch, training, occlusion cases, pictures, measures. Not retried.
COMPUTE = {"extract_batch", "train_part_embedding", "run_cases", "category_pictures", "measure_embeddings",
           "save_store_pictures", "evaluate_store", "occlusion_grid",
           "ensure_corpus"}   # renders a corpus: a retry after a half-rendered one would take it as given

#: Storage tasks that wait for the set-up lock: no timeout (the lock's stale_after_s bounds the wait).
LOCKED = {"prepare_store", "create_attention_arrays", "create_segment_arrays", "force_stages"}


def all_tasks() -> dict[str, Task]:
    out = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, Task) and value.fn.__module__ == name:
                out[f"{name}.{attr}"] = value
    return out


def submitted_tasks() -> set[str]:
    """Names of tasks any flow starts with ``.submit`` or hands to ``flows.fanout.submit_all``
    (they run in worker threads)."""
    names = set()
    for path in (Path(REPO_ROOT) / "flows").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "submit" and isinstance(node.value, ast.Name):
                names.add(node.value.id)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "submit_all"
                    and node.args and isinstance(node.args[0], ast.Name)):
                names.add(node.args[0].id)
    return names


def test_condition_on_states():
    assert retry_unless_bad_input(None, None, Failed(data=ValueError("bad line"))) is False
    assert retry_unless_bad_input(None, None, Failed(data=FileNotFoundError("gone"))) is False
    assert retry_unless_bad_input(None, None, Failed(data=OSError("network"))) is True
    assert retry_unless_bad_input(None, None, Failed(data=TimeoutError("hung"))) is True


def test_every_task_is_storage_with_backoff_or_never_retried():
    tasks = all_tasks()
    assert len(tasks) >= 30
    assert storage_backoff(3) == [1.0, 4.0, 16.0]
    for name, t in tasks.items():
        short = name.rsplit(".", 1)[1]
        if short in COMPUTE:
            assert t.retries == 0, name
            continue
        assert t.retries == STORAGE_RETRIES["retries"] == 3, name
        assert t.retry_delay_seconds == [1.0, 4.0, 16.0] and t.retry_jitter_factor == 0.5, name
        assert t.retry_condition_fn is retry_unless_bad_input, name
    assert {n.rsplit(".", 1)[1] for n, t in tasks.items() if t.retries == 0} == COMPUTE


def test_timeouts_only_on_tasks_that_run_in_the_flows_thread():
    """A timeout interrupts a task only in the main thread (an alarm); a submitted task runs in a
    worker thread, where Prefect cannot interrupt a call in C. Nor on a task waiting for the lock."""
    tasks, submitted = all_tasks(), submitted_tasks()
    assert {"extract_batch", "segment_images", "train_part_embedding", "run_cases"} <= submitted
    timed = {n.rsplit(".", 1)[1] for n, t in tasks.items() if t.timeout_seconds}
    assert timed and not timed & submitted and not timed & LOCKED and not timed & COMPUTE
    for name, t in tasks.items():
        assert t.timeout_seconds in (None, STORAGE_TIMEOUT_S), name
    assert QUICK_STORAGE["timeout_seconds"] == STORAGE_TIMEOUT_S and "timeout_seconds" not in NO_RETRIES


@pytest.mark.flow
@pytest.mark.parametrize("error, calls", [(ValueError("images.txt: line 3: bad"), 1), (OSError("flaky disk"), 4)])
def test_the_storage_policy_retries_only_what_is_not_bad_input(prefect_server, error, calls):
    seen = []

    @task(**{**STORAGE_RETRIES, "retry_delay_seconds": 0})
    def flaky():
        seen.append(1)
        raise error

    with pytest.raises(type(error)):
        flaky()
    assert len(seen) == calls


@pytest.mark.flow
def test_a_real_storage_task_fails_bad_input_at_once(prefect_server, tmp_path):
    """tasks.parts.require_segments on a folder that is no store: FileNotFoundError, one attempt.

    Prefect records task-run states through its event pipeline, so the API's record can lag
    behind the task: the test waits (bounded) until the record holds the final state.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from tasks.parts import require_segments
    from tests.waiting import wait_until

    state = require_segments(str(tmp_path / "no-store.zarr"), return_state=True)
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        def recorded():
            run = client.read_task_run(state.state_details.task_run_id)
            return run if run.state is not None and run.state.is_final() else None

        run = wait_until(recorded, timeout=120, what="the task run's final state in the API", ignore=(ObjectNotFound,))
    assert run.state.is_failed() and run.run_count == 1


@pytest.mark.flow
def test_a_timeout_interrupts_a_task_in_the_flows_thread_not_a_submitted_one(prefect_server):
    """What Prefect 3.9 does, measured: the reason only QUICK_STORAGE tasks carry a timeout."""
    ran = {}

    @task(timeout_seconds=0.5)
    def blocked(key: str) -> None:
        start, slept = time.perf_counter(), False
        try:
            time.sleep(2.0)          # a call in C, like a read from a hung mount
            slept = True
        finally:
            ran[key] = (threading.current_thread() is threading.main_thread(), slept, time.perf_counter() - start)

    @flow
    def both() -> tuple:
        direct = blocked("direct", return_state=True)
        future = blocked.submit("submitted")
        future.wait()
        return direct.name, future.state.name

    assert both() == ("TimedOut", "TimedOut")
    main, slept, _ = ran["direct"]
    assert main and not slept                     # the alarm interrupted the sleep
    main, _, seconds = ran["submitted"]           # (the timeout is raised in it once the sleep returns)
    assert not main and seconds >= 1.9            # the worker thread slept to the end (a load only adds)
