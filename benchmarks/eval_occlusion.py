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

Issue 18's detection table: ``--how part,background --fill noise,grey,patch,object --detect-only``
runs each (how, fill) into ``--work/<how>-<fill>`` and prints one row each (ROC AUC overall,
on cases whose hidden part is not grey-ish and per category; P/R/F1 at the threshold; false
alarms on cases hiding nothing, i.e. every background control; occlusion-map IoU; detector
seconds per case); ``--method area`` gives the earlier rule's rows (the baseline). The source
needs only the parts stage (no tokens are needed for detection); its held-out split is the
embeddings stage's, else the corpus's test split.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_occlusion.py --source runs/emb-val --work runs/occ-val \\
        --cases 48 --losses none --thresholds 0.1,0.2,0.3,0.4,0.5,0.6       # validation (seed 999)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_occlusion.py --source runs/emb-eval --work runs/occ-eval \\
        --cases 64 --markdown                                                 # the README table
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_occlusion.py --source runs/occ-eval-src --work runs/occ-det \\
        --cases 48 --how part,background --fill noise,grey,patch,object --detect-only --fresh --markdown
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

    from diffparts.metrics.occlusion import detection_scores, false_alarm_rate

    g = root["occlusion"]
    done = np.flatnonzero(np.asarray(g["done"][:], bool))
    truth = [set(json.loads(str(g["results"][int(i)]))["truth"]) for i in done]
    scores = [np.asarray(g["scores"][int(i)]) for i in done]
    rows = []
    for t in thresholds:
        pred = [{k for k in range(1, len(s)) if s[k] >= t and s[k] > 0} for s in scores]
        d = detection_scores(pred, truth)
        rows.append({"threshold": t, "precision": round(d.precision, 4), "recall": round(d.recall, 4),
                     "f1": round(d.f1, 4), "predicted_per_case": round(sum(map(len, pred)) / len(pred), 3),
                     "false_alarm_rate": false_alarm_rate(pred, truth)})
    return rows


def markdown(summary: dict) -> str:
    d = summary["detection"]
    lines = [f"detection ({summary['cases']} cases, {d['cases_with_hidden_category']} with a hidden category): "
             f"precision {fmt(d['precision'])}, recall {fmt(d['recall'])}, F1 {fmt(d['f1'])}, "
             f"ROC AUC {fmt(d['roc_auc'])}, top-1 hidden {fmt(d['top1_hidden'])}"
             + ("" if d.get("occlusion_map_iou") is None else f", occlusion map IoU {d['occlusion_map_iou']:.3f}"), "",
             "| variant | IoU restored category vs true part | hidden share | assigned | judge IoU | "
             "judge hidden acc. | PSNR (dB) | SSIM |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['variant']} | {fmt(r['iou'])} | {fmt(r['hidden_share'])} | {fmt(r['assigned'])} | "
              f"{fmt(r.get('judge_iou'))} | {fmt(r.get('judge_hidden_accuracy'))} | "
              f"{fmt(r['psnr'])} | {fmt(r['ssim'])} |" for r in summary["table"]]
    return "\n".join(lines)


def fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def detection_rows(runs: list[dict]) -> list[dict]:
    """One row per (how, fill) run: the detection columns of the issue-18 table."""
    rows = []
    for r in runs:
        d = r["detection"] or {}
        per = {k: v for k, v in (d.get("roc_auc_per_category") or {}).items() if v is not None}
        rows.append({"how": r["config"]["how"], "fill": r["config"]["fill"], "method": d.get("method"),
                     "cases": r["cases"], "hidden": d.get("cases_with_hidden_category"),
                     "roc_auc": d.get("roc_auc"), "roc_auc_interval": d.get("roc_auc_interval"),
                     "roc_auc_not_greyish": d.get("roc_auc_not_greyish"),
                     "worst_category_auc": min(per.values()) if per else None,
                     "worst_category": min(per, key=per.get) if per else None,
                     "precision": d.get("precision"), "recall": d.get("recall"), "f1": d.get("f1"),
                     "false_alarm_rate": d.get("false_alarm_rate"), "occlusion_map_iou": d.get("occlusion_map_iou"),
                     "detect_seconds_per_case": d.get("detect_seconds_per_case"),
                     "roc_auc_per_category": d.get("roc_auc_per_category")})
    return rows


