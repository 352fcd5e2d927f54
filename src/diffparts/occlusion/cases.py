"""The occlusion stage's cases: one batch of planned cases run end to end (see ``stage.py``).

For each case: the occluded image and its record, missing-part detection on it (fitted
categories, no refit), one completion per variant from the case's seed, every image re-segmented
and assigned, and the measures of ``diffparts.metrics.occlusion``; the case's chunks are written,
then its done marker (a failing case records why and the others go on).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from diffparts.occlusion.occluders import PARTS_HIDDEN
from diffparts.occlusion.stage import REFERENCES, STAGE, OcclusionConfig, _records, load_model_image, occlusion_config


@dataclass
class _Context:
    root: object
    store: str
    config: OcclusionConfig
    plan: dict
    variants: list
    losses: list
    size: int
    label_shape: tuple
    records: dict
    names: list
    pipe: object
    inpaint: object
    fitted: object
    expectation: object
    tokens: dict            # loss -> categories that have a token file
    unknown_threshold: float | None = None   # parts.assign.unknown_threshold at config.detect.unknown_quantile
    pipelines: dict | None = None            # the calibrated detector's {kind: pipeline} (img2img shares pipe's
                                             # weights; repaint is the completion's inpainting pipeline)
    calibration: object = None               # occlusion.evidence.Calibrations from the set-up (calibrated methods)
    inpaint_name: str | None = None          # the inpainting checkpoint (None: latent blending on pipe)
    judge: object = None                     # diffparts.judge.PartJudge where the corpus has part masks


def _context(root, store, corpus, model, device, dtype) -> _Context:
    import torch

    from diffparts.inversion.saving import embeddings_dir, read_index
    from diffparts.model.load import load_pipeline
    from diffparts.occlusion.complete import inpaint_pipeline, resolve_inpaint_model
    from diffparts.occlusion.detect import store_expectation
    from diffparts.parts.assign import fitted_parts, unknown_threshold
    from diffparts.store import image_table

    attrs = dict(root[STAGE].attrs)
    config = occlusion_config(attrs["config"])
    pipe = load_pipeline(model, device=device, dtype=getattr(torch, dtype))
    pipe.set_progress_bar_config(disable=True)
    records, _ = _records(root, corpus)
    names = [r["name"] for r in image_table(root)]
    inpaint_name = resolve_inpaint_model(config.completion.inpaint_model, model)
    inpaint = inpaint_pipeline(pipe, inpaint_name)
    inpaint.set_progress_bar_config(disable=True)
    ctx = _Context(root, store, config, {c["case"]: c for c in attrs["plan"]}, list(attrs["variants"]),
                    list(attrs["losses"]), int(attrs["image_size"]), tuple(root["parts/labels"].shape[1:]),
                    records, names, pipe, inpaint,
                    fitted_parts(root), store_expectation(root, config.detect.min_pixels),
                    {loss: {int(r["category"]) for r in read_index(embeddings_dir(store, loss))}
                     for loss in attrs["losses"]},
                    None if config.detect.unknown_quantile is None
                    else unknown_threshold(root, config.detect.unknown_quantile),
                    *_evidence_parts(attrs, config, pipe, inpaint, root,
                                     lambda i: load_model_image(records[names[i]].path, int(attrs["image_size"]))))
    ctx.inpaint_name = inpaint_name
    if config.how in PARTS_HIDDEN:         # ground-truth part masks: the judge reads the completions
        from diffparts.judge import PartJudge

        ctx.judge = PartJudge.load()
    return ctx


def _evidence_parts(attrs: dict, config: OcclusionConfig, pipe, inpaint, root=None, load_image=None) -> tuple:
    """({kind: pipeline}, calibration) for the calibrated methods; (None, None) for the area rule.
    root, load_image: the store and its image loader (the colour detector's reference)."""
    if config.detect.method == "area":
        return None, None
    from diffparts.occlusion.calibrate import detector_pipelines
    from diffparts.occlusion.evidence import Calibrations

    if "calibration" not in attrs:
        raise ValueError(f"occlusion/ has no calibration for the {config.detect.method} detector: run the set-up again")
    return (detector_pipelines(config.detect, pipe, inpaint, root, load_image, config.seed),
            Calibrations.from_json(attrs["calibration"]))


def _image(ctx: _Context, index: int) -> tuple[np.ndarray, np.ndarray | None, object]:
    """(original at model size, ground-truth part map at model size or None, record)."""
    from diffparts.corpus import load_mask
    from diffparts.occlusion.occluders import resize_labels

    rec = ctx.records[ctx.names[index]]
    image = load_model_image(rec.path, ctx.size)
    gt = None
    if rec.part_mask_path is not None and Path(rec.part_mask_path).is_file():
        gt = resize_labels(load_mask(rec.part_mask_path), (ctx.size, ctx.size)).astype(np.int16)
    return image, gt, rec


def _box(ctx: _Context, rec) -> np.ndarray | None:
    """The corpus box in segment-map pixels (as the parts stage used it), or None."""
    from PIL import Image

    from diffparts.parts.descriptors import scale_box

    if rec.bbox is None:
        return None
    with Image.open(rec.path) as im:
        wh = im.size
    return scale_box(rec.bbox, wh, (ctx.label_shape[1], ctx.label_shape[0]))


def _prepare(ctx: _Context, case: dict) -> dict:
    """Steps 1-2 of a case: occlude, detect, the prompts of every variant."""
    from diffparts.metrics.occlusion import hidden_categories
    from diffparts.occlusion.complete import token_prompt
    from diffparts.occlusion.detect import detect_missing
    from diffparts.occlusion.occluders import occlude, occluder_mask, resize_labels

    cfg = ctx.config
    image, gt, rec = _image(ctx, case["image"])
    cats = np.asarray(ctx.root["parts/labels"][case["image"]]).astype(np.int16)      # ly lx, the corpus map
    cats_img = resize_labels(cats, (ctx.size, ctx.size))
    mask = occluder_mask(cfg.how, case["target"], case["seed"], gt, cats_img)
    patch = None
    if case["fill"] == "patch":
        other, other_gt, _ = _image(ctx, case["patch_image"])
        other_bg = (other_gt == 0) if other_gt is not None else resize_labels(
            np.asarray(ctx.root["parts/labels"][case["patch_image"]]), (ctx.size, ctx.size)) == 0
        patch = (other, other_bg)
    occluded, record = occlude(image, mask, case["fill"], case["seed"], how=cfg.how, target=case["target"],
                               gt_labels=gt, categories=cats, patch_source=patch, patch_from=case["patch_image"])
    box = _box(ctx, rec)
    started = time.perf_counter()
    detection = detect_missing(ctx.fitted, ctx.pipe, occluded, ctx.expectation, cfg.detect, box=box,
                               unknown_threshold=ctx.unknown_threshold, pipelines=ctx.pipelines,
                               calibration=ctx.calibration, seed=case["seed"])
    detect_seconds = time.perf_counter() - started
    truth = hidden_categories(record.categories, cfg.min_fraction)
    true_prompt = sorted(truth or record.categories, key=lambda k: -record.categories.get(k, 0))[: cfg.completion.max_tokens]
    detected_prompt = list(detection.top(cfg.completion.max_tokens))
    prompts = {"empty": "", "class": cfg.completion.class_prompt, "caption": rec.caption or ""}
    named = {}
    for loss in ctx.losses:
        for which, wanted in (("detected", detected_prompt), ("true", true_prompt)):
            cats_named = [int(k) for k in wanted if int(k) in ctx.tokens[loss]]   # a category without a token
            prompts[f"{loss}:{which}"] = (token_prompt(cats_named, cfg.completion.template) if cats_named
                                          else cfg.completion.class_prompt)       # falls back to the class prompt
            named[f"{loss}:{which}"] = cats_named
    return {"case": case, "image": image, "gt": gt, "cats": cats, "mask": mask, "occluded": occluded,
            "record": record, "detection": detection, "truth": sorted(truth), "prompts": prompts, "named": named,
            "box": box, "detect_seconds": detect_seconds}


def _encode_all(ctx: _Context, prepared: list[dict]) -> dict:
    """{(case, variant): (embeds, negative embeds)} for the token variants, one loss at a time
    (its tokens loaded with diffusers' ``load_textual_inversion``, then unloaded)."""
    from diffparts.inversion.saving import embeddings_dir
    from diffparts.occlusion.complete import encode_prompts, load_tokens

    # the tokens go into the text encoder of the pipeline that completes (an inpainting
    # checkpoint's own, refused by name when its tokenizer is not the one they were learned with)
    pipe = ctx.inpaint if ctx.inpaint_name else ctx.pipe
    out = {}
    for loss in ctx.losses:
        tokens = load_tokens(pipe, embeddings_dir(ctx.store, loss),
                             tokenizer=ctx.pipe.tokenizer if ctx.inpaint_name else None,
                             inpaint_name=ctx.inpaint_name or "the inpaint model")
        try:
            keys = [(p["case"]["case"], v) for p in prepared for v in p["prompts"] if v.startswith(f"{loss}:")]
            texts = [next(p for p in prepared if p["case"]["case"] == c)["prompts"][v] for c, v in keys]
            out.update(zip(keys, encode_prompts(pipe, texts)))
        finally:
            if tokens:
                pipe.unload_textual_inversion()    # every added token, multi-vector ones too
    return out


def _finish(ctx: _Context, prep: dict, embeds: dict) -> dict:
    """Steps 3-4 of a case: completions, their categories, the measures; writes the case."""
    from diffparts.metrics.occlusion import (category_of_part, hidden_greyish, masked_psnr, masked_ssim,
                                             restoration_scores)
    from diffparts.occlusion.complete import complete
    from diffparts.occlusion.occluders import resize_labels
    from diffparts.parts.assign import assign_image

    cfg, case = ctx.config, prep["case"]
    k = case["case"]
    images = {"original": prep["image"], "occluded": prep["occluded"]}
    for v in ctx.variants:
        if v in REFERENCES:
            continue
        prompt = embeds.get((k, v), prep["prompts"][v])
        images[v] = complete(ctx.inpaint, prep["occluded"], prep["mask"], prompt, case["seed"], cfg.completion)
    if cfg.complete:
        labels = {v: assign_image(ctx.fitted, ctx.pipe, images[v], box=prep["box"]) for v in ctx.variants}
    else:                               # detection only: the corpus map and the detection's own assignment
        labels = {"original": prep["cats"], "occluded": prep["detection"].assigned}

    # What restoring means: per hidden ground-truth part, the category that covered it in the
    # corpus map; without ground truth, each truly hidden category and its own corpus mask.
    hidden = resize_labels(prep["mask"].astype(np.int16), ctx.label_shape) > 0
    if cfg.how == "background":
        targets = []                                                           # nothing hidden: nothing to restore
    elif cfg.how in PARTS_HIDDEN:
        targets = []
        for p in case["target"]:
            part = resize_labels(prep["gt"], ctx.label_shape) == p
            targets.append((category_of_part(prep["cats"], part), part))
    else:
        covered = prep["record"].categories                                   # no hidden one: the most covered
        chosen = prep["truth"] or sorted(covered, key=lambda c: -covered[c])[:1]
        targets = [(c, prep["cats"] == c) for c in chosen]
    judged = {}
    if ctx.judge is not None and cfg.how in PARTS_HIDDEN and prep["gt"] is not None:   # by appearance, at model size
        judged = judge_measures(ctx.judge, images, prep["mask"], prep["gt"], case["target"])
    measures = {}
    for v in ctx.variants:
        rows = [restoration_scores(labels[v], c, part, hidden, cfg.detect.min_pixels) for c, part in targets]
        psnr = masked_psnr(images[v], prep["image"], prep["mask"])
        mean = (lambda key: float(np.mean([r[key] for r in rows])) if rows else None)  # noqa: E731
        measures[v] = {"iou": mean("iou"), "hidden_share": mean("hidden_share"), "assigned": mean("assigned"),
                       "psnr": None if not np.isfinite(psnr) else psnr,
                       "ssim": masked_ssim(images[v], prep["image"], prep["mask"]),
                       "categories": prep["named"].get(v),
                       "judge_iou": judged.get(v, {}).get("iou"),
                       "judge_hidden_accuracy": judged.get(v, {}).get("hidden_accuracy")}
    det = prep["detection"]
    occlusion_iou = None                                                      # the unknown pixels vs the occluder
    if det.occlusion_map is not None:
        union = int((det.occlusion_map | hidden).sum())
        occlusion_iou = float((det.occlusion_map & hidden).sum() / union) if union else None
    result = {"image": case["image"], "target": case["target"], "restore": [int(c) for c, _ in targets],
              "truth": prep["truth"], "missing": list(det.missing), "ranking": list(det.ranking),
              "prompts": prep["prompts"], "measures": measures, "occlusion_iou": occlusion_iou,
              "unknown_pixels": None if det.occlusion_map is None else int(det.occlusion_map.sum()),
              "fill": case["fill"], "hidden_greyish": hidden_greyish(prep["image"], prep["mask"]),
              "detect_seconds": round(prep["detect_seconds"], 4)}

    # Write the case's chunks, then its marker.
    g = ctx.root[STAGE]
    g["masks"][k] = prep["mask"]
    g["images"][k] = np.stack([images[v] for v in ctx.variants])
    g["labels"][k] = np.stack([np.asarray(labels[v], np.int16) for v in ctx.variants])
    g["scores"][k] = det.scores
    g["records"][k] = prep["record"].to_json()
    g["results"][k] = json.dumps(result, default=float)
    g["failures"][k] = ""
    g["done"][k] = True
    return result


def judge_measures(judge, images: dict, mask: np.ndarray, truth: np.ndarray, parts: Sequence[int]) -> dict:
    """{variant: the judge's scores of the hidden ``parts``} (``diffparts.judge.score_completion``):
    what each image shows inside the hidden ``mask``, read by appearance alone, against the
    true part map ``truth``; assessment only, it never feeds detection or completion."""
    from diffparts.judge import score_completion

    return {v: score_completion(judge, image, mask, truth, parts) for v, image in images.items()}


def run_cases(root, store: str, corpus, model: str, cases: Sequence[int], device: str = "cpu",
              dtype: str = "float32", log: Callable[[str], None] | None = None) -> dict:
    """Run the unfinished ``cases``; a failing case is recorded in ``occlusion/failures`` and
    the others go on. Returns {done: [...], failed: {case: reason}, skipped: [...], seconds}."""
    say = log or (lambda _m: None)
    start = time.perf_counter()
    g = root[STAGE]
    finished = np.asarray(g["done"][:], bool)
    todo = [int(c) for c in cases if not finished[int(c)]]
    out = {"done": [], "failed": {}, "skipped": [int(c) for c in cases if finished[int(c)]]}
    if not todo:
        return {**out, "seconds": 0.0}
    ctx = _context(root, store, corpus, model, device, dtype)

    def fail(k: int, err: Exception) -> None:
        reason = f"{type(err).__name__}: {err}"
        g["failures"][k] = reason
        out["failed"][k] = reason
        say(f"case {k} failed: {reason}")

    prepared = []
    for k in todo:
        try:
            prepared.append(_prepare(ctx, ctx.plan[k]))
        except Exception as err:  # noqa: BLE001 - one bad image must not stop the batch
            fail(k, err)
    embeds = _encode_all(ctx, prepared) if prepared else {}
    for prep in prepared:
        k = prep["case"]["case"]
        try:
            _finish(ctx, prep, embeds)
            out["done"].append(k)
        except Exception as err:  # noqa: BLE001
            fail(k, err)
    return {**out, "seconds": round(time.perf_counter() - start, 2)}


# --------------------------------------------------------------------------- table and picture
