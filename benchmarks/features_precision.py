"""UNet features stored as float16 against int8 with a float16 step per cell (issue 20, item 3): one JSON object.

For each ``--store`` (a store whose ``features/`` are float16, as every store before issue 20),
two copies are made in ``--work``: ``float16`` (the features as they are) and ``int8`` (each
image's features quantised by ``diffparts.store.features.quantise_features``, exactly what
extraction now writes, from the float16 values). Then, per copy:

- the bytes per image of ``features/`` on disk (Zarr's default compression), and of the store;
- with ``--quality`` (a store with segments and a corpus with keypoints, e.g. the toy birds of
  ``benchmarks/scale.py``): the parts stage's library steps on the same images with the same
  settings (descriptors, streaming clustering with ClusterConfig's defaults and a fixed seed,
  part maps, ``parts.scoring.evaluate_store``: NMI/ARI at keypoints, PCK@0.05/0.1 by feature
  matching over at most ``--max-pairs`` same-class pairs), side by side;
- the round trip: the largest error relative to the cell's largest magnitude, and the lowest
  cosine between a cell's float16 and int8 channel vectors, over every stored image.

    OMP_NUM_THREADS=1 python benchmarks/features_precision.py --store out/scale/n300/store.zarr --quality \\
        --store /tmp/compact-bench/compact.zarr --work out/features-precision
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def _bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def requantise(store: Path) -> dict:
    """Rewrite ``store``'s float16 features as int8 (+ steps) in place; round-trip figures."""
    from diffparts.store import create_feature_arrays, done_mask, open_store, write_features
    from diffparts.store.features import block_name, feature_precision, read_features

    root = open_store(store, "r+")
    group = root["features"]
    if feature_precision(root) != "float16":
        raise ValueError(f"{store}: features are {feature_precision(root)!r}, not float16")
    blocks = [int(b) for b in group.attrs["blocks"]]
    shapes = {b: tuple(group.attrs["shapes"][block_name(b)]) for b in blocks}
    done = np.flatnonzero(done_mask(root, "features"))
    old = {int(i): {b: read_features(root, int(i), b) for b in blocks} for i in done}
    config = dict(group.attrs["config"])
    for b in blocks:
        del group[block_name(b)]
    group.attrs.update({"blocks": [], "shapes": {}})
    create_feature_arrays(root, shapes, config, precision="int8")
    worst_rel, worst_cos = 0.0, 1.0
    for i, values in old.items():
        write_features(root, i, values)
        for b in blocks:
            back = read_features(root, i, b)
            peak = np.abs(values[b]).max(axis=0)
            live = peak > 0
            worst_rel = max(worst_rel, float((np.abs(back - values[b]).max(axis=0)[live] / peak[live]).max()))
            a, q = values[b].reshape(len(values[b]), -1), back.reshape(len(back), -1)
            norm = np.linalg.norm(a, axis=0) * np.linalg.norm(q, axis=0)
            worst_cos = min(worst_cos, float(((a * q).sum(0)[norm > 0] / norm[norm > 0]).min()))
    return {"images": len(old), "max_error_over_cell_peak": round(worst_rel, 6), "min_cell_cosine": round(worst_cos, 7)}


def parts_quality(store: Path, max_pairs: int, seed: int) -> dict:
    """The parts stage's library steps on ``store`` (its manifest's corpus); NMI/ARI/PCK."""
    from diffparts.parts.cluster import ClusterConfig
    from diffparts.parts.dataset import build_descriptors, cluster_parts, load_infos, paint_part_labels, require_segments
    from diffparts.parts.descriptors import DescriptorConfig
    from diffparts.parts.scoring import evaluate_store
    from diffparts.store import open_store

    root = open_store(store, "r+")
    infos = load_infos(root, None, require_segments(root))
    start = time.perf_counter()
    build_descriptors(root, infos, DescriptorConfig())
    clusters = cluster_parts(root, ClusterConfig(random_state=seed))
    paint_part_labels(root)
    scores = evaluate_store(open_store(store), infos, max_pairs=max_pairs, random_state=seed, method="auto")
    keep = ("nmi", "ari", "pck@0.05", "pck@0.1", "pairs_scored")   # PCK by feature matching ("auto")
    return {"k": clusters["k"], **{k: scores.get(k) for k in keep}, "seconds": round(time.perf_counter() - start, 1)}


def measure(store: Path, work: Path, quality: bool, max_pairs: int, seed: int) -> dict:
    from diffparts.store import open_store
    from diffparts.store.features import FEATURES

    n = int(open_store(store)["features/done"].shape[0])
    out: dict = {"store": str(store), "images": n}
    for form in ("float16", "int8"):
        copy = work / f"{store.parent.name}-{form}.zarr"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(store, copy, ignore=shutil.ignore_patterns("parts") if quality else None)
        row: dict = {}
        if form == "int8":
            row["round_trip"] = requantise(copy)
        row["features_bytes_per_image"] = _bytes(copy / FEATURES) // n
        row["store_bytes_per_image"] = _bytes(copy) // n
        if quality:
            print(f"[features_precision] {store}: parts stage on the {form} copy", file=sys.stderr, flush=True)
            row["parts"] = parts_quality(copy, max_pairs, seed)
        out[form] = row
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, action="append", default=[], help="a store with float16 features: bytes "
                        "and round trip")
    parser.add_argument("--quality-store", type=Path, action="append", default=[], help="the same, and the parts stage "
                        "run and scored on both copies (needs segments and a corpus with keypoints)")
    parser.add_argument("--max-pairs", type=int, default=2000, help="same-class pairs scored by PCK")
    parser.add_argument("--seed", type=int, default=0, help="clustering and pair-sampling seed")
    parser.add_argument("--work", type=Path, default=Path("out/features-precision"), help="the copies (git-ignored)")
    args = parser.parse_args(argv)
    if not args.store and not args.quality_store:
        parser.error("give at least one --store or --quality-store")
    args.work.mkdir(parents=True, exist_ok=True)
    results = [measure(store.resolve(), args.work.resolve(), store in args.quality_store, args.max_pairs, args.seed)
               for store in [*args.quality_store, *args.store]]
    print(json.dumps({"benchmark": "features_precision", "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
