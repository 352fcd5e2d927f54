"""A lock for the store's set-up step (issue 12, item 9; docs/design.md §6 "The store").

Growing the image axis, creating arrays and rewriting the manifest must have one writer at a
time: two runs on one store (the nightly ``extract`` and ``bird-parts`` deployments) would
otherwise both append the same new images or overwrite each other's manifest. After the set-up
every task writes only its own images' chunks, which needs no lock.

Local stores get a lock file beside the store, ``<store>.lock``, holding the holder's pid, host,
start time and a random token, created atomically (written to a temporary file, then
``os.link``-ed to the lock's name, which fails if the name exists; also safe on NFS). A waiting
run polls it and takes it over when it is stale:

- its holder's pid is gone and the holder ran on this host, or
- it is older than ``stale_after_s`` (a setting: a holder on another host, or a hung one).

Taking over is itself guarded by a second lock file (``<store>.lock.break``), and the stale lock
is removed only if it still holds the token that was judged stale, so two waiting runs never
remove a lock a third has just taken. Releasing removes the lock only if it is still ours.

fsspec stores (``s3://``, ``gs://``, ``memory://`` ...) take no lock: object stores have no
atomic create-if-absent that every fsspec backend offers. What is safe there is written in
docs/hardening.md (one set-up at a time: run the deployments one after the other or give them
one Prefect concurrency limit).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockConfig:
    """When a set-up lock is taken over, and how often a waiting run looks again."""

    stale_after_s: float = 600.0  # set-up takes seconds; older than this its holder hung or its host died
    poll_s: float = 0.2  # a waiting run re-reads the lock file this often

    def __post_init__(self) -> None:
        if not self.stale_after_s > 0 or not self.poll_s > 0:
            raise ValueError(f"stale_after_s and poll_s must be > 0, got {self.stale_after_s}, {self.poll_s}")


def lock_path(store: str | Path) -> Path | None:
    """``<store>.lock`` beside a local store; None for an fsspec URL (no lock there)."""
    store = str(store)
    if store.startswith("file://"):
        store = store[len("file://") :]
    if "://" in store:
        return None
    path = Path(store).expanduser().absolute()
    return path.with_name(path.name + ".lock")


def holder_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (another user's counts too)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    except OSError:
        return True
    return True


def stale_reason(holder: dict, age_s: float, config: LockConfig, host: str | None = None) -> str | None:
    """Why a lock held by ``holder`` (``{"pid", "host", ...}``), ``age_s`` old, is stale; None if not."""
    host = host or socket.gethostname()
    if holder.get("host") == host and holder.get("pid") is not None and not holder_alive(holder["pid"]):
        return f"its holder, pid {holder['pid']} on this host ({host}), is gone"
    if age_s > config.stale_after_s:
        return (f"it is {age_s:.0f} s old (> stale_after_s {config.stale_after_s:g}; holder pid "
                f"{holder.get('pid')} on {holder.get('host')})")
    return None


def _read(path: Path) -> tuple[dict, float] | None:
    """The lock's content and age in seconds; None if there is no lock. Unreadable: ({}, mtime age)."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
        created = float(holder.get("created", mtime))
    except (ValueError, TypeError, AttributeError):
        holder, created = {}, mtime
    holder = holder if isinstance(holder, dict) else {}
    return holder, time.time() - created


def _try_create(path: Path, holder: dict) -> bool:
    """Create ``path`` holding ``holder`` atomically; False if it exists."""
    tmp = path.with_name(f"{path.name}.{holder['token']}.tmp")
    tmp.write_text(json.dumps(holder))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _take_over(path: Path, token: str | None, me: dict, config: LockConfig) -> bool:
    """Remove the stale lock ``path`` if it still holds ``token`` (guarded by ``<lock>.break``).

    False if another run is taking over right now (then wait a poll and look again).
    """
    breaker = path.with_name(path.name + ".break")
    if not _try_create(breaker, me):
        seen = _read(breaker)  # another run is taking over; a breaker left by a crash ages out
        if seen is not None and seen[1] > config.stale_after_s:
            breaker.unlink(missing_ok=True)
        return False
    try:
        current = _read(path)
        if current is not None and current[0].get("token") == token:
            path.unlink(missing_ok=True)
    finally:
        breaker.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def setup_lock(store: str | Path, config: LockConfig | None = None) -> Iterator[dict | None]:
    """Hold the set-up lock of ``store`` for the ``with`` block; waits while another run holds it.

    Yields the lock's content (pid, host, created, token), or None for an fsspec store (no lock).
    A stale lock (``stale_reason``) is taken over with a warning naming its holder.
    """
    config = config or LockConfig()
    path = lock_path(store)
    if path is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "created": time.time(), "token": uuid.uuid4().hex}
    waited = False
    while True:
        me["created"] = time.time()
        if _try_create(path, me):
            break
        seen = _read(path)
        if seen is None:
            continue  # released between the two calls
        holder, age = seen
        reason = stale_reason(holder, age, config)
        if reason:
            log.warning("taking over the set-up lock %s: %s", path, reason)
            if not _take_over(path, holder.get("token"), me, config):
                time.sleep(config.poll_s)
            continue
        if not waited:
            log.info("waiting for the set-up lock %s (pid %s on %s)", path, holder.get("pid"), holder.get("host"))
            waited = True
        time.sleep(config.poll_s)
    try:
        yield dict(me)
    finally:
        seen = _read(path)
        if seen is not None and seen[0].get("token") == me["token"]:
            path.unlink(missing_ok=True)
        else:
            log.warning("set-up lock %s was taken over while held (longer than stale_after_s?)", path)
