"""The whole pipeline: extract -> segment -> parts -> embeddings -> occlusion, as dependent subflows.

Each stage is its own flow (a subflow here), so a stage can also be run, scheduled and re-run
on its own. Each skips its finished work: extraction and segmentation skip the images whose
done marker is set; parts are kept when the same images were clustered with the same settings;
embeddings skip finished (loss, category) pairs and resume interrupted ones; occlusion skips
finished cases. A corpus that grew is extracted and segmented for its new images only, its
parts are clustered again, and the embeddings and occlusion stages, which depend on the
categories, redo themselves (each says so in the log).

``from_stage`` / ``to_stage`` run a slice of the pipeline; ``force`` redoes one stage and every
stage after it (``diffparts.pipeline.force_stage``). At the end (also when a stage failed) the
run writes a self-contained HTML report beside the store and a markdown summary artifact.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.embeddings import train_part_embeddings
from flows.extract import extract_attention
from flows.occlusion import assess_occlusion
from flows.parts import discover_parts
from flows.segment import segment_dataset
from tasks.corpus import ensure_corpus
from tasks.retry import STORAGE_RETRIES

#: Keys of ``stage_options``: extra keyword arguments of each stage's flow.
STAGE_FLOWS = {"extract": extract_attention, "segment": segment_dataset, "parts": discover_parts,
               "embeddings": train_part_embeddings, "occlusion": assess_occlusion}


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def force_stages(store: str, stage: str) -> list[str]:
    """Clear ``stage`` and the stages after it in ``store`` (set-up lock held)."""
    from diffparts.pipeline import force_stage

    return force_stage(store, stage)


def _with_headline(name: str, summary: dict) -> dict:
    """The stage's ``report`` entry with its headline measures (quality first) at the top."""
    from diffparts.pipeline import headline_measures
    from diffparts.report.document import unique_measures

    report = dict(summary.get("report") or {})
    head = [{"measure": k, "value": v} for k, v in headline_measures(name, summary) if v is not None]
    seen = {m["measure"] for m in head}
    rest = [m for m in report.get("measures") or [] if m.get("measure") not in seen]
    report["measures"] = unique_measures(head + rest)
    return report


def _report_path(store: str, started: dt.datetime, run_name: str | None) -> Path:
    """``<store>.reports/<time>-<run>.html``; for a store at a URL, ``diffparts-reports/`` here."""
    from diffparts.pipeline import side_dir

    base = side_dir(store, "reports") or Path("diffparts-reports")
    stamp = started.strftime("%Y%m%d-%H%M%S")
    return base / f"{stamp}-{run_name or 'run'}.html"


