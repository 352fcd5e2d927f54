"""Keypoint transfer by dense feature matching (DIFT, Tang et al. NeurIPS 2023; docs/design.md §5.5 "Parts").

A source point's UNet feature (the feature map upsampled bilinearly to a pixel grid, every
pixel's vector L2-normalised) is compared by cosine similarity with every allowed target pixel;
the most similar one is the transferred point. ``within`` says which pixels are allowed:

- ``"image"``: every target pixel (DIFT's global nearest neighbour);
- ``"box"``: the target's object box only;
- ``"part"``: the target's pixels of the part category under the source point (the part decides
  where to look, the features decide the point); where the source point is on background or
  the target lacks its category, the relative-position transfer of ``transfer.transfer_points``
  is the fallback.
"""

from __future__ import annotations

import numpy as np

from diffparts.parts.transfer import clip_to_box, object_corners, transfer_points

WITHIN = ("image", "box", "part")

#: Longest side of the grid the features are matched on. Part maps larger than this (512 px at
#: SD 1.5's size) are subsampled to it: matching 1280-channel features on the full 512 x 512
#: grid costs 4.3 GB and 6-15 s per pair (docs/real-sizes.md), at 128 it costs 1/16 of that,
#: and a 4-pixel step is far inside PCK@0.05's tolerance. The 64 px toy maps are not touched.
MATCH_GRID_MAX = 128


def match_grid(part_map: np.ndarray, longest: int | None = None) -> np.ndarray:
    """``part_map`` subsampled (nearest, every s-th pixel from s // 2) so that neither side
    exceeds ``longest`` (default ``MATCH_GRID_MAX``); unchanged when it is already small enough."""
    part_map = np.asarray(part_map)
    longest = MATCH_GRID_MAX if longest is None else longest
    step = -(-max(part_map.shape) // int(longest))          # ceil
    if step <= 1:
        return part_map
    return part_map[step // 2 :: step, step // 2 :: step]


def dense_features(features: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(channel, fy, fx) features -> (y, x, channel) float32 on a ``shape`` grid, unit vectors.

    Bilinear upsampling (``align_corners=False``, torch's ``interpolate``), then each pixel's
    vector divided by its norm.
    """
    import torch

    features = np.asarray(features, np.float32)
    if features.ndim != 3:
        raise ValueError(f"features must be (channel, y, x), got shape {features.shape}")
    t = torch.from_numpy(features)[None]                                   # 1 channel fy fx
    if tuple(features.shape[1:]) != tuple(shape):
        t = torch.nn.functional.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)
    out = t[0].permute(1, 2, 0).numpy()                                    # y x channel
    return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)


def match_points(source_features: np.ndarray, target_features: np.ndarray, points: np.ndarray,
                 source_size: tuple[int, int], target_size: tuple[int, int], grid: tuple[int, int],
                 allowed=None) -> np.ndarray:
    """Cosine nearest neighbour in the target of each source point (point, 2) x, y.

    source_features/target_features: (channel, fy, fx). source_size/target_size: image
    (width, height); points and the result are in image pixels. grid: (y, x) side of the pixel
    grid both maps are upsampled to. allowed: None, a (y, x) bool mask on the grid, or a
    function ``allowed(i) -> mask or None`` per point (an empty mask gives NaN). Returns the
    centre of the chosen grid pixel in target image pixels (NaN for non-finite points).
    """
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    gh, gw = grid
    src = dense_features(source_features, grid)                           # y x channel
    tgt = dense_features(target_features, grid).reshape(gh * gw, -1)      # (y x) channel
    s_scale = np.array([gw / source_size[0], gh / source_size[1]])        # image px -> grid px
    t_scale = np.array([gw / target_size[0], gh / target_size[1]])
    out = np.full((len(pts), 2), np.nan)
    for i, (x, y) in enumerate(pts):
        if not np.isfinite([x, y]).all():
            continue
        gx = min(max(int(x * s_scale[0]), 0), gw - 1)
        gy = min(max(int(y * s_scale[1]), 0), gh - 1)
        sim = tgt @ src[gy, gx]                                            # (y x)
        mask = allowed(i) if callable(allowed) else allowed
        if mask is not None:
            mask = np.asarray(mask, bool).ravel()
            if not mask.any():
                continue
            sim = np.where(mask, sim, -np.inf)
        k = int(np.argmax(sim))
        out[i] = ((k % gw + 0.5) / t_scale[0], (k // gw + 0.5) / t_scale[1])
    return out


def transfer_by_features(source_features: np.ndarray, target_features: np.ndarray, points: np.ndarray,
                         source_map: np.ndarray, target_map: np.ndarray, source_box, target_box,
                         source_size: tuple[int, int], target_size: tuple[int, int],
                         within: str = "part", flip: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Transfer points (point, 2) by feature matching; the grid is the part maps' (y, x),
    subsampled to at most ``MATCH_GRID_MAX`` a side.

    Same arguments and returns as ``transfer_points`` plus the two images' features
    (channel, fy, fx). ``used[i]`` is the category that restricted the match (``within="part"``),
    0 where the whole image / box was searched or the relative-position fallback was used, and
    -1 where the image or box was searched by features (``within`` "image" or "box").
    """
    if within not in WITHIN:
        raise ValueError(f"within must be one of {WITHIN}, got {within!r}")
    source_map, target_map = np.asarray(source_map), np.asarray(target_map)
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if source_map.shape != target_map.shape:
        raise ValueError(f"part maps must have one shape, got {source_map.shape} and {target_map.shape}")
    source_map, target_map = match_grid(source_map), match_grid(target_map)
    grid = target_map.shape
    t_inside = clip_to_box(np.ones(grid, bool), object_corners(target_box, target_size, grid), 0)
    if within == "image":
        pred = match_points(source_features, target_features, pts, source_size, target_size, grid)
        return pred, np.full(len(pts), -1, np.int64)
    if within == "box":
        pred = match_points(source_features, target_features, pts, source_size, target_size, grid, t_inside)
        return pred, np.full(len(pts), -1, np.int64)
    # within the part: the category under each source point (inside the boxes, as transfer_points)
    s_cat = clip_to_box(source_map, object_corners(source_box, source_size, grid), 0)
    t_cat = clip_to_box(target_map, object_corners(target_box, target_size, grid), 0)
    sh, sw = grid
    cats = np.zeros(len(pts), np.int64)
    for i, (x, y) in enumerate(pts):
        if np.isfinite([x, y]).all():
            cx = min(max(int(x * sw / source_size[0]), 0), sw - 1)
            cy = min(max(int(y * sh / source_size[1]), 0), sh - 1)
            cats[i] = s_cat[cy, cx]
    present = set(np.unique(t_cat).tolist())
    use_part = (cats > 0) & np.array([c in present for c in cats], bool)
    pred, _ = transfer_points(source_map, target_map, pts, source_box, target_box, source_size, target_size,
                              flip=flip, within="box")                    # the fallback
    if use_part.any():
        matched = match_points(source_features, target_features, pts[use_part], source_size, target_size, grid,
                               lambda j, c=cats[use_part]: t_cat == c[j])
        pred[use_part] = matched
    return pred, np.where(use_part, cats, 0)
