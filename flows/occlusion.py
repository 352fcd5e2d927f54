"""Flow: which parts are hidden, imagine them back with the part tokens, measure it (docs/design.md §5.7 "Occlusion").

After the embeddings stage (its token files beside the store; without any, only the prompt
baselines run).

1. Set-up (single writer): refuse a store whose parts stage is not done; plan the cases (held-out
   images, what each hides, the fill, a seed) and create ``occlusion/`` (redone whole when the
   plan, the variants, the model or the categories changed); list the unfinished cases.
2. Fan out one task per batch of cases (thread pool or Dask; GPU batches annotated
   ``resources={"GPU": 1}``): occlude, detect the missing categories, inpaint every variant
   from the same seed, re-segment and measure; each case's chunks, then its done marker. A case
   that fails (e.g. its image cannot be segmented) is recorded and the others finish.
3. The table (detection P/R/F1 and ROC AUC; per variant IoU, hidden share, assigned, PSNR,
   SSIM) as a table artifact (``occlusion-table``), and the picture grid embedded in a markdown
   artifact (``occlusion-grid``); the progress artifact ``occlusion-progress`` counts batches.
"""

from __future__ import annotations

import dataclasses

from prefect import flow, get_run_logger

from diffparts.metrics.occlusion import interval_text
from flows.artifacts import (cell_text, markdown_table, markdown_with_pictures, measure_rows, publish_markdown,
                             publish_progress, publish_table, stage_report)
from flows.extract import make_task_runner
from flows.fanout import as_finished, submit_all
from tasks.occlusion import occlusion_grid, run_cases, setup_occlusion, summarize_occlusion


@flow(name="occlusion-batches")
def occlusion_batches(store: str, corpus: str | None, model: str, batches: list[list[int]], device: str,
                      dtype: str, gpu_annotate: bool = False) -> list[dict]:
    """Map ``run_cases`` over the batches on this flow's task runner."""
    logger = get_run_logger()
    futures = submit_all(run_cases, batches, lambda b: (store, corpus, model, b, device, dtype), gpu_annotate)
    rows = []
    for batch, future in as_finished(futures, batches, "occlusion-progress",
                                     f"occlusion cases of {store}: batches done"):
        if future.state.is_completed():
            rows.append(future.result())
            logger.info("cases %s: %d done, %d failed (%.1f s)", batch, len(rows[-1]["done"]),
                        len(rows[-1]["failed"]), rows[-1]["seconds"])
        else:
            rows.append({"done": [], "failed": {c: str(future.state.message) for c in batch}, "skipped": []})
            logger.warning("cases %s failed: %s", batch, future.state.message)
    return rows


def _markdown(store: str, summary: dict, grid: dict | None) -> str:
    """The occlusion artifact: detection and the completion table, numbers to 3 decimals ("–"
    where a measure does not apply, e.g. PSNR of a variant that paints nothing)."""
    d = summary["detection"] or {}
    def num(value) -> str:
        return cell_text(value, 3)

    detection = ", ".join(f"{name} {num(d.get(key))}" for name, key in
                          (("precision", "precision"), ("recall", "recall"), ("F1", "f1"), ("ROC AUC", "roc_auc")))
    ci = interval_text(d.get("roc_auc_interval"))
    if ci is not None:                      # how far this many cases let the AUC be trusted
        detection += f" (95 % interval over the cases {ci})"
    lines = [f"# Occlusion on `{store}`: {summary['cases']} cases", "",
             f"Detection ({d.get('method') or '–'}, threshold {num(d.get('threshold'))}): {detection} "
             f"(hidden part not grey-ish: {num(d.get('roc_auc_not_greyish'))}), false alarms on cases hiding "
             f"nothing {num(d.get('false_alarm_rate'))}, occlusion map IoU {num(d.get('occlusion_map_iou'))}", ""]
    if d.get("by_fill"):
        fills = [{"fill": f, "cases": r.get("cases"), "ROC AUC": r.get("roc_auc"),
                  "its 95 % interval": interval_text(r.get("roc_auc_interval")),
                  "not grey-ish": r.get("roc_auc_not_greyish"), "F1": r.get("f1"),
                  "false alarms": r.get("false_alarm_rate"), "map IoU": r.get("occlusion_map_iou")}
                 for f, r in d["by_fill"].items()]
        lines += [*markdown_table(fills, digits=3), ""]
    rows = [{"variant": r["variant"], "IoU": r["iou"], "hidden share": r["hidden_share"], "assigned": r["assigned"],
             "judge IoU": r.get("judge_iou"), "judge hidden acc.": r.get("judge_hidden_accuracy"),
             "PSNR (dB)": r["psnr"], "SSIM": r["ssim"]} for r in summary["table"]]
    lines += [*markdown_table(rows, digits=3), "",
              "–: no finite value over the cases (e.g. PSNR where the pixels are unchanged)."]
    title = "Original, occluded, each completion (columns); one case per row"
    return markdown_with_pictures(lines, [{"title": title, "path": grid["path"]}] if grid else [])


