"""The ``features/`` group: UNet up-block features per image (DIFT; docs/design.md §5.5 and §6).

::

    features/up_<i>   (image, up_<i>_channel, up_<i>_y, up_<i>_x) float16
                      output of unet.up_blocks[i], one chunk per image; the block's own axis
                      names, since blocks differ in channels and side (one name, one length)
    features/done     (image,) bool                    written after every features/up_<i> of the image
    attrs: blocks [i, ...], shapes {"up_<i>": [channel, y, x]}, config (FeatureConfig as a dict)

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


def create_feature_arrays(root: zarr.Group, shapes: Mapping[int, tuple[int, int, int]], config: dict) -> zarr.Group:
    """Create (or check and grow) ``features/up_<i>`` for every stored image. Set-up only.

    shapes: up_blocks index -> (channel, y, x) of one image's output.
    """
    if not shapes:
        raise ValueError("no feature blocks to create")
    n = image_count(root)
    group = ensure_stage(root, FEATURES)
    blocks = sorted(int(b) for b in shapes)
    old = group.attrs.get("blocks")
    if old and list(old) != blocks:
        raise ValueError(f"feature arrays exist for up_blocks {old}; asked for {blocks}")
    for b in blocks:
        c, h, w = (int(v) for v in shapes[b])
        create_stage_array(group, block_name(b), (n, c, h, w), "float16", block_dimensions(b),
                           earlier_dimension_names=("image", "channel", "y", "x"))
    group.attrs.update({"blocks": blocks, "config": dict(config),
                        "shapes": {block_name(b): [int(v) for v in shapes[b]] for b in blocks}})
    return group


def write_features(root: zarr.Group, index: int, features: Mapping[int, np.ndarray]) -> int:
    """Write one image's features (block -> (channel, y, x)) into its chunks; bytes handed to Zarr.

    Does NOT set ``features/done``: the caller marks it after this returns.
    """
    group = root[FEATURES]
    blocks = list(group.attrs["blocks"])
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
        half = to_float16(values)
        arr[int(index)] = half
        nbytes += half.nbytes
    return nbytes


def read_features(root: zarr.Group, index: int, block: int | None = None) -> np.ndarray:
    """float32 (channel, y, x) features of image ``index``.

    ``block`` None: every stored block, each upsampled (nearest) to the largest side and
    concatenated along channel. Raises ValueError, saying how to get them, without features.
    """
    if not has_features(root):
        raise ValueError("the store has no features/ group: extract with features "
                         "(diffparts extract --features) to use feature matching or feature descriptors")
    group = root[FEATURES]
    blocks = list(group.attrs["blocks"]) if block is None else [int(block)]
    maps = []
    for b in blocks:
        if block_name(b) not in group:
            raise ValueError(f"the store has no features for up_blocks[{b}] (it has {group.attrs['blocks']})")
        maps.append(to_float32(group[block_name(b)][int(index)]))
    side = max(m.shape[-1] for m in maps)
    if any(side % m.shape[-1] for m in maps):
        raise ValueError(f"feature sides {[m.shape[-1] for m in maps]} are not multiples of each other: read one block")
    maps = [np.repeat(np.repeat(m, side // m.shape[-2], 1), side // m.shape[-1], 2) for m in maps]
    return np.concatenate(maps, 0)
