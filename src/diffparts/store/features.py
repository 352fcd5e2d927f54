"""The ``features/`` group: UNet up-block features per image (DIFT; docs/design.md §5.5 and §6).

::

    features/up_<i>        (image, up_<i>_channel, up_<i>_y, up_<i>_x) int8 (float16 in older stores)
                           output of unet.up_blocks[i], one chunk per image; the block's own axis
                           names, since blocks differ in channels and side (one name, one length)
    features/up_<i>_scale  (image, up_<i>_y, up_<i>_x) float16   int8 stores only: the step of
                           each cell's channel vector (value = int8 * scale)
    features/done          (image,) bool               written after every features/up_<i> of the image
    attrs: blocks [i, ...], shapes {"up_<i>": [channel, y, x]}, config (FeatureConfig as a dict),
           precision ("int8"; absent = "float16", the stores written before issue 20)

Precision (issue 20): at SD-1.5's shapes one image's features are 1280 x 32 x 32, 2.6 MB as
float16, more than the 2 MB a whole compact store may take per image. ``int8`` (the default for
new feature arrays) stores each spatial cell's channel vector as int8 with one float16 step per
cell, the cell's largest magnitude / 127 (rounded up), so every value is within half a step of
what was written (:func:`quantise_features`): 1.3 MB at those shapes. Per cell, not per
channel, because every consumer compares cells' channel vectors by direction (cosine in
keypoint matching, L2-normalised means in the part descriptors), and a per-cell step keeps
each vector's relative error below 1/254 of its largest component. An existing features group
keeps the precision it was created with, so an older float16 store is read and extended as it
is; the precision is not part of the store's identity (the config hash).

Stores written before issue 13 named the axes ``(image, channel, y, x)`` in every block; they
are read and grown as they are (docs/store.md).

Written by the extract stage beside ``attention/`` (same images, same markers convention); the
parts stage reads them for pooled descriptors and for keypoint transfer by feature matching.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import zarr

from diffparts.store.attention import to_float16, to_float32
from diffparts.store.layout import create_stage_array, ensure_stage, image_count

FEATURES = "features"
#: Storage precisions of the feature arrays; the first is the default for new feature arrays.
FEATURE_PRECISIONS = ("int8", "float16")
#: Largest int8 magnitude used (symmetric, so 0 stays exact and -128 is never written).
INT8_MAX = 127


def scale_name(block: int) -> str:
    """Array name of an int8 block's per-cell steps (``up_1_scale``)."""
    return f"{block_name(block)}_scale"


def feature_precision(root: zarr.Group) -> str:
    """The stored precision of ``features/`` ("float16" for stores written before issue 20)."""
    return str(root[FEATURES].attrs.get("precision", "float16"))


