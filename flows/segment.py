"""Flow: nested segments of every image from its stored attention (docs/design.md §5.2-5.4, §6).

1. Read the store: images, which have attention, the attention's resolution and image size.
2. Settings: reuse those stored with earlier segments when the request is the same; otherwise
   resolve them (DiffSeg thresholds: ``"auto"`` picks them from a sample of images with
   ``diffparts.segment.thresholds``, a preset name takes the reference values, numbers are used
   as given) and create the ``segments/`` arrays once (single writer).
3. Fan out over fixed batches of pending images (attention done, segments not done).
4. Where the corpus has part masks, score the segments (``diffparts.metrics``).
5. Artifacts: progress as batches finish (``segment-progress``), tables of per-image segment
   counts and measures (``segment-images``) and of the stage's measures (``segment-summary``),
   and a markdown summary (``segment-report``).

The ``segments/`` layout is documented in ``tasks/segment.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger

from flows.artifacts import (markdown_table, markdown_with_pictures, measure_rows, publish_markdown, publish_progress,
                             publish_table, stage_report)
from flows.fanout import as_finished, parameter_chunks, submit_all
from tasks.segment import (STAGE, choose_thresholds, create_segment_arrays, record_batch_failure,
                           record_segment_scores, save_segment_picture, score_segments, scores_key, segment_images,
                           stored_segment_scores)

#: Rows of the per-image table artifact (a huge corpus gets a truncated table, said in its description).
MAX_TABLE_ROWS = 1000


def _segment_pictures(store: str, corpus, finished, logger) -> list[dict]:
    """The stage's picture (finest level of the first 8 segmented images) beside a local store,
    ``<store>.segments/segments.png``; none for a store at a URL or with nothing segmented."""
    from diffparts.pipeline import side_dir

    folder = side_dir(store, "segment")
    if folder is None or not finished.any():
        return []
    state = save_segment_picture(store, str(corpus) if corpus else None, str(folder / "segments.png"),
                                 return_state=True)
    if not state.is_completed():
        logger.warning("segment picture not drawn: %s", state.message)
        return []
    return [{"title": "segments, finest level (colours tell neighbours apart; ids are per image)",
             "path": state.result()["path"]}]


@flow(name="segment-batches")
def segment_batches(store: str, batches: list[list[dict]], settings: dict, done_before: int = 0,
                    total: int | None = None) -> list[dict]:
    """Map ``segment_images`` over the batches on this flow's task runner (``done_before`` of
    ``total`` batches were done by earlier parts of the same fan-out)."""
    futures = submit_all(segment_images, batches, lambda batch: (store, batch, settings))
    rows = []
    for batch, future in as_finished(futures, batches, "segment-progress", f"segmentation of {store}: batches done",
                                     done_before, total):
        if future.state.is_completed():
            rows.extend(future.result())
        else:  # retries used up: its unfinished images are recorded as failed; a re-run retries them
            rows.extend(record_batch_failure(store, batch, str(future.state.message)))
    return rows


def _parse_thresholds(thresholds) -> str | tuple[float, ...]:
    from diffparts.segment.thresholds import PRESETS

    if isinstance(thresholds, str):
        if thresholds == "auto" or thresholds in PRESETS:
            return thresholds
        try:
            thresholds = [float(t) for t in thresholds.split(",")]
        except ValueError:
            raise ValueError(
                f"thresholds must be 'auto', a preset {sorted(PRESETS)} or numbers, got {thresholds!r}"
            ) from None
    values = tuple(float(t) for t in np.atleast_1d(thresholds))
    if not values or not all(t > 0 for t in values):
        raise ValueError(f"thresholds must be positive numbers, got {thresholds!r}")
    return values


def segment_request(method: str = "diffseg", thresholds="auto", rule: str = "quantile", quantile: float = 0.2,
                    level_thresholds=None, rounds: int = 3, anchors_per_side: int = 16, sample: int = 16,
                    ncut: dict | None = None, out_size: int | None = None, names: bool = False) -> dict:
    """The request dict the stored settings are compared by (``segment_dataset``'s own, and the
    extract stage's when it segments a compact store; the defaults are ``segment_dataset``'s)."""
    return {
        "method": method, "thresholds": thresholds if isinstance(thresholds, str) else list(thresholds),
        "rule": rule, "quantile": quantile, "level_thresholds": list(level_thresholds or []),
        "rounds": rounds, "anchors_per_side": anchors_per_side, "sample": sample,
        "ncut": dict(ncut or {}), "out_size": out_size, "names": names,
    }


def default_segment_request(**overrides) -> dict:
    """``segment_request`` with ``segment_dataset``'s defaults (read from its signature, so a
    changed default, e.g. another method, follows), updated with ``overrides``; keys of
    ``overrides`` that are not part of the request (store, corpus, batch_size, workers...) are
    ignored, so a pipeline can pass its segment stage's own arguments."""
    import inspect

    params = inspect.signature(segment_dataset.fn).parameters
    names = inspect.signature(segment_request).parameters
    values = {k: params[k].default for k in names if k in params}
    return segment_request(**{**values, **{k: v for k, v in overrides.items() if k in names}})


