"""k-means pixel baseline on the synthetic birds: is part discovery non-trivial? (issue 2)

Generates the default synthetic corpus (or reads --data), clusters every image's pixels with
k-means on (r, g, b, w*x, w*y) using the TRUE number of parts + background, and scores the
clusters against the part masks with per-image Hungarian matching (DESIGN section 8, via
diffparts.metrics). Several position weights w are tried; the headline is the best one, so the
figure is generous to the baseline. Prints one JSON object.

    .venv/bin/python benchmarks/bench_synth_baseline.py --n 100 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per k-means; the machine is shared


def kmeans_labels(rgb: np.ndarray, k: int, position_weight: float, seed: int) -> np.ndarray:
    """(y, x) labels of k-means on colour (0..1) and weighted position (0..1)."""
    try:  # the shared baseline, when the metrics helper has written it
        from diffparts.baselines import kmeans_pixels  # type: ignore[attr-defined]

        return np.asarray(kmeans_pixels(rgb, k, position_weight=position_weight, random_state=seed))
    except (ImportError, TypeError):
        pass
    from sklearn.cluster import KMeans

    h, w, _ = rgb.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    feats = np.concatenate(
        [rgb.reshape(-1, 3).astype(np.float32) / 255.0,
         position_weight * np.stack([xx.ravel() / w, yy.ravel() / h], 1)], axis=1)  # (y x) feature
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(feats)
    return km.labels_.reshape(h, w)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="images to generate (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--size", type=int, default=128, help="image side (default 128)")
    parser.add_argument("--data", type=Path, default=None, help="existing CUB-layout synthetic set")
    parser.add_argument("--weights", type=str, default="0.5,1,2",
                        help="position weights to try, comma-separated (default 0.5,1,2)")
    args = parser.parse_args(argv)

    from diffparts.corpus import CubDataset, SynthConfig, generate_birds, load_mask, load_rgb
    from diffparts.metrics import segmentation_scores

    t0 = time.perf_counter()
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory()
        root = generate_birds(tmp.name, args.n, args.seed, SynthConfig(image_size=args.size))
    else:
        root = args.data
    gen_s = time.perf_counter() - t0
    ds = CubDataset(root)
    n_classes = len(ds.part_legend)                 # parts + background
    images = [load_rgb(r.path) for r in ds]
    gts = [load_mask(r.part_mask_path) for r in ds]
    results = {}
    for w in (float(x) for x in args.weights.split(",")):
        preds = [kmeans_labels(img, n_classes, w, args.seed) for img in images]
        res = segmentation_scores(preds, gts, n_classes, ignore_index=None)
        fg = segmentation_scores(preds, gts, n_classes, ignore_index=None,
                                 masks=[g > 0 for g in gts])
        results[str(w)] = {"miou": res.miou, "pixel_accuracy": res.pixel_accuracy,
                           "iou_per_part": dict(zip(ds.part_legend.values(),
                                                    [round(float(v), 4) for v in res.iou])),
                           "miou_foreground_pixels_only": fg.miou}
    best = max(results, key=lambda k: results[k]["miou"])
    print(json.dumps({
        "benchmark": "synth_kmeans_pixel_baseline",
        "miou": results[best]["miou"],
        "pixel_accuracy": results[best]["pixel_accuracy"],
        "best_position_weight": float(best),
        "n_images": len(images),
        "n_clusters": n_classes,
        "settings": {"n": args.n, "seed": args.seed, "image_size": args.size,
                     "features": "rgb/255 + w*(x/W, y/H)", "kmeans": "sklearn, n_init=3",
                     "matching": "per-image Hungarian, TP/FP/FN summed (DESIGN 8)",
                     "data": str(args.data) if args.data else "generated"},
        "by_position_weight": results,
        "generate_s": round(gen_s, 2),
        "total_s": round(time.perf_counter() - t0, 2),
    }, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
