"""Reading a whole per-image marker array fast: done markers, failures, flags (issue 20).

Every array with an ``image`` axis has chunks of one image (docs/store.md), so that concurrent
writers never share a chunk. Reading one such 1-D array whole through Zarr costs one trip
through its codec pipeline per image: about 0.3-0.5 ms each on a loaded 2-core machine, so 1.4-2
s for 4,000 images, and a re-run with nothing to do reads a dozen of them per stage. The
chunk files themselves read in about 0.03 ms each.

Markers hold few distinct values (True/False, "" or a few failure reasons), so
:func:`read_image_vector` reads a local store's chunk files directly, decodes each *distinct*
chunk once through Zarr itself (an in-memory copy of the array's metadata and that one chunk:
no codec is re-implemented here), and fills the rest from the chunk's bytes. An absent chunk
holds the fill value, as Zarr reads it. Anything else (a remote store, another chunk key
encoding or chunking, more than ``MAX_DISTINCT`` distinct chunks, a chunk that does not decode,
e.g. caught mid-write) falls back to Zarr's own ``arr[:]``, so the result always equals it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import zarr

#: More distinct chunk contents than this (ids, names, hashes) are read by Zarr itself.
MAX_DISTINCT = 64


def _chunk_folder(arr: zarr.Array) -> Path | None:
    """The folder of a 1-D, one-element-per-chunk array's chunk files in a local store, else None."""
    from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
    from zarr.storage import LocalStore

    meta = arr.metadata
    if not isinstance(arr.store, LocalStore) or getattr(meta, "zarr_format", None) != 3:
        return None
    if len(arr.shape) != 1 or tuple(arr.chunks) != (1,) or getattr(arr, "shards", None):
        return None
    encoding = getattr(meta, "chunk_key_encoding", None)
    if not isinstance(encoding, DefaultChunkKeyEncoding) or encoding.separator != "/":
        return None
    return Path(arr.store.root) / arr.path


def _decode(folder: Path, blob: bytes):
    """The value of one chunk's bytes, decoded by Zarr from an in-memory copy of the array."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    buffer = default_buffer_prototype().buffer
    mapping = {"zarr.json": buffer.from_bytes((folder / "zarr.json").read_bytes()), "c/0": buffer.from_bytes(blob)}
    return zarr.open_array(store=MemoryStore(mapping), mode="r")[0]


def read_image_vector(arr: zarr.Array) -> np.ndarray:
    """``arr[:]`` of a 1-D per-image array, from its chunk files where that is safe and fast."""
    folder = _chunk_folder(arr)
    if folder is None:
        return arr[:]
    n = int(arr.shape[0])
    groups: dict[bytes, list[int]] = {}
    try:
        with os.scandir(folder / "c") as entries:
            for entry in entries:
                if not entry.name.isdigit() or int(entry.name) >= n:
                    continue
                with open(entry.path, "rb") as fh:
                    groups.setdefault(fh.read(), []).append(int(entry.name))
                if len(groups) > MAX_DISTINCT:
                    return arr[:]
    except FileNotFoundError:
        if not (folder / "zarr.json").is_file():   # not where we thought: let Zarr say
            return arr[:]
        groups = {}                               # no chunk written yet: all fill value
    out = np.full(n, arr.fill_value, dtype=arr.dtype)
    try:
        for blob, indices in groups.items():
            out[np.asarray(indices, np.int64)] = _decode(folder, blob)
    except Exception:  # a chunk caught mid-write, or a layout this reader does not know: Zarr's read
        return arr[:]
    return out
