"""Dataset clustering throughput and peak memory (docs/design.md §7 "Performance"): prints one JSON object.

For each size (10^4, 10^5, 10^6 synthetic segments by default) a fresh subprocess writes a
Zarr array (segment, feature) of descriptors in blocks (a mixture of K Gaussians, the shape of
real descriptors: 26 features), then ANOTHER fresh subprocess clusters it with the streaming
clusterer (labels written back to Zarr block by block) and reports its own wall time and peak
RSS (ru_maxrss), so high-water marks of different sizes never mix.

    .venv/bin/python benchmarks/bench_cluster.py [--sizes 10000 100000 1000000] [--k 8]

Passes over the data: 1 statistics/sample + 1 mini-batch + up to 5 Lloyd + 1 labelling.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

N_FEATURES = 26   # DescriptorConfig() with an 8-token cross-attention group off: 17 + 6 + 1 (+2 spare)
BLOCK = 8192


def write_data(path: Path, n: int, k: int, seed: int = 0) -> None:
    import zarr

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, N_FEATURES)) * 2.0
    arr = zarr.create_array(str(path / "features"), shape=(n, N_FEATURES), dtype="float32",
                            chunks=(BLOCK, N_FEATURES), dimension_names=("segment", "feature"))
    fg = zarr.create_array(str(path / "foreground"), shape=(n,), dtype="bool", chunks=(BLOCK,),
                           dimension_names=("segment",))
    for s in range(0, n, BLOCK):
        m = min(BLOCK, n - s)
        r = np.random.default_rng((seed, s))
        lab = r.integers(0, k, m)
        arr[s:s + m] = (centres[lab] + r.normal(size=(m, N_FEATURES))).astype(np.float32)
        fg[s:s + m] = r.random(m) > 0.2
    zarr.create_array(str(path / "labels"), shape=(n,), dtype="int32", chunks=(BLOCK,),
                      dimension_names=("segment",))


def cluster_data(path: Path, k: int) -> dict:
    import zarr

    from diffparts.parts.cluster import ClusterConfig, cluster_segments

    feats = zarr.open_array(str(path / "features"), mode="r")
    fg = zarr.open_array(str(path / "foreground"), mode="r")
    out = zarr.open_array(str(path / "labels"), mode="r+")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    _, est = cluster_segments(feats, include=fg, config=ClusterConfig(n_clusters=k, block_size=BLOCK),
                              labels_out=out)
    wall = time.perf_counter() - t0
    n = int(feats.shape[0])
    return {"segments": n, "clustered": int(est.n_seen_), "lloyd_passes": int(est.n_iter_),
            "data_passes": 3 + int(est.n_iter_), "seconds": round(wall, 3),
            "segments_per_s": round(n / wall, 1),
            "segment_passes_per_s": round(n * (3 + est.n_iter_) / wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_after_imports_mb": round(rss_before, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--k", type=int, default=8, help="part categories (fixed: K selection costs the same at any size)")
    parser.add_argument("--child", choices=["write", "cluster"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "write":
        write_data(args.path, args.sizes[0], args.k)
        return
    if args.child == "cluster":
        print(json.dumps(cluster_data(args.path, args.k)))
        return
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    try:
        for n in args.sizes:
            path = tmp / f"n{n}"
            path.mkdir()
            base = [sys.executable, __file__, "--sizes", str(n), "--k", str(args.k), "--path", str(path)]
            subprocess.run(base + ["--child", "write"], check=True)
            out = subprocess.run(base + ["--child", "cluster"], check=True, capture_output=True, text=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
            shutil.rmtree(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    by_n = {r["segments"]: r for r in results}
    ratio = None
    if 100_000 in by_n and 1_000_000 in by_n:
        ratio = round(by_n[1_000_000]["peak_rss_mb"] / by_n[100_000]["peak_rss_mb"], 3)
    print(json.dumps({"benchmark": "cluster", "k": args.k, "features": N_FEATURES, "block": BLOCK,
                      "cpus": os.cpu_count(), "results": results,
                      "peak_rss_ratio_1e6_over_1e5": ratio,
                      "flat_within_1_5x": None if ratio is None else ratio <= 1.5}))


if __name__ == "__main__":
    main()
