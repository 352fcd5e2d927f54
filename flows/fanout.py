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


def as_finished(futures: Sequence[PrefectFuture], items: Sequence, progress_key: str,
                description: str) -> Iterator[tuple[object, PrefectFuture]]:
    """(item, finished future) in the order the futures finish; the progress artifact
    ``progress_key`` (created here at 0 %) advances after each one is handled."""
    progress = publish_progress(progress_key, description, 0, len(futures))
    which = {f.task_run_id: item for f, item in zip(futures, items)}
    for finished, future in enumerate(as_completed(futures), start=1):
        future.wait()
        yield which[future.task_run_id], future
        advance_progress(progress, finished, len(futures))


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
