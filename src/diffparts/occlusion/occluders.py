"""Occluders: hide parts of an image and record exactly what was hidden (docs/design.md §5.7 "Occlusion").

A hidden region is chosen by **ground-truth part** (where the corpus has part masks: the
measurable case), by **discovered category** (the parts stage's map) or as a **random box**
over the object; the **background control** moves such a shape onto the background only
(:func:`move_to_background`: nothing is hidden, so every alarm is false). It is filled with
flat grey, seeded noise, a texture patch cut from another image's background, or a foreground
``object`` in natural colours (:func:`object_texture`: a leaf or a branch in front of the bird). :class:`OcclusionRecord` says what was hidden: the pixel mask, the
ground-truth parts and discovered categories under it with the fraction of each one's pixels
that is covered, the fill and the seed. Arrays in, arrays out; all maps are at image size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

FILLS = ("grey", "noise", "patch", "object")
PARTS_HIDDEN = ("part", "cover")       # the kinds of case that hide a ground-truth part (the judge reads them)
GREY = 128  # the flat fill's value in every channel: mid-grey, no colour cue


@dataclass(frozen=True)
class OcclusionRecord:
    """Exactly what one occluder hid in one image."""

    mask: np.ndarray = field(repr=False)   # (y, x) bool, True = hidden
    how: str                               # "part", "cover", "category", "box" or "background"
    target: tuple[int, ...]                # the parts or categories asked for (empty for a box)
    gt_parts: dict[int, float]             # ground-truth part -> fraction of its pixels hidden (covered ones)
    categories: dict[int, float]           # discovered category -> fraction of its pixels hidden
    fill: str                              # grey | noise | patch | object
    seed: int                              # seed of the noise, the patch and the box
    patch_from: int | None = None          # where the patch came from (the caller's image id)

    def to_json(self) -> str:
        """Everything but the mask (stored as its own array) as one JSON string."""
        return json.dumps({"how": self.how, "target": list(self.target),
                           "gt_parts": {str(k): v for k, v in self.gt_parts.items()},
                           "categories": {str(k): v for k, v in self.categories.items()},
                           "fill": self.fill, "seed": self.seed, "patch_from": self.patch_from,
                           "hidden_pixels": int(self.mask.sum())})

    @staticmethod
    def from_json(text: str, mask: np.ndarray) -> "OcclusionRecord":
        d = json.loads(text)
        return OcclusionRecord(np.asarray(mask, bool), d["how"], tuple(d["target"]),
                               {int(k): float(v) for k, v in d["gt_parts"].items()},
                               {int(k): float(v) for k, v in d["categories"].items()},
                               d["fill"], int(d["seed"]), d.get("patch_from"))


def hidden_fractions(labels: np.ndarray | None, mask: np.ndarray) -> dict[int, float]:
    """{label: fraction of that label's pixels under ``mask``} for every label > 0 it touches.

    labels (y, x) int, resized to the mask's shape by nearest neighbour when they differ.
    """
    if labels is None:
        return {}
    labels = resize_labels(np.asarray(labels), mask.shape)
    counts = np.bincount(labels[labels > 0].ravel(), minlength=1)
    under = np.bincount(labels[mask & (labels > 0)].ravel(), minlength=len(counts))
    return {int(k): round(float(under[k] / counts[k]), 6) for k in np.flatnonzero(under)}


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(y, x) integer map -> ``shape`` by nearest neighbour at pixel centres (no new labels)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a (y, x) map, got shape {labels.shape}")
    if labels.shape == tuple(shape):
        return labels
    h, w = labels.shape
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(int), h - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(int), w - 1)
    return labels[ys][:, xs]


def label_mask(labels: np.ndarray, wanted, shape: tuple[int, int]) -> np.ndarray:
    """(y, x) bool at ``shape``: pixels whose label is in ``wanted``; ValueError if none is."""
    wanted = [int(w) for w in wanted]
    if not wanted or any(w <= 0 for w in wanted):
        raise ValueError(f"parts to hide must be labels >= 1 (0 is background), got {wanted}")
    mask = np.isin(resize_labels(labels, shape), wanted)
    if not mask.any():
        raise ValueError(f"labels {wanted} are not in this image: nothing to hide")
    return mask


def random_box(object_mask: np.ndarray, rng: np.random.Generator, scale: tuple[float, float] = (0.3, 0.5)) -> np.ndarray:
    """(y, x) bool: an axis-aligned box of ``scale`` of the object's box sides, centred on a
    random object pixel (clipped to the image)."""
    ys, xs = np.nonzero(object_mask)
    if len(ys) == 0:
        raise ValueError("the object mask is empty: no object to put a box over")
    h, w = object_mask.shape
    bh = max(1, int(round(rng.uniform(*scale) * (ys.max() - ys.min() + 1))))
    bw = max(1, int(round(rng.uniform(*scale) * (xs.max() - xs.min() + 1))))
    i = int(rng.integers(len(ys)))
    y0, x0 = max(0, ys[i] - bh // 2), max(0, xs[i] - bw // 2)
    mask = np.zeros((h, w), bool)
    mask[y0:min(h, y0 + bh), x0:min(w, x0 + bw)] = True
    return mask


def background_patch(source: np.ndarray, background: np.ndarray, shape: tuple[int, int],
                     rng: np.random.Generator) -> np.ndarray:
    """(y, x, 3) uint8 of ``shape``: a texture from ``source``'s background, tiled to the size
    needed at a random offset. background (y, x) bool.

    The texture is the source's rows (or columns, whichever are more) that hold no object pixel,
    stacked and resized (nearest) to half the target side; the whole source when fewer than 4.
    """
    from PIL import Image

    if source.shape[:2] != background.shape:
        raise ValueError(f"patch source {source.shape[:2]} and its background mask {background.shape} differ")
    rows, cols = np.flatnonzero(background.all(1)), np.flatnonzero(background.all(0))
    if len(rows) >= len(cols) and len(rows) >= 4:
        block = source[rows]                                    # background rows, stacked
    elif len(cols) >= 4:
        block = source[:, cols]
    else:
        block = source
    tile = np.asarray(Image.fromarray(block).resize((max(8, shape[1] // 2), max(8, shape[0] // 2)),
                                                   Image.Resampling.NEAREST))
    reps = (int(np.ceil(shape[0] / tile.shape[0])) + 1, int(np.ceil(shape[1] / tile.shape[1])) + 1, 1)
    big = np.tile(tile, reps)
    oy, ox = int(rng.integers(tile.shape[0])), int(rng.integers(tile.shape[1]))
    return big[oy:oy + shape[0], ox:ox + shape[1]]


def move_to_background(shape: np.ndarray, object_mask: np.ndarray, rng: np.random.Generator,
                       margin: int = 1) -> np.ndarray:
    """(y, x) bool: ``shape`` (a (y, x) bool occluder) translated to a seeded random place where
    it touches no ``object_mask`` pixel (the object dilated by ``margin``), clipped to nothing.

    When no place fits, the shape is halved (nearest) and tried again, at most 3 times; then
    ValueError (the image has no background room for it).
    """
    from PIL import Image
    from scipy.ndimage import binary_dilation
    from scipy.signal import fftconvolve

    shape, obj = np.asarray(shape, bool), np.asarray(object_mask, bool)
    if shape.shape != obj.shape:
        raise ValueError(f"occluder shape {shape.shape} and object mask {obj.shape} differ in size")
    if not shape.any():
        raise ValueError("the occluder's shape is empty: nothing to place")
    blocked = binary_dilation(obj, iterations=margin) if margin > 0 else obj
    ys, xs = np.nonzero(shape)
    crop = shape[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = obj.shape
    for _ in range(4):
        ch, cw = crop.shape
        if ch <= h and cw <= w:
            # hits[y, x] = object pixels under the crop placed with its top-left corner at (y, x)
            hits = fftconvolve(blocked.astype(np.float32), crop[::-1, ::-1].astype(np.float32), mode="valid")
            free = np.argwhere(hits < 0.5)
            if len(free):
                y0, x0 = free[int(rng.integers(len(free)))]
                out = np.zeros((h, w), bool)
                out[y0:y0 + ch, x0:x0 + cw] = crop
                return out
        crop = np.asarray(Image.fromarray(crop).resize((max(1, cw // 2), max(1, ch // 2)),
                                                      Image.Resampling.NEAREST), bool)
        if not crop.any():
            break
    raise ValueError("no background room for the occluder in this image (even at 1/8 of its size)")


def cover_shape(part: np.ndarray, rng: np.random.Generator, coverage: float = 0.9,
                jitter_degrees: float = 25.0) -> np.ndarray:
    """(y, x) bool: an occluder with an outline of its own (a leaf's: pointed at both ends) laid
    over ``part`` (a (y, x) bool mask), seeded.

    The leaf lies along the part's longer axis, turned by up to ``jitter_degrees`` and moved by
    up to a tenth of its length, and grows until it hides at least ``coverage`` of the part's
    pixels. So the part is hidden as by ``label_mask`` but the occluder does not trace it: the
    neighbours and the background around the part are hidden too, and a reader cannot recognise
    the part by the occluder's silhouette (issue 18's completion cases with a leaf-and-branch fill).
    """
    part = np.asarray(part, bool)
    if part.ndim != 2 or not part.any():
        raise ValueError("the part to cover must be a non-empty (y, x) bool mask")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    ys, xs = np.nonzero(part)
    points = np.stack([xs, ys]).astype(np.float64)
    spread = (np.cov(points) if len(xs) > 1 else np.zeros((2, 2))) + 0.25 * np.eye(2)   # a pixel's own spread
    values, vectors = np.linalg.eigh(spread)                                            # ascending
    angle = float(np.arctan2(vectors[1, 1], vectors[0, 1]) + np.deg2rad(rng.uniform(-jitter_degrees, jitter_degrees)))
    length = 2.0 * np.sqrt(values[1])                                                   # half-length
    width = float(np.clip(2.0 * np.sqrt(values[0]), 0.5 * length, length))              # never a thread
    cx, cy = points.mean(axis=1) + rng.uniform(-0.1, 0.1, 2) * length
    yy, xx = np.mgrid[0:part.shape[0], 0:part.shape[1]].astype(np.float64)
    along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    wanted = coverage * part.sum()
    grow = 1.0
    while True:
        u, v = along / (length * grow), across / (width * grow)
        shape = (np.abs(u) <= 1) & (np.abs(v) <= 1 - u ** 2)                            # pointed at u = +-1
        if (shape & part).sum() >= wanted or shape.all():
            return shape
        grow *= 1.1


def occluder_mask(how: str, target, seed: int, gt_labels: np.ndarray | None,
                  categories: np.ndarray) -> np.ndarray:
    """(y, x) bool: what a case of kind ``how`` hides (seeded), at the size of ``categories``.

    gt_labels: the image's ground-truth part map (or None), categories: its discovered category
    map, both at the same size. part: the ``target`` parts themselves; cover: a leaf's outline
    over them (``cover_shape``); category: the ``target`` categories; background: the target
    part's (else category's) shape moved off the object; box: a random box over the object.
    """
    size = categories.shape
    rng = np.random.default_rng(seed)
    if how in PARTS_HIDDEN and gt_labels is None:
        raise ValueError(f"how={how!r} needs the image's ground-truth part map")
    if how == "part":
        return label_mask(gt_labels, target, size)
    if how == "cover":
        return cover_shape(label_mask(gt_labels, target, size), rng)
    if how == "category":
        return label_mask(categories, target, size)
    if how == "background":
        shape = label_mask(gt_labels if gt_labels is not None else categories, target, size)
        obj = (categories > 0) | (gt_labels > 0 if gt_labels is not None else False)
        return move_to_background(shape, obj, rng)
    if how == "box":
        return random_box(gt_labels > 0 if gt_labels is not None else categories > 0, rng)
    raise ValueError(f"unknown occluder kind {how!r}: part, cover, category, background or box")


LEAF_GREENS = ((58, 112, 44), (84, 140, 52), (40, 90, 36), (110, 150, 60))   # leaf base colours
BARK_BROWNS = ((96, 70, 44), (120, 88, 56), (78, 60, 40), (140, 110, 76))     # branch base colours


def object_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(y, x, 3) uint8: a foreground object in natural colours, a leaf or a branch (seeded).

    Leaf: a green (jittered) with a darker midrib and side veins at a random angle and a soft
    shading across it. Branch: a brown with darker bark lines along a random direction and
    fine grain. Both are smooth, plausible surfaces, never a colour of the bird's palette on
    purpose (greens and browns do occur in birds, as in life)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = float(rng.uniform(0, np.pi))
    u = (xx - w / 2) * np.cos(angle) + (yy - h / 2) * np.sin(angle)               # along the object
    v = -(xx - w / 2) * np.sin(angle) + (yy - h / 2) * np.cos(angle)              # across it
    if rng.random() < 0.5:                                                         # leaf
        base = np.array(LEAF_GREENS[int(rng.integers(len(LEAF_GREENS)))], np.float32) + rng.normal(0, 8, 3)
        shade = 1.0 + 0.18 * np.tanh(v / (0.25 * max(h, w)))                       # lighter on one side
        midrib = np.exp(-(v / 1.2) ** 2)                                           # a thin dark line
        period = float(rng.uniform(5, 8))
        veins = np.exp(-((np.mod(u + 0.8 * np.abs(v), period) - period / 2) / 0.9) ** 2) * 0.6
        dark = 1.0 - 0.35 * np.maximum(midrib, veins)
        rgb = base[None, None, :] * (shade * dark)[..., None]
    else:                                                                          # branch
        base = np.array(BARK_BROWNS[int(rng.integers(len(BARK_BROWNS)))], np.float32) + rng.normal(0, 6, 3)
        period = float(rng.uniform(3, 5))
        lines = 0.5 + 0.5 * np.cos(2 * np.pi * (v + 0.6 * np.sin(u / 5.0)) / period)
        grain = rng.normal(0, 0.05, (h, w)).astype(np.float32)
        rgb = base[None, None, :] * (0.78 + 0.3 * lines + grain)[..., None]
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def fill_region(image: np.ndarray, mask: np.ndarray, fill: str, rng: np.random.Generator,
                patch: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``image`` (y, x, 3) uint8 with the ``mask`` pixels replaced by ``fill``."""
    if fill not in FILLS:
        raise ValueError(f"unknown fill {fill!r}: the fills are {', '.join(FILLS)}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (y, x, 3) uint8, got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2] or mask.dtype != bool:
        raise ValueError(f"mask must be a (y, x) bool map of the image's size {image.shape[:2]}, got "
                         f"{mask.dtype} {mask.shape}")
    out = image.copy()
    if fill == "grey":
        out[mask] = GREY
    elif fill == "noise":
        out[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
    elif fill == "object":
        out[mask] = object_texture(image.shape[:2], rng)[mask]
    else:
        if patch is None or patch.shape != image.shape:
            raise ValueError(f"the patch fill needs a patch of the image's shape {image.shape}, got "
                             f"{None if patch is None else patch.shape}")
        out[mask] = patch[mask]
    return out


def occlude(image: np.ndarray, mask: np.ndarray, fill: str = "grey", seed: int = 0, *, how: str = "part",
            target=(), gt_labels: np.ndarray | None = None, categories: np.ndarray | None = None,
            patch_source: tuple[np.ndarray, np.ndarray] | None = None,
            patch_from: int | None = None) -> tuple[np.ndarray, OcclusionRecord]:
    """Hide ``mask`` in ``image`` with ``fill``; the occluded image and its record.

    gt_labels / categories: the image's ground-truth part map and discovered category map (any
    size; nearest-resized) for the record's hidden fractions. patch_source: (image, background
    mask) of another image, for ``fill="patch"``.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("the occluder's mask is empty: nothing is hidden")
    rng = np.random.default_rng(seed)
    patch = None
    if fill == "patch":
        if patch_source is None:
            raise ValueError("fill 'patch' needs patch_source=(image, background mask) of another image")
        patch = background_patch(patch_source[0], np.asarray(patch_source[1], bool), image.shape[:2], rng)
    out = fill_region(image, mask, fill, rng, patch)
    record = OcclusionRecord(mask, how, tuple(int(t) for t in target), hidden_fractions(gt_labels, mask),
                             hidden_fractions(categories, mask), fill, int(seed), patch_from)
    return out, record
