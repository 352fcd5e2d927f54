"""What a re-run with nothing to do reads, old way against new, on one store (issue 20): one JSON object.

Read only (the store is never written). For ``--store`` it times, side by side in one process:

- every per-image marker array (``*/done``, ``failures/*``, ``*/held_out``) read whole by Zarr
  (``arr[:]``: one codec trip per image chunk) and by ``store.markers.read_image_vector`` (the
  chunk files, each distinct one decoded once), and checks that both give the same values;
- the image table from the ``images/`` arrays and from the manifest (``image_table``);
- the category pixel counts the embeddings stage needs, from every label map and, where the
  parts stage wrote it, from ``parts/category_pixels``;
- with the store's corpus (manifest or ``--corpus``): the extract stage's description of the
  corpus with every file hashed, and with the hashes reused from the manifest's file stats
  (only where the manifest records them: stores set up since issue 20).

    OMP_NUM_THREADS=1 python benchmarks/marker_reads.py --store out/scale/n1200/store.zarr [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _best(fn, repeat: int) -> tuple[float, object]:
    """The fastest of ``repeat`` calls, in seconds, and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return round(best, 4), out


def marker_arrays(root) -> list[str]:
    """Paths of the whole-read per-image 1-D arrays a no-op run reads."""
    out = []
    for path, node in root.members(max_depth=None):
        if path.startswith("versions"):
            continue
        dims = tuple(getattr(getattr(node, "metadata", None), "dimension_names", None) or ())
        if dims == ("image",) and (path.endswith("/done") or path.startswith("failures/") or path.endswith("held_out")):
            out.append(path)
    return sorted(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=None, help="default: the manifest's")
    parser.add_argument("--repeat", type=int, default=3, help="timings: the fastest of this many")
    args = parser.parse_args(argv)

    from diffparts.inversion.data import category_pixels
    from diffparts.store import describe_images, image_count, image_table, known_hashes, manifest_corpus, open_store
    from diffparts.store.markers import read_image_vector

    root = open_store(args.store)
    n = image_count(root)
    out: dict = {"benchmark": "marker_reads", "store": str(args.store), "images": n, "markers": {}}
    zarr_total = fast_total = 0.0
    for path in marker_arrays(root):
        arr = root[path]
        t_zarr, old = _best(lambda: arr[:], args.repeat)
        t_fast, new = _best(lambda: read_image_vector(arr), args.repeat)
        if not np.array_equal(np.asarray(old), np.asarray(new)):
            raise SystemExit(f"{path}: read_image_vector differs from Zarr's read")
        out["markers"][path] = {"zarr_s": t_zarr, "chunk_files_s": t_fast}
        zarr_total, fast_total = zarr_total + t_zarr, fast_total + t_fast
    out["markers_total"] = {"arrays": len(out["markers"]), "zarr_s": round(zarr_total, 3),
                            "chunk_files_s": round(fast_total, 3)}
    t_arrays, a = _best(lambda: image_table(root, from_arrays=True), args.repeat)
    t_manifest, b = _best(lambda: image_table(root), args.repeat)
    out["image_table"] = {"arrays_s": t_arrays, "manifest_s": t_manifest, "same": a == b}
    if "parts/labels" in root and "n_categories" in root["parts"].attrs:
        from diffparts.store import done_mask

        labels, k1 = root["parts/labels"], int(root["parts"].attrs["n_categories"])

        def from_labels():
            counts = np.zeros((n, k1), np.int64)
            for i in np.flatnonzero(done_mask(root, "parts")):
                lab = np.asarray(labels[int(i)]).ravel()
                counts[i] = np.bincount(lab[lab >= 0], minlength=k1)[:k1]
            return counts

        t_labels, c1 = _best(from_labels, 1)
        row = {"from_labels_s": t_labels}
        if "category_pixels" in root["parts"]:
            t_stored, c2 = _best(lambda: category_pixels(root), args.repeat)
            row.update(stored_s=t_stored, same=bool(np.array_equal(c1, c2)))
        out["category_pixels"] = row
    corpus = args.corpus or manifest_corpus(root)
    if corpus:
        from diffparts.corpus import open_corpus

        records = list(open_corpus(corpus))
        t_open, _ = _best(lambda: list(open_corpus(corpus)), 1)
        t_hash, rows = _best(lambda: describe_images(records), 1)
        known = known_hashes(root)
        row = {"corpus": str(corpus), "open_corpus_s": t_open, "hash_every_file_s": t_hash,
               "stats_recorded": len(known)}
        if known:
            t_reuse, again = _best(lambda: describe_images(records, known=known), args.repeat)
            row.update(reuse_recorded_s=t_reuse, same=[r["sha256"] for r in rows] == [r["sha256"] for r in again])
        out["describe_images"] = row
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
