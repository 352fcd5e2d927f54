"""Compact store against the kept tensor at SD-1.5's shapes, side by side in one run (issue 20, item 3).

Builds (or reuses) ``real_sizes.py``'s random-weight SD-1.5 model and its synthetic 512 px birds
in ``--work``, then runs, each as its own ``diffparts`` process with the same settings:

- ``compact``: ``diffparts extract`` with the defaults (64 x 64 attention: a compact store; the
  workers segment each image right after the forward and pool its attention per box bin);
- ``kept``: ``diffparts extract --keep-attention`` then ``diffparts segment`` (today's two-step path).

Prints one JSON object: per path the store's bytes per image by group (on disk, Zarr's default
compression), the extract stage's own seconds (forward, and everything after it per image:
write, segment, pool; wall and CPU of the process), the segment stage's wall seconds for the kept
path, and every command. Random weights: sizes and times only, no quality.

    OMP_NUM_THREADS=2 python benchmarks/compact_store.py --work /tmp/real-sizes
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_sizes import (_bytes_under, arch_config, build_model, child_env, diffparts_command,  # noqa: E402
                        last_json, make_corpus, run_measured)


def store_bytes(store: Path, images: int) -> dict:
    groups = {p.name: _bytes_under(p) for p in store.iterdir() if p.is_dir()}
    return {"per_image_by_group": {k: v // images for k, v in sorted(groups.items())},
            "per_image_total": sum(groups.values()) // images}


def per_image(summary: dict) -> dict:
    n = max(int(summary.get("written") or 0), 1)
    return {k: round(float(summary.get(k) or 0.0) / n, 3)
            for k in ("forward_seconds", "after_forward_seconds", "after_forward_cpu_seconds")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/real-sizes", help="folder of the model and corpus (reused)")
    parser.add_argument("--n", type=int, default=2, help="images")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    env = child_env(work)
    model, corpus = work / "model", work / "corpus"
    if not (model / "model_index.json").is_file():
        build_model(model, "sd15")
    if not (corpus / "images.txt").is_file():
        make_corpus(corpus, n=args.n, size=arch_config("sd15").sample_size)
    base = diffparts_command()
    report = {"benchmark": "compact_store", "arch": "sd15", "n_images": args.n, "cpu_count": os.cpu_count(),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "paths": {}}
    for name, keep in (("compact", False), ("kept", True)):
        store = work / f"{name}.zarr"
        if store.exists():
            shutil.rmtree(store)
        cmd = [*base, "extract", "--corpus", str(corpus), "--model", str(model), "--store", str(store),
               "--batch-size", "1", "--max-workers", "1", "--json"] + (["--keep-attention"] if keep else [])
        extract = run_measured(cmd, work / "logs" / f"{name}-extract.log", env)
        extract["command"] = " ".join(cmd[1:])
        summary = last_json((work / "logs" / f"{name}-extract.log").read_text()) or {}
        extract["per_image"] = per_image(summary)
        extract["form"] = summary.get("form")
        out = {"extract": extract}
        if keep and not extract["rc"]:
            cmd = [*base, "segment", "--store", str(store), "--workers", "1"]
            seg = run_measured(cmd, work / "logs" / f"{name}-segment.log", env)
            seg["command"] = " ".join(cmd[1:])
            seg_summary = last_json((work / "logs" / f"{name}-segment.log").read_text()) or {}
            seg["stage_seconds_per_image"] = round(float(seg_summary.get("seconds", 0)) / args.n, 3)
            out["segment"] = seg
        out["store"] = store_bytes(store, args.n)
        report["paths"][name] = out
    print(json.dumps(report))
    return 0 if all(p["extract"]["rc"] == 0 for p in report["paths"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
