"""Prefect tasks of the occlusion stage (docs/design.md §5.7 "Occlusion"). Thin: open the store, call one library
function of ``diffparts.occlusion.stage``, return small dicts (never arrays).

Store-touching tasks retry, except on bad input (ValueError, FileNotFoundError).
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.gpu import gpu_slot
from tasks.retry import NO_RETRIES, QUICK_STORAGE, STORAGE_RETRIES


def _root(store: str, mode: str = "r"):
    from diffparts.store import open_store

    return open_store(store, mode)


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def setup_occlusion(store: str, corpus: str | None, model: str | None, config: dict) -> dict:
    """Plan the cases and create ``occlusion/`` (single writer); the cases still to run, or
    ``{"skipped": why}`` when the store has no image to hold out."""
    from diffparts.inversion.saving import require_parts
    from diffparts.inversion.stage import store_model
    from diffparts.occlusion.stage import occlusion_config
    from diffparts.occlusion.stage import setup_occlusion as setup
    from diffparts.store import model_hash

    from diffparts.occlusion.split import NothingToOcclude

    root = _root(store, "r+")
    require_parts(root)                      # refuse before touching the model
    model = store_model(root, model)
    digest = model_hash(model)
    try:
        return {**setup(root, store, corpus, model, occlusion_config(config), digest,
                        log=get_run_logger().info), "model": model}
    except NothingToOcclude as err:          # a corpus too small to hold an image out: skipped, not failed
        return {"skipped": str(err), "model": model}


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # compute: an error or OOM would only repeat
def run_cases(store: str, corpus: str | None, model: str, cases: list[int], device: str = "cpu",
              dtype: str = "float32") -> dict:
    """One batch of cases: occlude, detect, complete, measure, write; failures recorded per case."""
    from diffparts.occlusion.cases import run_cases as run

    with gpu_slot(device):
        return run(_root(store, "r+"), store, corpus, model, cases, device, dtype)


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def summarize_occlusion(store: str) -> dict:
    """The table over the finished cases: detection and one row per variant."""
    from diffparts.occlusion.stage import summarize_occlusion as summarize

    return summarize(_root(store))


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # picture: an error would only repeat
def occlusion_grid(store: str, n: int = 6) -> dict:
    """The picture grid (original, occluded, each completion) as a PNG beside the store (the flow embeds it)."""
    from diffparts.inversion.pictures import save_png
    from diffparts.occlusion.stage import occlusion_dir
    from diffparts.occlusion.stage import occlusion_grid as grid

    picture = grid(_root(store), n=n)
    return {"path": str(save_png(picture, occlusion_dir(store) / "grid.png"))}
