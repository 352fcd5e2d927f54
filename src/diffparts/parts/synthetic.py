"""Tiny stores and descriptors with known parts, for tests and benchmarks of the parts stage.

``make_part_store`` writes a store with the arrays the parts stage reads (``images/``,
``attention/``, ``segments/labels`` and ``segments/done``) for toy "objects" whose parts are
known exactly: each object is a box at a random place and scale holding three parts laid out
the same way in box units (head = top-left corner, tail = right strip, body = the rest),
mirrored for about half of the objects (facing the other way), on a background split into two
segments. Segments equal the true parts, so a correct parts stage
recovers them exactly; keypoints sit at the centre of each part's box, so transfer through
the right part category is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffparts.parts.dataset import ImageInfo

PART_NAMES = ("head", "tail", "body")


@dataclass(frozen=True)
class SyntheticParts:
    """The truth of a synthetic store."""

    infos: list[ImageInfo]       # per image: size, bbox, keypoints (part, 3), class id
    part_maps: np.ndarray        # (image, y, x) int64 true part per map pixel, 0 = background


def make_descriptors(n_per_category: int = 200, n_categories: int = 4, n_features: int = 6,
                     spread: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hand-made descriptors (segment, feature) float32 around well-separated centres, and the
    true category (segment,) of each row (rows shuffled)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_categories, n_features)) * 3.0
    truth = np.repeat(np.arange(n_categories), n_per_category)
    rng.shuffle(truth)
    x = centres[truth] + spread * rng.normal(size=(len(truth), n_features))
    return x.astype(np.float32), truth


def draw_object(map_size: int, box: tuple[float, float, float, float], flip: bool = False) -> np.ndarray:
    """(y, x) segment map of one object: 0/1 background left/right, 2 head (u < 0.4, v < 0.4),
    3 tail (u >= 0.7), 4 body (the rest of the box); u, v in box units, u mirrored if flip."""
    bx, by, bw, bh = box
    ys, xs = np.mgrid[0:map_size, 0:map_size] + 0.5
    u, v = (xs - bx) / bw, (ys - by) / bh
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    if flip:
        u = 1.0 - u
    seg = np.where(xs < map_size / 2, 0, 1)
    seg = np.where(inside, 4, seg)
    seg = np.where(inside & (u < 0.4) & (v < 0.4), 2, seg)
    seg = np.where(inside & (u >= 0.7), 3, seg)
    return seg.astype(np.int64)


def make_part_store(path: str | Path, n_images: int = 8, map_size: int = 16, resolution: int = 8,
                    image_size: tuple[int, int] = (64, 48), seed: int = 0) -> SyntheticParts:
    """Write a synthetic store at ``path`` and return its truth (see the module docstring)."""
    from diffparts.segment.synthetic import make_region_attention
    from diffparts.store import (build_manifest, create_attention_arrays, create_stage_array,
                                 ensure_stage, mark_done, open_store, prepare_store, write_attention)

    if map_size % resolution:
        raise ValueError(f"map_size {map_size} must be a multiple of resolution {resolution}")
    rng = np.random.default_rng(seed)
    images = [{"image_id": i + 1, "name": f"obj/{i:04d}.png", "sha256": f"{i:064x}"} for i in range(n_images)]
    prepare_store(path, images, build_manifest("synthetic", "sha256:0", {"synthetic": True}),
                  stages=("attention", "segments"))
    root = open_store(path, "r+")
    create_attention_arrays(root, resolution, ["<sot>", "<eot>"], image_size=max(image_size))
    seg_group = ensure_stage(root, "segments")
    labels = create_stage_array(seg_group, "labels", (n_images, 1, map_size, map_size), "int32",
                                ("image", "level", "y", "x"))
    sx, sy = image_size[0] / map_size, image_size[1] / map_size   # map px -> image px
    infos, truth = [], []
    for i in range(n_images):
        w = rng.uniform(0.45, 0.7) * map_size
        h = rng.uniform(0.45, 0.7) * map_size
        x0 = rng.uniform(1, map_size - w - 1)
        y0 = rng.uniform(1, map_size - h - 1)
        seg = draw_object(map_size, (x0, y0, w, h), flip=bool(rng.random() < 0.5))
        labels[i, 0] = seg
        # Attention at the coarser resolution R, from the segment map downsampled (nearest).
        step = map_size // resolution
        attn = make_region_attention(seg[step // 2::step, step // 2::step], sharpness=8.0, seed=seed + i)
        cross = np.full((2, resolution, resolution), 0.5, np.float32)
        write_attention(root, i, attn, cross)
        mark_done(root, "attention", i)
        mark_done(root, "segments", i)
        # Keypoints: centre of each part's box (in map px), then image px; a 4th never visible.
        kps = []
        for part in (2, 3, 4):
            ys, xs = np.nonzero(seg == part)
            cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
            kps.append((cx * sx, cy * sy, 1.0))
        kps.append((0.0, 0.0, 0.0))
        infos.append(ImageInfo(i, i + 1, images[i]["name"], image_size,
                               bbox=(x0 * sx, y0 * sy, w * sx, h * sy),
                               keypoints=np.asarray(kps, np.float32), class_id=1 + i % 2))
        truth.append(np.select([seg == 2, seg == 3, seg == 4], [1, 2, 3], 0))
    return SyntheticParts(infos=infos, part_maps=np.stack(truth))