@flow(name="assess-occlusion")
def assess_occlusion(
    store: str,
    model: str | None = None,
    corpus: str | None = None,
    n_cases: int = 50,
    how: str = "part",
    hide: list[str] | None = None,
    fill: str = "mix",
    losses: list[str] | None = None,
    seed: int = 0,
    config: dict | None = None,
    batch_size: int = 8,
    max_workers: int = 1,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    grid_cases: int = 6,
) -> dict:
    """Occlude ``n_cases`` held-out images of ``store``, detect and complete what was hidden.

    how: part (ground-truth part masks) | cover (a ground-truth part under a leaf's own outline) |
    category (discovered) | box | background (a part's shape on the background only: a control,
    nothing hidden). hide: part names or ids hidden in every case
    (default: one part per case, seeded). fill: grey | noise | patch | object | mix (one per case).
    losses: token losses to complete with (default: every loss with files beside the store).
    config: other ``OcclusionConfig`` fields (min_fraction, detect, completion, ...).
    """
    from diffparts.occlusion.stage import occlusion_config

    logger = get_run_logger()
    store = str(store)
    values = {**(config or {}), "n_cases": int(n_cases), "how": how, "hide": list(hide or []), "fill": fill,
              "seed": int(seed), "losses": None if losses is None else list(losses)}
    cfg = dataclasses.asdict(occlusion_config(values))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    # 1. Set-up (single writer) and the cases to run.
    setup = setup_occlusion(store, corpus, model, cfg)
    if setup.get("skipped"):
        logger.warning("occlusion skipped: %s", setup["skipped"])
        publish_markdown("occlusion-grid", f"# Occlusion on `{store}`: skipped\n\n{setup['skipped']}",
                         "why the occlusion stage did not run")
        return {"store": store, "model": setup["model"], "cases": 0, "variants": [], "losses": [], "ran": [],
                "failed": {}, "skipped": setup["skipped"], "summary": {"cases": 0, "detection": None, "table": []},
                "grid": None, "report": stage_report(measure_rows({"cases": 0, "skipped": setup["skipped"]}), {}, [])}
    if setup["reset"]:
        logger.info(setup["reset"])
    logger.info("occlusion: %d cases on %d held-out images (%s), %d to run; variants %s", setup["cases"],
                setup["held_out_images"], setup["split"], len(setup["todo"]), setup["variants"])

    # 2. Fan out one task per fixed batch of cases (case // batch_size).
    todo, rows = setup["todo"], []
    if todo:
        groups: dict[int, list[int]] = {}
        for c in todo:
            groups.setdefault(c // batch_size, []).append(c)
        runner = make_task_runner(max_workers, dask_address, dask_workers, gpu=device.startswith("cuda"))
        rows = occlusion_batches.with_options(task_runner=runner)(
            store, corpus, setup["model"], list(groups.values()), device, dtype,
            gpu_annotate=bool(device.startswith("cuda") and (dask_address or dask_workers)))
    else:
        publish_progress("occlusion-progress", f"occlusion cases of {store}: nothing to run", 1, 1)

    # 3. Table and grid.
    summary = summarize_occlusion(store)
    table = summary["table"] or [{"variant": "-", "cases": 0}]
    publish_table("occlusion-table", table,
                  "per variant: IoU of the restored category with the hidden part, share of hidden pixels "
                  "given it, assigned at all, PSNR/SSIM in the hidden region")
    grid = occlusion_grid(store, grid_cases) if summary["cases"] else None
    publish_markdown("occlusion-grid", _markdown(store, summary, grid), "detection, the table and the picture grid")
    failed = {int(k): v for r in rows for k, v in r["failed"].items()}
    detection = {f"detection {k}": v for k, v in (summary["detection"] or {}).items() if not isinstance(v, dict)}
    measures = measure_rows({"cases": summary["cases"], "failed": len(failed), **detection})
    grid_picture = [{"title": "original, occluded, each completion; one case per row", "path": grid["path"]}
                    ] if grid else []
    return {"store": store, "model": setup["model"], "cases": setup["cases"], "variants": setup["variants"],
            "losses": setup["losses"], "ran": sorted(c for r in rows for c in r["done"]), "failed": failed,
            "summary": summary, "grid": None if grid is None else grid["path"],
            "report": stage_report(measures, {"per variant": summary["table"]}, grid_picture)}


if __name__ == "__main__":
    import sys

    print(assess_occlusion(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/store.zarr", n_cases=8))
