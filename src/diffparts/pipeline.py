"""The five stages as one pipeline: their order, which of them a run does, and redoing one.

No Prefect here: ``flows/pipeline.py`` runs the stages; this module says which, in what order,
and clears a store so that a forced stage and every stage after it are computed again.

    extract -> segment -> parts -> embeddings -> occlusion

Each stage keeps its results in one group of the store (``attention/`` (+ ``features/``),
``segments/``, ``parts/``, ``embeddings/``, ``occlusion/``) and some beside it
(``<store>.parts/`` pictures, ``<store>.embeddings/`` token files, ``<store>.occlusion/``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

#: The stages in pipeline order (the CLI's --from-stage / --to-stage / --force names).
STAGES = ("extract", "segment", "parts", "embeddings", "occlusion")

#: Other names a stage answers to: the command that runs it alone (``diffparts embed``,
#: ``diffparts occlude``) and its store group.
STAGE_ALIASES = {"embed": "embeddings", "occlude": "occlusion", "attention": "extract", "segments": "segment"}

#: The store group of each stage.
STORE_GROUPS = {"extract": "attention", "segment": "segments", "parts": "parts",
                "embeddings": "embeddings", "occlusion": "occlusion"}


def check_stage(name: str, what: str = "stage") -> str:
    """The stage ``name`` names (itself or an alias: ``embed`` -> ``embeddings``); ValueError
    naming it and the stages otherwise."""
    name = STAGE_ALIASES.get(name, name)
    if name not in STAGES:
        raise ValueError(f"unknown {what} {name!r}: the stages are {', '.join(STAGES)}")
    return name


def select_stages(from_stage: str | None = None, to_stage: str | None = None) -> list[str]:
    """The stages a run does, in order: from ``from_stage`` (default the first) to ``to_stage``
    (default the last), both included. ValueError for an unknown name or an empty range."""
    first = STAGES.index(check_stage(from_stage or STAGES[0], "--from-stage"))
    last = STAGES.index(check_stage(to_stage or STAGES[-1], "--to-stage"))
    if first > last:
        raise ValueError(f"--from-stage {STAGES[first]} comes after --to-stage {STAGES[last]}: nothing to run")
    return list(STAGES[first : last + 1])


def stages_from(stage: str) -> list[str]:
    """``stage`` and every stage after it."""
    return list(STAGES[STAGES.index(check_stage(stage, "--force stage")) :])


def check_run_inputs(corpus: str | Path, store: str | Path, synthetic_birds: int | None = None,
                     stages: list[str] | tuple[str, ...] = STAGES) -> None:
    """Refuse, before anything is written, what would fail every time (issue 21): a store path
    that is a file; with the extract stage, a corpus that does not exist (and no
    ``synthetic_birds`` to render there), that is not a folder, or that holds no images.
    One-line errors naming the value and what to do."""
    text = str(store)
    if "://" not in text.removeprefix("file://"):
        local = Path(text.removeprefix("file://")).expanduser()
        if local.exists() and not local.is_dir():
            raise FileExistsError(f"store {text} is a file, not a Zarr store (a folder): give a new path or an "
                                  "existing store")
        if not local.exists() and local.parent.exists() and not local.parent.is_dir():
            raise NotADirectoryError(f"store {text}: {local.parent} is a file, not a folder")
        if "extract" not in stages and not local.exists():
            raise FileNotFoundError(f"no diffparts store at {text}: the {stages[0]} stage reads what the stages "
                                    "before it wrote; run from the extract stage first")
    if "extract" not in stages:
        return
    path = Path(str(corpus)).expanduser()
    if not path.exists():
        if synthetic_birds is not None and int(synthetic_birds) < 1:
            raise ValueError(f"--synthetic-birds must be >= 1, got {synthetic_birds}")
        if not synthetic_birds:
            raise FileNotFoundError(f"corpus {corpus} does not exist: give a CUB-layout folder or a folder of "
                                    "images, or add --synthetic-birds N to render N synthetic birds there "
                                    "(deployments: synthetic_birds)")
        return
    if not path.is_dir():
        raise NotADirectoryError(f"corpus {corpus} is a file: give a CUB-layout folder or a folder of images")
    from diffparts.corpus import open_corpus

    if not len(open_corpus(path)):
        raise ValueError(f"corpus {corpus} holds no images (.jpg, .png, ...): put images there, or give a "
                         "CUB-layout folder; to render synthetic birds, give a folder that does not exist "
                         "with --synthetic-birds N")


def absolute(path: str | Path | None, must_exist: bool = False) -> str | None:
    """A local path made absolute (Dask workers resolve paths from their own working directory);
    URLs (``s3://``, ``file://``) are returned as given, and so is a path that does not exist
    when ``must_exist`` (a model argument may be a hub id)."""
    if path is None:
        return None
    text = str(path)
    if "://" in text:
        return text
    local = Path(text).expanduser()
    if must_exist and not local.exists():
        return text
    return str(local.resolve())


def side_dir(store: str | Path, stage: str) -> Path | None:
    """The folder beside a local store where ``stage`` keeps its files (None for extract, and for
    a store that is a URL); ``"reports"``: where the pipeline's HTML reports go."""
    suffix = {"segment": ".segments", "parts": ".parts", "embeddings": ".embeddings", "occlusion": ".occlusion",
              "reports": ".reports"}.get(stage)
    text = str(store)
    if suffix is None or "://" in text.removeprefix("file://"):
        return None
    return Path(f"{text.removeprefix('file://').rstrip('/')}{suffix}")


def force_stage(store: str | Path, stage: str) -> list[str]:
    """Make the next run redo ``stage`` and every stage after it; returns what was cleared.

    Per-image stages (extract, segment) get their done markers unset, so their flows compute
    every image again over the existing arrays; the dataset-wide stages (parts, embeddings,
    occlusion) lose their group and their side folder (pictures, token files, checkpoints), so
    nothing of the old results can be resumed. Inputs of the forced stage are untouched. Runs
    under the store's set-up lock. A store that does not exist yet: nothing to clear.
    """
    from diffparts.store import open_store, setup_lock
    from diffparts.store.layout import FAILURES_GROUP, MISSING_STORE_ERRORS

    todo = stages_from(stage)
    cleared: list[str] = []
    try:
        root = open_store(store, "r+")
    except MISSING_STORE_ERRORS:
        return cleared
    with setup_lock(store):
        for name in todo:
            group = STORE_GROUPS[name]
            if name in ("extract", "segment"):
                groups = [group] + (["features"] if name == "extract" else [])
                for g in groups:
                    if f"{g}/done" in root:
                        root[f"{g}/done"][...] = False
                        cleared.append(f"{g}/done")
                    if f"{FAILURES_GROUP}/{g}" in root:
                        root[f"{FAILURES_GROUP}/{g}"][...] = ""
            elif group in root:
                del root[group]
                cleared.append(f"{group}/")
            folder = side_dir(store, name)
            if folder is not None and folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
                cleared.append(str(folder))
    return cleared


def peak_rss_bytes() -> int | None:
    """This process's peak resident set so far, in bytes (None where the platform does not say).

    Recorded after each stage of a run, so the stage that raised the peak shows (issue 20).
    """
    try:
        import resource
    except ImportError:                                  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024   # macOS: bytes; Linux: KiB


def stage_status(name: str, summary: dict) -> tuple[str, str]:
    """("done" | "skipped", one line) for a stage's returned summary: skipped = nothing new."""
    if name == "extract":
        line = (f"{summary.get('written', 0)} written, {summary.get('skipped', 0)} skipped, "
                f"{summary.get('failed', 0)} failed of {summary.get('images', 0)} images")
        busy = summary.get("written", 0) or summary.get("failed", 0)
    elif name == "segment":
        line = (f"{summary.get('done', 0)} segmented, {summary.get('skipped', 0)} skipped, "
                f"{summary.get('failed', 0)} failed ({summary.get('method')})")
        busy = summary.get("done", 0) or summary.get("failed", 0)
    elif name == "parts":
        clusters = summary.get("clusters") or {}
        line = f"K = {clusters.get('k')} categories over {summary.get('images')} images"
        busy = not summary.get("skipped")
    elif name == "embeddings":
        line = (f"{len(summary.get('trained') or [])} tokens trained, {len(summary.get('failed') or [])} failed, "
                f"{len(summary.get('summary') or [])} in the store ({', '.join(summary.get('losses') or [])})")
        busy = summary.get("trained") or summary.get("failed")
    else:
        line = f"{len(summary.get('ran') or [])} cases run, {len(summary.get('failed') or {})} failed of {summary.get('cases')}"
        busy = summary.get("ran") or summary.get("failed")
    return ("done" if busy else "skipped"), line


def _mean(values) -> float | None:
    values = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else None


def headline_measures(name: str, s: dict) -> list[tuple[str, object]]:
    """(measure, value) pairs that say how a stage went, from its flow's summary ``s``: its
    quality against the ground truth where the corpus has one, else what it did."""
    if name == "extract":
        return [("images", s.get("images")), ("MB added", f"{(s.get('stored_bytes') or 0) / 1e6:.1f}")]
    if name == "segment":
        return [(k, s[k]) for k in ("miou", "nf_covering") if k in s]
    if name == "parts":
        scores = s.get("scores") or {}
        return [("K", (s.get("clusters") or {}).get("k"))] + [(k, scores[k]) for k in ("nmi", "pck@0.1") if k in scores]
    if name == "embeddings":
        rows = s.get("summary") or []
        return [("tokens", len(rows)), ("mean final loss", _mean(r.get("final_loss") for r in rows))]
    if name == "occlusion":
        summary = s.get("summary") or {}
        detection = summary.get("detection") or {}
        judge = {r["variant"]: r.get("judge_iou") for r in summary.get("table") or []}
        from diffparts.metrics.occlusion import interval_text

        ci = interval_text(detection.get("roc_auc_interval"))
        pairs = [("cases", s.get("cases")), ("detection AUC", detection.get("roc_auc"))]
        if ci is not None:       # how far the AUC of this many cases can be trusted
            pairs.append(("its 95 % interval", ci))
        pairs.append(("false alarms", detection.get("false_alarm_rate")))
        # the judge's reading of the hidden part (by appearance), occluded input = the floor
        return pairs + [(f"judge IoU {v}", judge[v]) for v in ("occluded", "class", "noise:detected")
                        if judge.get(v) is not None]
    return []


def _fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary_lines(result: dict, title: str = "diffparts run") -> list[str]:
    """The table a person reads after a run (``diffparts run``, ``make demo``): per stage its
    status, seconds and headline measures; the seconds in stages (the report's header says the
    same) and the path of the report."""
    lines = ["", f"== {title} ==", f"{'stage':<11}{'status':<9}{'seconds':>8}  measures"]
    for record in result["stages"]:
        measures = "" if record["status"] == "not run" else ", ".join(
            f"{k} {_fmt(v)}" for k, v in headline_measures(record["name"], record.get("summary") or {}) if v is not None)
        lines.append(f"{record['name']:<11}{record['status']:<9}{record['seconds']:>8.1f}  "
                     f"{measures or record.get('message', '')}")
    wall = result.get("wall_seconds")
    lines.append(f"{'total':<20}{result['seconds']:>8.1f}  s in stages"
                 + (f" ({wall:.1f} s in the flow)" if wall is not None else ""))
    lines.append(f"report  {shown_path(result.get('report')) or '(none: --no-report)'}")
    return lines


def shown_path(path) -> str | None:
    """A path as a person typed it: relative to the working directory when it lies below it."""
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