@flow(name="bird-parts")
def bird_parts(
    corpus: str,
    store: str,
    model: str | None = None,
    from_stage: str | None = None,
    to_stage: str | None = None,
    force: str | None = None,
    method: str = "ncut",
    k: int | None = None,
    features: bool = True,
    keep_attention: bool | None = None,
    embed_loss: str = "noise",
    embed_steps: int = 300,
    occlusion_cases: int = 50,
    device: str = "cpu",
    dtype: str = "float32",
    extract_batch_size: int = 4,
    batch_size: int = 8,
    max_workers: int = 2,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    evaluate: bool = True,
    report: bool = True,
    synthetic_birds: int | None = None,
    stage_options: dict | None = None,
    echo: bool = False,
) -> dict:
    """Run the stages ``from_stage`` .. ``to_stage`` of ``corpus`` into ``store``.

    corpus: CUB-layout folder or a folder of images; with ``synthetic_birds`` = N and no folder
    there yet, N synthetic birds are rendered into it first (what the deployments do on a fresh
    clone). model: hub id, diffusers folder or None for the embedded checkpoint. force: a stage
    to redo with every stage after it. features: also store UNet features (better parts).
    keep_attention: True keeps the full self-attention tensor, False makes a compact store (the
    extract workers segment each image with the segment stage's settings right after the
    forward), None decides by size (docs/store.md "Compact stores").
    extract_batch_size: images per UNet forward, part of the store's identity (the ``extract``
    deployment uses the same default, 4). batch_size: images per segment task.
    stage_options: {stage: {argument: value}} passed to that stage's flow (e.g.
    ``{"embeddings": {"config": {"learning_rate": 0.01}}}``). echo: also print each stage's
    line to stdout as it finishes (the CLI does). Returns each stage's record and the report.
    """
    from diffparts.pipeline import (STAGES, absolute, check_run_inputs, check_stage, peak_rss_bytes, select_stages,
                                    stage_status, stages_from)

    logger = get_run_logger()
    clock = time.perf_counter()
    # absolute local paths: Dask workers on other machines resolve them from their own directory
    store, corpus, model = absolute(store), absolute(corpus), absolute(model, must_exist=True)
    started = dt.datetime.now(dt.timezone.utc)
    stages = select_stages(from_stage, to_stage)
    options = {check_stage(name, "stage_options key"): value for name, value in (stage_options or {}).items()}
    # bad input that would fail every time is refused before anything is written (no store, no report)
    check_run_inputs(corpus, store, synthetic_birds, stages)
    if force is not None:
        force = check_stage(force, "--force stage")
        if STAGES.index(force) < STAGES.index(stages[0]):
            raise ValueError(f"--force {force} comes before --from-stage {stages[0]}: it would not be redone")
    if "extract" in stages:
        made = ensure_corpus(corpus, synthetic_birds)
        if made["rendered"]:
            logger.info("corpus %s did not exist: rendered %d synthetic birds there", corpus, made["rendered"])

    def say(line: str) -> None:
        logger.info(line)
        if echo:
            print(line, flush=True)

    if force is not None:
        cleared = force_stages(store, force)
        say(f"force {force}: redoing {', '.join(stages_from(force))}; cleared {', '.join(cleared) or 'nothing'}")

    fan_out = {"max_workers": max_workers, "dask_address": dask_address, "dask_workers": dask_workers}
    gpu = {"device": device, "dtype": dtype}
    segment = {"store": store, "method": method, "corpus": corpus, "batch_size": batch_size, **fan_out,
               **options.get("segment", {})}
    arguments = {
        # a compact store is segmented by the extract workers: they get the segment stage's settings
        "extract": {"corpus": corpus, "model": model, "store": store, "batch_size": extract_batch_size,
                    "features": {} if features else None, "keep_attention": keep_attention,
                    "segment": segment, **fan_out, **gpu},
        "segment": segment,
        "parts": {"store": store, "k": k, "corpus": corpus, "evaluate": evaluate},
        "embeddings": {"store": store, "model": model, "corpus": corpus, "loss": embed_loss,
                       "steps": embed_steps, **fan_out, **gpu},
        "occlusion": {"store": store, "model": model, "corpus": corpus, "n_cases": occlusion_cases,
                      "dask_address": dask_address, "dask_workers": dask_workers, **gpu},
    }
    records: list[dict] = []
    failure: BaseException | None = None
    for name in STAGES:
        if name not in stages:
            records.append({"name": name, "status": "not run", "seconds": 0.0,
                            "message": "outside --from-stage/--to-stage", "summary": {}})
            continue
        if failure is not None:
            records.append({"name": name, "status": "not run", "seconds": 0.0,
                            "message": "an earlier stage failed", "summary": {}})
            continue
        start = time.perf_counter()
        try:
            summary = STAGE_FLOWS[name](**{**arguments[name], **options.get(name, {})})
        except Exception as err:  # recorded, reported, then raised after the report is written
            failure = err
            records.append({"name": name, "status": "failed", "seconds": round(time.perf_counter() - start, 2),
                            "message": f"{type(err).__name__}: {err}", "summary": {}})
            say(f"{name:<10} failed after {records[-1]['seconds']:.1f} s: {records[-1]['message']}")
            continue
        status, line = stage_status(name, summary)
        records.append({"name": name, "status": status, "seconds": round(time.perf_counter() - start, 2),
                        "message": line, "summary": summary, "report": _with_headline(name, summary),
                        "peak_rss_bytes": peak_rss_bytes()})
        say(f"{name:<10} {status:<8} {records[-1]['seconds']:6.1f} s  {line}")

    result = {"corpus": corpus, "store": store, "model": model, "stages": records,
              "seconds": round(sum(r["seconds"] for r in records), 2), "report": None}
    result["wall_seconds"] = round(time.perf_counter() - clock, 2)
    if report:
        result["report"] = write_run_report(result, started)
        logger.info("report %s", result["report"])   # on the terminal: the summary table's last line
    if failure is not None:
        raise failure
    return result


def write_run_report(result: dict, started: dt.datetime) -> str | None:
    """The HTML report of this run beside the store and the dashboard summary linking it."""
    from prefect.runtime import flow_run

    from diffparts.report import write_report
    from flows.artifacts import publish_run_summary

    run_id = flow_run.get_id()
    ui = flow_run.get_flow_run_ui_url() if hasattr(flow_run, "get_flow_run_ui_url") else None
    ui = ui if ui and ui.startswith("http") else None   # no UI (a temporary server): no link
    run = {"title": f"bird-parts {flow_run.get_name() or ''}".strip(), "flow_run_id": run_id,
           "dashboard_url": ui, "corpus": result["corpus"], "store": result["store"],
           "model": result["model"] or "embedded default", "started": started.isoformat(timespec="seconds"),
           "seconds": result["seconds"], "wall_seconds": result.get("wall_seconds"), "stages": result["stages"]}
    path = write_report(_report_path(result["store"], started, flow_run.get_name()), run)
    publish_run_summary(run, str(path))
    return str(path)


if __name__ == "__main__":
    import sys

    work = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/pipeline")
    print(bird_parts(str(work / "corpus"), str(work / "store.zarr"), synthetic_birds=16, embed_steps=20,
                     occlusion_cases=4))
