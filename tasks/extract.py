"""Prefect tasks of the extract stage (docs/design.md §5.1 and §6).

Thin: each reads its inputs, calls the library, writes through ``diffparts.store`` and returns
small pointers and counts, never arrays. Tasks that touch the store retry.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.extract_compact import compact_image
from tasks.gpu import gpu_slot
from tasks.retry import NO_RETRIES, QUICK_STORAGE, STORAGE_RETRIES

# One pipeline per (model, device, dtype) per worker process, and one forward at a time on it:
# the capture installs attention processors on the shared UNet (docs/design.md §5.1 "Extract"). Task bodies reach
# these only through module functions: Dask pickles the task functions by value (the module
# attribute is the Task), and functions referenced from them by reference, never the locks.
# So a Dask worker process imports this module once and keeps its pipelines across tasks;
# ``pipeline_stats`` counts loads and uses per key to show it (docs/cluster.md).
_PIPELINES: dict[tuple, object] = {}
_PIPELINE_STATS: dict[tuple, dict[str, int]] = {}
_PIPELINE_LOCK = threading.Lock()
_FORWARD_LOCK = threading.Lock()


def _pipeline(model: str, device: str, dtype: str):
    import torch

    from diffparts.logs import quiet_third_party
    from diffparts.model.load import load_pipeline

    quiet_third_party(import_now=True)
    key = (str(model), device, dtype)
    with _PIPELINE_LOCK:
        stats = _PIPELINE_STATS.setdefault(key, {"loads": 0, "uses": 0})
        if key not in _PIPELINES:
            start = time.perf_counter()
            pipe = load_pipeline(model, device=device, dtype=getattr(torch, dtype))
            pipe.set_progress_bar_config(disable=True)
            _PIPELINES[key] = pipe
            stats["loads"] += 1
            _log_load(key, time.perf_counter() - start)
        stats["uses"] += 1
        return _PIPELINES[key]


def _log_load(key: tuple, seconds: float) -> None:
    """One line per model load, naming the process (and Dask worker) that keeps it."""
    import logging
    import os
    import socket

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        logger = get_run_logger()
    except MissingContextError:  # outside a Prefect run (a notebook calling task.fn)
        logger = logging.getLogger(__name__)
    try:
        from distributed import get_worker

        where = f"dask worker {get_worker().address}"
    except (ImportError, ValueError):  # not inside a Dask worker
        where = "this process"
    logger.info("loaded model %s (%s, %s) in %.1f s on %s, pid %d on %s; kept for the process's later tasks",
                key[0], key[1], key[2], seconds, where, os.getpid(), socket.gethostname())


def pipeline_stats() -> dict[str, dict[str, int]]:
    """``{"model|device|dtype": {"loads", "uses"}}`` in this process: ``loads`` stays 1 per key
    however many tasks (``uses``) ran here. Read it on every Dask worker with
    ``distributed.Client.run(pipeline_stats)``."""
    with _PIPELINE_LOCK:
        return {"|".join(key): dict(stats) for key, stats in _PIPELINE_STATS.items()}


def _run_extractor(pipe, images: np.ndarray, config, features=None, device_tensors: bool = False):
    """``diffparts.model.extract.extract_attention`` on a batch, one forward at a time per process.

    The function is looked up when called (tests replace it in-process with monkeypatch); no
    flow parameter can name another one (issue 12: a deployment must not import and call any
    function it is given).
    """
    from diffparts.model import extract

    with _FORWARD_LOCK:
        if device_tensors:
            return extract.extract_attention(pipe, images, config, features, device_tensors=True)
        if features is None:
            return extract.extract_attention(pipe, images, config)
        return extract.extract_attention(pipe, images, config, features)


def _limits(limits: dict | None):
    """ReadLimits from the flow's plain dict (None: the defaults)."""
    from diffparts.corpus import ReadLimits

    return ReadLimits(**(limits or {}))


def _feature_config(features: dict | None):
    """FeatureConfig from the flow's plain dict (None: no feature capture)."""
    if features is None:
        return None
    from diffparts.model.features import FeatureConfig

    blocks = features.get("blocks")
    return FeatureConfig(**{**features, "blocks": None if blocks is None else tuple(blocks)})


def _stages(features: dict | None) -> tuple[str, ...]:
    from diffparts.store import FEATURES, STAGE

    return (STAGE,) if features is None else (STAGE, FEATURES)


