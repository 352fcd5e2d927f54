"""The occlusion stage over a store: set-up, the table and the grid (a batch of cases: ``cases.py``).

What the Prefect tasks call (``tasks/occlusion.py``) and what a benchmark or test calls without
a server. The set-up is the single writer of metadata: it plans every case (a held-out image,
what to hide, the fill, a seed) and creates ``occlusion/``; each batch writes only its own
cases' chunks and then their done markers, so a re-run redoes only unfinished cases.

One case (docs/design.md §5.7 "Occlusion"):

1. The image at the model's input size; what to hide (ground-truth parts, discovered
   categories or a random box over the object), filled; the record of what was hidden.
2. Missing-part detection on the occluded image: where each category belongs from the fitted
   categories (no refit), whether it is there from the model's imagination (``detect.py``).
3. Completions, one per variant, all from the case's seed: the empty prompt, the class prompt,
   the image's caption, and for every loss its tokens of the detection's top categories
   (``<loss>:detected``) and of the truly hidden ones (``<loss>:true``).
4. Every image (and the references: the original, the occluded image) re-segmented and assigned
   to the fitted categories; the measures of ``diffparts.metrics.occlusion``.

Store (``y x`` = the model's input size, ``ly lx`` = the segment map's, ``category`` = the K + 1
categories, background included; the whole store: docs/store.md)::

    occlusion/cases        (case,) int64            store image index
    occlusion/masks        (case, y, x) bool        hidden pixels (model input size)
    occlusion/images       (case, variant, y, x, channel) uint8   original, occluded, each completion
    occlusion/labels       (case, variant, ly, lx) int16    their assigned categories (segment-map size)
    occlusion/scores       (case, category) float32 missing score per category
    occlusion/records      (case,) str              OcclusionRecord as JSON (what was hidden)
    occlusion/results      (case,) str              detection and per-variant measures as JSON
    occlusion/failures     (case,) str              "" or why the case failed
    occlusion/done         (case,) bool             written after the arrays above
    occlusion/held_out     (image,) bool            the images cases come from (attrs: rule; split.py)
    attrs: config, plan, variants, losses, model, model_hash, parts_fingerprint, image_size, held_out,
           calibration (the calibrated detector's, JSON: occlusion.evidence.Calibrations)

Groups written before issue 13 name the labels' axes ``y x`` and the scores' ``part``; they are
reopened and resumed as they are.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from diffparts.occlusion.complete import CompletionConfig
from diffparts.occlusion.detect import DetectConfig
from diffparts.occlusion.occluders import FILLS, PARTS_HIDDEN
from diffparts.occlusion.split import NothingToOcclude, held_out_images, training_images, write_held_out_flags

STAGE = "occlusion"
HOW = ("part", "cover", "category", "box", "background")
MIX = "mix"                            # a fill per case, cycling through FILLS in a seeded order
REFERENCES = ("original", "occluded")


@dataclass(frozen=True)
class OcclusionConfig:
    n_cases: int = 50                  # cases (a held-out image may serve several, hiding other parts)
    how: str = "part"                  # part (ground-truth masks) | cover (a leaf's outline over a part) |
                                       # category (discovered) | box | background
                                       # (background: a part's shape moved onto the background, nothing hidden)
    hide: tuple = ()                   # part names/ids (or categories) hidden in every case; () = one per case, seeded
    fill: str = "grey"                 # grey | noise | patch | object | mix (one of the four per case)
    seed: int = 0                      # plan, fills and inpainting noise
    min_fraction: float = 0.5          # a category is hidden when this share of its pixels is covered
    min_part_pixels: int = 12          # a part smaller than this (model-size pixels) is not hidden alone
    losses: tuple | None = None        # token losses to complete with; None = every loss with files
    complete: bool = True              # False: detection only (the references original/occluded, no inpainting)
    detect: DetectConfig = field(default_factory=DetectConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)

    def __post_init__(self):
        if self.how not in HOW:
            raise ValueError(f"how must be one of {HOW}, got {self.how!r}")
        if self.fill not in FILLS + (MIX,):
            raise ValueError(f"unknown fill {self.fill!r}: the fills are {', '.join(FILLS + (MIX,))}")
        if self.n_cases < 1:
            raise ValueError(f"n_cases must be >= 1, got {self.n_cases}")


def occlusion_config(values: dict | OcclusionConfig | None = None) -> OcclusionConfig:
    """An :class:`OcclusionConfig` from a (JSON-like) dict, nested configs as dicts."""
    if isinstance(values, OcclusionConfig):
        return values
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(OcclusionConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown occlusion settings {unknown}; known: {sorted(names)}")
    if isinstance(values.get("detect"), dict):
        values["detect"] = DetectConfig(**values["detect"])      # its imagine dict: DetectConfig converts it
    if isinstance(values.get("completion"), dict):
        values["completion"] = CompletionConfig(**values["completion"])
    for key in ("hide", "losses"):
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    return OcclusionConfig(**values)


def occlusion_dir(store: str | Path) -> Path:
    """``<store>.occlusion/`` beside a local store (the grid picture goes there)."""
    text = str(store)
    if "://" in text and not text.startswith("file://"):
        raise ValueError(f"store {text!r} is not a local path: no folder for the pictures beside it")
    return Path(f"{text.removeprefix('file://').rstrip('/')}.{STAGE}")


# ---------------------------------------------------------------------------------------- set-up

def _records(root, corpus) -> tuple[dict, dict[int, str]]:
    """Corpus records by name and the part legend (id -> name)."""
    from diffparts.corpus import PART_NAMES, open_corpus
    from diffparts.inversion.data import corpus_path

    ds = open_corpus(corpus_path(root, corpus))
    legend = dict(getattr(ds, "part_legend", {}) or {})
    if not legend:
        legend = {i + 1: n for i, n in enumerate(PART_NAMES)}
    return {str(r.name): r for r in ds}, legend


def _part_ids(hide: Sequence, legend: dict[int, str]) -> list[int]:
    by_name = {v: k for k, v in legend.items()}
    out = []
    for h in hide:
        if isinstance(h, (int, np.integer)) or str(h).isdigit():
            out.append(int(h))
        elif str(h) in by_name:
            out.append(by_name[str(h)])
        else:
            raise ValueError(f"unknown part {h!r}; the corpus's parts are {sorted(by_name)}")
    return out


def available_losses(store: str | Path, wanted: Sequence[str] | None = None) -> list[str]:
    """Losses whose token files exist beside the store (``index.json``); ``wanted`` must all."""
    from diffparts.inversion.saving import embeddings_dir
    from diffparts.inversion.train import LOSSES

    have = [loss for loss in LOSSES if (embeddings_dir(store, loss) / "index.json").is_file()]
    if wanted is None:
        return have
    missing = [w for w in wanted if w not in have]
    if missing:
        raise ValueError(f"no part tokens for losses {missing} beside {str(store)!r} (have {have}): "
                         "run `diffparts embed --loss ...` first")
    return list(wanted)


def plan_cases(candidates: Sequence[int], labels_of: Callable[[int], np.ndarray], config: OcclusionConfig,
               targets: Sequence[int] = ()) -> list[dict]:
    """The cases: {case, image, target, fill, seed, patch_image}, deterministic from the seed.

    Images are taken in a seeded order, cycling when there are fewer images than cases; a
    case hides ``targets`` (those present) or one label present in the image that this image
    has not hidden yet (a box: no label). ``labels_of(image)`` gives its (y, x) label map.
    """
    rng = np.random.default_rng(config.seed)
    order = [int(i) for i in rng.permutation(np.asarray(candidates, np.int64))]
    fills = [FILLS[int(j)] for j in rng.permutation(len(FILLS))] if config.fill == MIX else [config.fill]
    if not order:
        raise ValueError("no held-out image with part labels to occlude")
    used: dict[int, set] = {i: set() for i in order}
    cases, misses = [], 0
    while len(cases) < config.n_cases and misses < len(order):
        image = order[(len(cases) + misses) % len(order)]
        if config.how == "box":
            target: list[int] = []
        else:
            counts = np.bincount(np.asarray(labels_of(image)).ravel().clip(0))
            present = [k for k in range(1, len(counts)) if counts[k] >= config.min_part_pixels]
            if targets:
                target = [t for t in targets if t in present]
                if not target or tuple(target) in used[image]:
                    misses += 1
                    continue
            else:
                fresh = [k for k in present if (k,) not in used[image]]
                if not fresh:
                    misses += 1
                    continue
                target = [int(rng.choice(fresh))]
            used[image].add(tuple(target))
        misses = 0
        others = [i for i in order if i != image] or [image]
        cases.append({"case": len(cases), "image": image, "target": target, "fill": fills[len(cases) % len(fills)],
                      "seed": int(config.seed) * 1_000_003 + len(cases),
                      "patch_image": int(others[int(rng.integers(len(others)))])})
    return cases


def variant_names(losses: Sequence[str], captions: bool, complete: bool = True) -> list[str]:
    if not complete:
        return list(REFERENCES)
    names = list(REFERENCES) + ["empty", "class"] + (["caption"] if captions else [])
    return names + [f"{loss}:{which}" for loss in losses for which in ("detected", "true")]


def setup_occlusion(root, store: str, corpus, model: str, config: OcclusionConfig, model_hash: str = "",
                    calibration: str | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Plan the cases and create ``occlusion/`` (redone whole when its identity changed).

    Refuses a store whose parts stage is not done, ``how="part"`` on a corpus without part
    masks, and losses without token files. calibration: the calibrated detector's calibration
    (JSON) made by another set-up on the same store, model and detect settings, reused instead of
    recomputed (a benchmark running several fills). Returns {cases, todo, variants, losses, reset, ...}.
    """
    from diffparts.corpus import load_mask
    from diffparts.inversion.saving import parts_fingerprint, require_parts
    from diffparts.occlusion.occluders import resize_labels
    from diffparts.store import create_stage_array, done_mask, image_table, reset_if_changed

    # 1. What exists: parts, the held-out split, the corpus, tokens.
    k1 = require_parts(root)
    size = int(root["attention"].attrs.get("image_size", 0)) if "attention" in root else 0
    if size <= 0:
        raise ValueError("the store's attention group records no image_size: run extract first")
    done = done_mask(root, "parts")
    records, legend = _records(root, corpus)
    table = image_table(root)
    held, split = held_out_images(root, records, [row["name"] for row in table], config.seed)
    candidates = np.flatnonzero(done & held)
    if len(candidates) == 0:
        raise NothingToOcclude(f"no held-out image with part labels to occlude ({split}; "
                               f"{int(done.sum())} labelled image(s)): the occlusion stage is skipped")
    recs = {int(i): records.get(table[int(i)]["name"]) for i in candidates}
    lost = [table[i]["name"] for i, r in recs.items() if r is None]
    if lost:
        raise ValueError(f"store images {lost[:3]} are not in the corpus")
    has_gt = all(r.part_mask_path is not None and Path(r.part_mask_path).is_file() for r in recs.values())
    if config.how in PARTS_HIDDEN and not has_gt:
        raise ValueError(f"how={config.how!r} needs ground-truth part masks (part_segmentations/) for every held-out "
                         "image; use how='category' (discovered categories) or 'box'")
    losses = available_losses(store, config.losses)
    captions = all(r.caption for r in recs.values())

    # 2. The plan (the background control borrows the shapes of ground-truth parts where the
    #    corpus has them, else of discovered categories).
    if config.how in PARTS_HIDDEN or (config.how == "background" and has_gt):
        targets = _part_ids(config.hide, legend)
        def labels_of(i): return resize_labels(load_mask(recs[i].part_mask_path), (size, size))
    else:
        targets = [int(h) for h in config.hide]
        bad = [t for t in targets if not 1 <= t < k1]
        if bad:
            raise ValueError(f"categories {bad} are not part categories of this store (1..{k1 - 1})")
        def labels_of(i): return resize_labels(np.asarray(root["parts/labels"][i]), (size, size))
    plan = plan_cases([int(i) for i in candidates], labels_of, config, targets)
    variants = variant_names(losses, captions, config.complete)

    # 3. The group: reset when anything that made it changed.
    identity = {"config": json.loads(json.dumps(dataclasses.asdict(config))), "plan": plan, "variants": variants,
                "detect_kinds": list(config.detect.kinds),   # what the method reads (a new release's kinds reset it)
                "losses": losses, "model": str(model), "model_hash": model_hash,
                "parts_fingerprint": parts_fingerprint(root), "image_size": size,
                "held_out": [int(i) for i in np.flatnonzero(held)]}
    reset = reset_if_changed(root, STAGE, identity)
    group = root.require_group(STAGE)
    write_held_out_flags(root, held, split)
    n, nv = len(plan), len(variants)
    ly, lx = root["parts/labels"].shape[1:]
    specs = {"cases": ((n,), "int64", ("case",), -1), "masks": ((n, size, size), bool, ("case", "y", "x"), False),
             "images": ((n, nv, size, size, 3), "uint8", ("case", "variant", "y", "x", "channel"), 0),
             "labels": ((n, nv, ly, lx), "int16", ("case", "variant", "ly", "lx"), -1),
             "scores": ((n, k1), "float32", ("case", "category"), np.nan),
             "records": ((n,), str, ("case",), ""), "results": ((n,), str, ("case",), ""),
             "failures": ((n,), str, ("case",), ""), "done": ((n,), bool, ("case",), False)}
    earlier = {"labels": ("case", "variant", "y", "x"), "scores": ("case", "part")}   # before issue 13
    for name, (shape, dtype, dims, fill) in specs.items():
        create_stage_array(group, name, shape, dtype, dims, chunks=(1, *shape[1:]), fill_value=fill,
                           earlier_dimension_names=earlier.get(name))
    if reset or "plan" not in group.attrs:
        group["cases"][:] = np.array([c["image"] for c in plan], np.int64)
    group.attrs.update(identity)
    if config.detect.method != "area" and "calibration" not in group.attrs:
        group.attrs["calibration"] = calibration or _calibration(root, records, table, model, config, size,
                                                                 log).to_json()
    finished = np.asarray(group["done"][:], bool)
    return {"cases": n, "todo": [c["case"] for c in plan if not finished[c["case"]]], "variants": variants,
            "losses": losses, "reset": reset, "split": split, "held_out_images": int(len(candidates)),
            "image_size": size, "n_categories": k1}


