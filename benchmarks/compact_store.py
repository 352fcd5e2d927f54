"""Compact store against the kept tensor at SD-1.5's shapes, side by side in one run (issue 20, item 3).

Builds (or reuses) ``real_sizes.py``'s random-weight SD-1.5 model and its synthetic 512 px birds
in ``--work``, then runs, each as its own ``diffparts`` process with the same settings:

- ``compact``: ``diffparts extract`` with the defaults (64 x 64 attention: a compact store; the
  workers segment each image right after the forward and pool its attention per box bin);
- ``kept``: ``diffparts extract --keep-attention`` then ``diffparts segment`` (today's two-step path).

Prints one JSON object: per path the store's bytes per image by group (on disk, Zarr's default
compression), the extract stage's own seconds (forward, and everything after it per image:
write, segment, pool; wall and CPU of the process), the segment stage's wall seconds for the kept
path, every command, and (``cpu_breakdown``) where a compact worker's CPU goes after the
forward, measured in-process on SD-shaped synthetic attention. Random weights: sizes and times
only, no quality.

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


def cpu_breakdown() -> dict:
    """Where a compact worker's CPU goes after the forward, in this process, on SD-shaped synthetic
    attention (``segment.synthetic.realistic_attention(64)``, no model): rounding to float16 as a
    read would, DiffSeg's 4 levels at 512 px, NCut's levels at 512 px (the segment stage's default method,
    its default settings), the box-bin product. CPU and wall seconds each."""
    import time

    from diffparts.parts.descriptors import DescriptorConfig, box_bins, image_box
    from diffparts.segment.hierarchy import segment_levels
    from diffparts.segment.synthetic import realistic_attention
    from diffparts.segment.thresholds import ThresholdRule, choose_thresholds
    from diffparts.store import stored_self_attention

    attn, _ = realistic_attention(64, 6, seed=0)
    stored_self_attention(attn[:1], "float16")   # warm-up: imports torch (its conversion), as a worker has
    out: dict = {}

    def timed(name, fn):
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn()
        out[name] = {"cpu_s": round(time.process_time() - cpu, 3), "wall_s": round(time.perf_counter() - wall, 3)}
        return result

    rounded = timed("round_to_float16_and_renormalise", lambda: stored_self_attention(attn, "float16"))
    choice = choose_thresholds([rounded], ThresholdRule())
    levels = timed("diffseg_4_levels_out_512", lambda: segment_levels(rounded, level_thresholds=choice.level_thresholds,
                                                                      out_size=(512, 512)))
    timed("ncut_levels_out_512", lambda: segment_levels(rounded, method="ncut", out_size=(512, 512)))   # the default
    box, _ = image_box(levels[0], None, DescriptorConfig())
    timed("box_bins_product", lambda: rounded.reshape(4096, 4096) @ box_bins((512, 512), box, 64, 4))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/real-sizes", help="folder of the model and corpus (reused)")
    parser.add_argument("--n", type=int, default=2, help="images")
    parser.add_argument("--breakdown-only", action="store_true", help="only the in-process CPU breakdown (no model)")
    parser.add_argument("--device", default="cpu", help="extract's torch device (cuda: the compact worker segments there)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"), help="extract's model dtype")
    args = parser.parse_args(argv)
    if args.breakdown_only:
        print(json.dumps({"benchmark": "compact_store", "cpu_breakdown": cpu_breakdown()}))
        return 0
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
              "device": args.device, "dtype": args.dtype,
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "paths": {}}
    for name, keep in (("compact", False), ("kept", True)):
        store = work / f"{name}.zarr"
        if store.exists():
            shutil.rmtree(store)
        cmd = [*base, "extract", "--corpus", str(corpus), "--model", str(model), "--store", str(store),
               "--batch-size", "1", "--max-workers", "1", "--device", args.device, "--dtype", args.dtype,
               "--json"] + (["--keep-attention"] if keep else [])
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
    report["cpu_breakdown"] = cpu_breakdown()
    print(json.dumps(report))
    return 0 if all(p["extract"]["rc"] == 0 for p in report["paths"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
