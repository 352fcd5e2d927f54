"""A process's memory of CUB-layout corpora it has read, while their folders are unchanged (issue 20).

Reading a CUB-layout corpus checks every image, mask and caption path (``corpus.safety``:
resolved inside the corpus, a regular file, within the size limit): 3.6 s for 4,000 synthetic
birds on a loaded 2-core machine, and one ``diffparts run`` opens the corpus in five stages,
six times, also when nothing is left to do. The records are kept here, per folder and read
limits, with a fingerprint of the folder; a later open in the same process gets them back
without touching the image files when the fingerprint is equal.

The fingerprint is the (mtime ns, size, inode) of the corpus folder, of every folder below it
(links not followed) and of every regular file directly in it or in ``parts/`` (the metadata
files). A folder's mtime changes when an entry is created, removed or renamed in it, so an
image, mask or caption file that appears, disappears or is replaced (by a link leading out,
say) changes it; a metadata file edited in place changes its own stat. What it does not see is
a file below the top changing in place: an image's content or size (re-checked anyway when a
stage opens it: ``safety.open_checked`` checks the descriptor, regular file and size limit; a
changed content is found by the hash, ``store.describe_images``) or a ``text_c10`` caption file
edited in place (its first line is kept until the process ends or its folder changes).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

#: Corpora remembered per process (the oldest is forgotten first).
MAX_KEPT = 4
#: A fingerprint with an mtime this recent is not trusted (a same-size edit within the file
#: system's timestamp tick would not change it): such a corpus is read every time.
SETTLE_NS = 2_000_000_000

_LOCK = threading.Lock()
_KEPT: dict[tuple, tuple[tuple, Any]] = {}


def folder_fingerprint(root: Path) -> tuple:
    """The stats that change when the corpus's files or metadata change (see the module doc)."""
    def stat_of(path: str) -> tuple:
        st = os.stat(path, follow_symlinks=False)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    rows = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        rel = os.path.relpath(folder, root)
        rows.append((rel, stat_of(folder)))
        if rel in (".", "parts"):
            rows += [(os.path.join(rel, f), stat_of(os.path.join(folder, f))) for f in sorted(files)]
    return tuple(rows)


def remembered(key: tuple, root: Path, read: Callable[[], Any]) -> Any:
    """``read()``'s result for ``key``, read again only when ``root``'s fingerprint changed."""
    before = folder_fingerprint(root)
    with _LOCK:
        kept = _KEPT.get(key)
    if kept is not None and kept[0] == before:
        return kept[1]
    value = read()
    settled = max(row[1][0] for row in before) < time.time_ns() - SETTLE_NS
    if settled and folder_fingerprint(root) == before:   # unchanged while reading: safe to keep
        with _LOCK:
            _KEPT.pop(key, None)
            _KEPT[key] = (before, value)
            while len(_KEPT) > MAX_KEPT:
                _KEPT.pop(next(iter(_KEPT)))
    return value


def forget() -> None:
    """Forget every corpus (tests)."""
    with _LOCK:
        _KEPT.clear()