def resolve_settings(store: str, request: dict, candidates: list[int], resolution: int, image_size: int,
                     choose=None) -> dict:
    """Everything a segment task needs, with thresholds chosen from the data when asked.

    choose(indices, rule) -> the threshold choice (default: the ``choose_thresholds`` task on the
    store's attention; an extract of a compact store passes one that runs the forwards itself).
    """
    from diffparts.segment.ncut import NCutConfig
    from diffparts.segment.thresholds import PRESETS

    out = request["out_size"] or image_size or resolution
    settings = {
        "method": request["method"],
        "request": request,
        "out_shape": [int(out), int(out)],
        "rounds": int(request["rounds"]),
        "anchors_per_side": int(request["anchors_per_side"]),
        "eps": 1e-10,
        "level_thresholds": [],
        "ncut_params": None,
        "names": bool(request["names"]),
        "voting": "mean",
        "thresholds": None,
    }
    if request["method"] == "diffseg":
        spec = _parse_thresholds(request["thresholds"])
        if spec == "auto":
            if not candidates:
                raise ValueError("thresholds='auto' needs images with attention; none is done")
            rule = {"rule": request["rule"], "quantile": float(request["quantile"]), "rounds": settings["rounds"],
                    "anchors_per_side": settings["anchors_per_side"]}
            choice = (choose or (lambda idx, r: choose_thresholds(store, idx, r)))(candidates[: int(request["sample"])],
                                                                                   rule)
            merge, levels = choice["thresholds"][0], choice["level_thresholds"]
            settings["thresholds"] = choice
        else:
            values = PRESETS[spec] if isinstance(spec, str) else spec
            merge = values[0]
            levels = [merge * f for f in (1, 2, 4, 8)]
            settings["thresholds"] = {"thresholds": [merge] * settings["rounds"],
                                      "statistics": {"rule": "fixed", "spec": request["thresholds"]}}
        if request["level_thresholds"]:
            levels = [float(t) for t in request["level_thresholds"]]
        # the finest level is the merge itself; coarser levels never go below it (nesting)
        levels = np.maximum.accumulate([float(merge)] + [float(t) for t in levels])[1:]
        levels[0] = float(merge)
        settings["level_thresholds"] = [float(t) for t in levels]
        settings["n_levels"] = len(levels)
        side = min(settings["anchors_per_side"], resolution)
        settings["max_segments"] = side * side
    elif request["method"] == "ncut":
        params = {**NCutConfig().__dict__, **(request["ncut"] or {})}
        params.pop("out_size", None)
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}
        settings["ncut_params"] = params
        settings["n_levels"] = max(1, int(params["max_depth"]))
        settings["max_segments"] = 2 ** int(params["max_depth"])
    else:
        raise ValueError(f"method must be 'diffseg' or 'ncut', got {request['method']!r}")
    return settings


