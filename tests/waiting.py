"""Waiting for a condition in tests, bounded: ``wait_until(predicate, timeout=..., what=...)``.

A test that reads something another thread, process or service writes (Prefect records task-run
states through its event pipeline, so its API can lag behind the task; a server or scheduler
writes its address file when it is up) polls for the condition it needs instead of reading once
or sleeping a fixed time. The timeout only bounds a wait that has gone wrong: it is generous, and
no assertion is made about how long the wait took.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")

#: Exceptions that mean "not yet" by default (a record not created yet, a file half written).
NOT_YET: tuple[type[BaseException], ...] = (LookupError, OSError, ValueError)


def wait_until(predicate: Callable[[], T], timeout: float = 120.0, interval: float = 0.1,
               what: str | None = None, ignore: tuple[type[BaseException], ...] = NOT_YET,
               alive: Callable[[], object] | None = None) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns something truthy; return it.

    ``ignore``: exceptions that count as "not yet" (the last one is named on timeout).
    ``alive``: called before each try; a falsy result (the process being waited on has exited)
    stops the wait at once. Raises ``AssertionError`` naming ``what`` (default: the predicate)
    after ``timeout`` seconds without success, with the last value or exception seen.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        if alive is not None and not alive():
            raise AssertionError(f"gave up waiting for {what or _name(predicate)}: what it waits on has stopped "
                                 f"(last seen: {last!r})")
        try:
            value = predicate()
        except ignore as exc:         # not there yet
            value, last = None, exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what or _name(predicate)} did not happen within {timeout:g} s "
                                 f"(last seen: {last!r})")
        time.sleep(interval)


def _name(predicate) -> str:
    return getattr(predicate, "__qualname__", None) or repr(predicate)
