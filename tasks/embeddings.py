"""Prefect tasks of the embeddings stage (DESIGN 5.6). Thin: open the store, call one library
function of ``diffparts.inversion.stage``, return small rows (never tensors).

Store-touching tasks retry, except on bad input (ValueError, FileNotFoundError): those are
deterministic and a retry only repeats the error.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.retry import retry_unless_bad_input


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


@task(retries=2, retry_delay_seconds=1, retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE)
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


@task(retries=1, retry_delay_seconds=1, retry_condition_fn=retry_unless_bad_input, cache_policy=NO_CACHE)
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

    return train_category(_root(store, "r+"), store, corpus, model, category, cfg, out_dir, device, dtype,
                          model_hash, progress)


@task(retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def finish_index(store: str, losses: list[str], rows: list[dict], out_dir: str | None) -> list[str]:
    """Each loss's ``index.json`` with this run's rows merged in."""
    from diffparts.inversion.stage import finish_index as finish

    return finish(store, losses, rows, out_dir)


@task(cache_policy=NO_CACHE)
def embedding_summary(store: str, losses: list[str]) -> list[dict]:
    """(loss, category) rows of the store: steps and final loss of every finished token."""
    from diffparts.inversion.stage import embedding_summary as summary

    return summary(_root(store), losses)


@task(cache_policy=NO_CACHE)
def category_pictures(store: str, corpus: str | None, model: str, loss: str, categories: list[int] | None,
                      config: dict, out_dir: str | None, device: str, dtype: str) -> dict:
    """{category: {"path": PNG, "uri": data URI}}: token attention and generated images."""
    from diffparts.inversion.pictures import data_uri, save_png
    from diffparts.inversion.saving import embeddings_dir
    from diffparts.inversion.stage import category_pictures as pictures

    _quiet()
    pics = pictures(_root(store), store, corpus, model, loss, categories, config=_config(config, loss),
                    out_dir=out_dir, device=device, dtype=dtype)
    directory = embeddings_dir(store, loss, out_dir)
    return {c: {"path": str(save_png(p, directory / f"part-{c}.png")), "uri": data_uri(p)} for c, p in pics.items()}


@task(cache_policy=NO_CACHE)
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
