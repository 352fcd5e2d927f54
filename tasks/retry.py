"""When a task retries: storage and worker hiccups yes, bad input never (issue 12, item 14).

A ``ValueError`` (a refused corpus, a store written with another config, a bad setting) or a
missing file gives the same answer every time: retrying it only repeats the traceback. Every
task that touches storage passes ``retry_condition_fn=retry_unless_bad_input`` with its
``retries=``.
"""

from __future__ import annotations

#: Exceptions that mean "the input is wrong": failed at once, never retried.
BAD_INPUT = (ValueError, FileNotFoundError, NotADirectoryError, TypeError, KeyError)


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
