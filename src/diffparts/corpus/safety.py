"""What the corpus readers refuse before a file is opened (issue 12: hostile corpus files).

A corpus is a folder someone else made. Every path it names is checked in this order, and the
first rule that fails is the image's failure reason; nothing of a refused file is read:

1. the path must resolve (symlinks followed) inside its folder (``images/``, ``segmentations/``,
   ``part_segmentations/``, ``text_c10/``, or the plain folder itself): else "outside the corpus",
   the same words whether or not the outside file exists;
2. it must be a regular file (not a FIFO, a device such as /dev/zero, a socket or a folder);
3. it must be at most ``ReadLimits.max_file_bytes`` long;
4. an image's header must say at most ``ReadLimits.max_pixels`` pixels, checked before any pixel
   is decoded (decompression bombs; ``imageio`` applies it).

Files are opened with ``O_NONBLOCK`` and checked again on the open descriptor (``fstat``), so a
file swapped for a FIFO after the corpus was read cannot hang a task.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


@dataclass(frozen=True)
class ReadLimits:
    """Sizes above which a corpus file is refused by name instead of being read."""

    max_file_bytes: int = 256 * 2**20  # 256 MiB; CUB's largest image is under 1 MB
    max_pixels: int = 40_000_000       # width x height; a 9000 px square (81 M) is refused, 6000 x 6000 passes

    def __post_init__(self):
        for name in ("max_file_bytes", "max_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ReadLimits.{name} must be a positive integer, got {value!r}")


DEFAULT_LIMITS = ReadLimits()


class CorpusFileError(ValueError):
    """A corpus file that cannot be used: ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def inside(folder: Path, name: str | Path) -> Path:
    """``folder / name`` resolved (symlinks followed); CorpusFileError unless it stays in ``folder``.

    ``folder`` is resolved too, so a corpus whose ``images/`` is itself a link to another disk
    works; a ``..`` or absolute name, or a link leading out, does not. Nothing is opened.
    """
    folder = Path(folder)
    joined = folder / name
    try:
        base = folder.resolve()
        target = joined.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise CorpusFileError(joined, "unresolvable path (symlink loop)") from None
    if target == base or not target.is_relative_to(base):
        raise CorpusFileError(joined, "outside the corpus")
    return target


def _check_stat(path: Path, st: os.stat_result, limits: ReadLimits) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise CorpusFileError(path, "not a regular file")
    if st.st_size > limits.max_file_bytes:
        raise CorpusFileError(path, f"file too large: {st.st_size} bytes > max_file_bytes {limits.max_file_bytes}")


def check_file(path: Path, limits: ReadLimits = DEFAULT_LIMITS) -> None:
    """CorpusFileError unless ``path`` is a regular file within the size limit (stat only)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CorpusFileError(path, "file not found") from None
    except OSError as err:
        raise CorpusFileError(path, f"cannot stat ({err.strerror})") from None
    _check_stat(Path(path), st, limits)


def corpus_file(folder: Path, name: str | Path, limits: ReadLimits = DEFAULT_LIMITS) -> Path:
    """The resolved path of a corpus file that passes rules 1-3; CorpusFileError otherwise."""
    path = inside(folder, name)
    check_file(path, limits)
    return path


def open_checked(path, limits: ReadLimits = DEFAULT_LIMITS) -> BinaryIO:
    """Open a file for reading without blocking on FIFOs, re-checking rules 2-3 on the descriptor."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise CorpusFileError(path, "file not found") from None
    except OSError as err:
        raise CorpusFileError(path, f"cannot open ({err.strerror})") from None
    try:
        _check_stat(path, os.fstat(fd), limits)
    except CorpusFileError:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def read_text_checked(path, limits: ReadLimits = DEFAULT_LIMITS) -> str:
    """The UTF-8 text of a corpus file opened with :func:`open_checked`."""
    with open_checked(path, limits) as fh:
        return fh.read().decode("utf-8")
