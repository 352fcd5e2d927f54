"""``make demo``: the whole pipeline on the embedded default, printed for a person.

Synthetic birds (DESIGN 4) -> attention from the embedded toy checkpoint -> segments ->
part categories across the dataset, with the measures against the synthetic ground truth.
Running it again reuses the corpus and the store and skips every finished image.

    python -m flows.demo [--out runs/demo] [--n 48] [--seed 0] [--method diffseg|ncut] [--fresh]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path


def _fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def print_report(corpus_dir: Path, result: dict, wall: float) -> None:
    """What a person wants to see after the run: counts, measures, where the pictures are."""
    ext, seg, parts = result["extract"], result["segment"], result["parts"]
    secs = result["seconds"]
    print()
    print("== diffparts demo ==")
    print(f"corpus  {corpus_dir}  ({ext['images']} images)")
    print(f"store   {ext['store']}")
    print(f"extract {ext['written']} written, {ext['skipped']} skipped, {ext['failed']} failed "
          f"in {secs['extract']:.1f} s ({ext['stored_bytes'] / 1e6:.1f} MB added)")
    print(f"segment {seg.get('done', 0)} segmented, {seg.get('skipped', 0)} skipped with {seg['method']}; "
          f"KL thresholds per level {[round(t, 4) for t in seg.get('level_thresholds') or []]} "
          f"in {secs['segment']:.1f} s")
    for key in ("miou", "pixel_accuracy", "nf_covering"):
        if key in seg:
            print(f"          part {key} vs ground truth: {_fmt(seg[key])}")
    clusters = parts["clusters"]
    print(f"parts   K = {clusters['k']} part categories + background over {parts['images']} images "
          f"in {secs['parts']:.1f} s")
    print("          prevalence " + " ".join(f"{p:.2f}" for p in parts["prevalence"]))
    for key, value in (parts.get("scores") or {}).items():
        if isinstance(value, (int, float)):
            print(f"          {key}: {_fmt(value)}")
    for name, path in (parts.get("pictures") or {}).items():
        print(f"picture {name}: {path}")
    print(f"total   {wall:.1f} s wall")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="work folder (corpus, store, pictures)")
    parser.add_argument("--n", type=int, default=48, help="synthetic birds to make (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--method", default="diffseg", choices=("diffseg", "ncut"), help="segmenter")
    parser.add_argument("--model", default=None, help="model id or folder (default: embedded checkpoint)")
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    args = parser.parse_args(argv)

    # Prefect's temporary server: no analytics (no network here), and time to start on 2 busy cores.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from diffparts.corpus import CubDataset, generate_birds
    from diffparts.model.load import DEFAULT_MODEL
    from flows.pipeline import bird_parts

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    corpus_dir = out / "corpus"
    start = time.perf_counter()

    # 1. The corpus: synthetic birds in the CUB layout, made once.
    if not (corpus_dir / "images.txt").exists():
        generate_birds(corpus_dir, n=args.n, seed=args.seed)
    corpus = CubDataset(corpus_dir)
    print(f"corpus: {len(corpus)} synthetic birds, {len({r.class_id for r in corpus})} species, "
          f"parts {', '.join(name for i, name in sorted(corpus.part_legend.items()) if i)}")
    print(f"model:  {args.model or DEFAULT_MODEL}")

    # 2. The pipeline: extract -> segment -> parts, as Prefect flows.
    result = bird_parts(str(corpus_dir), str(out / "store.zarr"), model=args.model, method=args.method)
    print_report(corpus_dir, result, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
