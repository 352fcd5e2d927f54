"""Prefect tasks of the parts stage (docs/design.md §5.5 "Parts"). Thin: open the store, call one library
function, return a small summary (never arrays). Tasks that touch the store retry."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.retry import NO_RETRIES, QUICK_STORAGE, STORAGE_RETRIES


def _root(store: str, mode: str = "r"):
    from diffparts.store import open_store

    return open_store(store, mode)


def _infos(root, corpus: str | None, indices: list[int] | None = None):
    from diffparts.parts.dataset import load_infos

    return load_infos(root, corpus, indices)


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def require_segments(store: str) -> list[int]:
    """Store indices to use; fails (ValueError) if any image's segmentation is not done."""
    from diffparts.parts.dataset import require_segments as require

    return require(_root(store))


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def build_descriptors(store: str, corpus: str | None, config: dict, indices: list[int]) -> dict:
    """parts/descriptors for the given images (one sequential pass, ragged rows)."""
    from diffparts.parts.dataset import build_descriptors as build
    from diffparts.parts.descriptors import DescriptorConfig

    root = _root(store, "r+")
    return build(root, _infos(root, corpus, indices), DescriptorConfig(**config))


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def cluster_parts(store: str, config: dict) -> dict:
    """Streaming clustering of the foreground descriptors into K part categories."""
    from diffparts.parts.cluster import ClusterConfig
    from diffparts.parts.dataset import cluster_parts as cluster

    cfg = {**config, "k_range": tuple(config.get("k_range", (3, 12)))}
    if cfg.get("n_clusters", "default") == "default":     # the flow's k=None: ClusterConfig's fixed K
        cfg.pop("n_clusters", None)
    elif cfg["n_clusters"] == "auto":                      # K chosen by silhouette
        cfg["n_clusters"] = None
    return cluster(_root(store, "r+"), ClusterConfig(**cfg))


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def paint_part_labels(store: str) -> dict:
    """parts/labels (image, y, x), done markers, and per-category prevalence."""
    from diffparts.parts.dataset import paint_part_labels as paint

    return paint(_root(store, "r+"))


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # pictures: an error would only repeat
def save_store_pictures(store: str, corpus: str | None, out_dir: str, max_images: int = 64) -> dict:
    """Overlay grid and per-category galleries as PNG; returns their paths."""
    from diffparts.parts.gallery import save_store_pictures as save

    root = _root(store)
    paths = save(root, _infos(root, corpus), out_dir, max_images=max_images)
    return {k: [str(p) for p in v] for k, v in paths.items()}


def _run_log():
    """The run logger's ``info`` inside a flow or task run; None (the library's logger) outside one."""
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger().info
    except MissingContextError:
        return None


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # compute: an error would only repeat
def evaluate_store(store: str, corpus: str | None, max_pairs: int = 2000, seed: int = 0,
                   method: str = "auto") -> dict | None:
    """NMI/ARI at keypoints and PCK@0.05/0.1 over same-class pairs; None without keypoints."""
    from diffparts.parts.scoring import evaluate_store as evaluate

    root = _root(store)
    try:
        return evaluate(root, _infos(root, corpus), max_pairs=max_pairs, random_state=seed, method=method,
                        log=_run_log())
    except ValueError as err:
        if "nothing to evaluate" in str(err):
            return None
        raise


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def count_images(store: str) -> int:
    """Images on the store's image axis (to say how many a stage left out)."""
    from diffparts.store import image_count

    return image_count(_root(store))


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def current_parts(store: str, indices: list[int], settings: dict) -> dict:
    """{"identity", "summary"}: the summary of the last run when the parts stage is up to date
    for these images and settings (else None: cluster again)."""
    from diffparts.parts.freshness import parts_identity, stored_summary

    root = _root(store)
    identity = parts_identity(root, indices, settings)
    return {"identity": identity, "summary": stored_summary(root, identity, indices)}


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def record_parts_run(store: str, identity: dict, summary: dict) -> None:
    """Record this run's identity and summary on parts/, so the next run can skip the stage."""
    from diffparts.parts.freshness import record_summary

    record_summary(_root(store, "r+"), identity, summary)