def _capture_config(capture: dict):
    from diffparts.model.extract import CaptureConfig

    return CaptureConfig(**capture)


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def describe_images(corpus: str, limits: dict | None = None, store: str | None = None) -> list[dict]:
    """Corpus records -> ``[{"image_id", "name", "sha256", "size", "mtime_ns", "path", "refused"}]``.

    The corpus is validated here, once (a malformed metadata line fails the run at once, not
    retried); ``refused`` is the reader's reason for an image it will not open, else None.
    With ``store`` (an existing one), an image file whose size and mtime equal those recorded
    with its hash in the store's manifest is not hashed again (``store.known_hashes``).
    """
    from diffparts.corpus import open_corpus
    from diffparts.store import describe_images as describe
    from diffparts.store import known_hashes, open_store

    read_limits = _limits(limits)
    records = list(open_corpus(corpus, limits=read_limits))
    try:
        known = known_hashes(open_store(store)) if store else {}
    except FileNotFoundError:                    # a new store: every image is hashed
        known = {}
    rows = describe(records, read_limits, known)
    return [{**row, "path": str(rec.path), "refused": rec.refused,
             "bbox": None if getattr(rec, "bbox", None) is None else [float(v) for v in rec.bbox]}
            for row, rec in zip(rows, records)]


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def identify_run(model: str, capture: dict, precision: str, features: dict | None = None,
                 device: str = "cpu", dtype: str = "float32", batch_size: int = 4) -> dict:
    """The store identity of this run: model id and content hash, config and its hash, compute.

    Feature settings enter the config only when features are captured, so stores written
    without them keep their config hash. ``compute`` (device kind, dtype, batch size) is
    compared apart from the config hash, so stores written before it keep theirs.
    """
    from diffparts.model.extract import CaptureConfig
    from diffparts.store import StoreConfig, build_manifest, compute_settings, model_hash

    config = {"capture": asdict(CaptureConfig(**capture)), "precision": StoreConfig(precision).precision}
    if features is not None:
        config["features"] = asdict(_feature_config(features))
    compute = compute_settings(device, dtype, batch_size)
    return build_manifest(str(model), model_hash(model), config, compute)


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def prepare_store(store: str, images: list[dict], identity: dict, new_version: bool,
                  corpus: str | None = None, features: dict | None = None,
                  lock_stale_s: float = 600.0) -> dict:
    """Create or extend the store (single writer, under the set-up lock); pending images.

    ``corpus`` goes into the manifest (path and kind) for the later stages; with ``features``
    an image is pending until both its attention and its features are done. ``lock_stale_s``:
    a set-up lock older than this is taken over (``LockConfig.stale_after_s``).
    """
    from diffparts.store import LockConfig, describe_corpus, done_mask, open_store
    from diffparts.store import prepare_store as prepare

    stages = _stages(features)
    report = prepare(store, images, identity, stages=stages, new_version=new_version,
                     corpus=describe_corpus(corpus) if corpus else None,
                     lock=LockConfig(stale_after_s=lock_stale_s))
    root = open_store(store, "r", version=report.version)
    done = np.logical_and.reduce([done_mask(root, stage) for stage in stages])
    indexed = [{**img, "index": k} for img, k in zip(images, report.indices)]
    return {
        "version": report.version,
        "images": indexed,
        "pending": [img["index"] for img in indexed if not done[img["index"]]],
        "added": report.added,
        "changed": report.changed,
    }


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def create_attention_arrays(
    store: str, version: int, model: str, capture: dict, precision: str, device: str, dtype: str,
    features: dict | None = None, lock_stale_s: float = 600.0, keep_attention: bool | None = None,
) -> dict:
    """Learn R, the tokens (and feature shapes) from one blank image, then create the arrays.

    The probe runs outside the set-up lock; creating (or checking and growing) the arrays runs
    inside it, so a concurrent run's set-up never sees half-made arrays. ``keep_attention``:
    the form of a new attention group (``store.compact.attention_form``: None = by size);
    an existing group keeps its own form. Returns resolution, tokens, form (and feature shapes).
    """
    from diffparts.model.extract import native_image_size
    from diffparts.store import (LockConfig, attention_form, create_feature_arrays, has_attention_arrays, has_features,
                                 open_store)
    from diffparts.store import create_attention_arrays as create
    from diffparts.store import setup_lock

    root = open_store(store, "r+", version=version)
    feature_config = _feature_config(features)
    if not has_attention_arrays(root) or (feature_config is not None and not has_features(root)):
        config = _capture_config(capture)
        pipe = _pipeline(model, device, dtype)
        size = config.image_size or native_image_size(pipe)
        probe = _run_extractor(pipe, np.zeros((1, size, size, 3), np.uint8), config, feature_config)
        with setup_lock(store, LockConfig(stale_after_s=lock_stale_s)):
            root = open_store(store, "r+", version=version)  # as the last holder left it
            form = (root["attention"].attrs.get("form", "full") if has_attention_arrays(root)
                    else attention_form(probe.resolution, keep_attention))
            create(root, probe.resolution, probe.tokens, probe.image_size, precision, form)
            if feature_config is not None:
                create_feature_arrays(root, {b: f.shape[1:] for b, f in probe.features.items()},
                                      asdict(feature_config))
    attrs = dict(root["attention"].attrs)
    form = attrs.get("form", "full")
    if keep_attention is not None and attention_form(attrs["resolution"], keep_attention) != form:
        raise ValueError(f"{store} holds a {form} attention group; "
                         f"{'--keep-attention' if keep_attention else '--no-keep-attention'} asks for the other "
                         "form: extract into a new store or with --new-version")
    out = {"resolution": attrs["resolution"], "tokens": len(attrs["tokens"]), "form": attrs.get("form", "full"),
           "image_size": attrs.get("image_size", 0)}
    if feature_config is not None:
        out["features"] = dict(root["features"].attrs["shapes"])
    return out


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # compute: an error or OOM would only repeat
def extract_batch(
    store: str, version: int, batch: list[dict], model: str, capture: dict, device: str, dtype: str,
    features: dict | None = None, limits: dict | None = None, pin_gpu: bool = False, compact: dict | None = None,
) -> dict:
    """Extract one fixed batch of images and write the ones not yet done.

    ``compact`` (a compact store: ``{"settings", "descriptor", "precision"}``): instead of the
    full self-attention, each image is segmented right after the forward, on the model's device
    (``tasks.extract_compact.compact_image``), and its attention pooled per object-box bin;
    segments are marked done before the attention marker, so a kill in between only redoes the image.

    ``pin_gpu``: on a worker of the flow's own local Dask cluster, a bare ``cuda`` becomes
    this worker's GPU, ``cuda:<worker number mod GPUs>`` (``diffparts.model.devices``).

    ``batch``: ``[{"index", "image_id", "name", "path", "refused"}]``, a fixed run of store
    indices; a refused image (``describe_images``) is recorded as failed without being opened,
    and ``limits`` (ReadLimits fields) bound what the others may cost to load. All
    readable images of the batch go through the model together even if some are done already,
    so a resumed run computes every image in the same batch as an uninterrupted run (batched
    float arithmetic can differ in the last bit with the batch's make-up); only images whose
    done marker is unset are written, each marked done after its data (features first, then
    attention: an image is done when both are).
    """
    from diffparts.corpus import ImageLoadError, load_rgb
    from diffparts.model.extract import native_image_size, prepare_images
    from diffparts.store import (FEATURES, STAGE, is_done, mark_done, open_store, record_failure, write_attention,
                                 write_features)

    start = time.perf_counter()
    root = open_store(store, "r+", version=version)
    stages = _stages(features)
    todo = [img for img in batch if not all(is_done(root, stage, img["index"]) for stage in stages)]
    counts = {"written": 0, "skipped": len(batch) - len(todo), "failed": 0, "bytes": 0}
    if not todo:
        return {**counts, "seconds": time.perf_counter() - start, "store": store}

    # 1. Load: unreadable images become failures; the rest of the batch goes on.
    config = _capture_config(capture)
    if pin_gpu:
        from diffparts.model.devices import pinned_device

        device = pinned_device(device)
    pipe = _pipeline(model, device, dtype)
    size = config.image_size or native_image_size(pipe)
    pending = {img["index"] for img in todo}
    loaded, pixels, sizes = [], [], {}
    read_limits = _limits(limits)
    for img in batch:
        try:
            if img.get("refused"):
                raise ImageLoadError(img["path"], img["refused"])
            rgb = load_rgb(img["path"], limits=read_limits)  # y x 3
            sizes[img["index"]] = (int(rgb.shape[1]), int(rgb.shape[0]))  # width height
            pixels.append(prepare_images(rgb[None], size)[0])  # y x 3
            loaded.append(img)
        except ImageLoadError as err:
            if img["index"] in pending:
                record_failure(root, STAGE, img["image_id"], img["name"], f"load: {err.reason}", index=img["index"])
                counts["failed"] += 1
    # 2. One forward for the batch (docs/design.md §5.1 "Extract"), 3. write each pending image, then its marker.
    counts.update(forward_seconds=0.0, after_forward_seconds=0.0, after_forward_cpu_seconds=0.0)
    if any(img["index"] in pending for img in loaded):
        with gpu_slot(device):   # one slot of prefect.yaml's GPU limit while the GPU works
            tick = time.perf_counter()
            result = _run_extractor(pipe, np.stack(pixels), config, _feature_config(features),
                                    device_tensors=compact is not None)  # image ...
            counts["forward_seconds"] = time.perf_counter() - tick
            tick, cpu = time.perf_counter(), time.process_time()
            for k, img in enumerate(loaded):
                if img["index"] in pending:
                    if features is not None:
                        counts["bytes"] += write_features(root, img["index"],
                                                          {b: f[k] for b, f in result.features.items()})
                        mark_done(root, FEATURES, img["index"])
                    if compact is None:
                        counts["bytes"] += write_attention(root, img["index"], result.self_attn[k],
                                                           result.cross_attn[k])
                    else:
                        counts["bytes"] += compact_image(root, img["index"], result.self_attn[k],
                                                          result.cross_attn[k], compact, img.get("bbox"),
                                                          sizes[img["index"]])
                    mark_done(root, STAGE, img["index"])
                    counts["written"] += 1
            counts["after_forward_seconds"] = time.perf_counter() - tick
            counts["after_forward_cpu_seconds"] = time.process_time() - cpu
    return {**counts, "seconds": time.perf_counter() - start, "store": store}


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def record_batch_failure(store: str, version: int, batch: list[dict], reason: str) -> int:
    """A batch task failed for good: record every unfinished image of it as failed."""
    from diffparts.store import STAGE, is_done, open_store, record_failure

    root = open_store(store, "r+", version=version)
    failed = 0
    for img in batch:
        if not is_done(root, STAGE, img["index"]):
            record_failure(root, STAGE, img["image_id"], img["name"], reason, index=img["index"])
            failed += 1
    return failed


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def stored_bytes(store: str, version: int) -> int:
    """Bytes the attention (and feature) arrays occupy in the store (after compression)."""
    from diffparts.store import FEATURES, STAGE, open_store, stage_arrays

    root = open_store(store, "r", version=version)
    return int(sum(arr.nbytes_stored() for stage in (STAGE, FEATURES) for arr in stage_arrays(root, stage).values()))


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # compute: an error would only repeat
def sample_thresholds(store: str, version: int, batches: list[list[dict]], wanted: list[int], model: str,
                      capture: dict, device: str, dtype: str, precision: str, rule: dict, limits: dict | None = None,
                      features: dict | None = None) -> dict:
    """DiffSeg thresholds of a compact store, before its fan-out: the same choice
    (``diffparts.segment.thresholds.choose_thresholds``) the segment stage makes from the first
    images' stored attention, here from forwards of those images (their ``batches``, made up as
    the fan-out's, so the attention is the same), rounded to ``precision`` as a read would give it.
    Only one image's attention is held at a time besides its batch's forward; the forwards are
    the price of a compact store (``sample`` images once per store, docs/store.md).
    """
    from diffparts.corpus import ImageLoadError, load_rgb
    from diffparts.model.extract import native_image_size, prepare_images
    from diffparts.segment.thresholds import ThresholdRule, choose_thresholds as choose
    from diffparts.store import stored_self_attention

    config = _capture_config(capture)
    pipe = _pipeline(model, device, dtype)
    size = config.image_size or native_image_size(pipe)
    wanted_set = set(int(i) for i in wanted)
    read_limits = _limits(limits)

    def attentions():
        for batch in batches:
            readable, pixels = [], []
            for img in batch:   # the fan-out's batch make-up: unreadable images are left out there too
                try:
                    if img.get("refused"):
                        continue
                    pixels.append(prepare_images(load_rgb(img["path"], limits=read_limits)[None], size)[0])
                    readable.append(img)
                except ImageLoadError:
                    continue
            if not readable:
                continue
            pixels = np.stack(pixels)
            result = _run_extractor(pipe, pixels, config, _feature_config(features))
            for k, img in enumerate(readable):
                if img["index"] in wanted_set:
                    yield stored_self_attention(result.self_attn[k], precision)

    rule = ThresholdRule(**{k: tuple(v) if isinstance(v, list) else v for k, v in rule.items()})
    return choose(attentions(), rule).as_dict()


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def create_compact_arrays(store: str, version: int, resolution: int, descriptor: dict,
                          lock_stale_s: float = 600.0) -> None:
    """``attention/box_bins`` of a compact store (``store.compact``), under the set-up lock."""
    from diffparts.store import LockConfig, create_box_bin_arrays, open_store, setup_lock

    with setup_lock(store, LockConfig(stale_after_s=lock_stale_s)):
        create_box_bin_arrays(open_store(store, "r+", version=version), resolution, descriptor)