@flow(name="segment-dataset")
def segment_dataset(
    store: str,
    method: str = "ncut",
    thresholds: str | list[float] = "auto",
    rule: str = "quantile",
    quantile: float = 0.2,
    level_thresholds: list[float] | None = None,
    rounds: int = 3,
    anchors_per_side: int = 16,
    sample: int = 16,
    ncut: dict | None = None,
    out_size: int | None = None,
    corpus: str | None = None,
    names: bool = False,
    batch_size: int = 8,
    max_workers: int = 2,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Segment every image of ``store`` that has attention into nested levels under ``segments/``.

    method: "diffseg" (threshold sweep, levels nested) or "ncut" (random-walk NCut tree; ``ncut``
    holds ``NCutConfig`` fields such as tau, tau_mode, walk_steps). thresholds (DiffSeg):
    "auto" (rule "quantile" or "otsu" over the first ``sample`` images), a preset ("sd",
    "cityscapes"), or numbers. out_size: side of the stored label maps (default: the attention
    attrs' image_size). corpus: folder with part masks to score against (CUB layout). names:
    also name level-0 segments from cross-attention. Finished images are skipped; other settings
    than the stored ones are refused unless ``overwrite``. Returns counts and measures.
    """
    from diffparts.store import done_mask, has_attention_arrays, image_table, is_compact, manifest_corpus, open_store
    from diffparts.store import require_full_attention
    from flows.fanout import make_task_runner

    logger = get_run_logger()
    start = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    store = str(store)
    request = segment_request(method, thresholds, rule, quantile, level_thresholds, rounds, anchors_per_side,
                              sample, ncut, out_size, names)
    runner = make_task_runner(max_workers, dask_address, dask_workers)

    # 1. What the store holds
    root = open_store(store, mode="r")
    if not has_attention_arrays(root):
        raise ValueError(f"{store} has no attention/ arrays: run `diffparts extract` first")
    attrs = dict(root["attention"].attrs)
    table = image_table(root)
    with_attention = done_mask(root, "attention")
    candidates = [row["index"] for row in table if with_attention[row["index"]]]

    # 2. Settings (stored ones reused for the same request) and arrays
    old = dict(root[STAGE].attrs).get("settings") if STAGE in root else None
    if is_compact(root) and (old is None or old.get("request") != request or overwrite):
        made = "no segments" if old is None else f"{old['method']} {old.get('request')}"
        require_full_attention(root, f"segmenting with {method} {request} (it was segmented at extraction: "
                                     f"{made})", store)
    if old is not None and old.get("request") == request and not overwrite:
        settings = old
    else:
        settings = resolve_settings(store, request, candidates, int(attrs["resolution"]), int(attrs.get("image_size", 0)))
    create_segment_arrays(store, settings, overwrite)
    logger.info("segment %s with %s: level thresholds %s", store, method, settings["level_thresholds"])

    # 3. Fan out over fixed batches of pending images
    done = done_mask(open_store(store, mode="r"), STAGE)
    pending = [row for row in table if with_attention[row["index"]] and not done[row["index"]]]
    batches = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
    rows, done_before = [], 0
    for part in parameter_chunks(batches):   # parts under the API's limit on flow-run parameters
        rows += segment_batches.with_options(task_runner=runner)(store, part, settings, done_before, len(batches))
        done_before += len(part)
    if not batches:
        publish_progress("segment-progress", f"segmentation of {store}: nothing pending", 1, 1)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "failed")}
    counts["skipped"] = len(table) - len(pending) + sum(r["status"] == "skipped" for r in rows)
    counts["left_out"] = len(table) - len(candidates)  # no attention (failed or not extracted): never read
    if counts["left_out"]:
        logger.info("segment: %d of %d images left out (no finished attention; `diffparts failures --store %s`)",
                    counts["left_out"], len(table), store)

    # 4. Measures where ground truth exists
    corpus = corpus or manifest_corpus(root)
    finished = done_mask(open_store(store, mode="r"), STAGE)
    scores = {"rows": [], "summary": {}}
    if corpus and Path(corpus).exists():
        segmented = [row for row in table if finished[row["index"]]]
        key = scores_key(str(corpus), segmented)
        # nothing segmented now and the same images as last time: the stored measures, not a reread
        cached = None if counts["done"] else stored_segment_scores(store, key)
        if cached is not None:
            scores = cached
            logger.info("segment: measures of the last run reused (the same %d images)", len(segmented))
        else:
            fresh = [int(r["index"]) for r in rows if r["status"] == "done"]
            scores = score_segments(store, str(corpus), segmented, fresh)
            if scores.get("read") is not None and scores["read"] < len(segmented):
                logger.info("segment: measures continued from the last run's; %d of %d images read",
                            scores["read"], len(segmented))
            record_segment_scores(store, key, scores, [row["name"] for row in table[:MAX_TABLE_ROWS]])

    # 5. Artifacts
    by_name = {r["name"]: r for r in scores["rows"]}
    n_segments = open_store(store, mode="r")[f"{STAGE}/n_segments"]
    table_rows = []
    for row in table[:MAX_TABLE_ROWS]:
        if not finished[row["index"]]:
            continue
        entry = {"image_id": row["image_id"], "name": row["name"],
                 "segments_per_level": " ".join(str(int(c)) for c in n_segments[row["index"]])}
        if row["name"] in by_name:
            entry.update({k: round(by_name[row["name"]][k], 4) for k in ("miou", "pixel_accuracy", "nf_covering")})
        table_rows.append(entry)
    if table_rows:
        publish_table("segment-images", table_rows,
                      f"{method} segments per level (finest first) and measures, first {MAX_TABLE_ROWS} images")
    summary = {
        **counts,
        "images": len(table),
        "store": store,
        "method": method,
        "level_thresholds": settings["level_thresholds"],
        "seconds": round(time.perf_counter() - start, 3),
        **{k: v for k, v in scores["summary"].items()},
    }
    measures = measure_rows({k: v for k, v in summary.items() if k not in ("store", "method")})
    publish_table("segment-summary", measures, "segment stage: counts, thresholds and measures where the corpus "
                                               "has part masks (miou, pixel accuracy, NFCovering)")
    pictures = _segment_pictures(store, corpus, finished, logger)
    publish_markdown("segment-report", markdown_with_pictures(
        [f"# Segments of `{store}` ({method})", "", *markdown_table(measures), "",
         f"Per image: the `segment-images` table (first {MAX_TABLE_ROWS} images)."], pictures), "segment stage summary")
    summary["report"] = stage_report(measures, {"segments per image": table_rows[:50]}, pictures)
    logger.info("segment (%s): %s", method, ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                        for k, v in summary.items()
                                                        if isinstance(v, (int, float)) and not isinstance(v, bool)))
    return summary


if __name__ == "__main__":
    # The embedded sample: a store written by `python flows/extract.py` or `diffparts extract`.
    import sys

    path = sys.argv[1] if len(sys.argv) > 1 else "data/stores/birds.zarr"
    print(segment_dataset(path, corpus=sys.argv[2] if len(sys.argv) > 2 else None))
