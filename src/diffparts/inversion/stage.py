"""The embeddings stage over a store: set-up, one category's training, the measures.

What the Prefect tasks call (``tasks/embeddings.py``), and what a notebook or test calls
without a server. The set-up is the single writer of metadata; each category's training writes
only its own chunk of ``embeddings/<loss>/*`` and its own files.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from diffparts.inversion.data import (STAGE, category_indices, category_pixels, corpus_path, held_out_split,
                                     load_examples, subset)
from diffparts.inversion.saving import (embedding_file, embeddings_dir, prepare_loss_group, read_index,
                                        record_embedding, remove_embedding_files, require_parts, write_held_out,
                                        write_index)
from diffparts.inversion.tokens import part_token
from diffparts.inversion.train import LOSSES, InversionConfig, train_token


def store_model(root, model: str | None) -> str:
    """``model``, else the model the store's attention was extracted with (manifest)."""
    if model:
        return str(model)
    name = root.attrs.get("manifest", {}).get("model")
    if not name:
        raise ValueError("the store's manifest names no model; pass --model")
    return str(name)


def parse_losses(loss: str | Sequence[str]) -> list[str]:
    """``"all"`` -> every loss; a name or list of names -> checked list."""
    names = list(LOSSES) if loss == "all" else ([loss] if isinstance(loss, str) else list(loss))
    bad = [n for n in names if n not in LOSSES]
    if bad or not names:
        raise ValueError(f"loss must be one of {LOSSES} or 'all', got {loss!r}")
    return names


def text_channels(model: str | Path | None) -> int:
    """Width of the model's token embeddings, from its text encoder's config (no weights loaded)."""
    from transformers import AutoConfig

    from diffparts.model.load import _check_folder, _hub_offline, _resolve

    source, local = _resolve(model)
    if local:
        _check_folder(Path(source))
    config = AutoConfig.from_pretrained(source, subfolder="text_encoder", local_files_only=local or _hub_offline())
    return int(config.hidden_size)


def setup_embeddings(root, corpus: str | Path | None, losses: Sequence[str], config: InversionConfig,
                     model_hash: str, channels: int, categories: Sequence[int] | None = None, split_seed: int = 0,
                     min_pixels: int = 4, store: str | None = None, out_dir: str | Path | None = None) -> dict:
    """Split, groups and the plan: which (loss, category) still need training.

    Refuses a store whose parts stage is not done, a category outside 1..K, or a requested
    category with no training image. Categories not requested explicitly that have no
    training image are left out and reported. With ``store`` (its path), a category counts as
    done only if its file beside the store exists too.
    """
    from diffparts.corpus import open_corpus
    from diffparts.store import image_table

    k1 = require_parts(root)
    records = list(open_corpus(corpus_path(root, corpus)))
    names = [row["name"] for row in image_table(root)]
    held, rule = held_out_split(names, records, seed=split_seed)
    write_held_out(root, held, rule)
    all_cats = list(range(1, k1))
    if categories is None:
        wanted = all_cats
    else:
        wanted = [int(c) for c in categories]
        bad = [c for c in wanted if c not in all_cats]
        if bad:
            raise ValueError(f"categories {bad} are not part categories of this store (1..{k1 - 1}; 0 is background)")
    pixels = category_pixels(root)
    if "category_pixels" not in root["parts"]:       # painted before issue 20: counted once, kept
        from diffparts.parts.dataset import write_category_pixels

        write_category_pixels(root, {int(i): pixels[i] for i in range(len(pixels))})
    counts = {c: len(category_indices(root, c, held_out=False, min_pixels=min_pixels, pixels=pixels))
              for c in wanted}
    empty = [c for c in wanted if counts[c] == 0]
    if empty and categories is not None:
        raise ValueError(f"part categories {empty} have no training images (held-out split: {rule})")
    plan, resets = [], []
    for loss in losses:
        cfg = dataclasses.replace(config, loss=loss)
        group = prepare_loss_group(root, loss, k1, cfg.num_vectors, channels, model_hash, _config_record(cfg))
        directory = embeddings_dir(store, loss, out_dir) if store is not None else None
        if group["reset"]:
            resets.append(group["reset"])
            if directory is not None:
                remove_embedding_files(directory)
        steps = np.asarray(root[f"{STAGE}/{loss}/steps"][:])
        done = [c for c in group["done"] if directory is None or embedding_file(directory, c).is_file()]
        # done with at least the steps asked: kept; fewer (a longer run asked): resumed
        plan += [{"loss": loss, "category": c, "images": counts[c]} for c in wanted
                 if counts[c] > 0 and (c not in done or steps[c] < cfg.steps)]
    return {"n_categories": k1, "split": rule, "held_out": int(held.sum()), "train_images": counts,
            "skipped_empty": empty, "plan": plan, "resets": resets}


