"""DiffSeg merge speed and peak memory on one 64 x 64 x 64 x 64 tensor (docs/design.md §7 "Performance"): one JSON object.

The tensor is synthetic but SD-like (``diffparts.segment.synthetic.realistic_attention``: smooth,
local, peaky, six regions). Timed, each the median of ``--repeats`` runs in this process:

- ``round0_s``: round 0 alone (anchor-to-query symmetric KL as matrix products, threshold,
  proposals as a product);
- ``merge_s``: the whole ``DiffSeg(...).fit`` at the key-map resolution (all rounds, argmax);
- ``merge_512_s``: the same with bilinear upsampling to 512 x 512 (SD's image size);
- ``naive_round0_s``: round 0 computed as the reference does it (a (anchor, q, k) tensor of
  log-quotients, summed over k), in float32 numpy, timed on ``--naive-anchors`` anchors and
  extrapolated to all 256 (flagged ``naive_extrapolated``). The reference itself (TensorFlow,
  float16) takes 9-15 s for round 0 on this 2-core machine (issue 5).

Wall seconds depend on what else runs (the machine is shared): ``*_cpu_s`` give the process's
CPU seconds (all BLAS threads) and ``load_average_1min`` the load at the end.

Memory: ``peak_traced_mb`` is the peak of numpy allocations during one fit (tracemalloc; the
input tensor excluded), ``max_rss_mb`` the process's high-water mark.

    .venv/bin/python benchmarks/bench_diffseg.py [--size 64] [--repeats 5] [--naive-anchors 4]

Threshold comparison (issue 5 item 4): with ``--compare-store STORE --corpus CORPUS`` it instead
segments the stored attention of up to ``--max-images`` images with fixed thresholds (the SD
reference 1.1 and small values), with the data rules (quantile, Otsu; thresholds chosen from
the first ``--sample`` images) and with random-walk NCut (constant and automatic tau), and
prints per setting: Hungarian mIoU and pixel accuracy of the finest level against the part
masks (per-image matching, docs/design.md §8 "Measures"), NFCovering over the hierarchy levels, mean segments.

    .venv/bin/python benchmarks/bench_diffseg.py --compare-store STORE --corpus CORPUS [--max-images 40]
    .venv/bin/python benchmarks/bench_diffseg.py --synthetic-sharpness 4 --corpus CORPUS  # no model
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
import tracemalloc

import numpy as np


CPU_TIMES: dict[str, float] = {}


def timed(fn, repeats: int, name: str | None = None) -> float:
    """Median wall seconds of ``repeats`` calls; the median CPU seconds go to CPU_TIMES[name]."""
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    if name:
        CPU_TIMES[name] = round(statistics.median(cpu), 4)
    return statistics.median(times)


def synthetic_reader(corpus: str, rows: list[dict], records: dict, resolution: int, sharpness: float):
    """Attention built from each image's part mask (make_region_attention) instead of a model's."""
    from diffparts.corpus import load_mask
    from diffparts.segment.synthetic import make_region_attention

    def read(_root, index):
        row = next(r for r in rows if r["index"] == index)
        mask = load_mask(records[row["name"]].part_mask_path)  # y x
        step = mask.shape[0] // resolution
        coarse = mask[step // 2 :: step, step // 2 :: step][:resolution, :resolution]  # R x R
        return make_region_attention(coarse, sharpness=sharpness, locality=1.0, seed=index)

    return read


def compare_thresholds(store: str | None, corpus: str, max_images: int, sample: int,
                       synthetic_sharpness: float | None = None, resolution: int = 16) -> dict:
    """Fixed thresholds vs the data rules (and NCut) on stored attention with part masks.

    With ``synthetic_sharpness`` (and no store) the attention of each corpus image is synthetic,
    built from its part mask at ``resolution`` with that sharpness: a model whose maps are as
    peaky as asked, to show how fixed thresholds and the rules behave across scales.
    """
    from diffparts.corpus import load_mask, open_corpus
    from diffparts.metrics import SegmentationScores, nf_covering
    from diffparts.segment.hierarchy import diffseg_levels
    from diffparts.segment.ncut import RecursiveNCut
    from diffparts.segment.thresholds import ThresholdRule, choose_thresholds
    from diffparts.store import done_mask, image_table, open_store, read_self_attention

    records = {r.name: r for r in open_corpus(corpus)}
    if synthetic_sharpness is None:
        root = open_store(store, mode="r")
        done = done_mask(root, "attention")
        table, read = image_table(root), read_self_attention
    else:
        root, table = None, [{"index": k, "name": name} for k, name in enumerate(sorted(records))]
        done = np.ones(len(table), dtype=bool)
    rows = [r for r in table if done[r["index"]] and records.get(r["name"])
            and records[r["name"]].part_mask_path is not None][:max_images]
    if not rows:
        raise ValueError(f"no image of {store} has attention and a part mask in {corpus}")
    if synthetic_sharpness is not None:
        read = synthetic_reader(corpus, rows, records, resolution, synthetic_sharpness)
    start = time.perf_counter()
    sample_attn = [read(root, r["index"]) for r in rows[:sample]]
    settings = []  # (name, kind, params)
    for t in (1.1, 0.5, 0.2, 0.05, 0.02):
        settings.append((f"fixed {t}", "diffseg", (t, [t * f for f in (1, 2, 4, 8)], None)))
    for rule in (ThresholdRule(quantile=0.02), ThresholdRule(quantile=0.05), ThresholdRule(quantile=0.1),
                 ThresholdRule(quantile=0.2), ThresholdRule(quantile=0.3), ThresholdRule(rule="otsu")):
        choice = choose_thresholds(sample_attn, rule)
        name = f"auto quantile {rule.quantile}" if rule.rule == "quantile" else "auto otsu"
        settings.append((name, "diffseg", (choice.thresholds[0], list(choice.level_thresholds), choice.statistics)))
    settings.append(("ncut constant tau", "ncut", {"tau_mode": "constant"}))
    settings.append(("ncut auto tau", "ncut", {"tau_mode": "auto"}))
    choose_s = time.perf_counter() - start
    del sample_attn

    n_classes = 1 + max(getattr(open_corpus(corpus), "part_legend", {0: ""}) or {0: ""})
    scores = {name: SegmentationScores(n_classes, ignore_index=None) for name, _, _ in settings}
    covering = {name: [] for name, _, _ in settings}
    segments = {name: [] for name, _, _ in settings}
    seconds = {name: 0.0 for name, _, _ in settings}
    entropy = []  # mean key-map entropy per image, nats (uniform maps: log of the key count)
    for r in rows:
        attn = read(root, r["index"])
        maps = attn.reshape(-1, attn.shape[-2] * attn.shape[-1])  # q k
        entropy.append(float(-(maps * np.log(np.maximum(maps, 1e-12))).sum(-1).mean()))
        gt = load_mask(records[r["name"]].part_mask_path).astype(np.int64)
        for name, kind, params in settings:
            t0 = time.perf_counter()
            if kind == "diffseg":
                merge, level_t, _ = params
                level_t = np.maximum.accumulate([merge] + list(level_t[1:])).tolist()
                levels, _ = diffseg_levels(attn, level_t, rounds=3, out_size=gt.shape)
            else:
                levels = RecursiveNCut(**params, out_size=gt.shape[0], random_state=0).fit(attn).level_labels_
            seconds[name] += time.perf_counter() - t0
            scores[name].update(levels[0], gt)
            covering[name].append(nf_covering(levels, gt))
            segments[name].append(int(levels[0].max()) + 1)
    results = []
    for name, kind, params in settings:
        res = scores[name].result()
        entry = {"setting": name, "method": kind, "miou": round(res.miou, 4),
                 "pixel_accuracy": round(res.pixel_accuracy, 4),
                 "nf_covering": round(float(np.nanmean(covering[name])), 4),
                 "segments_mean": round(float(np.mean(segments[name])), 2),
                 "seconds_per_image": round(seconds[name] / len(rows), 3)}
        if kind == "diffseg":
            entry["threshold"] = round(params[0], 5)
            entry["level_thresholds"] = [round(t, 5) for t in params[1]]
        results.append(entry)
    if root is None:
        model, res = f"synthetic from part masks, sharpness {synthetic_sharpness}", resolution
    else:
        model, res = root.attrs.get("manifest", {}).get("model"), root["attention"].attrs.get("resolution", 0)
    return {"benchmark": "diffseg_threshold_comparison", "store": store, "corpus": corpus,
            "model": model, "resolution": int(res),
            "images": len(rows), "sample": min(sample, len(rows)), "classes": n_classes,
            "choose_seconds": round(choose_s, 2),
            "attention_row_entropy_nats": round(float(np.mean(entropy)), 3),
            "uniform_row_entropy_nats": round(float(np.log(maps.shape[-1])), 3),
            "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="R: attention side (64 = SD at 512 px)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--threshold", type=float, default=1.1, help="KL threshold of every round")
    parser.add_argument("--naive-anchors", type=int, default=4, help="anchors timed for the naive round 0 (0: skip)")
    parser.add_argument("--compare-store", default=None, help="store with attention: compare thresholds instead")
    parser.add_argument("--corpus", default=None, help="corpus with part masks (for --compare-store)")
    parser.add_argument("--max-images", type=int, default=40, help="images compared (--compare-store)")
    parser.add_argument("--sample", type=int, default=16, help="images the auto rules look at (--compare-store)")
    parser.add_argument("--synthetic-sharpness", type=float, default=None,
                        help="compare on attention synthesised from the corpus's part masks with this sharpness")
    parser.add_argument("--resolution", type=int, default=16, help="R of the synthetic attention")
    args = parser.parse_args()
    if args.compare_store or args.synthetic_sharpness is not None:
        if not args.corpus:
            parser.error("--compare-store and --synthetic-sharpness need --corpus")
        print(json.dumps(compare_thresholds(args.compare_store, args.corpus, args.max_images, args.sample,
                                            args.synthetic_sharpness, args.resolution)))
        return

    from diffparts.segment.diffseg import DiffSeg, anchor_grid, as_query_maps, symmetric_kl
    from diffparts.segment.synthetic import realistic_attention

    attn, truth = realistic_attention(size=args.size, seed=0)
    thresholds = (args.threshold,) * 3
    maps, (qy, qx), _ = as_query_maps(attn)
    anchors = anchor_grid(qy, qx, 16)

    def round0():
        within = symmetric_kl(maps[anchors], maps) < thresholds[0]
        weights = within.astype(np.float32)
        return (weights @ maps) / weights.sum(1, keepdims=True)

    DiffSeg(kl_thresholds=thresholds).fit(attn)  # warm-up (BLAS threads, page faults)
    round0_s = timed(round0, args.repeats, "round0_cpu_s")
    merge_s = timed(lambda: DiffSeg(kl_thresholds=thresholds).fit(attn), args.repeats, "merge_cpu_s")
    merge_512_s = timed(lambda: DiffSeg(kl_thresholds=thresholds, out_size=8 * args.size).fit(attn),
                        args.repeats, "merge_512_cpu_s")

    tracemalloc.start()
    model = DiffSeg(kl_thresholds=thresholds).fit(attn)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    naive = None
    if args.naive_anchors > 0:
        chosen = anchors[: args.naive_anchors]

        def naive_round0():
            for a in chosen:  # the reference's quotient tensor, one anchor at a time
                quotient = np.log(maps[a])[None, :] - np.log(maps)  # q k
                kl = (maps[a][None, :] * quotient).sum(-1) / 2 - (maps * quotient).sum(-1) / 2
                _ = kl < thresholds[0]

        naive = timed(naive_round0, 1) * len(anchors) / len(chosen)

    from sklearn.metrics import adjusted_rand_score

    print(json.dumps({
        "benchmark": "diffseg_merge",
        "tensor": f"({args.size}, {args.size}, {args.size}, {args.size}) float32, synthetic SD-like, 6 regions",
        "thresholds": list(thresholds),
        "anchors": int(len(anchors)),
        "segments": int(len(model.proposals_)),
        "segments_per_round": [h["n_out"] for h in model.merge_history_],
        "ari_vs_regions": float(adjusted_rand_score(truth.ravel(), model.labels_.ravel())),
        "round0_s": round(round0_s, 4),
        "merge_s": round(merge_s, 4),
        "merge_512_s": round(merge_512_s, 4),
        **CPU_TIMES,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "naive_round0_s": None if naive is None else round(naive, 2),
        "naive_extrapolated": naive is not None,
        "reference_round0_s": "9-15 (TensorFlow float16, issue 5)",
        "speedup_vs_reference_round0": [round(9 / round0_s, 1), round(15 / round0_s, 1)],
        "peak_traced_mb": round(peak / 2**20, 1),
        "input_mb": round(attn.nbytes / 2**20, 1),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }))


if __name__ == "__main__":
    main()
