"""Keypoint transfer between two images through the part categories (docs/design.md §5.5 "Parts").

Its evaluation (PCK, NMI/ARI) is ``parts.evaluate``; feature matching ``parts.matching``.

Transfer of a source point p (steps in ``transfer_points``):

0. Only pixels inside each image's object box count (a category may also cover background).
1. Read the part category c under p in the source's part map ``(y, x)``.
2. If c is a foreground category (> 0) that is present in the target, map p by its relative
   position inside c's box in the source (the bounding box of all of c's pixels) to the same
   relative position inside c's box in the target, then snap it to the nearest target pixel of
   category c (parts are not boxes).
3. Otherwise (background, or a category the target lacks) map p by its relative position
   inside the object box of each image.

Part maps may have any size; points are in original image pixels and are scaled to the map.
When the two objects face opposite ways, relative x positions are mirrored. Which way they face
is decided per pair from the categories' layout (``relative_flip``): with mirror-invariant
categories (the default descriptor), the head category sits at the left of one box and the
right of the other when the birds face opposite ways.
"""

from __future__ import annotations

import numpy as np

#: Transfer methods: relative position through the parts (this module), or feature matching
#: (``matching.transfer_by_features``) over the whole image, the object box, or the part.
METHODS = {"parts": None, "features": "image", "features-box": "box", "features-part": "part"}


def part_boxes(part_map: np.ndarray) -> dict[int, np.ndarray]:
    """Box (x0, y0, x1, y1) in map pixels (x1, y1 exclusive) of every category in a map."""
    part_map = np.asarray(part_map)
    out: dict[int, np.ndarray] = {}
    for c in np.unique(part_map):
        ys, xs = np.nonzero(part_map == c)
        out[int(c)] = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)
    return out


def _box_centroids(part_map: np.ndarray, obj: np.ndarray) -> dict[int, tuple[float, float]]:
    """Per foreground category: (x centroid in object-box units, share of the map's pixels)."""
    h, w = part_map.shape
    xs = (np.arange(w) + 0.5 - obj[0]) / max(obj[2] - obj[0], 1e-9)
    out = {}
    for c in np.unique(part_map):
        if c <= 0:
            continue
        mask = part_map == c
        out[int(c)] = (float(xs[np.nonzero(mask)[1]].mean()), float(mask.mean()))
    return out


def relative_flip(source_map: np.ndarray, target_map: np.ndarray, source_obj, target_obj) -> bool:
    """Whether the target faces the other way: mirroring the source's category x-centroids
    (object-box units) brings them closer to the target's (weighted by the smaller share).

    source_obj/target_obj: object boxes (x0, y0, x1, y1) in the maps' pixels.
    """
    s = _box_centroids(np.asarray(source_map), np.asarray(source_obj, np.float64))
    t = _box_centroids(np.asarray(target_map), np.asarray(target_obj, np.float64))
    keep, flip = 0.0, 0.0
    for c in set(s) & set(t):
        weight = min(s[c][1], t[c][1])
        keep += weight * abs(s[c][0] - t[c][0])
        flip += weight * abs(1.0 - s[c][0] - t[c][0])
    return flip < keep


