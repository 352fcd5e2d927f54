"""Store figures per storage precision (docs/design.md §6 and §7): size, write speed, DiffSeg agreement.

For each precision (float16, uint8, uint8-log) it writes attention tensors into a fresh store through
``diffparts.store.write_attention`` (one chunk per image, zstd as zarr's default), then reads them
back with ``read_self_attention`` (dequantised, renormalised) and runs DiffSeg on the original and
on the stored copy. Inputs:

- ``synthetic-64``: SD-shaped aggregated self-attention (64 x 64 queries and keys, 33.5 MB per
  image as float16) from ``diffparts.segment.synthetic.realistic_attention``;
- ``toy-checkpoint``: attention extracted from synthetic birds by the embedded checkpoint, when
  ``data/models/diffparts-toy-birds`` exists.

Figures: bytes per image on disk, write MB/s (float32 attention handed in per second, and stored
bytes per second), read MB/s, the fraction of DiffSeg mask pixels unchanged by the round trip
(raw label equality, and after matching labels one-to-one with the Hungarian method).

Usage: .venv/bin/python benchmarks/bench_store.py [--images 4] [--size 64] [--model DIR]   (prints one JSON object)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from diffparts.segment.diffseg import DiffSeg
from diffparts.segment.synthetic import realistic_attention
from diffparts.segment.thresholds import choose_thresholds
from diffparts.store import (
    PRECISIONS,
    build_manifest,
    create_attention_arrays,
    mark_done,
    open_store,
    prepare_store,
    read_self_attention,
    write_attention,
)


def matched_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose labels agree after the best one-to-one label matching."""
    ka, kb = a.max() + 1, b.max() + 1
    overlap = np.zeros((ka, kb), dtype=np.int64)
    np.add.at(overlap, (a.ravel(), b.ravel()), 1)
    rows, cols = linear_sum_assignment(-overlap)
    return float(overlap[rows, cols].sum() / a.size)


def toy_attention(n: int, model: str | None = None) -> np.ndarray | None:
    """(image, qy, qx, ky, kx) from a checkpoint (default: the embedded one) on synthetic birds."""
    from diffparts.model.load import DEFAULT_MODEL

    model = Path(model) if model else DEFAULT_MODEL
    if not (model / "model_index.json").exists():
        return None
    from diffparts.corpus import SynthConfig, generate_birds, load_rgb, open_corpus
    from diffparts.model.extract import extract_attention, native_image_size
    from diffparts.model.load import load_pipeline

    pipe = load_pipeline(model)
    size = native_image_size(pipe)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = generate_birds(Path(tmp) / "birds", n=n, seed=123, config=SynthConfig(image_size=max(size, 32)))
        images = np.stack([load_rgb(r.path) for r in open_corpus(corpus)])
    return extract_attention(pipe, images).self_attn


def bench_precision(attn: np.ndarray, precision: str, tmp: Path, thresholds: tuple[float, ...]) -> dict:
    n, r = attn.shape[0], attn.shape[1]
    store = tmp / f"{precision}.zarr"
    shutil.rmtree(store, ignore_errors=True)
    images = [{"image_id": k + 1, "name": f"{k}.png", "sha256": str(k)} for k in range(n)]
    prepare_store(store, images, build_manifest("bench", "sha256:bench", {"precision": precision}))
    root = open_store(store, "r+")
    create_attention_arrays(root, r, ["<s>"], r * 8, precision)
    cross = np.ones((n, 1, r, r), np.float32)

    # 1. Write (timed: quantisation + encoding + file writes), one image per chunk, after
    #    a warm-up write of image 0 (first-call costs of zarr and the codec).
    write_attention(root, 0, attn[0], cross[0])
    start = time.perf_counter()
    for k in range(n):
        write_attention(root, k, attn[k], cross[k])
        mark_done(root, "attention", k)
    write_s = time.perf_counter() - start
    stored = root["attention/self"].nbytes_stored() + (
        root["attention/self_scale"].nbytes_stored() if precision != "float16" else 0
    )

    # 2. Read back (dequantised and renormalised).
    start = time.perf_counter()
    back = np.stack([read_self_attention(open_store(store), k) for k in range(n)])
    read_s = time.perf_counter() - start

    # 3. DiffSeg masks before and after (docs/design.md §5.2 "DiffSeg merge" defaults).
    raw, matched, segments = [], [], []
    for k in range(n):
        before = DiffSeg(kl_thresholds=thresholds).fit(attn[k]).labels_
        after = DiffSeg(kl_thresholds=thresholds).fit(back[k]).labels_
        raw.append(float(np.mean(before == after)))
        matched.append(matched_agreement(before, after))
        segments.append(int(before.max() + 1))
    input_mb = attn.astype(np.float32).nbytes / 1e6
    itemsize = 2 if precision == "float16" else 1
    return {
        "bytes_per_image": int(stored / n),
        "uncompressed_bytes_per_image": int(attn[0].size * itemsize),
        "compression": round(attn[0].size * itemsize * n / stored, 2),
        "write_s_per_image": round(write_s / n, 4),
        "write_mb_s_input_float32": round(input_mb / write_s, 1),
        "write_mb_s_stored": round(stored / 1e6 / write_s, 1),
        "read_mb_s_float32": round(input_mb / read_s, 1),
        "max_abs_error": float(np.abs(back - attn).max()),
        "diffseg_pixels_unchanged": round(float(np.mean(raw)), 5),
        "diffseg_pixels_unchanged_min": round(float(np.min(raw)), 5),
        "diffseg_pixels_unchanged_matched": round(float(np.mean(matched)), 5),
        "diffseg_segments_mean": float(np.mean(segments)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images per input set")
    parser.add_argument("--size", type=int, default=64, help="R of the synthetic attention")
    parser.add_argument("--model", default=None, help="checkpoint folder for the real-attention input "
                        "(default: data/models/diffparts-toy-birds if present)")
    args = parser.parse_args()

    inputs = {}
    if args.size > 0:  # --size 0: the checkpoint's attention only
        inputs[f"synthetic-{args.size}"] = np.stack(
            [realistic_attention(args.size, n_regions=6, seed=s)[0] for s in range(args.images)]
        )
    toy = toy_attention(args.images, args.model)
    if toy is not None:
        inputs[f"toy-checkpoint-{toy.shape[1]}"] = toy
    out = {
        "benchmark": "store",
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.1f}",
        "images_per_input": args.images,
        "results": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, attn in inputs.items():
            # SD-like maps: DiffSeg's own thresholds; a small model's diffuse maps: the segment
            # stage's data-driven rule (quantile 0.05 of anchor-query KL), else one segment.
            thresholds = (1.1, 1.1, 1.1) if name.startswith("synthetic") else choose_thresholds(list(attn)).thresholds
            out["results"][name] = {
                "shape_per_image": list(attn.shape[1:]),
                "diffseg_thresholds": [round(float(t), 5) for t in thresholds],
                **{p: bench_precision(attn, p, Path(tmp), thresholds) for p in PRECISIONS},
            }
    if toy is None:
        out["note"] = "no checkpoint found: synthetic attention only"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
