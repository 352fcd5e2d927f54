"""Training and held-out data of one part category, read from a store and its corpus.

docs/design.md §5.6 "Part embeddings" and issue 10 item 2: the examples of category k are the images whose
``parts/labels`` contain k (at least ``min_pixels`` of it), each with k's **discovered** mask
(never a ground-truth mask). The held-out split is decided once per store and written to
``embeddings/held_out`` (image,) bool: the corpus's own test split where it has one
(``train_test_split.txt``: held out = not a training image), else a seeded half of the images.
Training reads only images with ``held_out == False``; the measures read only the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from diffparts.store.markers import read_image_vector

STAGE = "embeddings"
PARTS = "parts"


@dataclass(frozen=True)
class CategoryExamples:
    """Images of one category at the model's input size, with the category's mask."""

    category: int
    indices: np.ndarray   # (image,) store indices
    images: np.ndarray    # (image, y, x, 3) uint8, resized to the model's input size
    masks: np.ndarray     # (image, y, x) float32 in {0, 1}: the category's discovered pixels

    def __len__(self) -> int:
        return len(self.indices)


def corpus_path(root, corpus: str | Path | None = None) -> Path:
    """The corpus folder: ``corpus``, else the store manifest's ``corpus`` entry (str or {path})."""
    if corpus is None:
        entry = root.attrs.get("manifest", {}).get("corpus")
        corpus = entry.get("path") if isinstance(entry, dict) else entry
    if not corpus:
        raise ValueError("the store's manifest names no corpus; pass the corpus folder (--corpus)")
    path = Path(corpus)
    if not path.is_dir():
        raise FileNotFoundError(f"corpus folder {str(path)!r} does not exist")
    return path


