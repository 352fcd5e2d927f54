"""Synthetic renders with their true part maps, and random training masks (parts, boxes, strokes).

Shared by the two models trained on synthetic birds beside the embedded checkpoint: the
independent part judge (:mod:`diffparts.judge`) and the toy inpainting checkpoint
(:mod:`diffparts.train.inpaint`). Renders come from ``diffparts.corpus.generate_birds`` at
128 px and are box-averaged to the model's side; part maps take the majority label of each
block. Masks follow Stable Diffusion inpainting's recipe in small: the union of one or two true
parts (dilated), a random box over the object, or random thick strokes; arrays in, arrays out.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

MASK_KINDS = ("part", "box", "stroke", "full")


def downsample_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """(image, y, x) integer maps -> (image, size, size): the majority label of each block
    (ties to the smaller label); ``y`` must be a multiple of ``size``."""
    labels = np.asarray(labels)
    n, h, w = labels.shape
    if h == size and w == size:
        return labels.copy()
    if h % size or w % size:
        raise ValueError(f"label maps of {h}x{w} do not divide into {size}x{size} blocks")
    f = h // size
    blocks = labels.reshape(n, size, f, size, f)
    top = int(labels.max()) + 1
    counts = np.stack([(blocks == k).sum((2, 4)) for k in range(top)], -1)    # image y x label
    return counts.argmax(-1).astype(labels.dtype)


def load_renders(root: str | Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A synthetic corpus at ``size`` px: images (image, y, x, 3) uint8 (PIL box filter), part
    maps (image, y, x) uint8 (0 = background, 1..9 = ``PART_NAMES``) and captions, in image-id order."""
    from PIL import Image

    from diffparts.corpus import load_mask, open_corpus

    images, maps, captions = [], [], []
    for rec in open_corpus(root):
        if rec.part_mask_path is None:
            raise ValueError(f"corpus {str(root)!r} has no part mask for {rec.name!r}: a synthetic corpus is needed")
        with Image.open(rec.path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BOX)
            images.append(np.asarray(img))
        maps.append(np.asarray(load_mask(rec.part_mask_path), np.uint8))
        captions.append(rec.caption or "")
    if not images:
        raise ValueError(f"corpus {str(root)!r} has no images")
    return np.stack(images), downsample_labels(np.stack(maps), size), captions


def render_birds(n: int, seed: int, size: int, log=None, world=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``n`` fresh synthetic birds of corpus seed ``seed`` at ``size`` px (a temporary corpus,
    deleted after reading): see :func:`load_renders`. ``world``: a ``PartWorldConfig`` for the
    part world's images (close-ups and scenes among the birds), None for the default birds."""
    from diffparts.corpus import generate_birds

    with tempfile.TemporaryDirectory(prefix="diffparts-renders-") as work:
        if log:
            log(f"rendering {n} synthetic birds (corpus seed {seed})")
        generate_birds(work, n, seed, world=world)
        return load_renders(work, size)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """(y, x) bool dilated by a (2r+1) square."""
    mask = np.asarray(mask, bool)
    if radius <= 0:
        return mask.copy()
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            src = mask[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
            out[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)] |= src
    return out


def random_mask(rng: np.random.Generator, part_map: np.ndarray, kind: str | None = None,
                probabilities: tuple[float, ...] = (0.45, 0.25, 0.25, 0.05)) -> tuple[np.ndarray, str]:
    """A random (y, x) bool mask for one image and its kind.

    part_map (y, x): the image's true parts (0 = background). Kinds (``MASK_KINDS``, drawn with
    ``probabilities`` when ``kind`` is None): ``part``: the union of one or two parts present,
    dilated by 0-2 px; ``box``: a box of 0.2-0.5 of the object's box sides (at least a quarter of
    the image's) centred on an object pixel; ``stroke``: one to three thick random polylines;
    ``full``: the whole image (keeps the model able to generate without context).
    """
    h, w = part_map.shape
    if kind is None:
        kind = MASK_KINDS[int(rng.choice(len(MASK_KINDS), p=np.asarray(probabilities) / sum(probabilities)))]
    present = [int(p) for p in np.unique(part_map) if p > 0]
    if kind == "part" and present:
        chosen = rng.choice(present, size=min(len(present), 1 + int(rng.random() < 0.3)), replace=False)
        return dilate(np.isin(part_map, chosen), int(rng.integers(0, 3))), kind
    if kind in ("part", "box"):
        ys, xs = np.nonzero(part_map > 0)
        if len(ys):
            oh, ow = int(np.ptp(ys)) + 1, int(np.ptp(xs)) + 1
            i = int(rng.integers(len(ys)))
            cy, cx = ys[i], xs[i]
        else:
            oh, ow, cy, cx = h, w, h // 2, w // 2
        bh = max(int(rng.uniform(0.2, 0.5) * max(oh, h / 4)), 2)
        bw = max(int(rng.uniform(0.2, 0.5) * max(ow, w / 4)), 2)
        out = np.zeros((h, w), bool)
        out[max(0, cy - bh // 2):cy - bh // 2 + bh, max(0, cx - bw // 2):cx - bw // 2 + bw] = True
        return out, "box"
    if kind == "stroke":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        out = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(1, 4))):
            points = rng.uniform(0, [h, w], size=(int(rng.integers(2, 5)), 2)).astype(np.float32)
            radius = rng.uniform(0.03, 0.08) * h
            for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
                dy, dx = y1 - y0, x1 - x0
                t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
                out |= (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2 <= radius ** 2
        return out, kind
    if kind == "full":
        return np.ones((h, w), bool), kind
    raise ValueError(f"unknown mask kind {kind!r}; known: {', '.join(MASK_KINDS)}")
