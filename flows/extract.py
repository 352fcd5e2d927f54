"""Flow: diffusion attention of every corpus image into a chunked Zarr store (docs/design.md §5.1, §6).

1. Describe the corpus (ids, names, content hashes) and the run (model hash, config hash).
2. Create or extend the store from the schema (one task, the only writer of metadata) and list
   the images whose done marker is unset; if none, stop before loading any model.
3. Create the attention arrays (and, with ``features``, the ``features/`` arrays of the chosen
   up-blocks) once; their shapes come from one probe through the model.
4. Fan out one task per fixed batch of ``batch_size`` store indices that has pending images,
   on a thread pool (default) or a Dask cluster (``dask_address`` / ``dask_workers``), GPU tasks
   annotated ``resources={"GPU": 1}`` so each GPU worker takes one at a time; on the flow's own
   local cluster each worker uses its own GPU (``cuda:<worker number>``, issue 12 item 13).
5. A progress artifact (``extract-progress``) advances as batches finish; a table artifact
   (``extract-summary``) and a markdown one (``extract-report``) summarise the run.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.artifacts import (markdown_table, measure_rows, publish_markdown, publish_progress,
                             publish_table, stage_report)
from flows.fanout import as_finished, make_task_runner, parameter_chunks, submit_all  # make_task_runner: re-exported
from tasks.extract import (
    create_attention_arrays,
    describe_images,
    extract_batch,
    identify_run,
    prepare_store,
    record_batch_failure,
    stored_bytes,
)


def fixed_batches(images: list[dict], pending: list[int], batch_size: int) -> list[list[dict]]:
    """Runs of ``batch_size`` store indices (``index // batch_size``) holding a pending image."""
    groups: dict[int, list[dict]] = {}
    for img in sorted(images, key=lambda i: i["index"]):
        groups.setdefault(img["index"] // batch_size, []).append(img)
    wanted = {k // batch_size for k in pending}
    return [groups[g] for g in sorted(wanted)]


@flow(name="extract-batches")
def extract_batches(
    store: str, version: int, batches: list[list[dict]], model: str, capture: dict, device: str, dtype: str,
    gpu_annotate: bool = False, features: dict | None = None, limits: dict | None = None,
    pin_gpu: bool = False, compact: dict | None = None, done_before: int = 0, total: int | None = None,
) -> dict:
    """Map ``extract_batch`` over the batches on this flow's task runner; count as they finish
    (``done_before`` of ``total`` batches were done by earlier parts of the same fan-out)."""
    futures = submit_all(extract_batch, batches, lambda batch: (store, version, batch, model, capture, device, dtype,
                                                               features, limits, pin_gpu, compact), gpu_annotate)
    totals = {"written": 0, "skipped": 0, "failed": 0, "bytes": 0, "batches": len(batches), "task_seconds": 0.0,
              "forward_seconds": 0.0, "after_forward_seconds": 0.0, "after_forward_cpu_seconds": 0.0}
    for batch, future in as_finished(futures, batches, "extract-progress",
                                     f"attention extraction into {store}: batches done", done_before, total):
        if future.state.is_completed():
            result = future.result()
            for key in ("written", "skipped", "failed", "bytes", "forward_seconds", "after_forward_seconds",
                        "after_forward_cpu_seconds"):
                totals[key] += result.get(key, 0)
            totals["task_seconds"] += result["seconds"]
        else:  # retries used up: record the batch's unfinished images, go on with the others
            reason = f"extract: {future.state.message or future.state}"
            totals["failed"] += record_batch_failure(store, version, batch, reason)
    return totals


def compact_settings(store: str, version: int, images: list[dict], pending: list[int], batch_size: int, model: str,
                     capture: dict, device: str, dtype: str, precision: str, features: dict | None,
                     limits: dict | None, segment: dict | None, arrays: dict, lock_stale_s: float) -> dict:
    """What the workers of a compact store need: the segment settings (stored ones reused when
    the request is the same; otherwise resolved as the segment stage does, thresholds from
    forwards of the first images: ``sample_thresholds``), the ``segments/`` and box-bin arrays
    created, the descriptor settings the bins are made for, and the precision reads round to."""
    from dataclasses import asdict

    from diffparts.parts.descriptors import DescriptorConfig
    from diffparts.store import open_store
    from flows.segment import default_segment_request, resolve_settings
    from tasks.extract import create_compact_arrays, sample_thresholds
    from tasks.segment import STAGE as SEGMENTS, create_segment_arrays

    request = default_segment_request(**(segment or {}))
    root = open_store(store, "r", version=version)
    old = dict(root[SEGMENTS].attrs).get("settings") if SEGMENTS in root else None
    if old is not None and old.get("request") == request:
        settings = old
    else:
        order = sorted(pending)

        def choose(indices, rule):
            wanted = set(indices)
            batches = [b for b in fixed_batches(images, list(indices), batch_size)]
            return sample_thresholds(store, version, batches, sorted(wanted), model, capture, device, dtype,
                                     precision, rule, limits)

        settings = resolve_settings(store, request, order, int(arrays["resolution"]),
                                    int(arrays.get("image_size") or 0), choose=choose)
        settings["made_by"] = "extract"
    create_segment_arrays(store, settings)
    config = DescriptorConfig()
    descriptor = {k: asdict(config)[k] for k in ("box_grid", "level", "border_share_max")}
    create_compact_arrays(store, version, int(arrays["resolution"]), descriptor, lock_stale_s)
    return {"settings": settings, "descriptor": descriptor, "precision": precision}


@flow(name="extract-attention")
def extract_attention(
    corpus: str,
    model: str | None = None,
    store: str = "data/stores/birds.zarr",
    batch_size: int = 4,
    timestep: int = 300,
    prompt: str = "",
    precision: str = "float16",
    max_workers: int = 2,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    new_version: bool = False,
    features: dict | None = None,
    limits: dict | None = None,
    lock_stale_s: float = 600.0,
    synthetic_birds: int | None = None,
    keep_attention: bool | None = None,
    segment: dict | None = None,
) -> dict:
    """Extract aggregated self- and cross-attention of every image of ``corpus`` into ``store``.

    ``model``: hub id, diffusers folder, or None for the embedded checkpoint. ``precision``:
    ``float16`` or ``uint8`` storage of self-attention. A store written with another model or
    config is refused unless ``new_version`` (then ``versions/<n>`` of the same store is used);
    so is another device kind, ``dtype`` or ``batch_size`` (they change the stored values).
    ``features``: FeatureConfig fields as a dict (``{}`` = the defaults: DIFT's up-block from the
    attention forward) to also store UNet features in ``features/``; None = attention only.
    ``limits``: ``diffparts.corpus.ReadLimits`` fields (``max_file_bytes``, ``max_pixels``;
    None = the defaults): larger files and images are failures named by image, never read.
    The corpus's absolute path and kind go into the manifest for the later stages.
    ``lock_stale_s``: the set-up runs under a lock file beside a local store; a lock older than
    this (or whose holder on this host is gone) is taken over. ``synthetic_birds``: when
    ``corpus`` does not exist, render that many synthetic birds there first (the deployment's
    default, so that its first run works on a fresh clone).
    ``keep_attention``: True keeps the full (image, qy, qx, ky, kx) tensor (at ``precision``),
    False makes a compact store (segments and pooled attention written by the workers right
    after the forward, docs/store.md "Compact stores"), None (default) decides by size
    (``store.compact.COMPACT_ABOVE_BYTES``: compact at SD's 64 x 64, kept for small models).
    ``segment``: ``segment_dataset`` parameters for a compact store's segmentation (default:
    that flow's defaults; recorded in the store, so the segment stage finds the images done).
    Returns counts: written, skipped, failed, bytes (handed to Zarr), stored_bytes (added to the
    store, compressed), batches, task_seconds (summed over batch tasks), seconds, store, version.
    """
    from diffparts.model.load import DEFAULT_MODEL

    logger = get_run_logger()
    start = time.perf_counter()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    from diffparts.pipeline import absolute

    # absolute local paths: a Dask worker resolves a relative one from its own directory
    model = absolute(str(model or DEFAULT_MODEL), must_exist=True)
    store = absolute(store)
    capture = {"timestep": int(timestep), "prompt": prompt}
    if synthetic_birds:   # a fresh clone's deployment: render the corpus the defaults point at
        from tasks.corpus import ensure_corpus

        made = ensure_corpus(str(corpus), synthetic_birds)
        if made["rendered"]:
            logger.info("corpus %s did not exist: rendered %d synthetic birds there", corpus, made["rendered"])
    runner = make_task_runner(max_workers, dask_address, dask_workers, gpu=device.startswith("cuda"))

    # 1. Describe the corpus and the run.
    images = describe_images(str(corpus), limits, store)
    identity = identify_run(model, capture, precision, features, device, dtype, batch_size)

    # 2. Create or extend the store (single writer); pending = done marker unset.
    prepared = prepare_store(store, images, identity, new_version, str(corpus), features, lock_stale_s)
    version, pending = prepared["version"], prepared["pending"]
    logger.info(
        "store %s version %d: %d images, %d pending (%d new, %d changed)",
        store, version, len(images), len(pending), len(prepared["added"]), len(prepared["changed"]),
    )
    totals = {"written": 0, "skipped": len(images) - len(pending), "failed": 0, "bytes": 0, "batches": 0,
              "task_seconds": 0.0}
    before = stored_bytes(store, version) if pending else 0

    if pending:
        # 3. Attention arrays, created once from the model's shapes.
        arrays = create_attention_arrays(store, version, model, capture, precision, device, dtype, features,
                                         lock_stale_s, keep_attention)
        batches = fixed_batches(prepared["images"], pending, batch_size)
        compact = None
        if arrays["form"] == "compact":   # 3b. segment settings, chosen now; the workers segment
            compact = compact_settings(store, version, prepared["images"], pending, batch_size, model, capture,
                                       device, dtype, precision, features, limits, segment, arrays, lock_stale_s)
            logger.info("compact store: segmenting with %s on the workers (level thresholds %s); the full "
                        "attention tensor is not kept", compact["settings"]["method"],
                        compact["settings"]["level_thresholds"])
        # 4. Fan out over fixed batches of store indices.
        #    In parts whose image lists stay under the API's limit on flow-run parameters.
        fan_out = extract_batches.with_options(task_runner=runner)
        keys = ("written", "failed", "bytes", "batches", "task_seconds", "forward_seconds", "after_forward_seconds",
                "after_forward_cpu_seconds")
        counts = dict.fromkeys(keys, 0)
        for part in parameter_chunks(batches):
            part_counts = fan_out(
                store, version, part, model, capture, device, dtype,
                gpu_annotate=bool(device.startswith("cuda") and (dask_address or dask_workers)),
                features=features, limits=limits, pin_gpu=bool(device == "cuda" and dask_workers), compact=compact,
                done_before=counts["batches"], total=len(batches),
            )
            for k in keys:
                counts[k] += part_counts[k]
        # images of a batch that were done before count as skipped once, at the flow level
        totals.update(counts)
        totals["form"] = arrays["form"]

    # 5. Summary artifacts.
    if not pending:
        publish_progress("extract-progress", f"attention extraction into {store}: nothing pending", 1, 1)
    written_bytes = stored_bytes(store, version) - before if pending else 0
    seconds = time.perf_counter() - start
    summary = {
        **totals,
        "stored_bytes": written_bytes,
        "seconds": round(seconds, 3),
        "store": store,
        "version": version,
        "images": len(images),
    }
    row = {"images": len(images), "done": totals["written"], "skipped": totals["skipped"],
           "failed": totals["failed"], "seconds": round(seconds, 2),
           "bytes_written": written_bytes, "store": store, "version": version}
    publish_table("extract-summary", [row],
                  "attention extraction summary (bytes_written: compressed bytes added to the store)")
    measures = measure_rows({k: row[k] for k in ("images", "done", "skipped", "failed", "bytes_written", "seconds")})
    publish_markdown("extract-report", "\n".join(
        [f"# Attention of `{store}` (version {version})", "", f"model `{model}`, {len(images)} images", ""]
        + markdown_table(measures)), "attention extraction: counts and bytes")
    summary["report"] = stage_report(measures)
    logger.info("extract: %d written, %d skipped, %d failed of %d images; %.1f MB added", summary["written"],
                summary["skipped"], summary["failed"], len(images), (summary.get("stored_bytes") or 0) / 1e6)
    return summary


if __name__ == "__main__":
    # A small sample: synthetic birds and the embedded checkpoint (or a tiny random model).
    import tempfile

    from diffparts.corpus import SynthConfig, generate_birds
    from diffparts.model.load import DEFAULT_MODEL

    work = Path(tempfile.mkdtemp(prefix="diffparts-extract-"))
    corpus_dir = generate_birds(work / "birds", n=8, seed=0, config=SynthConfig(image_size=64))
    model_dir = DEFAULT_MODEL
    if not model_dir.exists():
        from diffparts.model.build import build_components, save_components

        model_dir = work / "tiny-model"
        save_components(build_components(words=["bird"], seed=0), model_dir)
    print(extract_attention(str(corpus_dir), str(model_dir), str(work / "attention.zarr"), batch_size=4))