def _config_record(config: InversionConfig) -> dict:
    """The identity of a loss group: the config without its step count (more steps resume)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in ("steps", "checkpoint_every")}


def train_category(root, store: str, corpus: str | Path | None, model: str, category: int, config: InversionConfig,
                   out_dir: str | Path | None = None, device: str = "cpu", dtype: str = "float32",
                   model_hash: str = "", progress: Callable[[int, int, float], None] | None = None,
                   min_pixels: int = 4) -> dict:
    """Train category ``category`` with ``config.loss`` on a fresh pipeline; resume its checkpoint.

    Writes ``part-<k>.safetensors``, the store rows and the done marker; returns the index row.
    """
    import torch

    from diffparts.model.extract import native_image_size
    from diffparts.model.load import load_pipeline

    directory = embeddings_dir(store, config.loss, out_dir)
    pipe = load_pipeline(model, device=device, dtype=getattr(torch, dtype))
    indices = subset(category_indices(root, category, held_out=False, min_pixels=min_pixels), config.max_images,
                     config.seed)
    examples = load_examples(root, corpus, category, indices, native_image_size(pipe))
    start = time.perf_counter()
    result = train_token(pipe, examples, part_token(category), config,
                         checkpoint=directory / "checkpoints" / f"part-{category}.safetensors", progress=progress)
    row = record_embedding(root, directory, result, model_hash, config)
    return {**row, "images": len(examples), "seconds": round(time.perf_counter() - start, 2),
            "resumed_from": result.resumed_from}


def finish_index(store: str, losses: Sequence[str], rows: Sequence[dict], out_dir=None) -> list[str]:
    """Merge this run's rows into each loss's ``index.json`` (rows of earlier runs kept).

    Rows of earlier runs come from ``index.json`` and from each category's ``part-<k>.json``
    (newer): a token finished by a run killed before its own ``finish_index`` keeps its row.
    """
    paths = []
    for loss in losses:
        directory = embeddings_dir(store, loss, out_dir)
        try:
            old = {r["category"]: r for r in read_index(directory)}
        except FileNotFoundError:
            old = {}
        for path in sorted(directory.glob("part-*.json")):
            row = json.loads(path.read_text())
            old[int(row["category"])] = row
        for row in rows:
            if row["loss"] == loss:
                old[row["category"]] = {k: v for k, v in row.items() if k not in ("images", "seconds", "resumed_from")}
        old = {k: v for k, v in old.items() if embedding_file(directory, k).is_file()}
        if old:
            paths.append(str(write_index(directory, list(old.values()))))
    return paths


def embedding_summary(root, losses: Sequence[str]) -> list[dict]:
    """One row per (loss, category): steps, final loss, done (from the store)."""
    rows = []
    for loss in losses:
        key = f"{STAGE}/{loss}"
        if key not in root:
            continue
        sub = root[key]
        done, final, steps = (np.asarray(sub[n][:]) for n in ("done", "final_loss", "steps"))
        rows += [{"loss": loss, "category": k, "token": part_token(k), "steps": int(steps[k]),
                  "final_loss": round(float(final[k]), 6)} for k in range(1, len(done)) if done[k]]
    return rows


def gt_part_masks(root, corpus, indices: Sequence[int], size: int) -> np.ndarray | None:
    """(image, size, size) ground-truth part ids of the store images, or None without them."""
    from diffparts.corpus import load_mask, open_corpus
    from diffparts.inversion.data import resize_mask
    from diffparts.store import image_table

    table = image_table(root)
    by_name = {str(r.name): r for r in open_corpus(corpus_path(root, corpus))}
    out = []
    for i in indices:
        rec = by_name.get(table[int(i)]["name"])
        if rec is None or rec.part_mask_path is None or not Path(rec.part_mask_path).is_file():
            return None
        out.append(resize_mask(load_mask(rec.part_mask_path), size).astype(np.int16))
    return np.stack(out)


def _captions(root, corpus, indices: Sequence[int]) -> list[str] | None:
    """The corpus captions of the store images, or None when any is missing."""
    from diffparts.corpus import open_corpus
    from diffparts.store import image_table

    table = image_table(root)
    by_name = {str(r.name): r for r in open_corpus(corpus_path(root, corpus))}
    caps = [getattr(by_name.get(table[int(i)]["name"]), "caption", None) for i in indices]
    return None if any(c is None for c in caps) else caps


def untrained_pipeline(model, device, dtype, categories, config: InversionConfig):
    import torch

    from diffparts.inversion.tokens import add_part_tokens
    from diffparts.model.load import load_pipeline

    pipe = load_pipeline(model, device=device, dtype=getattr(torch, dtype))
    add_part_tokens(pipe.tokenizer, pipe.text_encoder, [part_token(c) for c in categories],
                    config.num_vectors, config.initializer)
    return pipe


def measure_embeddings(root, store: str, corpus: str | Path | None, model: str, losses: Sequence[str],
                       config: InversionConfig = InversionConfig(), measure=None, categories: Sequence[int] | None = None,
                       out_dir: str | Path | None = None, device: str = "cpu", dtype: str = "float32",
                       class_prompt: str = "a photo of a bird", log: Callable[[str], None] | None = None) -> dict:
    """The stage's table on held-out images: one row per (prompt kind, category) and means.

    Prompt kinds: ``initializer`` (the tokens before training: every vector = the initializer
    word), each trained loss (files loaded with ``load_textual_inversion`` into a fresh
    pipeline), and the references ``empty`` (MSE only) and ``class`` (MSE and generation).
    """
    import torch

    from diffparts.inversion.evaluate import (MeasureConfig, best_gt_part, denoising_error, generate_images, iou,
                                              judge_for, judge_presence, threshold_maps, token_maps)
    from diffparts.inversion.saving import load_part_embeddings
    from diffparts.inversion.train import encode_latents
    from diffparts.model.extract import native_image_size
    from diffparts.model.load import load_pipeline
    measure = measure or MeasureConfig()
    say = log or (lambda _msg: None)
    k1 = require_parts(root)
    cats = list(range(1, k1)) if categories is None else [int(c) for c in categories]
    base = load_pipeline(model, device=device, dtype=getattr(torch, dtype))
    size = native_image_size(base)

    # 1. Held-out data per category: images, discovered masks, latents, ground-truth parts.
    data = {}
    pixels = category_pixels(root)
    for c in cats:
        idx = subset(category_indices(root, c, held_out=True, min_pixels=measure.min_pixels, pixels=pixels),
                     measure.max_images)
        if len(idx) == 0:
            continue
        ex = load_examples(root, corpus, c, idx, size)
        gt = gt_part_masks(root, corpus, idx, size)
        masks = ex.masks > 0.5
        best = best_gt_part(masks, gt) if gt is not None else (None, float("nan"))
        data[c] = {"examples": ex, "latents": encode_latents(base, ex.images), "masks": masks, "gt": gt,
                   "gt_part": best[0], "category_gt_iou": best[1], "captions": _captions(root, corpus, idx)}
    if not data:
        raise ValueError("no part category has held-out images to measure")

    # 2. Prompt kinds -> pipelines.
    kinds: list[tuple[str, Callable[[], object]]] = [
        ("initializer", lambda: untrained_pipeline(model, device, dtype, cats, config))]
    for loss in losses:
        directory = embeddings_dir(store, loss, out_dir)

        def trained(directory=directory):
            pipe = load_pipeline(model, device=device, dtype=getattr(torch, dtype))
            load_part_embeddings(pipe, directory, cats)
            return pipe
        kinds.append((loss, trained))

    rows = []
    # 3. References: the empty prompt (MSE) and the class prompt (MSE, generation).
    # "Generates the part" is read by the independent judge, where the corpus has part masks.
    judge = judge_for(any(d["gt"] is not None for d in data.values()))
    class_images = generate_images(base, class_prompt, measure)
    for c, d in data.items():
        ex, lat = d["examples"], d["latents"]
        m = torch.from_numpy(ex.masks)
        rows.append({"kind": "empty", "category": c, "images": len(ex),
                     "mse": denoising_error(base, lat, m, "", measure, ex.indices)})
        with_part, share = judge_presence(judge, class_images, d["gt_part"], measure.min_pixels)
        rows.append({"kind": "class", "category": c, "images": len(ex),
                     "mse": denoising_error(base, lat, m, class_prompt, measure, ex.indices),
                     "generated_with_part": with_part, "generated_part_share": share})
        if d["captions"] is not None:      # the image's own caption: a reference that knows the answer
            rows.append({"kind": "caption", "category": c, "images": len(ex),
                         "mse": denoising_error(base, lat, m, d["captions"], measure, ex.indices)})
    say(f"references measured on {sum(len(d['examples']) for d in data.values())} held-out category images")

    # 4. Every token kind: explains, localises, generates.
    for kind, make in kinds:
        try:
            pipe = make()
        except FileNotFoundError as err:
            say(f"{kind}: skipped ({err})")
            continue
        for c, d in data.items():
            ex, lat = d["examples"], d["latents"]
            token = part_token(c)
            prompt = config.template.format(token=token)
            maps = token_maps(pipe, lat, prompt, token, size, measure, ex.indices)
            region = threshold_maps(maps, measure.attention_threshold)
            images = generate_images(pipe, prompt, measure)
            with_part, share = judge_presence(judge, images, d["gt_part"], measure.min_pixels)
            rows.append({
                "kind": kind, "category": c, "images": len(ex),
                "mse": denoising_error(pipe, lat, torch.from_numpy(ex.masks), prompt, measure, ex.indices),
                "iou_discovered": iou(region, d["masks"]),
                "iou_gt": iou(region, d["gt"] == d["gt_part"]) if d["gt"] is not None else float("nan"),
                "gt_part": d["gt_part"],
                "generated_with_part": with_part, "generated_part_share": share,
            })
        say(f"{kind}: measured {len(data)} categories")
    return {"rows": rows, "means": _means(rows), "categories": sorted(data),
            "held_out_images": {c: len(d["examples"]) for c, d in data.items()},
            "category_gt": {c: {"gt_part": d["gt_part"], "iou": d["category_gt_iou"]} for c, d in data.items()},
            "measure": dataclasses.asdict(measure), "config": dataclasses.asdict(config)}


def _assign_all(fitted, pipe, images):
    from diffparts.parts.assign import assign_image

    return [assign_image(fitted, pipe, img) for img in images]


def _means(rows: Sequence[dict]) -> list[dict]:
    """Mean of every numeric column per prompt kind, over categories (NaN-aware), and the mean
    relative change of the MSE against the empty prompt on the same category (percent)."""
    empty = {r["category"]: r["mse"] for r in rows if r["kind"] == "empty"}
    rows = [{**r, "mse_vs_empty_pct": 100.0 * (r["mse"] / empty[r["category"]] - 1.0)}
            if r["category"] in empty and r["kind"] != "empty" else r for r in rows]
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        sub = [r for r in rows if r["kind"] == kind]
        keys = [k for k in sub[0] if k not in ("kind", "category", "gt_part", "images")]
        mean = {"kind": kind, "categories": len(sub)}
        for k in keys:
            vals = np.array([r.get(k, np.nan) for r in sub], float)
            mean[k] = round(float(np.nanmean(vals)), 5) if np.isfinite(vals).any() else None
        out.append(mean)
    return out


def category_pictures(root, store: str, corpus, model: str, loss: str, categories: Sequence[int] | None = None,
                      n_images: int = 4, config: InversionConfig = InversionConfig(), measure=None,
                      out_dir=None, device: str = "cpu", dtype: str = "float32",
                      on_picture=None) -> dict[int, np.ndarray]:
    """{category: picture}: the token's attention on ``n_images`` held-out images (training
    images where the category has no held-out one) and ``n_images`` images from its prompt.
    ``on_picture(done, total)``, if given, is called after each category's picture (progress)."""
    import dataclasses as dc

    import torch

    from diffparts.inversion.evaluate import MeasureConfig, generate_images, token_maps
    from diffparts.inversion.pictures import token_picture
    from diffparts.inversion.saving import load_part_embeddings
    from diffparts.inversion.train import encode_latents
    from diffparts.model.extract import native_image_size
    from diffparts.model.load import load_pipeline

    measure = dc.replace(measure or MeasureConfig(), n_generate=n_images)
    k1 = require_parts(root)
    pipe = load_pipeline(model, device=device, dtype=getattr(torch, dtype))
    loaded = {int(t.split("-")[1].rstrip(">")) for t in load_part_embeddings(pipe, embeddings_dir(store, loss, out_dir),
                                                                             categories)}
    size = native_image_size(pipe)
    out = {}
    if on_picture is not None:
        on_picture(0, len(loaded))
    for c in sorted(loaded):
        idx = category_indices(root, c, held_out=True)
        if len(idx) == 0:
            idx = category_indices(root, c, held_out=False)
        ex = load_examples(root, corpus, c, idx[:n_images], size)
        token = part_token(c)
        prompt = config.template.format(token=token)
        maps = token_maps(pipe, encode_latents(pipe, ex.images), prompt, token, size, measure, ex.indices).numpy()
        out[c] = token_picture(ex.images, ex.masks, maps, generate_images(pipe, prompt, measure), c, k1)
        if on_picture is not None:
            on_picture(len(out), len(loaded))
    return out
