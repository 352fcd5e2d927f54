"""Flow: one learned text embedding per part category (docs/design.md §5.6 "Part embeddings"), after the parts stage.

1. Set-up (single writer): refuse a store whose parts stage is not done; write the held-out
   split ``embeddings/held_out`` (the corpus's test split, or a seeded half); create
   ``embeddings/<loss>`` for each loss (redone when the categories, the model or the config
   changed); list the (loss, category) pairs not yet done.
2. Fan out one task per (loss, category) on a thread pool or Dask (GPU tasks annotated
   ``resources={"GPU": 1}``); each trains on a fresh pipeline, resumes its own checkpoint after
   a crash, shows a progress artifact, and writes its file, store rows and done marker; the
   stage's progress artifact (``embeddings-progress``) counts the finished tokens.
3. Index files, a table artifact of the final losses (``embeddings-losses``), and a picture per
   category (the token's attention on held-out images and images generated from its prompt),
   embedded in a markdown artifact (``embeddings-pictures``) so the dashboard shows it.
4. Optionally (``measure=True``) the stage's measures on the held-out images, as a table
   (``embeddings-measures``).
"""

from __future__ import annotations

import dataclasses

from prefect import flow, get_run_logger

from flows.artifacts import (markdown_table, markdown_with_pictures, measure_rows,
                             publish_markdown, publish_progress, publish_table, stage_report)
from flows.extract import make_task_runner
from flows.fanout import as_finished, submit_all
from tasks.embeddings import (category_pictures, embedding_summary, finish_index, measure_embeddings,
                              setup_embeddings, train_part_embedding)


@flow(name="embed-batches")
def embed_batches(store: str, corpus: str | None, model: str, plan: list[dict], config: dict, out_dir: str | None,
                  device: str, dtype: str, model_hash: str, gpu_annotate: bool = False) -> list[dict]:
    """Map ``train_part_embedding`` over the plan on this flow's task runner."""
    logger = get_run_logger()
    futures = submit_all(train_part_embedding, plan, lambda p: (store, corpus, model, p["loss"], p["category"], config,
                                                                out_dir, device, dtype, model_hash), gpu_annotate)
    rows = []
    for p, future in as_finished(futures, plan, "embeddings-progress",
                                 f"part tokens of {store}: (loss, category) done"):
        if future.state.is_completed():
            rows.append(future.result())
            logger.info("<part-%d> %s: %d steps, final loss %.5f (%.1f s)", p["category"], p["loss"],
                        rows[-1]["steps"], rows[-1]["final_loss"], rows[-1]["seconds"])
        else:
            rows.append({**p, "failed": str(future.state.message)})
            logger.warning("<part-%d> %s failed: %s", p["category"], p["loss"], future.state.message)
    return rows


def _pictures(pictures: dict) -> list[dict]:
    return [{"title": f"{loss} loss, <part-{c}>: token attention on held-out images (top), images from its "
                      f"prompt (bottom)", "path": pic["path"]}
            for loss, pics in pictures.items() for c, pic in sorted(pics.items(), key=lambda kv: int(kv[0]))]


def _markdown(store: str, summary: list[dict], pictures: dict) -> str:
    lines = [f"# Part embeddings of `{store}`", ""]
    lines += markdown_table([{"loss": r["loss"], "token": f"`{r['token']}`", "steps": r["steps"],
                              "final loss": f"{r['final_loss']:.5f}"} for r in summary])
    return markdown_with_pictures(lines, _pictures(pictures))


