"""The occlusion stage's table (issue 11) on held-out synthetic birds; prints JSON.

Reads a store that has been through extract, segment, parts and embeddings (by default the one
``benchmarks/eval_embeddings.py`` builds in runs/emb-eval: 96 birds, corpus seed 1234, tokens of
every loss) and COPIES it (with its ``.embeddings`` folder) into ``--work`` first, so the source
is never written. Then the assess-occlusion library path (no Prefect server): ``--cases``
held-out birds, each with one ground-truth part hidden (seeded; or ``--hide``), detection,
completion with every variant, the measures, the table and the picture grid.

``--thresholds 0.1,0.2,...`` also reports detection at each missing-score threshold from the
stored scores (no rerun): run it on a VALIDATION store (another corpus seed) to choose
``DetectConfig.threshold``, never on the evaluation one.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_occlusion.py --source runs/emb-val --work runs/occ-val \\
        --cases 48 --losses none --thresholds 0.1,0.2,0.3,0.4,0.5,0.6       # validation (seed 999)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_occlusion.py --source runs/emb-eval --work runs/occ-eval \\
        --cases 64 --markdown                                                 # the README table
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def copy_store(source: Path, work: Path, fresh: bool) -> str:
    """``source/store.zarr`` (+ ``.embeddings``) -> ``work/``; kept when already copied."""
    store = work / "store.zarr"
    if fresh and work.exists():
        shutil.rmtree(work)
    if not store.exists():
        work.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source / "store.zarr", store)
        if (source / "store.zarr.embeddings").is_dir():
            shutil.copytree(source / "store.zarr.embeddings", work / "store.zarr.embeddings",
                            ignore=shutil.ignore_patterns("checkpoints", "*.png"))
    return str(store)


def thresholds_table(root, thresholds: list[float]) -> list[dict]:
    """Detection P/R/F1 at each threshold, from the stored scores of the finished cases."""
    import numpy as np

    from diffparts.metrics.occlusion import detection_scores

    g = root["occlusion"]
    done = np.flatnonzero(np.asarray(g["done"][:], bool))
    truth = [set(json.loads(str(g["results"][int(i)]))["truth"]) for i in done]
    scores = [np.asarray(g["scores"][int(i)]) for i in done]
    rows = []
    for t in thresholds:
        pred = [{k for k in range(1, len(s)) if s[k] >= t and s[k] > 0} for s in scores]
        d = detection_scores(pred, truth)
        rows.append({"threshold": t, "precision": round(d.precision, 4), "recall": round(d.recall, 4),
                     "f1": round(d.f1, 4), "predicted_per_case": round(sum(map(len, pred)) / len(pred), 3)})
    return rows


def markdown(summary: dict) -> str:
    d = summary["detection"]
    lines = [f"detection ({summary['cases']} cases, {d['cases_with_hidden_category']} with a hidden category): "
             f"precision {d['precision']:.3f}, recall {d['recall']:.3f}, F1 {d['f1']:.3f}, "
             f"ROC AUC {d['roc_auc']:.3f}, top-1 hidden {d['top1_hidden']:.3f}"
             + ("" if d.get("occlusion_map_iou") is None else f", occlusion map IoU {d['occlusion_map_iou']:.3f}"), "",
             "| variant | IoU restored category vs true part | hidden share | assigned | PSNR (dB) | SSIM |",
             "| --- | --- | --- | --- | --- | --- |"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines += [f"| {r['variant']} | {fmt(r['iou'])} | {fmt(r['hidden_share'])} | {fmt(r['assigned'])} | "
              f"{fmt(r['psnr'])} | {fmt(r['ssim'])} |" for r in summary["table"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="runs/emb-eval", help="folder with store.zarr (+ .embeddings) and corpus")
    ap.add_argument("--work", default="runs/occ-eval", help="where the store is copied and written")
    ap.add_argument("--cases", type=int, default=64)
    ap.add_argument("--how", default="part", choices=["part", "category", "box"])
    ap.add_argument("--hide", default=None, help="comma-separated parts hidden in every case")
    ap.add_argument("--fill", default="grey", choices=["grey", "noise", "patch"])
    ap.add_argument("--losses", default=None, help="comma-separated, 'none', or default: every loss with files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="{}", help="JSON overrides of OcclusionConfig (detect, completion, ...)")
    ap.add_argument("--thresholds", default=None, help="comma-separated detection thresholds to report")
    ap.add_argument("--batch", type=int, default=8, help="cases per run_cases call (as one flow task)")
    ap.add_argument("--fresh", action="store_true", help="delete --work first")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown (stderr)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    import torch

    from diffparts.inversion.stage import store_model
    from diffparts.inversion.pictures import save_png
    from diffparts.occlusion.cases import run_cases
    from diffparts.occlusion.stage import (occlusion_config, occlusion_dir, occlusion_grid,
                                           setup_occlusion, summarize_occlusion)
    from diffparts.store import model_hash, open_store

    torch.manual_seed(0)
    store = copy_store(Path(args.source), Path(args.work), args.fresh)
    root = open_store(store, "r+")
    model = store_model(root, None)
    losses = None if args.losses is None else ([] if args.losses == "none" else args.losses.split(","))
    cfg = occlusion_config({**json.loads(args.config), "n_cases": args.cases, "how": args.how, "fill": args.fill,
                            "hide": [] if not args.hide else args.hide.split(","), "seed": args.seed,
                            "losses": losses})
    t0 = time.perf_counter()
    setup = setup_occlusion(root, store, None, model, cfg, model_hash(model))
    log(f"{setup['cases']} cases on {setup['held_out_images']} held-out images, {len(setup['todo'])} to run; "
        f"variants {setup['variants']}")
    todo = setup["todo"]
    failed = {}
    for i in range(0, len(todo), args.batch):
        out = run_cases(root, store, None, model, todo[i:i + args.batch], log=log)
        failed.update(out["failed"])
        log(f"cases {todo[i]}..{todo[min(i + args.batch, len(todo)) - 1]}: {len(out['done'])} done in {out['seconds']} s")
    seconds = round(time.perf_counter() - t0, 1)
    summary = summarize_occlusion(root)
    grid = save_png(occlusion_grid(root, n=6), occlusion_dir(store) / "grid.png")
    result = {"source": args.source, "store": store, "model": model, "config": json.loads(json.dumps(
        __import__("dataclasses").asdict(cfg))), "seconds": seconds, "failed": failed, "grid": str(grid), **summary}
    if args.thresholds:
        result["thresholds"] = thresholds_table(root, [float(t) for t in args.thresholds.split(",")])
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    if args.markdown and summary["cases"]:
        print(markdown(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
