"""What a command that runs a Prefect flow sets up first (issue 21): a quiet terminal, and a
one-line answer when the configured Prefect server does not answer.

Quiet: Prefect's own console log (a line per task state, its temporary server's notices) is
for ``--verbose``; without it a run prints one line per stage and the summary, and the same
log still goes to the Prefect API (the dashboard), whose handler is untouched. The console
handler is silenced through Prefect's own setting ``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL``
(read when Prefect is imported, also by subprocesses such as Dask workers) and, for a process
that imported Prefect already (a test, a notebook), on the live handlers, restored afterwards.

Server: with ``PREFECT_API_URL`` set (``prefect config set``), every flow run needs that
server; when it does not answer, Prefect fails after its retries with a long traceback ending
in "Failed to reach API". :func:`check_api` asks the server's ``/health`` once, first.
"""

from __future__ import annotations

import contextlib
import logging
import os

#: Prefect's console handler level when not --verbose, as Prefect's setting (a level NAME:
#: logging's dictConfig refuses a number given as text, and Prefect then sets up no logging at
#: all, the dashboard's log included) and on live handlers (above CRITICAL: nothing printed).
QUIET_LEVEL_NAME = "CRITICAL"
SILENT = logging.CRITICAL + 10


class ServerUnreachable(RuntimeError):
    """The Prefect API this shell is configured for does not answer."""


def _console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)]
    found: list[logging.Handler] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and handler not in found:
                found.append(handler)
    return found


_AT_EXIT: list[bool] = []


def _silent_at_exit() -> None:
    """Prefect stops its temporary server at the process's exit, and says so on the console
    ("Stopping temporary server ..."): registered after it, this runs first and keeps it quiet."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", QUIET_LEVEL_NAME)
    for handler in _console_handlers():
        handler.setLevel(max(handler.level, SILENT))


@contextlib.contextmanager
def prefect_console(verbose: bool):
    """Inside: Prefect's console log shown only when ``verbose`` (the API log is untouched)."""
    if verbose:
        yield
        return
    key = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"
    ours = key not in os.environ            # a level the user set wins, and stays
    os.environ.setdefault(key, QUIET_LEVEL_NAME)
    handlers = _console_handlers()          # those of a Prefect whose logging is set up already
    levels = [h.level for h in handlers]
    for handler in handlers:
        handler.setLevel(max(handler.level, SILENT))
    try:
        yield
    finally:
        for handler, level in zip(handlers, levels):
            handler.setLevel(level)
        if ours:
            os.environ.pop(key, None)
        if not _AT_EXIT:
            import atexit

            atexit.register(_silent_at_exit)   # after Prefect's own (its server's stop): runs before it
            _AT_EXIT.append(True)


def check_api(timeout_s: float = 5.0) -> str | None:
    """The configured ``PREFECT_API_URL`` (None: a temporary server is started per run);
    :class:`ServerUnreachable` with what to do when it does not answer ``/health``."""
    import httpx
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return None
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s)
    except httpx.HTTPError as err:
        raise ServerUnreachable(
            f"the Prefect server at {url} (PREFECT_API_URL) does not answer ({type(err).__name__}): start it with "
            "`prefect server start`, or run without it: `prefect config unset PREFECT_API_URL`") from err
    if response.status_code >= 400:
        raise ServerUnreachable(
            f"the Prefect server at {url} (PREFECT_API_URL) answers /health with HTTP {response.status_code}: "
            "check that URL (it ends in /api), or `prefect config unset PREFECT_API_URL`")
    return url