def detection_markdown(rows: list[dict]) -> str:
    from diffparts.metrics.occlusion import interval_text

    lines = ["| cases | fill | method | n (hidden) | ROC AUC (95 % interval over cases) | AUC, hidden part not grey-ish | "
             "worst category AUC | "
             "P | R | F1 | false alarms (cases hiding nothing) | occlusion map IoU | s / case |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        worst = "-" if r["worst_category_auc"] is None else f"{r['worst_category_auc']:.2f} (k={r['worst_category']})"
        ci = interval_text(r.get("roc_auc_interval"))
        auc = fmt(r["roc_auc"]) if ci is None else f"{fmt(r['roc_auc'])} ({ci})"
        lines.append(f"| {r['how']} | {r['fill']} | {r['method']} | {r['cases']} ({r['hidden']}) | {auc} | "
                     f"{fmt(r['roc_auc_not_greyish'])} | {worst} | {fmt(r['precision'])} | {fmt(r['recall'])} | "
                     f"{fmt(r['f1'])} | {fmt(r['false_alarm_rate'])} | {fmt(r['occlusion_map_iou'])} | "
                     f"{fmt(r['detect_seconds_per_case'])} |")
    return "\n".join(lines)


def run_one(args, source: Path, work: Path, how: str, fill: str, calibration: str | None = None) -> dict:
    """One (how, fill) evaluation into ``work``: set-up, the cases, the summary."""
    import torch

    from diffparts.inversion.pictures import save_png
    from diffparts.inversion.stage import store_model
    from diffparts.occlusion.cases import run_cases
    from diffparts.occlusion.stage import (occlusion_config, occlusion_dir, occlusion_grid,
                                           setup_occlusion, summarize_occlusion)
    from diffparts.store import model_hash, open_store

    torch.manual_seed(0)
    store = copy_store(source, work, args.fresh)
    root = open_store(store, "r+")
    model = store_model(root, None)
    losses = None if args.losses is None else ([] if args.losses == "none" else args.losses.split(","))
    overrides = json.loads(args.config)
    if args.method:
        overrides["detect"] = {**overrides.get("detect", {}), "method": args.method}
    cfg = occlusion_config({**overrides, "n_cases": args.cases, "how": how, "fill": fill,
                            "hide": [] if not args.hide else args.hide.split(","), "seed": args.seed,
                            "losses": losses, "complete": not args.detect_only})
    t0 = time.perf_counter()
    setup = setup_occlusion(root, store, None, model, cfg, model_hash(model), calibration=calibration,
                            log=log)
    log(f"[{how}/{fill}] {setup['cases']} cases on {setup['held_out_images']} held-out images ({setup['split']}), "
        f"{len(setup['todo'])} to run; variants {setup['variants']}")
    todo = setup["todo"]
    failed = {}
    for i in range(0, len(todo), args.batch):
        out = run_cases(root, store, None, model, todo[i:i + args.batch], log=log)
        failed.update(out["failed"])
        log(f"[{how}/{fill}] cases {todo[i]}..{todo[min(i + args.batch, len(todo)) - 1]}: {len(out['done'])} done "
            f"in {out['seconds']} s")
    seconds = round(time.perf_counter() - t0, 1)
    summary = summarize_occlusion(root)
    grid = save_png(occlusion_grid(root, n=6), occlusion_dir(store) / "grid.png") if summary["cases"] else None
    result = {"source": str(source), "store": store, "model": model, "config": json.loads(json.dumps(
        __import__("dataclasses").asdict(cfg))), "seconds": seconds, "failed": failed,
        "grid": None if grid is None else str(grid), **summary,
        "calibration": root["occlusion"].attrs.get("calibration")}
    if args.thresholds:
        result["thresholds"] = thresholds_table(root, [float(t) for t in args.thresholds.split(",")])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default="runs/emb-eval", help="folder with store.zarr (+ .embeddings) and corpus")
    ap.add_argument("--work", default="runs/occ-eval", help="where the store is copied and written")
    ap.add_argument("--cases", type=int, default=64)
    ap.add_argument("--how", default="part",
                    help="comma-separated: part, cover (a leaf's outline over a part), category, box, background (control)")
    ap.add_argument("--hide", default=None, help="comma-separated parts hidden in every case")
    ap.add_argument("--fill", default="grey", help="comma-separated: grey, noise, patch, object, mix")
    ap.add_argument("--method", default=None, help="detection method (diffparts occlude --detect): appearance (the stage's default), repaint, evidence, "
                         "combined, colour or area")
    ap.add_argument("--detect-only", action="store_true", help="no completion: detection columns only")
    ap.add_argument("--losses", default=None, help="comma-separated, 'none', or default: every loss with files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="{}", help="JSON overrides of OcclusionConfig (detect, completion, ...)")
    ap.add_argument("--thresholds", default=None, help="comma-separated detection thresholds to report")
    ap.add_argument("--batch", type=int, default=8, help="cases per run_cases call (as one flow task)")
    ap.add_argument("--fresh", action="store_true", help="delete --work first")
    ap.add_argument("--markdown", action="store_true", help="also print the table as markdown (stderr)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--build", default=None, metavar="SEED,N",
                    help="first build --source when it has no store: N synthetic birds of corpus seed SEED through "
                         "extract, segment and parts (eval_embeddings.run_stages; no tokens: detection needs none)")
    args = ap.parse_args()

    if args.build and not (Path(args.source) / "store.zarr").exists():
        from benchmarks.eval_embeddings import run_stages

        seed, n = (int(v) for v in args.build.split(","))
        source = Path(args.source)
        source.mkdir(parents=True, exist_ok=True)
        log(f"building {source}: {n} birds, corpus seed {seed}: "
            f"{run_stages(source / 'corpus', source / 'store.zarr', None, n, seed, 64, None)}")

    hows, fills = args.how.split(","), args.fill.split(",")
    pairs = [(h, f) for h in hows for f in fills]
    runs, calibration = [], None
    for how, fill in pairs:              # one calibration (same store, model, detect settings) for every run
        work = Path(args.work) if len(pairs) == 1 else Path(args.work) / f"{how}-{fill}"
        runs.append(run_one(args, Path(args.source), work, how, fill, calibration))
        calibration = runs[-1].pop("calibration", None)
    result = runs[0] if len(runs) == 1 else {"source": args.source, "runs": runs}
    result["detection_table"] = detection_rows(runs)
    text = json.dumps(result, indent=1, default=float)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    if args.markdown:
        print(detection_markdown(result["detection_table"]), file=sys.stderr)
        for r in runs:
            if r["cases"] and not args.detect_only:
                print(markdown(r), file=sys.stderr)


if __name__ == "__main__":
    main()
