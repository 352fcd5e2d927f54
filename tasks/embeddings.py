"""Prefect tasks of the embeddings stage (docs/design.md §5.6 "Part embeddings"). Thin: open the store, call one library
function of ``diffparts.inversion.stage``, return small rows (never tensors).

Store-touching tasks retry, except on bad input (ValueError, FileNotFoundError): those are
deterministic and a retry only repeats the error.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.gpu import gpu_slot
from tasks.retry import NO_RETRIES, QUICK_STORAGE, STORAGE_RETRIES


def _quiet() -> None:
    """Third-party warnings and loading bars off (their own settings) in tasks that load a model."""
    from diffparts.logs import quiet_third_party

    quiet_third_party(import_now=True)


def _root(store: str, mode: str = "r"):
    from diffparts.store import open_store

    return open_store(store, mode)


def _config(config: dict, loss: str | None = None):
    from diffparts.inversion.train import InversionConfig

    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()}
    if loss is not None:
        values["loss"] = loss
    return InversionConfig(**values)


@task(**STORAGE_RETRIES, cache_policy=NO_CACHE)
def setup_embeddings(store: str, corpus: str | None, model: str | None, losses: list[str], config: dict,
                     categories: list[int] | None, split_seed: int = 0, out_dir: str | None = None) -> dict:
    """Held-out split, ``embeddings/<loss>`` groups, and the (loss, category) pairs to train."""
    from diffparts.inversion.saving import require_parts
    from diffparts.inversion.stage import setup_embeddings as setup
    from diffparts.inversion.stage import store_model, text_channels
    from diffparts.store import model_hash

    _quiet()
    root = _root(store, "r+")
    require_parts(root)                     # refuse before touching the model
    model = store_model(root, model)
    digest = model_hash(model)
    plan = setup(root, corpus, losses, _config(config), digest, text_channels(model), categories, split_seed,
                 store=store, out_dir=out_dir)
    return {**plan, "model": model, "model_hash": digest}


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # compute: an error or OOM would only repeat
def train_part_embedding(store: str, corpus: str | None, model: str, loss: str, category: int, config: dict,
                         out_dir: str | None, device: str, dtype: str, model_hash: str) -> dict:
    """Train one category's token with one loss (resuming its checkpoint); its index row.

    A progress artifact ``embed-<loss>-part-<k>`` advances every few steps.
    """
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    _quiet()
    from diffparts.inversion.stage import train_category

    cfg = _config(config, loss)
    artifact = create_progress_artifact(progress=0.0, key=f"embed-{loss}-part-{category}",
                                        description=f"<part-{category}> with the {loss} loss ({cfg.steps} steps)")
    every = max(1, cfg.steps // 20)

    def progress(step: int, steps: int, value: float) -> None:
        if step % every == 0 or step == steps:
            update_progress_artifact(artifact, progress=100.0 * step / steps)

    with gpu_slot(device):
        return train_category(_root(store, "r+"), store, corpus, model, category, cfg, out_dir, device, dtype,
                              model_hash, progress)


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def finish_index(store: str, losses: list[str], rows: list[dict], out_dir: str | None) -> list[str]:
    """Each loss's ``index.json`` with this run's rows merged in."""
    from diffparts.inversion.stage import finish_index as finish

    return finish(store, losses, rows, out_dir)


@task(**QUICK_STORAGE, cache_policy=NO_CACHE)
def embedding_summary(store: str, losses: list[str]) -> list[dict]:
    """(loss, category) rows of the store: steps and final loss of every finished token."""
    from diffparts.inversion.stage import embedding_summary as summary

    return summary(_root(store), losses)


def _picture_progress(loss: str):
    """``on_picture(done, total)`` for the token pictures (minutes for K tokens on a CPU): a log
    line, the ``embeddings-pictures-progress`` artifact and a bar on a terminal (issue 21)."""
    from prefect import get_run_logger
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    from diffparts.logs import terminal_progress

    logger = get_run_logger()
    state: dict = {}

    def on_picture(done: int, total: int) -> None:
        percent = round(100.0 * done / max(total, 1), 2)
        if "id" not in state:
            state["id"] = create_progress_artifact(percent, key="embeddings-pictures-progress",
                                                   description=f"pictures of the {loss} tokens: attention, generated images")
        else:
            update_progress_artifact(state["id"], progress=percent)
        logger.info("pictures of the %s tokens: %d of %d drawn", loss, done, total)
        terminal_progress(f"embeddings pictures ({loss})", done, total)

    return on_picture


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # pictures: an error or OOM would only repeat
def category_pictures(store: str, corpus: str | None, model: str, loss: str, categories: list[int] | None,
                      config: dict, out_dir: str | None, device: str, dtype: str,
                      picture_config: dict | None = None, redraw: list[int] | None = None) -> dict:
    """{category: {"path": PNG}}: token attention and generated images (the flow embeds them).

    picture_config: ``n_images`` (default 4) and MeasureConfig fields (generate_steps, guidance).
    redraw: with a list, only those categories are drawn again; the others reuse their saved
    PNG where it exists (a re-run that trained nothing draws nothing).
    """
    from diffparts.inversion.evaluate import MeasureConfig
    from diffparts.inversion.pictures import save_png
    from diffparts.inversion.saving import embeddings_dir
    from diffparts.inversion.stage import category_pictures as pictures

    _quiet()
    directory = embeddings_dir(store, loss, out_dir)
    out = {}
    draw = list(categories) if categories is not None else None
    if redraw is not None and draw is not None:
        for c in [c for c in draw if c not in set(redraw) and (directory / f"part-{c}.png").is_file()]:
            out[c] = {"path": str(directory / f"part-{c}.png")}
        draw = [c for c in draw if c not in out]
    if draw is None or draw:
        options = dict(picture_config or {})
        n_images = int(options.pop("n_images", 4))
        pics = pictures(_root(store), store, corpus, model, loss, draw, n_images=n_images,
                        config=_config(config, loss), measure=MeasureConfig(**options), out_dir=out_dir,
                        device=device, dtype=dtype, on_picture=_picture_progress(loss))
        out.update({c: {"path": str(save_png(p, directory / f"part-{c}.png"))} for c, p in pics.items()})
    return dict(sorted(out.items()))


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # compute: an error or OOM would only repeat
def measure_embeddings(store: str, corpus: str | None, model: str, losses: list[str], config: dict,
                       measure: dict, categories: list[int] | None, out_dir: str | None, device: str,
                       dtype: str) -> dict:
    """The stage's table on held-out images (explains / localises / generates)."""
    from diffparts.inversion.evaluate import MeasureConfig
    from diffparts.inversion.stage import measure_embeddings as run

    _quiet()
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in measure.items()}
    return run(_root(store), store, corpus, model, losses, _config(config), MeasureConfig(**values), categories,
               out_dir, device, dtype)
