"""The fan-out shared by every stage's ``*-batches`` subflow: submit one task per item (GPU
tasks annotated so each Dask GPU worker takes one at a time), then hand each item back with
its future as the futures finish, advancing the stage's progress artifact after each; and the
task runner every stage fans out on (``make_task_runner``: thread pool or Dask)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

from prefect.futures import PrefectFuture, as_completed

from flows.artifacts import advance_progress, publish_progress


def submit_all(task, items: Sequence, arguments: Callable[[object], tuple], gpu_annotate: bool = False) -> list:
    """``task.submit(*arguments(item))`` for each item, under ``resources={"GPU": 1}`` when
    ``gpu_annotate`` (Dask workers started with ``--resources GPU=1`` then take one at a time)."""
    import dask

    annotate = dask.annotate(resources={"GPU": 1}) if gpu_annotate else contextlib.nullcontext()
    with annotate:
        return [task.submit(*arguments(item)) for item in items]


#: Bytes of JSON the items of one ``*-batches`` subflow call may take: Prefect's API refuses a
#: flow run whose parameters exceed 512 KiB, and the image lists of a large corpus do (4,000
#: birds: 1.2 MB), so the stages fan out in consecutive parts below this budget.
PARAMETER_BUDGET = 256 * 1024


def parameter_chunks(items: Sequence, budget: int | None = None) -> list[list]:
    """``items`` in consecutive runs whose JSON stays under ``budget`` bytes (default
    ``PARAMETER_BUDGET``; one item at least per run), in order; ``[]`` for no items."""
    import json

    budget = PARAMETER_BUDGET if budget is None else budget
    runs: list[list] = []
    size = 0
    for item in items:
        n = len(json.dumps(item, default=str)) + 2
        if not runs or size + n > budget:
            runs.append([])
            size = 0
        runs[-1].append(item)
        size += n
    return runs


def as_finished(futures: Sequence[PrefectFuture], items: Sequence, progress_key: str,
                description: str, done_before: int = 0, total: int | None = None
                ) -> Iterator[tuple[object, PrefectFuture]]:
    """(item, finished future) in the order the futures finish; the progress artifact
    ``progress_key`` (created here at ``done_before`` of ``total``, default 0 of the futures)
    advances after each one is handled (a stage that fans out in parts passes its count)."""
    total = len(futures) + done_before if total is None else total
    progress = publish_progress(progress_key, description, done_before, total)
    which = {f.task_run_id: item for f, item in zip(futures, items)}
    for finished, future in enumerate(as_completed(futures), start=1):
        future.wait()
        yield which[future.task_run_id], future
        advance_progress(progress, done_before + finished, total)


def make_task_runner(max_workers: int = 2, dask_address: str | None = None, dask_workers: int | None = None, gpu: bool = False):
    """Thread pool by default; a Dask cluster (existing or local, one thread per worker) if asked."""
    if dask_address and dask_workers:
        raise ValueError(f"give dask_address ({dask_address}) or dask_workers ({dask_workers}), not both")
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    if dask_workers:
        if dask_workers < 1:
            raise ValueError(f"dask_workers must be >= 1, got {dask_workers}")
        from prefect_dask import DaskTaskRunner

        kwargs = {"n_workers": int(dask_workers), "threads_per_worker": 1, "processes": True}
        if gpu:
            kwargs["resources"] = {"GPU": 1}
        return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)
    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=int(max_workers))
