"""The occlusion stage over a store: set-up, the table and the grid (a batch of cases: ``cases.py``).

What the Prefect tasks call (``tasks/occlusion.py``) and what a benchmark or test calls without
a server. The set-up is the single writer of metadata: it plans every case (a held-out image,
what to hide, the fill, a seed) and creates ``occlusion/``; each batch writes only its own
cases' chunks and then their done markers, so a re-run redoes only unfinished cases.

One case (docs/design.md §5.7 "Occlusion"):

1. The image at the model's input size; what to hide (ground-truth parts, discovered
   categories or a random box over the object), filled; the record of what was hidden.
2. Missing-part detection on the occluded image (fitted categories, no refit).
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
    attrs: config, plan, variants, losses, model, model_hash, parts_fingerprint, image_size

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
from diffparts.occlusion.occluders import FILLS

STAGE = "occlusion"
HOW = ("part", "category", "box")
REFERENCES = ("original", "occluded")


@dataclass(frozen=True)
class OcclusionConfig:
    n_cases: int = 50                  # cases (a held-out image may serve several, hiding other parts)
    how: str = "part"                  # part (ground-truth masks) | category (discovered) | box
    hide: tuple = ()                   # part names/ids (or categories) hidden in every case; () = one per case, seeded
    fill: str = "grey"                 # grey | noise | patch
    seed: int = 0                      # plan, fills and inpainting noise
    min_fraction: float = 0.5          # a category is hidden when this share of its pixels is covered
    min_part_pixels: int = 12          # a part smaller than this (model-size pixels) is not hidden alone
    losses: tuple | None = None        # token losses to complete with; None = every loss with files
    detect: DetectConfig = field(default_factory=DetectConfig)
    completion: CompletionConfig = field(default_factory=CompletionConfig)

    def __post_init__(self):
        if self.how not in HOW:
            raise ValueError(f"how must be one of {HOW}, got {self.how!r}")
        if self.fill not in FILLS:
            raise ValueError(f"fill must be one of {FILLS}, got {self.fill!r}")
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
        values["detect"] = DetectConfig(**values["detect"])
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
        cases.append({"case": len(cases), "image": image, "target": target, "fill": config.fill,
                      "seed": int(config.seed) * 1_000_003 + len(cases),
                      "patch_image": int(others[int(rng.integers(len(others)))])})
    return cases


def variant_names(losses: Sequence[str], captions: bool) -> list[str]:
    names = list(REFERENCES) + ["empty", "class"] + (["caption"] if captions else [])
    return names + [f"{loss}:{which}" for loss in losses for which in ("detected", "true")]


def setup_occlusion(root, store: str, corpus, model: str, config: OcclusionConfig, model_hash: str = "") -> dict:
    """Plan the cases and create ``occlusion/`` (redone whole when its identity changed).

    Refuses a store whose parts stage is not done, ``how="part"`` on a corpus without part
    masks, and losses without token files. Returns {cases, todo, variants, losses, reset, ...}.
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
    if "embeddings/held_out" in root:
        held = np.asarray(root["embeddings/held_out"][:], bool)
        candidates = np.flatnonzero(done[: len(held)] & held[: len(done)])
        split = "embeddings/held_out"
    else:
        candidates, split = np.flatnonzero(done), "every labelled image (no embeddings/held_out split)"
    records, legend = _records(root, corpus)
    table = image_table(root)
    recs = {int(i): records.get(table[int(i)]["name"]) for i in candidates}
    lost = [table[i]["name"] for i, r in recs.items() if r is None]
    if lost:
        raise ValueError(f"store images {lost[:3]} are not in the corpus")
    has_gt = all(r.part_mask_path is not None and Path(r.part_mask_path).is_file() for r in recs.values())
    if config.how == "part" and not has_gt:
        raise ValueError("how='part' needs ground-truth part masks (part_segmentations/) for every held-out "
                         "image; use how='category' (discovered categories) or 'box'")
    losses = available_losses(store, config.losses)
    captions = all(r.caption for r in recs.values())

    # 2. The plan.
    if config.how == "part":
        targets = _part_ids(config.hide, legend)
        def labels_of(i): return resize_labels(load_mask(recs[i].part_mask_path), (size, size))
    else:
        targets = [int(h) for h in config.hide]
        bad = [t for t in targets if not 1 <= t < k1]
        if bad:
            raise ValueError(f"categories {bad} are not part categories of this store (1..{k1 - 1})")
        def labels_of(i): return resize_labels(np.asarray(root["parts/labels"][i]), (size, size))
    plan = plan_cases([int(i) for i in candidates], labels_of, config, targets)
    variants = variant_names(losses, captions)

    # 3. The group: reset when anything that made it changed.
    identity = {"config": json.loads(json.dumps(dataclasses.asdict(config))), "plan": plan, "variants": variants,
                "losses": losses, "model": str(model), "model_hash": model_hash,
                "parts_fingerprint": parts_fingerprint(root), "image_size": size}
    reset = reset_if_changed(root, STAGE, identity)
    group = root.require_group(STAGE)
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
    finished = np.asarray(group["done"][:], bool)
    return {"cases": n, "todo": [c["case"] for c in plan if not finished[c["case"]]], "variants": variants,
            "losses": losses, "reset": reset, "split": split, "held_out_images": int(len(candidates)),
            "image_size": size, "n_categories": k1}


def summarize_occlusion(root, min_fraction: float | None = None) -> dict:
    """The stage's table over finished cases: detection (P/R/F1, ROC AUC, top-1) and one row per
    variant (means of iou, hidden_share, assigned, psnr, ssim)."""
    from diffparts.metrics.occlusion import detection_scores, roc_auc

    g = root[STAGE]
    done = np.flatnonzero(np.asarray(g["done"][:], bool))
    variants = list(g.attrs["variants"])
    failures = [(int(i), str(f)) for i, f in enumerate(g["failures"][:]) if str(f)]
    if len(done) == 0:
        return {"cases": 0, "detection": None, "table": [], "failed": failures, "variants": variants}
    results = [json.loads(str(g["results"][int(i)])) for i in done]
    scores = np.stack([np.asarray(g["scores"][int(i)]) for i in done])             # case part
    truth = [set(r["truth"]) for r in results]
    det = detection_scores([r["missing"] for r in results], truth)
    hidden = np.array([[k in t for k in range(1, scores.shape[1])] for t in truth])
    detection = {**dataclasses.asdict(det), "roc_auc": roc_auc(scores[:, 1:], hidden),
                 "top1_hidden": float(np.mean([r["ranking"][0] in t for r, t in zip(results, truth)])),
                 "cases_with_hidden_category": int(sum(bool(t) for t in truth)),
                 "mean_predicted": float(np.mean([len(r["missing"]) for r in results]))}
    ious = [r["occlusion_iou"] for r in results if r.get("occlusion_iou") is not None]
    detection["occlusion_map_iou"] = float(np.mean(ious)) if ious else None       # mean over cases with a map
    table = []
    for v in variants:
        rows = [r["measures"][v] for r in results]
        row = {"variant": v, "cases": len(rows)}
        for key in ("iou", "hidden_share", "assigned", "psnr", "ssim"):
            vals = np.array([np.nan if m[key] is None else m[key] for m in rows], float)
            row[key] = round(float(np.nanmean(vals)), 4) if np.isfinite(vals).any() else None
        table.append(row)
    return {"cases": int(len(done)), "detection": detection, "table": table, "failed": failures,
            "variants": variants}


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
