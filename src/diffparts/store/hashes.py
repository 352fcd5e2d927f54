"""Content hashes of corpus images, and the file stats that let a re-run skip hashing (issue 20).

Extraction hashes every corpus file (sha256 of its bytes) to notice an image whose content
changed since it was stored: the store then redoes that image in every stage
(``store.manifest.prepare_store``). The manifest keeps, beside each image's hash, the size and
modification time (ns) of the file it was computed from; a later run reuses the hash of a file
whose stat is unchanged instead of reading it again (docs/store.md "The manifest").
"""

from __future__ import annotations

import hashlib
import os

import zarr


def known_hashes(root: zarr.Group | None) -> dict[str, dict]:
    """{name: {"sha256", "size", "mtime_ns"}} of the manifest's images that carry a file stat
    (written since issue 20): what ``describe_images`` may reuse instead of hashing again."""
    if root is None:
        return {}
    return {str(r["name"]): r for r in dict(root.attrs.get("manifest", {})).get("images", [])
            if r.get("sha256") and "size" in r and "mtime_ns" in r}


def describe_images(records, limits=None, known: dict[str, dict] | None = None) -> list[dict]:
    """``[{"image_id", "name", "sha256", "size", "mtime_ns"}]`` of corpus records (``ImageRecord``-like).

    The hash is of the file's bytes ("" when it cannot be read: the load step records why; then
    no size and mtime). A record the reader refused (``refused`` set: outside the corpus, not a
    regular file, too large) is not opened; the others are opened as ``corpus.safety.open_checked``
    does, so a FIFO or device never blocks the hash. ``limits``: a ``corpus.ReadLimits`` (default:
    its defaults). ``known`` (``known_hashes`` of the store): a file whose size and modification
    time (ns) equal the ones recorded with its hash is not read again, its recorded hash is used
    (issue 20: a re-run need not read every image); a file changed in place with its size and
    mtime kept (e.g. restored by a tool that resets mtime) is then not noticed: ``touch`` it.
    """
    from diffparts.corpus.safety import DEFAULT_LIMITS, CorpusFileError, open_checked

    known = known or {}
    rows = []
    for rec in records:
        row = {"image_id": int(rec.image_id), "name": str(rec.name), "sha256": ""}
        if not getattr(rec, "refused", None):
            try:
                with open_checked(rec.path, limits or DEFAULT_LIMITS) as fh:
                    st = os.fstat(fh.fileno())
                    seen = known.get(row["name"])
                    if seen and (int(seen["size"]), int(seen["mtime_ns"])) == (st.st_size, st.st_mtime_ns):
                        digest = str(seen["sha256"])
                    else:
                        h = hashlib.sha256()
                        while chunk := fh.read(1 << 20):
                            h.update(chunk)
                        digest = h.hexdigest()
                    row.update({"sha256": digest, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)})
            except (OSError, CorpusFileError):
                pass
        rows.append(row)
    return rows
