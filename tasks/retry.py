"""When a task retries, and how long it may take (issue 12 item 14, issue 13 item 7).

Two kinds of task, two policies (docs/operations.md):

- **Storage** (:data:`STORAGE_RETRIES`): tasks that open, create or write the store, take the
  set-up lock, set done markers or read summaries. Their failures can be transient (a network
  file system failing over, an object store's 503, a full disk being cleaned), so they are
  retried three times after about 1, 4 and 16 s (jittered, at most 1.5 x, so parallel tasks that
  failed together do not all hit the store again at the same instant) -- never on bad input.
- **Compute** (:data:`NO_RETRIES`): a UNet batch, training a token, occlusion cases, pictures,
  measures. A deterministic error or an out-of-memory would only repeat, costing the same time
  again; their failures are recorded (per image, per case, per token) and the next run redoes
  exactly the unfinished work (done markers, training checkpoints).

Bad input -- a ``ValueError`` (a refused corpus, a store written with another config, a bad
setting) or a missing file -- gives the same answer every time: :func:`retry_unless_bad_input`
fails it at once.

Timeouts (:data:`QUICK_STORAGE`): Prefect 3.9 enforces ``timeout_seconds`` with an alarm
signal when the task runs in the main thread, which interrupts even a blocked call; in a worker
thread (a submitted task: thread pool, Dask) it injects the exception at the thread's next
Python instruction, which cannot interrupt a call in C (a UNet forward, a read from a hung
mount) and lands at an arbitrary point. So only short storage tasks that the flows call
directly (never ``.submit``: they run in the flow's thread, the main thread under ``diffparts
run`` and deployments) get one, and none of the tasks that wait for the set-up lock (its own
``stale_after_s`` bounds that wait; a shorter timeout would break a legitimate wait).
"""

from __future__ import annotations

from types import MappingProxyType

#: Exceptions that mean "the input is wrong": failed at once, never retried.
BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError, IsADirectoryError, TypeError,
             KeyError)


def failure_exception(state) -> BaseException | None:
    """The exception a Failed Prefect state holds (None when it holds none)."""
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        state.result(raise_on_failure=True)
    except BaseException as err:  # noqa: BLE001 - this is how a state hands its exception back
        return err
    return None


def retry_unless_bad_input(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: False for :data:`BAD_INPUT`, True for anything else."""
    return not isinstance(failure_exception(state), BAD_INPUT)


def storage_backoff(retries: int) -> list[float]:
    """Seconds before retry 1, 2, 3 ...: 1, 4, 16 (x4 each time)."""
    return [float(4**r) for r in range(retries)]


#: Seconds a short storage task (a summary, a marker, an index) may take: two orders of
#: magnitude above what they take on a CUB-sized store on a network file system. A call still
#: running then is hung (a stalled connection); the retry opens the store again.
STORAGE_TIMEOUT_S = 300.0

#: ``@task(**STORAGE_RETRIES, ...)``: storage tasks (read only: a mapping, not a dict).
STORAGE_RETRIES = MappingProxyType({
    "retries": 3,
    "retry_delay_seconds": storage_backoff,   # Prefect calls it with ``retries``: [1, 4, 16]
    "retry_jitter_factor": 0.5,               # each delay drawn at random, at most 1.5 x, about 1 x on average
    "retry_condition_fn": retry_unless_bad_input,
})

#: ``@task(**QUICK_STORAGE, ...)``: short storage tasks called in the flow's own thread.
QUICK_STORAGE = MappingProxyType({**STORAGE_RETRIES, "timeout_seconds": STORAGE_TIMEOUT_S})

#: ``@task(**NO_RETRIES, ...)``: compute tasks and tasks whose retry would be wrong.
NO_RETRIES = MappingProxyType({"retries": 0})