def quantise_features(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (channel, y, x) -> int8 (channel, y, x) and float16 (y, x) steps.

    Each cell's step is its largest |value| / 127, rounded up to a float16, so that
    ``int8 * step`` is within ``step / 2`` of every value (an all-zero cell has step 0).
    """
    values = np.asarray(values, np.float32)
    peak = np.abs(values).max(axis=0) / INT8_MAX                       # y x
    step = to_float16(peak)
    low = step.astype(np.float32) < peak                               # rounded down: one float16 step up
    step[low] = np.nextafter(step[low], np.float16(np.inf))
    if not np.isfinite(step).all():
        raise ValueError(f"features too large for float16 steps (largest |value| {float(np.abs(values).max()):.3g})")
    wide = step.astype(np.float32)
    q = np.divide(values, wide[None], out=np.zeros_like(values), where=wide[None] > 0)
    return np.clip(np.rint(q), -INT8_MAX, INT8_MAX).astype(np.int8), step


def dequantise_features(q: np.ndarray, step: np.ndarray) -> np.ndarray:
    """int8 (channel, y, x) and float16 (y, x) steps -> float32 (channel, y, x)."""
    return np.asarray(q, np.float32) * np.asarray(step, np.float32)[None]


def block_name(block: int) -> str:
    """Array name of an up-block's features (``up_1`` for ``unet.up_blocks[1]``)."""
    return f"up_{int(block)}"


def block_dimensions(block: int) -> tuple[str, str, str, str]:
    """Dimension names of an up-block's array: ``("image", "up_1_channel", "up_1_y", "up_1_x")``."""
    name = block_name(block)
    return ("image", f"{name}_channel", f"{name}_y", f"{name}_x")


def has_features(root: zarr.Group) -> bool:
    """Whether this store version has feature arrays (``create_feature_arrays`` ran)."""
    return FEATURES in root and bool(root[FEATURES].attrs.get("blocks"))


def create_feature_arrays(root: zarr.Group, shapes: Mapping[int, tuple[int, int, int]], config: dict,
                          precision: str | None = None) -> zarr.Group:
    """Create (or check and grow) ``features/up_<i>`` for every stored image. Set-up only.

    shapes: up_blocks index -> (channel, y, x) of one image's output. precision: one of
    ``FEATURE_PRECISIONS``; None = the existing arrays' (an older store: float16), else int8.
    Asking existing arrays for another precision raises ValueError.
    """
    if not shapes:
        raise ValueError("no feature blocks to create")
    if precision is not None and precision not in FEATURE_PRECISIONS:
        raise ValueError(f"feature precision must be one of {FEATURE_PRECISIONS}, got {precision!r}")
    n = image_count(root)
    group = ensure_stage(root, FEATURES)
    blocks = sorted(int(b) for b in shapes)
    old = group.attrs.get("blocks")
    if old and list(old) != blocks:
        raise ValueError(f"feature arrays exist for up_blocks {old}; asked for {blocks}")
    made = [block_name(b) for b in blocks if block_name(b) in group]
    existing = feature_precision(root) if old else ("int8" if group[made[0]].dtype == np.int8 else "float16") \
        if made else None
    if existing and precision and precision != existing:
        raise ValueError(f"feature arrays exist with precision {existing!r}; asked for {precision!r} "
                         "(another precision needs a new store or --new-version)")
    precision = existing or precision or FEATURE_PRECISIONS[0]
    for b in blocks:
        c, h, w = (int(v) for v in shapes[b])
        dims = block_dimensions(b)
        create_stage_array(group, block_name(b), (n, c, h, w), "int8" if precision == "int8" else "float16", dims,
                           earlier_dimension_names=("image", "channel", "y", "x"))
        if precision == "int8":
            create_stage_array(group, scale_name(b), (n, h, w), "float16", (dims[0], *dims[2:]))
    group.attrs.update({"blocks": blocks, "config": dict(config), "precision": precision,
                        "shapes": {block_name(b): [int(v) for v in shapes[b]] for b in blocks}})
    return group


def write_features(root: zarr.Group, index: int, features: Mapping[int, np.ndarray]) -> int:
    """Write one image's features (block -> (channel, y, x)) into its chunks; bytes handed to Zarr.

    Does NOT set ``features/done``: the caller marks it after this returns.
    """
    group = root[FEATURES]
    blocks = list(group.attrs["blocks"])
    int8 = feature_precision(root) == "int8"
    if sorted(int(b) for b in features) != blocks:
        raise ValueError(f"features for up_blocks {sorted(features)}; the store holds {blocks}")
    nbytes = 0
    for b in blocks:
        values = np.asarray(features[b])
        arr = group[block_name(b)]
        if tuple(values.shape) != tuple(arr.shape[1:]):
            raise ValueError(f"features of up_blocks[{b}] have shape {values.shape}, stored {arr.shape[1:]}")
        if not np.isfinite(values).all():
            raise ValueError(f"features of up_blocks[{b}] of store index {index} hold NaN or inf")
        if int8:
            q, step = quantise_features(values)
            group[scale_name(b)][int(index)] = step
            arr[int(index)] = q
            nbytes += q.nbytes + step.nbytes
        else:
            half = to_float16(values)
            arr[int(index)] = half
            nbytes += half.nbytes
    return nbytes


def read_features(root: zarr.Group, index: int, block: int | None = None) -> np.ndarray:
    """float32 (channel, y, x) features of image ``index`` (int8 ones dequantised, float16 widened).

    ``block`` None: every stored block, each upsampled (nearest) to the largest side and
    concatenated along channel. Raises ValueError, saying how to get them, without features.
    """
    if not has_features(root):
        raise ValueError("the store has no features/ group: extract with features "
                         "(diffparts extract --features) to use feature matching or feature descriptors")
    group = root[FEATURES]
    blocks = list(group.attrs["blocks"]) if block is None else [int(block)]
    int8 = feature_precision(root) == "int8"
    maps = []
    for b in blocks:
        if block_name(b) not in group:
            raise ValueError(f"the store has no features for up_blocks[{b}] (it has {group.attrs['blocks']})")
        values = group[block_name(b)][int(index)]
        maps.append(dequantise_features(values, group[scale_name(b)][int(index)]) if int8 else to_float32(values))
    side = max(m.shape[-1] for m in maps)
    if any(side % m.shape[-1] for m in maps):
        raise ValueError(f"feature sides {[m.shape[-1] for m in maps]} are not multiples of each other: read one block")
    maps = [np.repeat(np.repeat(m, side // m.shape[-2], 1), side // m.shape[-1], 2) for m in maps]
    return np.concatenate(maps, 0)