def load_model_image(path, size: int) -> np.ndarray:
    """A corpus image at the model's input size, (y, x, 3) uint8, as extraction fed it."""
    from diffparts.corpus import load_rgb
    from diffparts.model.extract import prepare_images

    return prepare_images(load_rgb(path)[None], size)[0]


def _calibration(root, records: dict, table, model: str, config: OcclusionConfig, size: int, log=None):
    """The calibrated detector's calibration on the store's training images (loads the model);
    progress every 8 images to ``log`` (default: the ``diffparts.occlusion`` logger)."""
    import logging

    import torch

    from diffparts.model.load import load_pipeline
    from diffparts.occlusion.calibrate import calibrate_store, detector_pipelines
    from diffparts.occlusion.complete import inpaint_pipeline, resolve_inpaint_model

    pipe = load_pipeline(model, device="cpu", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    inpaint = None
    if "repaint" in config.detect.kinds:
        inpaint = inpaint_pipeline(pipe, resolve_inpaint_model(config.completion.inpaint_model, model))
        inpaint.set_progress_bar_config(disable=True)

    def load(i: int) -> np.ndarray:
        return load_model_image(records[table[i]["name"]].path, size)

    say = log or logging.getLogger("diffparts.occlusion").info
    pipelines = detector_pipelines(config.detect, pipe, inpaint, root, load, config.seed, say)
    return calibrate_store(root, load, pipelines, config.detect, config.seed, log=say)


def _stored_calibration(attrs):
    """The calibrated detector's ``evidence.Calibrations`` kept in the group's attributes, or None."""
    from diffparts.occlusion.evidence import Calibrations

    return Calibrations.from_json(attrs["calibration"]) if "calibration" in attrs else None


def summarize_occlusion(root, min_fraction: float | None = None) -> dict:
    """The stage's table over finished cases: detection (P/R/F1, ROC AUC, top-1) and one row per
    variant (means of iou, hidden_share, assigned, the judge's IoU and hidden-pixel accuracy where
    the corpus has part masks, psnr, ssim)."""
    g = root[STAGE]
    done = np.flatnonzero(np.asarray(g["done"][:], bool))
    variants = list(g.attrs["variants"])
    failures = [(int(i), str(f)) for i, f in enumerate(g["failures"][:]) if str(f)]
    if len(done) == 0:
        return {"cases": 0, "detection": None, "table": [], "failed": failures, "variants": variants}
    results = [json.loads(str(g["results"][int(i)])) for i in done]
    scores = np.stack([np.asarray(g["scores"][int(i)]) for i in done])             # case category
    config = occlusion_config(g.attrs["config"])
    cutoff = config.detect.cutoff_for(_stored_calibration(g.attrs))
    detection = detection_table(results, scores, cutoff)
    detection["method"] = config.detect.method
    detection["threshold"] = cutoff
    detection["how"] = config.how
    fills = sorted({r.get("fill", config.fill) for r in results})
    if len(fills) > 1:                                                              # a mix: one row per fill
        detection["by_fill"] = {f: detection_table([r for r in results if r.get("fill", config.fill) == f],
                                                   scores[[r.get("fill", config.fill) == f for r in results]],
                                                   cutoff)
                                for f in fills}
    table = []
    for v in variants:
        rows = [r["measures"][v] for r in results]
        row = {"variant": v, "cases": len(rows)}
        for key in ("iou", "hidden_share", "assigned", "judge_iou", "judge_hidden_accuracy", "psnr", "ssim"):
            vals = np.array([np.nan if m.get(key) is None else m[key] for m in rows], float)
            row[key] = round(float(np.nanmean(vals)), 4) if np.isfinite(vals).any() else None
        table.append(row)
    return {"cases": int(len(done)), "detection": detection, "table": table, "failed": failures,
            "variants": variants}


def _nan_to_none(value):
    return None if value is None or (isinstance(value, float) and not np.isfinite(value)) else value


def detection_table(results: Sequence[dict], scores: np.ndarray, threshold: float) -> dict:
    """Detection measures of some cases: results (their ``occlusion/results`` JSON) and their
    (case, category) scores. ROC AUC overall, per category and on the cases whose hidden
    pixels are not grey-ish; P/R/F1 of the categories scoring at least ``threshold`` (from the
    stored scores, so a new threshold needs no rerun); the ROC AUC's 95 % bootstrap interval over the
    cases (``roc_auc_interval``); the false-alarm rate on cases hiding no
    category; top-1; the occlusion map's IoU with the hidden region; detector seconds per case."""
    from diffparts.metrics.occlusion import (detection_scores, false_alarm_rate, roc_auc, roc_auc_interval,
                                             roc_auc_per_category)

    if not results:
        return {"cases": 0}
    truth = [set(r["truth"]) for r in results]
    predicted = [[k for k in range(1, scores.shape[1]) if scores[i, k] >= threshold and scores[i, k] > 0]
                 for i in range(len(results))]
    det = detection_scores(predicted, truth)
    hidden = np.array([[k in t for k in range(1, scores.shape[1])] for t in truth]).reshape(len(results), -1)
    plain = np.array([not r.get("hidden_greyish", False) for r in results], bool)
    ious = [r["occlusion_iou"] for r in results if r.get("occlusion_iou") is not None]
    secs = [r["detect_seconds"] for r in results if r.get("detect_seconds") is not None]
    out = {**{k: _nan_to_none(v) for k, v in dataclasses.asdict(det).items()},
           "roc_auc": _nan_to_none(roc_auc(scores[:, 1:], hidden)),
           "roc_auc_interval": [_nan_to_none(round(v, 4)) for v in roc_auc_interval(scores[:, 1:], hidden)],
           "roc_auc_not_greyish": _nan_to_none(roc_auc(scores[plain, 1:], hidden[plain])) if plain.any() else None,
           "cases_not_greyish": int(plain.sum()),
           "roc_auc_per_category": {str(k + 1): _nan_to_none(round(a, 4) if np.isfinite(a) else a)
                                    for k, a in enumerate(roc_auc_per_category(scores[:, 1:], hidden))},
           "false_alarm_rate": _nan_to_none(false_alarm_rate(predicted, truth)),
           "cases_without_hidden_category": int(sum(not t for t in truth)),
           "top1_hidden": float(np.mean([r["ranking"][0] in t for r, t in zip(results, truth)])),
           "cases_with_hidden_category": int(sum(bool(t) for t in truth)),
           "mean_predicted": float(np.mean([len(p) for p in predicted])),
           "occlusion_map_iou": float(np.mean(ious)) if ious else None,             # mean over cases with a map
           "detect_seconds_per_case": round(float(np.mean(secs)), 4) if secs else None}
    return out


def occlusion_grid(root, cases: Sequence[int] | None = None, n: int = 6, scale: int = 2) -> np.ndarray:
    """(y, x, 3) uint8: one row per finished case (the first ``n``), one column per variant
    (original, occluded, each completion), the variant names on top."""
    from PIL import Image, ImageDraw

    g = root[STAGE]
    variants = list(g.attrs["variants"])
    done = np.flatnonzero(np.asarray(g["done"][:], bool))
    chosen = [int(c) for c in (cases if cases is not None else done[:n])]
    if not chosen:
        raise ValueError("no finished occlusion case to draw")
    size = g["images"].shape[2] * scale
    head, gap = 14, 2
    width = len(variants) * (size + gap)
    canvas = Image.new("RGB", (width, head + len(chosen) * (size + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, v in enumerate(variants):
        draw.text((j * (size + gap) + 1, 1), v[: max(4, size // 6)], fill=(0, 0, 0))
    for i, k in enumerate(chosen):
        imgs = np.asarray(g["images"][k])                                         # variant y x 3
        for j in range(len(variants)):
            tile = Image.fromarray(imgs[j]).resize((size, size), Image.Resampling.NEAREST)
            canvas.paste(tile, (j * (size + gap), head + i * (size + gap)))
    return np.asarray(canvas)