def _inside(shape: tuple[int, int], obj: np.ndarray) -> np.ndarray:
    """(y, x) bool: map pixel centres inside the box (x0, y0, x1, y1)."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    return (xs >= obj[0]) & (xs <= obj[2]) & (ys >= obj[1]) & (ys <= obj[3])


def object_corners(box, image_size: tuple[int, int], map_shape: tuple[int, int]) -> np.ndarray:
    """An object box (x, y, w, h) in image pixels -> corners (x0, y0, x1, y1) in map pixels."""
    b = np.asarray(box, np.float64)
    scale = np.array([map_shape[1] / image_size[0], map_shape[0] / image_size[1]])   # image px -> map px
    return np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]]) * np.tile(scale, 2)


def clip_to_box(part_map: np.ndarray, corners: np.ndarray, fill=0) -> np.ndarray:
    """``part_map`` with the pixels outside the box corners (x0, y0, x1, y1) set to ``fill``."""
    part_map = np.asarray(part_map)
    return np.where(_inside(part_map.shape, corners), part_map, fill)


def _snap(part_map: np.ndarray, category: int, x: float, y: float) -> tuple[float, float]:
    """The centre of the nearest pixel of ``category`` to map point (x, y) (itself if inside)."""
    ys, xs = np.nonzero(part_map == category)
    d = (xs + 0.5 - x) ** 2 + (ys + 0.5 - y) ** 2
    i = int(np.argmin(d))
    h, w = part_map.shape
    xi, yi = min(int(x), w - 1), min(int(y), h - 1)
    if 0 <= xi and 0 <= yi and part_map[yi, xi] == category:
        return x, y
    return float(xs[i] + 0.5), float(ys[i] + 0.5)


def transfer_points(source_map: np.ndarray, target_map: np.ndarray, points: np.ndarray,
                    source_box, target_box, source_size: tuple[int, int],
                    target_size: tuple[int, int], flip: bool | None = None,
                    snap: bool = True, within: str = "part") -> tuple[np.ndarray, np.ndarray]:
    """Transfer points (point, 2) x, y from the source image to the target image.

    source_map/target_map: (y, x) part-category maps (0 = background). source_box/target_box:
    object boxes (x, y, width, height) in image pixels. source_size/target_size: image
    (width, height). Returns (point, 2) x, y in target image pixels and (point,) the category
    used (0 where the object box was used instead). flip: mirror relative x positions (the
    objects face opposite ways); None decides it from the maps (``relative_flip``).
    """
    source_map, target_map = np.asarray(source_map), np.asarray(target_map)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if within not in ("part", "box"):
        raise ValueError(f"within must be 'part' or 'box', got {within!r}")
    if source_map.ndim != 2 or target_map.ndim != 2:
        raise ValueError(f"part maps must be (y, x), got {source_map.shape} and {target_map.shape}")
    sh, sw = source_map.shape
    th, tw = target_map.shape
    s_scale = np.array([sw / source_size[0], sh / source_size[1]])   # image px -> source map px
    t_scale = np.array([tw / target_size[0], th / target_size[1]])   # image px -> target map px
    s_obj = object_corners(source_box, source_size, source_map.shape)
    t_obj = object_corners(target_box, target_size, target_map.shape)
    # Parts are looked for inside the object boxes only (a category may also cover background).
    source_map = clip_to_box(source_map, s_obj)
    target_map = clip_to_box(target_map, t_obj)
    s_parts, t_parts = part_boxes(source_map), part_boxes(target_map)
    if flip is None:
        flip = relative_flip(source_map, target_map, s_obj, t_obj)

    out = np.full((len(pts), 2), np.nan)
    used = np.zeros(len(pts), np.int64)
    for i, (x, y) in enumerate(pts):
        if not np.isfinite([x, y]).all():
            continue
        # 1. Category under the point.
        mx, my = x * s_scale[0], y * s_scale[1]
        c = int(source_map[min(max(int(my), 0), sh - 1), min(max(int(mx), 0), sw - 1)])
        # 2./3. Relative position in the part's box, else in the object's box.
        if within == "part" and c > 0 and c in t_parts:
            src, dst = s_parts[c], t_parts[c]
            used[i] = c
        else:
            src, dst = s_obj, t_obj
        u = (mx - src[0]) / max(src[2] - src[0], 1e-9)
        v = (my - src[1]) / max(src[3] - src[1], 1e-9)
        if flip:
            u = 1.0 - u
        tx = dst[0] + u * (dst[2] - dst[0])
        ty = dst[1] + v * (dst[3] - dst[1])
        if used[i] and snap:
            tx, ty = _snap(target_map, c, tx, ty)
        out[i] = (tx / t_scale[0], ty / t_scale[1])
    return out, used
