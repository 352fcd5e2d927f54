"""k-means pixel baseline on the synthetic birds: is part discovery non-trivial? (issue 2)

Generates the default synthetic corpus (or reads --data), clusters every image's pixels with
diffparts.baselines.kmeans_pixels (k-means on r, g, b, w*y, w*x) using the TRUE number of
parts + background, and scores the clusters against the part masks with per-image Hungarian matching (docs/design.md §8 "Measures", via
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


def kmeans_foreground(rgb, fg, k: int, position_weight: float, seed: int) -> np.ndarray:
    """(pixel,) labels of k-means on the pixels where ``fg`` holds (same features)."""
    from sklearn.cluster import KMeans

    h, w, _ = rgb.shape
    yy, xx = np.nonzero(fg)
    feats = np.concatenate(
        [rgb[fg].astype(np.float32) / 255.0,
         position_weight * np.stack([xx / w, yy / h], 1).astype(np.float32)], axis=1)
    return KMeans(n_clusters=k, n_init=4, random_state=seed).fit(feats).labels_


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
    from diffparts.baselines import kmeans_pixels
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
        preds = [kmeans_pixels(img, n_classes, position_weight=w, random_state=args.seed)
                 for img in images]
        res = segmentation_scores(preds, gts, n_classes, ignore_index=None)
        results[str(w)] = {"miou": res.miou, "pixel_accuracy": res.pixel_accuracy,
                           "iou_per_part": dict(zip(ds.part_legend.values(),
                                                    [round(float(v), 4) for v in res.iou]))}
    best = max(results, key=lambda k: results[k]["miou"])
    # A generous reference: k-means on the TRUE foreground pixels only, one cluster per part,
    # scored on the foreground (parts only, background class dropped).
    w_fg = float(best)
    fg_preds, fg_gts, fg_masks = [], [], []
    for img, gt in zip(images, gts):
        fg = gt > 0
        if fg.sum() < n_classes - 1:
            continue
        pred = np.zeros(gt.shape, np.int64)
        pred[fg] = kmeans_foreground(img, fg, n_classes - 1, w_fg, args.seed)
        fg_preds.append(pred)
        fg_gts.append(np.where(fg, gt.astype(np.int64) - 1, 0))
        fg_masks.append(fg)
    oracle = segmentation_scores(fg_preds, fg_gts, n_classes - 1, ignore_index=None,
                                 masks=fg_masks)
    print(json.dumps({
        "benchmark": "synth_kmeans_pixel_baseline",
        "miou": results[best]["miou"],
        "pixel_accuracy": results[best]["pixel_accuracy"],
        "best_position_weight": float(best),
        "n_images": len(images),
        "n_clusters": n_classes,
        "settings": {"n": args.n, "seed": args.seed, "image_size": args.size,
                     "features": "rgb/255 + w*(x/W, y/H)",
                     "kmeans": "diffparts.baselines.kmeans_pixels (sklearn, n_init=4)",
                     "matching": "per-image Hungarian, TP/FP/FN summed (docs/design.md §8 \"Measures\")",
                     "data": str(args.data) if args.data else "generated"},
        "by_position_weight": results,
        "kmeans_on_true_foreground": {"miou_parts": oracle.miou,
                                      "pixel_accuracy": oracle.pixel_accuracy,
                                      "position_weight": w_fg, "n_clusters": n_classes - 1},
        "generate_s": round(gen_s, 2),
        "total_s": round(time.perf_counter() - t0, 2),
    }, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
