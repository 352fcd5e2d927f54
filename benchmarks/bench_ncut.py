"""Recursive NCut (docs/design.md §5.3, §7): speed, memory, constant vs auto tau, birds vs DiffSeg; JSON out.

Three figures, one JSON object on stdout:

``speed`` (default): one 64 x 64 aggregated attention tensor = 4096 nodes (SD's size at 512 px;
``diffparts.segment.synthetic.realistic_attention``: smooth, local, peaky, six regions). The old
default (random walk, automatic tau, min_size 8: the defaults before issue 19) and the new one
(DiffCut's min-max cosine of the attention rows, tau 0.4, concept assignment) side by side in
the same process, with ``cpu_ratio_vs_old_default`` (issue 19's target: at most 1.5). For each
configuration, the median over ``--repeats`` of the whole ``RecursiveNCut.fit`` (input checks,
affinity, every cut, level maps) and its split: ``affinity_cpu_s`` (transition matrix, features
and W alone), ``per_level_s`` (time spent cutting the nodes at each cut depth), segments per level
and the matched accuracy against the known regions; ``cpu_s`` is the process CPU time of the
same fit (on a shared, loaded machine wall time inflates, CPU time much less; run with
OPENBLAS_NUM_THREADS=1 there). Memory: ``peak_traced_mb`` (tracemalloc peak of numpy
allocations during one fit, input excluded) and ``max_rss_mb``.

``compare``: constant tau vs the automatic (eigengap) tau of the random-walk affinity on
synthetic region attention over a grid of regimes, diffuse (small model) to peaky (SD), several
region counts and seeds: per-image Hungarian pixel accuracy / mIoU of the finest level,
NFCovering, segments vs the true number (seeds from ``--seed-offset`` 100 on: held out from the
auto rule's tuning on seeds 0-2).

``birds``: NCut settings against DiffSeg (its default quantile 0.2 rule, thresholds from the
first ``--sample`` images, exactly as ``bench_diffseg.py --compare-store``) on the same birds:
the embedded checkpoint's attention of 40 synthetic birds at 64 px, cached by
``benchmarks/ncut_birds_data.py`` in runs/ncut-birds-SEED.npz (extracted once, with the
library's default capture, as ``diffparts extract`` does). Per-image Hungarian mIoU and pixel
accuracy of the finest level (10 part classes incl. background, TP/FP/FN summed over the set),
NFCovering over each method's levels, segments per image. ``--grid grid`` / ``grid2``: every
setting tried on the validation birds (seed 999); ``--grid defaults``: the chosen defaults, the
old default and one-change variants, for the held-out birds (seed 1234).

    .venv/bin/python benchmarks/bench_ncut.py speed   [--size 64] [--repeats 3]
    .venv/bin/python benchmarks/bench_ncut.py compare [--size 32] [--seeds 3]
    .venv/bin/python benchmarks/bench_ncut.py birds --seed 999 --grid grid      # validation
    .venv/bin/python benchmarks/bench_ncut.py birds --seed 1234 --grid defaults # held out
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import tracemalloc

import numpy as np

SPEED_CONFIGS = {  # "old default" = NCutConfig's defaults before DiffCut's affinity (issue 19)
    "old_default_random_walk_auto": dict(affinity="random_walk", tau_mode="auto", min_size=8, assign="nearest"),
    "new_default": dict(),
    "new_default_all_keys": dict(max_keys=None),
    "new_default_concept_512px": dict(out_size=512),
    "random_walk_k2_auto": dict(affinity="random_walk", tau_mode="auto", min_size=8, assign="nearest", walk_steps=2),
}
CONSTANT_TAUS = (0.1, 0.2, 0.3, 0.4, 0.6)


def _machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def _affinity_only(attn, kwargs) -> None:
    """The affinity step of a fit alone (transition matrix, features, W), for its share of the time."""
    from diffparts.segment.ncut import NCutConfig, attention_features, cosine_affinity, random_walk_affinity, transition_matrix

    cfg = NCutConfig(**{k: v for k, v in kwargs.items() if k != "out_size"})
    P, shape = transition_matrix(attn)
    if cfg.affinity == "random_walk":
        random_walk_affinity(P, cfg.walk_steps, teleport=cfg.teleport, random_state=0)
    else:
        cosine_affinity(attention_features(P, cfg.walk_steps, None, shape, cfg.max_keys), cfg.power, cfg.rescale)


def speed(args) -> dict:
    from diffparts.metrics import segmentation_scores
    from diffparts.segment.ncut import RecursiveNCut
    from diffparts.segment.synthetic import realistic_attention

    attn, truth = realistic_attention(size=args.size, seed=0)  # qy qx ky kx, y x
    out = {"figure": "ncut_speed", "nodes": args.size**2, "repeats": args.repeats, "configs": {}}
    for name, kwargs in SPEED_CONFIGS.items():
        fits, affinity_times = [], []
        for _ in range(args.repeats):
            start = time.process_time()
            _affinity_only(attn, kwargs)
            affinity_times.append(time.process_time() - start)
            start, cpu = time.perf_counter(), time.process_time()
            model = RecursiveNCut(random_state=0, **kwargs).fit(attn)
            fits.append((time.perf_counter() - start, time.process_time() - cpu, model))
        total, cpu_total, model = sorted(fits, key=lambda f: f[0])[len(fits) // 2]
        depth = max(n.depth for n in model.tree_)
        per_level = [sum(n.seconds for n in model.tree_ if n.depth == d) for d in range(depth + 1)]
        tracemalloc.start()
        RecursiveNCut(random_state=0, **kwargs).fit(attn)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        labels = model.labels_
        if labels.shape != truth.shape:  # 512 px: score at the attention grid's centres
            step = labels.shape[0] // truth.shape[0]
            labels = labels[step // 2::step, step // 2::step]
        score = segmentation_scores([labels], [truth], int(truth.max()) + 1, ignore_index=None)
        out["configs"][name] = {
            "params": kwargs,
            "seconds": round(total, 3),
            "cpu_s": round(cpu_total, 3),
            "affinity_cpu_s": round(statistics.median(affinity_times), 3),
            "per_level_s": {f"depth_{d}": round(t, 3) for d, t in enumerate(per_level)},
            "cuts_s": round(sum(per_level), 3),
            "tau": round(model.tau_, 4),
            "segments_per_level": list(model.n_segments_),
            "true_regions": int(truth.max()) + 1,
            "pixel_accuracy": round(score.pixel_accuracy, 4),
            "miou": round(score.miou, 4),
            "peak_traced_mb": round(peak / 2**20, 1),
        }
    old = out["configs"]["old_default_random_walk_auto"]
    for entry in out["configs"].values():  # the issue 19 target: new default within 1.5x of the old
        entry["cpu_ratio_vs_old_default"] = round(entry["cpu_s"] / old["cpu_s"], 2)
        entry["wall_ratio_vs_old_default"] = round(entry["seconds"] / old["seconds"], 2)
    out["target_ratio"] = 1.5
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["machine"] = _machine()
    return out


def _score_rows(rows: list[dict]) -> dict:
    """Per-method means of the per-image rows."""
    summary = {}
    for method in sorted({r["method"] for r in rows}):
        mine = [r for r in rows if r["method"] == method]
        summary[method] = {
            key: round(float(np.mean([r[key] for r in mine])), 4)
            for key in ("pixel_accuracy", "miou", "nf_covering", "segments", "abs_count_error", "seconds")
        }
        summary[method]["images"] = len(mine)
    return summary


def _evaluate(attn, truth, methods, background_index=None) -> list[dict]:
    from diffparts.metrics import nf_covering, segmentation_scores
    from diffparts.segment.ncut import RecursiveNCut

    n_true = int(len(np.unique(truth)))
    n_classes = int(truth.max()) + 1
    rows = []
    for method, kwargs in methods.items():
        start = time.perf_counter()
        model = RecursiveNCut(random_state=0, **kwargs).fit(attn)
        seconds = time.perf_counter() - start
        labels = model.labels_
        if labels.shape != truth.shape:  # nearest upsampling to the mask size
            ys = (np.arange(truth.shape[0]) * labels.shape[0]) // truth.shape[0]
            xs = (np.arange(truth.shape[1]) * labels.shape[1]) // truth.shape[1]
            levels = model.level_labels_[:, ys][:, :, xs]
        else:
            levels = model.level_labels_
        score = segmentation_scores([levels[0]], [truth], n_classes, ignore_index=None)
        rows.append({
            "method": method,
            "pixel_accuracy": score.pixel_accuracy,
            "miou": score.miou,
            "nf_covering": nf_covering(levels, truth, background_index=background_index),
            "segments": model.n_segments_[0],
            "abs_count_error": abs(model.n_segments_[0] - n_true),
            "tau": model.tau_,
            "seconds": seconds,
        })
    return rows


def _methods(walk_steps: int, affinity: str = "random_walk", prefix: str = "") -> dict:
    """Constant taus and the auto rule with the random-walk settings this figure was made with
    (min_size 8, nearest upsampling; before DiffCut's defaults, issue 19)."""
    pinned = dict(walk_steps=walk_steps, affinity=affinity, min_size=8, assign="nearest", rescale="clip")
    methods = {f"{prefix}constant_tau_{t}": dict(tau_mode="constant", tau=t, **pinned) for t in CONSTANT_TAUS}
    methods[f"{prefix}auto_tau"] = dict(tau_mode="auto", **pinned)
    return methods


def compare(args) -> dict:
    from diffparts.segment.synthetic import make_region_attention, make_region_labels

    regimes = {  # name: make_region_attention settings (diffuse = small model, peaky = SD)
        "diffuse": dict(sharpness=4.0, locality=1.0, noise=0.15, boundary_blur=1.5),
        "medium": dict(sharpness=8.0, locality=3.0, noise=0.2, boundary_blur=1.0),
        "peaky": dict(sharpness=14.0, locality=4.0, noise=0.2, boundary_blur=1.5),
    }
    out = {"figure": "ncut_tau_compare", "size": args.size, "walk_steps": args.walk_steps,
           "regions": list(args.regions), "seeds": args.seeds, "seed_offset": args.seed_offset,
           "regimes": {}}
    all_rows = []
    for regime, settings in regimes.items():
        rows = []
        for n_regions in args.regions:
            for seed in range(args.seed_offset, args.seed_offset + args.seeds):
                labels = make_region_labels(args.size, n_regions, seed=seed)
                attn = make_region_attention(labels, seed=seed, **settings)
                methods = _methods(args.walk_steps)
                methods.update({  # today's defaults (DiffCut's affinity; chosen on toy birds) and its auto tau
                    "defaults (cosine, tau 0.4)": {"walk_steps": args.walk_steps},
                    "defaults with auto tau": {"tau_mode": "auto", "walk_steps": args.walk_steps},
                })
                rows += _evaluate(attn, labels, methods)
        out["regimes"][regime] = _score_rows(rows)
        all_rows += rows
    out["overall"] = _score_rows(all_rows)
    out["machine"] = _machine()
    return out


# NCut settings compared on birds: name -> RecursiveNCut keywords plus "features" (which cached
# array replaces the attention rows: "up" = the default up-block, "block_k" = attention block k)
OLD_DEFAULT = dict(affinity="random_walk", tau_mode="auto", min_size=8, assign="nearest")
DIFFCUT = dict(affinity="cosine", rescale="minmax", power=10.0, min_size=1, assign="concept")
BIRD_GRIDS = {
    "grid": {
        "old default: random walk, auto tau, min_size 8, nearest": OLD_DEFAULT,
        "random walk, P^2, auto tau, min_size 1, concept": dict(affinity="random_walk", walk_steps=2, tau_mode="auto", min_size=1, assign="concept"),
        "clipped cosine^10, tau 0.2, min_size 1, concept": {**DIFFCUT, "rescale": "clip", "tau_mode": "constant", "tau": 0.2},
        **{f"min-max cosine^10 attention rows, tau {t}, min_size {m}, {a}": {**DIFFCUT, "tau_mode": "constant", "tau": t, "min_size": m, "assign": a}
           for t in (0.2, 0.3, 0.5) for m in (1, 4) for a in ("concept", "nearest")},
        "min-max cosine^10 attention rows, auto tau, min_size 1, concept": {**DIFFCUT, "tau_mode": "auto"},
        "min-max cosine^10 attention rows, auto tau, min_size 4, concept": {**DIFFCUT, "tau_mode": "auto", "min_size": 4},
        "min-max cosine^5 attention rows, tau 0.2, min_size 1, concept": {**DIFFCUT, "power": 5.0, "tau_mode": "constant", "tau": 0.2},
        "min-max cosine^10 attention rows, tau 0.2, 100 thresholds, concept": {**DIFFCUT, "tau_mode": "constant", "tau": 0.2, "n_thresholds": 100},
        "min-max cosine^10 attention rows, tau 0.2, max_depth 8, concept": {**DIFFCUT, "tau_mode": "constant", "tau": 0.2, "max_depth": 8},
        "min-max cosine^10 attention rows, tau 0.2, concept + PAMR": {**DIFFCUT, "tau_mode": "constant", "tau": 0.2, "refine_iters": 10},
        "min-max cosine^10 attention rows, tau 0.5, concept + PAMR": {**DIFFCUT, "tau_mode": "constant", "tau": 0.5, "refine_iters": 10},
        **{f"min-max cosine^10 {src} features, tau {t}, concept": {**DIFFCUT, "tau_mode": "constant", "tau": t, "features": src}
           for src in ("up", "block_0", "block_1", "block_2") for t in (0.2, 0.5)},
    },
    "grid2": {  # around the first grid's best (attention rows, tau 0.5, min_size 1, concept)
        **{f"min-max cosine^10 attention rows, tau {t}, min_size 1, concept": {**DIFFCUT, "tau_mode": "constant", "tau": t}
           for t in (0.4, 0.5, 0.6, 0.7)},
        "min-max cosine^10 attention rows, tau 0.5, min_size 2, concept": {**DIFFCUT, "tau_mode": "constant", "tau": 0.5, "min_size": 2},
        "min-max cosine^10 attention rows, tau 0.5, max_depth 8, concept": {**DIFFCUT, "tau_mode": "constant", "tau": 0.5, "max_depth": 8},
        "min-max cosine^10 attention rows, tau 0.5, 100 thresholds, concept": {**DIFFCUT, "tau_mode": "constant", "tau": 0.5, "n_thresholds": 100},
        **{f"min-max cosine^{a} attention rows, tau 0.5, min_size 1, concept": {**DIFFCUT, "tau_mode": "constant", "tau": 0.5, "power": a}
           for a in (7.0, 15.0)},
        "min-max cosine^10 P^2 rows, tau 0.5, min_size 1, concept": {**DIFFCUT, "tau_mode": "constant", "tau": 0.5, "walk_steps": 2},
        "min-max cosine^10 attention rows, tau 0.6, concept + PAMR": {**DIFFCUT, "tau_mode": "constant", "tau": 0.6, "refine_iters": 10},
    },
}


def _bird_data(path: str | None, seed: int, n: int):
    from pathlib import Path

    from benchmarks.ncut_birds_data import load, prepare

    path = Path(path or f"runs/ncut-birds-{seed}.npz")
    if not path.exists():
        prepare(seed, n, 64, path)
    return path, load(path)


def birds(args) -> dict:
    """NCut settings vs DiffSeg (its default quantile 0.2 rule) on the same cached birds."""
    from diffparts.metrics import SegmentationScores, nf_covering
    from diffparts.segment.hierarchy import diffseg_levels
    from diffparts.segment.ncut import RecursiveNCut
    from diffparts.segment.thresholds import ThresholdRule, choose_thresholds

    path, data = _bird_data(args.data, args.seed, args.n)
    attn, masks, images = data["attn"][: args.n], data["masks"][: args.n], data["images"][: args.n]
    n_classes = max(int(masks.max()) + 1, args.classes)
    settings = {}
    if not args.no_diffseg:
        choice = choose_thresholds(list(attn[: args.sample]), ThresholdRule(quantile=0.2))
        merge = choice.thresholds[0]
        level_t = np.maximum.accumulate([merge] + list(choice.level_thresholds[1:])).tolist()
        settings["DiffSeg, quantile 0.2 rule (default)"] = ("diffseg", level_t)
    grid = BIRD_GRIDS[args.grid] if args.grid in BIRD_GRIDS else {}
    if args.configs:
        grid = {name: cfg for name, cfg in grid.items() if any(c in name for c in args.configs)}
    if args.grid == "defaults":
        from diffparts.segment.ncut import NCutConfig

        grid = {"NCut defaults (NCutConfig())": {}, "old default: random walk, auto tau, min_size 8, nearest": OLD_DEFAULT}
        assert NCutConfig().tau_mode == "constant"  # the rows below name the defaults' alternatives
        grid.update({
            "defaults with tau 0.2 (DiffCut)": dict(tau=0.2),
            "defaults with tau 0.5 (DiffCut)": dict(tau=0.5),
            "defaults with automatic tau": dict(tau_mode="auto"),
            "defaults with nearest upsampling": dict(assign="nearest"),
            "defaults with min_size 4": dict(min_size=4),
            "defaults with the up-block features": dict(features="up"),
            "defaults + PAMR (10 iterations on the image)": dict(refine_iters=10),
        })
    for name, cfg in grid.items():
        settings[name] = ("ncut", cfg)
    rows = {}
    progress = time.perf_counter()
    for name, (kind, params) in settings.items():
        seg = SegmentationScores(n_classes, ignore_index=None)
        cover, segments, seconds = [], [], 0.0
        for i in range(len(attn)):
            gt = masks[i].astype(np.int64)
            start = time.perf_counter()
            if kind == "diffseg":
                levels, _ = diffseg_levels(attn[i], params, rounds=3, out_size=gt.shape)
            else:
                kw = {k: v for k, v in params.items() if k != "features"}
                feats = None
                if "features" in params:
                    f = data[params["features"]][i]  # channel y x
                    feats = f.reshape(f.shape[0], -1).T  # q d
                model = RecursiveNCut(random_state=0, out_size=gt.shape[0], **kw)
                levels = model.fit(attn[i], features=feats,
                                   image=images[i] if kw.get("refine_iters") else None).level_labels_
            seconds += time.perf_counter() - start
            seg.update(levels[0], gt)
            cover.append(nf_covering(levels, gt))
            segments.append(int(levels[0].max()) + 1)
        res = seg.result()
        rows[name] = {"method": kind, "params": params if kind == "ncut" else {"level_thresholds": params},
                      "miou": round(res.miou, 4), "pixel_accuracy": round(res.pixel_accuracy, 4),
                      "nf_covering": round(float(np.nanmean(cover)), 4),
                      "segments": round(float(np.mean(segments)), 2),
                      "seconds_per_image": round(seconds / len(attn), 4)}
        print(f"[{time.perf_counter() - progress:.0f} s] {name}: {rows[name]}", file=sys.stderr, flush=True)
    return {
        "figure": "ncut_birds",
        "data": str(path),
        "corpus_seed": int(data["seed"]),
        "images": int(len(attn)),
        "part_classes": n_classes,
        "attention_resolution": int(attn.shape[1]),
        "image_size": int(masks.shape[1]),
        "diffseg_sample": args.sample,
        "results": rows,
        "machine": _machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="figure")
    p = sub.add_parser("speed", help="seconds and peak memory per 4096-node image")
    p.add_argument("--size", type=int, default=64, help="R: attention side (64 = SD at 512 px)")
    p.add_argument("--repeats", type=int, default=3, help="timed fits per configuration (median)")
    p = sub.add_parser("compare", help="constant vs auto tau on synthetic region attention")
    p.add_argument("--size", type=int, default=32, help="attention side")
    p.add_argument("--seeds", type=int, default=3, help="images per (regime, region count)")
    p.add_argument("--regions", type=int, nargs="+", default=[3, 5, 8], help="region counts")
    p.add_argument("--seed-offset", type=int, default=100,
                   help="first seed (the auto rule was tuned on seeds 0-2: keep these held out)")
    p.add_argument("--walk-steps", type=int, default=1, help="k in P^k")
    p = sub.add_parser("birds", help="NCut settings vs DiffSeg on the embedded checkpoint's attention")
    p.add_argument("--seed", type=int, default=999, help="bird corpus seed (999 validation, 1234 held out)")
    p.add_argument("--n", type=int, default=40, help="birds (64 px) to segment")
    p.add_argument("--data", default=None, help="cached attention (default runs/ncut-birds-SEED.npz, "
                   "made by benchmarks/ncut_birds_data.py when missing)")
    p.add_argument("--grid", default="grid", choices=("grid", "grid2", "defaults"),
                   help="grid: every setting (validation); defaults: NCutConfig() vs the old default")
    p.add_argument("--configs", nargs="*", default=None, help="only settings whose name contains one of these")
    p.add_argument("--sample", type=int, default=16, help="images DiffSeg's threshold rule looks at")
    p.add_argument("--classes", type=int, default=10, help="part classes incl. background (legend)")
    p.add_argument("--no-diffseg", action="store_true", help="skip the DiffSeg row")
    args = parser.parse_args()
    if args.figure is None:
        args = parser.parse_args(["speed"])
    result = {"speed": speed, "compare": compare, "birds": birds}[args.figure](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
