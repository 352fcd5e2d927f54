"""The compact form of the ``attention/`` group: what later stages need instead of the 4-D tensor
(docs/store.md "Compact stores"; issue 20, item 3).

The full self-attention (image, qy, qx, ky, kx) is read by two consumers only: the segment
stage (which the compact form runs on the worker right after the forward) and the parts
stage's pooled-attention descriptor. That descriptor is, per unit u of an image,
``sum_q w[u, q] attn[q, :] @ onehot[:, bin]`` normalised, with ``onehot`` the key -> box-grid bin
map of the image's object box (``parts.descriptors.box_bins``). Binning first is the same sum
in another order, so the compact form stores ``attn @ onehot`` per query::

    attention/box_bins   (image, q, bin) float16   bin = G*G + 1 (G x G grid over the object box,
                                                   last = outside); rows sum to 1
    attention/cross      (image, token, qy, qx) float16   (as in the full form)
    attention/done       (image,) bool
    attrs: form "compact", resolution R, tokens, image_size, precision (the precision the
           worker rounded the attention to before using it, as a store read would),
           descriptor {box_grid, level, border_share_max}: what the bins depend on

and the image's segments (``segments/``, settings recorded there with ``made_by: "extract"``).
At SD-1.5's shapes that is 4096 x 17 x 2 = 139 KB per image instead of 33.5 MB.

When the full tensor is kept (``form`` "full", the default below ``COMPACT_ABOVE_BYTES``, or
``--keep-attention``), extraction writes it and nothing else, as before this module.
"""

from __future__ import annotations

import numpy as np
import zarr

from diffparts.store.attention import is_compact, require_full_attention, store_form, to_float16, to_float32
from diffparts.store.layout import create_stage_array

__all__ = ["COMPACT_ABOVE_BYTES", "attention_form", "create_box_bin_arrays", "is_compact", "read_box_bins",
           "require_full_attention", "store_form", "write_box_bins"]

STAGE = "attention"
FORMS = ("full", "compact")
#: The full (qy, qx, ky, kx) float16 tensor above this many bytes per image makes the store
#: compact by default: R >= 48 (SD-1.5's R = 64: 32 MiB); the embedded checkpoint's and the
#: tests' models (R <= 32: at most 2 MiB) keep it, so every stage can be re-run with other settings.
COMPACT_ABOVE_BYTES = 8 * 2**20


def attention_form(resolution: int, keep_attention: bool | None) -> str:
    """"full" or "compact": ``keep_attention`` True / False decides; None: compact when the
    float16 tensor of one image would exceed ``COMPACT_ABOVE_BYTES``."""
    if keep_attention is not None:
        return "full" if keep_attention else "compact"
    return "compact" if 2 * int(resolution) ** 4 > COMPACT_ABOVE_BYTES else "full"


def create_box_bin_arrays(root: zarr.Group, resolution: int, descriptor: dict) -> None:
    """Create (or check) ``attention/box_bins`` for every stored image. Set-up only.

    descriptor: ``{"box_grid", "level", "border_share_max"}`` the bins are made with.
    """
    group = root[STAGE]
    old = group.attrs.get("descriptor")
    if old is not None and dict(old) != dict(descriptor):
        raise ValueError(f"attention/box_bins exist for descriptor settings {old}; asked for {descriptor}")
    n = int(group["cross"].shape[0]) if "cross" in group else 0
    g = int(descriptor["box_grid"])
    create_stage_array(group, "box_bins", (n, int(resolution) ** 2, g * g + 1), "float16", ("image", "q", "bin"))
    group.attrs["descriptor"] = dict(descriptor)


def write_box_bins(root: zarr.Group, index: int, bins: np.ndarray) -> int:
    """Write one image's (q, bin) pooled attention; returns the bytes handed to Zarr."""
    arr = root[STAGE]["box_bins"]
    if tuple(bins.shape) != tuple(arr.shape[1:]):
        raise ValueError(f"box_bins shape {bins.shape} != stored {arr.shape[1:]}")
    if not np.isfinite(bins).all():
        raise ValueError(f"box_bins of store index {index} hold NaN or inf; nothing was written")
    values = to_float16(bins)
    arr[int(index)] = values
    return values.nbytes


def read_box_bins(root: zarr.Group, index: int, descriptor: dict, store: str = "the store") -> np.ndarray:
    """float32 (q, bin) pooled attention of image ``index``; ValueError (one line) when the
    descriptor settings asked for differ from those the bins were made with."""
    group = root[STAGE]
    made = dict(group.attrs.get("descriptor") or {})
    wanted = {k: descriptor[k] for k in made}
    if "box_bins" not in group or made != wanted:
        raise ValueError(f"{store} is a compact store whose pooled attention was made with descriptor settings "
                         f"{made}; asked for {wanted}: that needs the full tensor (re-extract with "
                         "`diffparts extract --keep-attention`)")
    return to_float32(group["box_bins"][int(index)])
