"""DiffSeg merge speed and peak memory on one 64 x 64 x 64 x 64 tensor (DESIGN 7): one JSON object.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="R: attention side (64 = SD at 512 px)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--threshold", type=float, default=1.1, help="KL threshold of every round")
    parser.add_argument("--naive-anchors", type=int, default=4, help="anchors timed for the naive round 0 (0: skip)")
    args = parser.parse_args()

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