@flow(name="train-part-embeddings")
def train_part_embeddings(
    store: str,
    model: str | None = None,
    corpus: str | None = None,
    loss: str = "noise",
    steps: int = 300,
    categories: list[int] | None = None,
    config: dict | None = None,
    out_dir: str | None = None,
    max_workers: int = 2,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    pictures: bool = True,
    picture_config: dict | None = None,
    measure: bool = False,
    measure_config: dict | None = None,
    split_seed: int = 0,
) -> dict:
    """Learn ``<part-k>`` for every part category of ``store`` (or ``categories``).

    loss: noise | noise-unmasked | attention | combined | all. model: hub id or folder (default:
    the model the store was extracted with). corpus: the corpus folder (default: the manifest's).
    config: overrides of ``InversionConfig`` (learning_rate, batch_size, num_vectors, ...).
    picture_config: the pictures' ``n_images`` (4) and generation settings (``generate_steps``,
    ``guidance``); a re-run redraws only the categories it trained.
    out_dir: where the files go (default ``<store>.embeddings/``). Returns small summaries.
    """
    from diffparts.inversion.stage import parse_losses
    from diffparts.inversion.train import InversionConfig

    logger = get_run_logger()
    store = str(store)
    losses = parse_losses(loss)
    cfg = dataclasses.asdict(InversionConfig(**{**(config or {}), "steps": int(steps)}))

    # 1. Set-up (single writer) and the plan.
    setup = setup_embeddings(store, corpus, model, losses, cfg, categories, split_seed, out_dir)
    model = setup["model"]
    for reason in setup["resets"]:
        logger.info(reason)
    logger.info("embeddings: K = %d categories, held out %d images (%s); %d (loss, category) to train%s",
                setup["n_categories"] - 1, setup["held_out"], setup["split"], len(setup["plan"]),
                f"; no training images for {setup['skipped_empty']}" if setup["skipped_empty"] else "")

    # 2. Fan out.
    rows = []
    if setup["plan"]:
        runner = make_task_runner(max_workers, dask_address, dask_workers, gpu=device.startswith("cuda"))
        rows = embed_batches.with_options(task_runner=runner)(
            store, corpus, model, setup["plan"], cfg, out_dir, device, dtype, setup["model_hash"],
            gpu_annotate=bool(device.startswith("cuda") and (dask_address or dask_workers)))
    else:
        publish_progress("embeddings-progress", f"part tokens of {store}: nothing to train", 1, 1)
    failed = [r for r in rows if "failed" in r]

    # 3. Index, table, pictures.
    index = finish_index(store, losses, [r for r in rows if "failed" not in r], out_dir)
    summary = embedding_summary(store, losses)
    publish_table("embeddings-losses", summary or [{"loss": "-", "category": "-", "steps": 0, "final_loss": None}],
                  "final loss (mean of the last 10 steps) per token")
    pics = {}
    if pictures and summary:
        trained = sorted({r["category"] for r in rows if "failed" not in r})
        for name in losses:
            have = sorted({r["category"] for r in summary if r["loss"] == name})
            pics[name] = category_pictures(store, corpus, model, name, have, cfg, out_dir, device, dtype,
                                           picture_config, redraw=trained)
    publish_markdown("embeddings-pictures", _markdown(store, summary, pics),
                     "part tokens: final losses, attention and generated images")
    result = {"store": store, "model": model, "losses": losses, "split": setup["split"],
              "held_out": setup["held_out"], "trained": [r for r in rows if "failed" not in r], "failed": failed,
              "skipped_empty": setup["skipped_empty"], "index": index, "summary": summary,
              "pictures": {loss: {c: p["path"] for c, p in v.items()} for loss, v in pics.items()}}

    # 4. Measures on the held-out images.
    if measure and summary:
        table = measure_embeddings(store, corpus, model, losses, cfg, measure_config or {}, categories, out_dir,
                                   device, dtype)
        publish_table("embeddings-measures", table["means"],
                      "held-out measures per prompt kind (mse: lower explains more)")
        result["measures"] = table
    measures = measure_rows({"tokens": len(summary), "trained now": len(result["trained"]), "failed": len(failed),
                             "held out": setup["held_out"]})
    tables = {"final losses": summary, **({"held-out measures": result["measures"]["means"]} if "measures" in result
                                           else {})}
    result["report"] = stage_report(measures, tables, _pictures(pics))
    return result


if __name__ == "__main__":
    import sys

    print(train_part_embeddings(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/store.zarr", steps=50))