def held_out_split(names: Sequence[str], records: Sequence | None, seed: int = 0,
                   fraction: float = 0.5) -> tuple[np.ndarray, str]:
    """(image,) bool held-out flags for the store's image names, and the rule used.

    The corpus's split when every record has ``is_train``; otherwise a seeded random
    ``fraction`` of the images (``default_rng(seed)``), so a folder corpus is split too.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    by_name = {str(r.name): r for r in (records or [])}
    flags = [None if n not in by_name else by_name[n].is_train for n in names]
    if names and all(f is not None for f in flags):
        return np.array([not f for f in flags], dtype=bool), "corpus train_test_split (held out = test)"
    rng = np.random.default_rng(seed)
    held = np.zeros(len(names), dtype=bool)
    held[rng.permutation(len(names))[: int(round(fraction * len(names)))]] = True
    return held, f"seeded: {fraction:g} of the images held out (seed {seed})"


def category_pixels(root) -> np.ndarray:
    """(image, part) int64 pixel count of every category in every labelled image (images whose
    parts are not done count nothing): ``parts/category_pixels`` (one chunk) where the parts
    stage wrote it, else one pass over the label maps (stores painted before issue 20)."""
    from diffparts.store import done_mask

    k1 = int(root[PARTS].attrs["n_categories"])
    done = done_mask(root, PARTS)
    stored = root[f"{PARTS}/category_pixels"] if "category_pixels" in root[PARTS] else None
    if stored is not None and int(stored.attrs.get("n_categories", -1)) == k1 and stored.shape[1] == k1:
        counts = np.zeros((len(done), k1), np.int64)   # written by the parts stage with its labels
        rows = np.asarray(stored[: min(len(done), stored.shape[0])], np.int64)
        counts[: len(rows)] = rows
        counts[~done] = 0
        return counts
    labels = root[f"{PARTS}/labels"]
    counts = np.zeros((len(done), k1), np.int64)
    for i in np.flatnonzero(done):
        lab = np.asarray(labels[int(i)]).ravel()
        counts[i] = np.bincount(lab[lab >= 0], minlength=k1)[:k1]
    return counts


def category_indices(root, category: int, held_out: bool, min_pixels: int = 4,
                     pixels: np.ndarray | None = None) -> np.ndarray:
    """Store indices of labelled images with at least ``min_pixels`` of ``category``, by split.

    ``pixels``: :func:`category_pixels` of the store, to avoid reading the labels again.
    """
    if f"{STAGE}/held_out" not in root:
        raise ValueError("the store has no embeddings/held_out split yet (run the embeddings set-up first)")
    split = np.asarray(read_image_vector(root[f"{STAGE}/held_out"]), dtype=bool)
    pixels = category_pixels(root) if pixels is None else pixels
    if not 0 <= int(category) < pixels.shape[1]:
        raise ValueError(f"category {category} is not a part category of this store (0..{pixels.shape[1] - 1})")
    keep = (split[: len(pixels)] == held_out) & (pixels[:, int(category)] >= min_pixels)
    return np.flatnonzero(keep).astype(np.int64)


def subset(indices: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """At most ``limit`` of ``indices``: a seeded choice, kept in store order."""
    indices = np.asarray(indices, np.int64)
    if limit is None or len(indices) <= limit:
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, size=int(limit), replace=False))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """(y, x) bool/int -> (size, size) float32 by nearest neighbour (pixel centres)."""
    h, w = mask.shape
    ys = np.minimum(((np.arange(size) + 0.5) * h / size).astype(int), h - 1)
    xs = np.minimum(((np.arange(size) + 0.5) * w / size).astype(int), w - 1)
    return np.asarray(mask, np.float32)[ys][:, xs]


def load_examples(root, corpus: str | Path | None, category: int, indices: Sequence[int],
                  size: int) -> CategoryExamples:
    """Images (resized to ``size``, as extraction fed them) and masks of ``category``."""
    from diffparts.corpus import load_rgb, open_corpus
    from diffparts.model.extract import prepare_images
    from diffparts.store import image_table

    if len(indices) == 0:
        raise ValueError(f"part category {category} has no images in this split")
    table = image_table(root)
    by_name = {str(r.name): r for r in open_corpus(corpus_path(root, corpus))}
    images, masks = [], []
    for i in indices:
        name = table[int(i)]["name"]
        if name not in by_name:
            raise ValueError(f"store image {name!r} is not in the corpus {str(corpus_path(root, corpus))!r}")
        images.append(prepare_images(load_rgb(by_name[name].path)[None], size)[0])
        masks.append(resize_mask(np.asarray(root[f"{PARTS}/labels"][int(i)]) == category, size))
    return CategoryExamples(int(category), np.asarray(indices, np.int64), np.stack(images), np.stack(masks))


def random_crop_keep(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                     min_scale: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """A random square crop holding the mask's centroid, resized back to the input size.

    Hedlin et al. crop around the point they optimise for; here the point is the part's
    centroid. image (y, x, 3) uint8, mask (y, x) float32 -> the same shapes.
    """
    from PIL import Image

    h, w = mask.shape
    side = int(round(rng.uniform(min_scale, 1.0) * min(h, w)))
    if side >= min(h, w):
        return image, mask
    ys, xs = np.nonzero(mask > 0.5)
    cy, cx = (ys.mean(), xs.mean()) if len(ys) else (h / 2, w / 2)
    y0_lo, y0_hi = int(max(0, np.ceil(cy - side + 1))), int(min(h - side, np.floor(cy)))
    x0_lo, x0_hi = int(max(0, np.ceil(cx - side + 1))), int(min(w - side, np.floor(cx)))
    y0 = int(rng.integers(y0_lo, max(y0_lo, y0_hi) + 1))
    x0 = int(rng.integers(x0_lo, max(x0_lo, x0_hi) + 1))
    crop = Image.fromarray(image[y0:y0 + side, x0:x0 + side]).resize((w, h), Image.Resampling.BICUBIC)
    m = resize_mask(mask[y0:y0 + side, x0:x0 + side], h) if h == w else mask
    return np.asarray(crop), m
