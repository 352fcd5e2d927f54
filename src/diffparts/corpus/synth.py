"""Synthetic birds written in the CUB-200-2011 layout (docs/design.md §4 "The embedded default").

This module is the dataset writer; the bird renderer is ``corpus.synth_render`` (with
``SynthConfig``), the captioner ``corpus.synth_caption`` and the species priors and part names
``corpus.synth_species``. Their public names are importable from here too.

Determinism: image ``i`` is drawn from ``numpy.random.default_rng((seed, i))``, so the same seed
gives byte-identical files, and the first ``n`` images do not depend on ``n``.

Output under ``out_dir`` (CUB names, plus the extras of docs/design.md §4 "The embedded default")::

    images.txt  image_class_labels.txt  classes.txt  train_test_split.txt  bounding_boxes.txt
    parts/parts.txt  parts/part_locs.txt                 # CUB's 15 keypoints, with visibility
    images/<class>/<name>.png                             # RGB
    segmentations/<class>/<name>.png                      # foreground mask, 0 or 255
    part_segmentations/<class>/<name>.png                 # value = part index, 0 = background
    part_segmentations/parts.txt                          # legend: <index> <name>
    captions.txt                                          # <image_id> <caption>

With ``world`` (a ``corpus.synth_world.PartWorldConfig``) it writes the part world instead: the
same files, one more class ``NNN.No_bird`` for the scenes without a bird (whose box is the whole
frame, as the reader needs a positive box), and ``image_kinds.txt`` (<image_id> <kind> <part>).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from diffparts.corpus.synth_caption import CAPTION_WORDS
from diffparts.corpus.synth_render import SynthConfig, _render_bird
from diffparts.corpus.synth_species import _SPECIES, COLOURS, CUB_KEYPOINTS, PART_NAMES, PATTERNS
from diffparts.corpus.synth_world import PartWorldConfig, plan_item, render_item, scene_class_name

__all__ = ["CAPTION_WORDS", "COLOURS", "CUB_KEYPOINTS", "PART_NAMES", "PATTERNS", "PartWorldConfig", "SynthConfig",
           "class_names", "generate_birds"]


def class_names(n_classes: int) -> list[str]:
    """CUB-style class folder names, e.g. '001.Crimson_finch'."""
    if not 1 <= n_classes <= len(_SPECIES):
        raise ValueError(f"n_classes={n_classes} must be in 1..{len(_SPECIES)}")
    return [f"{i + 1:03d}.{_SPECIES[i][0]}" for i in range(n_classes)]


def generate_birds(out_dir, n: int, seed: int, config: SynthConfig = SynthConfig(),
                   world: PartWorldConfig | None = None) -> Path:
    """Render ``n`` synthetic birds into ``out_dir`` in the CUB-200-2011 layout; returns the path.

    ``world``: None for the default birds, or the part world's mixing shares (module docstring);
    there a scene without a bird is in the extra last class.

    Image ``i`` (0-based draw order) belongs to class ``i % n_classes`` and is in the train split
    when ``(i // n_classes) % 2 == 0`` (for train_fraction 0.5). Image ids are 1..n in class order.
    When that leaves no test image (n <= n_classes: one bird per species), the bird of every
    odd-numbered class is held out instead, so a small corpus still has a test split.
    """
    if n < 1:
        raise ValueError(f"n={n} must be >= 1")
    if config.image_size < 32:
        raise ValueError(f"image_size={config.image_size} must be >= 32")
    if config.supersample < 1:
        raise ValueError(f"supersample={config.supersample} must be >= 1")
    if not 0.0 <= config.train_fraction <= 1.0:
        raise ValueError(f"train_fraction={config.train_fraction} must be in [0, 1]")
    out = Path(out_dir)
    names = class_names(config.n_classes) + ([scene_class_name(config.n_classes)] if world else [])
    # 1. Plan: class and split per draw index, ids in class order (like CUB's images.txt).
    plan = []
    per_class = [0] * len(names)
    items = {}
    for i in range(n):
        c = i % config.n_classes
        if world is not None:
            items[i] = plan_item(seed, i, world)
            c = config.n_classes if items[i][0] == "scene" else c
        k = per_class[c]
        per_class[c] += 1
        f = config.train_fraction
        is_train = math.ceil((k + 1) * f - 1e-9) > math.ceil(k * f - 1e-9)   # first one is train
        plan.append((c, k, i, is_train))
    # A corpus too small for any class to reach a test image (one bird per species) keeps CUB's
    # habit of a test split all the same: the single birds of every other class are held out.
    if 0.0 < config.train_fraction < 1.0 and n >= 2 and all(t for *_, t in plan):
        plan = [(c, k, i, not (per_class[c] == 1 and c % 2 == 1)) for c, k, i, _ in plan]
    plan.sort()
    # 2. Render and write each image, its masks and its metadata rows.
    for sub in ("images", "segmentations", "part_segmentations", "parts"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rows = {key: [] for key in ("images", "labels", "split", "bbox", "locs", "captions", "kinds")}
    for image_id, (c, k, i, is_train) in enumerate(plan, start=1):
        rng = np.random.default_rng((seed, i))
        if world is None:
            img, part_mask, keypoints, caption = _render_bird(rng, c, config)
        else:
            kind, pref, plain = items[i]
            img, part_mask, keypoints, caption, kind, part = render_item(rng, c, kind, pref, config, world, plain)
            rows["kinds"].append(f"{image_id} {kind} {part or '-'}")
        species = names[c].split(".", 1)[1]
        rel = f"{names[c]}/{species}_{k + 1:04d}.png"
        for sub, arr in (("images", img), ("segmentations", (part_mask > 0).astype(np.uint8) * 255),
                         ("part_segmentations", part_mask)):
            path = out / sub / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path, format="PNG", optimize=False, compress_level=6)
        ys, xs = np.nonzero(part_mask)
        if xs.size:
            bbox = (float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1))
        elif world is not None:     # a scene: the whole frame
            bbox = (0.0, 0.0, float(part_mask.shape[1]), float(part_mask.shape[0]))
        else:
            bbox = (0.0, 0.0, 0.0, 0.0)
        rows["images"].append(f"{image_id} {rel}")
        rows["labels"].append(f"{image_id} {c + 1}")
        rows["split"].append(f"{image_id} {int(is_train)}")
        rows["bbox"].append(f"{image_id} " + " ".join(f"{b:.1f}" for b in bbox))
        for p, (x, y, vis) in enumerate(keypoints, start=1):
            rows["locs"].append(f"{image_id} {p} {x:.1f} {y:.1f} {int(vis)}")
        rows["captions"].append(f"{image_id} {caption}")
    # 3. Metadata files.
    def write(name, lines):
        (out / name).write_text("\n".join(lines) + "\n")

    write("images.txt", rows["images"])
    write("image_class_labels.txt", rows["labels"])
    write("train_test_split.txt", rows["split"])
    write("bounding_boxes.txt", rows["bbox"])
    write("classes.txt", [f"{i + 1} {name}" for i, name in enumerate(names)])
    write("parts/parts.txt", [f"{i + 1} {name}" for i, name in enumerate(CUB_KEYPOINTS)])
    write("parts/part_locs.txt", rows["locs"])
    write("part_segmentations/parts.txt",
          ["0 background"] + [f"{i + 1} {name}" for i, name in enumerate(PART_NAMES)])
    write("captions.txt", rows["captions"])
    if world is not None:
        write("image_kinds.txt", rows["kinds"])
    return out
