"""The ``attention/`` group: schema, storage precision, per-image writes and reads.

docs/design.md §5.1 and §6::

    attention/self        (image, qy, qx, ky, kx) float16, or uint8 with
    attention/self_scale  (image, qy, qx) float32      uint8: value = q * scale; uint8-log:
                                                       value = scale * exp((q / 255 - 1) * 20)
    attention/cross       (image, token, qy, qx) float16
    attention/done        (image,) bool                 written after the three above
    attrs: resolution R, tokens, image_size, precision

Each key map ``attn[qy, qx]`` is a distribution over (ky, kx). Float16 keeps it to about three
significant digits and barely compresses (about 1.1x); uint8 stores each key map divided by its
own maximum times 255 (so the maximum is exactly 255) and the scale ``max / 255`` beside it,
about 14x smaller; values below half a step (most of a peaky map) become 0, which the KL
distances of DiffSeg feel strongly (benchmarks/bench_store.py). ``uint8-log`` stores
``255 * (1 + ln(value / max) / 20)`` instead: the same size, every value kept to within 4 %
down to ``max * e^-20``, the scale being the map's maximum. Reads dequantise and renormalise
every key map to sum 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import zarr

from diffparts.store.layout import clear_failure, create_stage_array, ensure_stage, image_count

STAGE = "attention"
#: Storage precisions of ``attention/self``.
PRECISIONS = ("float16", "uint8", "uint8-log")
#: Natural-log range of a ``uint8-log`` key map below its maximum (e^-20 ~ 2e-9).
LOG_RANGE = 20.0


@dataclass(frozen=True)
class StoreConfig:
    """How attention is stored (part of the config hash: a change starts a new version)."""

    precision: str = "float16"  # float16 (~lossless), uint8 (linear per key map) or uint8-log (log per key map)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


def create_attention_arrays(
    root: zarr.Group,
    resolution: int,
    tokens: Sequence[str],
    image_size: int,
    precision: str = "float16",
    form: str = "full",
) -> zarr.Group:
    """Create (or check and grow) the attention arrays for every stored image. Set-up only.

    ``resolution`` is R (the largest attention resolution), ``tokens`` the prompt's tokens
    (the cross-attention's token axis), ``image_size`` the pixel side fed to the VAE.
    ``form``: "full" writes ``self`` (and ``self_scale``); "compact" leaves them out
    (``diffparts.store.compact`` adds ``box_bins``).
    """
    StoreConfig(precision)  # validates
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    n, r, t = image_count(root), int(resolution), len(tokens)
    group = ensure_stage(root, STAGE)
    old = dict(group.attrs)
    if form not in ("full", "compact"):
        raise ValueError(f"form must be 'full' or 'compact', got {form!r}")
    if "resolution" in old and (old["resolution"], old["precision"], old["tokens"], old.get("form", "full")) != (
        r,
        precision,
        list(tokens),
        form,
    ):
        raise ValueError(
            f"attention arrays exist with R={old['resolution']}, precision "
            f"{old['precision']!r}, tokens {old['tokens']}, form {old.get('form', 'full')!r}; asked for R={r}, "
            f"{precision!r}, {list(tokens)}, form {form!r} (another form needs a new store or --new-version)"
        )
    dtype = "float16" if precision == "float16" else "uint8"
    if form == "full":
        create_stage_array(group, "self", (n, r, r, r, r), dtype, ("image", "qy", "qx", "ky", "kx"))
        if dtype == "uint8":
            create_stage_array(group, "self_scale", (n, r, r), "float32", ("image", "qy", "qx"))
    create_stage_array(group, "cross", (n, t, r, r), "float16", ("image", "token", "qy", "qx"))
    group.attrs.update(
        {"resolution": r, "tokens": list(tokens), "image_size": int(image_size), "precision": precision,
         "form": form}
    )
    return group


def to_float16(values: np.ndarray) -> np.ndarray:
    """float16 copy, rounded to nearest even like numpy, but fast on subnormals via torch.

    numpy converts values below float16's smallest normal (6e-5, common in attention maps)
    about 60x slower than torch's vectorised conversion; the bits are identical.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency, but the store does not need it
        return np.asarray(values, dtype=np.float16)
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(torch.float16).numpy()


def to_float32(values: np.ndarray) -> np.ndarray:
    """float32 copy of float16 values (fast on subnormals via torch, like ``to_float16``)."""
    values = np.asarray(values)
    if values.dtype != np.float16:
        return values.astype(np.float32)
    try:
        import torch
    except ImportError:  # pragma: no cover
        return values.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(values)).to(torch.float32).numpy()


def has_attention_arrays(root: zarr.Group) -> bool:
    """Whether ``create_attention_arrays`` ran on this store version (either form)."""
    return f"{STAGE}/cross" in root and "resolution" in root[STAGE].attrs


def quantise_key_maps(attn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 key maps and their scales: ``attn ~ q * scale`` with each map's max at 255.

    attn: (..., ky, kx) float, non-negative. Returns q (..., ky, kx) uint8 and scale (...)
    float32 = max / 255 (0 for an all-zero map).
    """
    attn = np.asarray(attn, dtype=np.float32)
    if attn.ndim < 2:
        raise ValueError(f"attn needs (..., ky, kx) axes, got shape {attn.shape}")
    peak = attn.max(axis=(-2, -1))  # (...)
    if np.any(peak < 0) or not np.all(np.isfinite(peak)):
        raise ValueError("attention maps must be finite and non-negative")
    scale = (peak / 255.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)[..., None, None]
    q = np.clip(np.rint(attn / safe), 0, 255).astype(np.uint8)
    return q, scale


def quantise_key_maps_log(attn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 log-spaced key maps: ``q = rint(255 * (1 + ln(attn / max) / LOG_RANGE))``, max -> 255.

    attn: (..., ky, kx) float, non-negative. Returns q (..., ky, kx) uint8 and scale (...)
    float32 = the map's maximum. Values below ``max * e^-LOG_RANGE`` (zeros too) become 0.
    """
    attn = np.asarray(attn, dtype=np.float32)
    _, linear_scale = quantise_key_maps(attn)  # validates
    peak = (linear_scale * 255.0)[..., None, None]
    with np.errstate(divide="ignore"):
        rel = np.log(np.where(peak > 0, attn / np.where(peak > 0, peak, 1.0), 0.0))  # ... ky kx, <= 0
    q = np.rint(255.0 * (1.0 + np.clip(rel, -LOG_RANGE, 0.0) / LOG_RANGE))
    return q.astype(np.uint8), peak[..., 0, 0].astype(np.float32)


def dequantise_key_maps_log(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 key maps from ``quantise_key_maps_log`` output, each renormalised to sum 1."""
    rel = (np.asarray(q, dtype=np.float32) / 255.0 - 1.0) * LOG_RANGE  # ... ky kx
    attn = np.exp(rel) * (np.asarray(scale, dtype=np.float32)[..., None, None] > 0)
    return dequantise_key_maps(attn, None)


def dequantise_key_maps(q: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """float32 key maps from stored values, each renormalised to sum 1 over (ky, kx).

    q: (..., ky, kx) uint8 with scale (...), or float16 with scale None. All-zero maps stay 0;
    a map holding NaN stays NaN, so the stage reading it refuses it instead of seeing zeros.
    """
    attn = to_float32(q)
    if scale is not None:
        attn = attn * np.asarray(scale, dtype=np.float32)[..., None, None]
    total = attn.sum(axis=(-2, -1), keepdims=True)
    return np.divide(attn, total, out=np.zeros_like(attn), where=(total > 0) | np.isnan(total))


def stored_self_attention(attn: np.ndarray, precision: str) -> np.ndarray:
    """float32 (..., ky, kx) attention as a store of ``precision`` gives it back (rounded,
    dequantised, key maps renormalised): ``read_self_attention(write_attention(attn))``."""
    attn = np.asarray(attn, dtype=np.float32)
    if precision == "float16":
        return dequantise_key_maps(to_float16(attn), None)
    if precision == "uint8-log":
        return dequantise_key_maps_log(*quantise_key_maps_log(attn))
    if precision == "uint8":
        return dequantise_key_maps(*quantise_key_maps(attn))
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def write_attention(
    root: zarr.Group, index: int, self_attn: np.ndarray | None, cross_attn: np.ndarray
) -> int:
    """Write one image's attention into its own chunks; returns the bytes it handed to Zarr.

    self_attn: (qy, qx, ky, kx) float, each key map summing to 1; cross_attn: (token, qy, qx).
    Does NOT set the done marker: the caller calls ``mark_done`` after this returns.
    A compact store (no ``self`` array) takes ``self_attn=None`` and writes the cross-attention only.
    """
    group = root[STAGE]
    cross_arr = group["cross"]
    for name, values in (("self_attn", self_attn), ("cross_attn", cross_attn)):
        if values is not None and not np.isfinite(values).all():
            raise ValueError(f"{name} of store index {index} holds NaN or inf; nothing was written")
    if self_attn is None:
        if "self" in group:
            raise ValueError(f"store index {index}: this store keeps the full self-attention; give it")
        if tuple(cross_attn.shape) != tuple(cross_arr.shape[1:]):
            raise ValueError(f"cross_attn shape {cross_attn.shape} != stored {cross_arr.shape[1:]}")
        cross = to_float16(cross_attn)
        cross_arr[int(index)] = cross
        clear_failure(root, STAGE, index)
        return cross.nbytes
    self_arr = group["self"]
    if tuple(self_attn.shape) != tuple(self_arr.shape[1:]):
        raise ValueError(f"self_attn shape {self_attn.shape} != stored {self_arr.shape[1:]}")
    if tuple(cross_attn.shape) != tuple(cross_arr.shape[1:]):
        raise ValueError(f"cross_attn shape {cross_attn.shape} != stored {cross_arr.shape[1:]}")
    index = int(index)
    if self_arr.dtype == np.uint8:
        log = group.attrs.get("precision") == "uint8-log"
        q, scale = (quantise_key_maps_log if log else quantise_key_maps)(self_attn)
        group["self_scale"][index] = scale
        self_arr[index] = q
        nbytes = q.nbytes + scale.nbytes
    else:
        values = to_float16(self_attn)
        self_arr[index] = values
        nbytes = values.nbytes
    cross = to_float16(cross_attn)
    cross_arr[index] = cross
    clear_failure(root, STAGE, index)
    return nbytes + cross.nbytes


def store_form(root: zarr.Group) -> str:
    """The form of a store's attention group: "full" (the tensor; stores made before compact
    ones existed too) or "compact" (``store.compact``)."""
    if STAGE not in root:
        return "full"
    return str(root[STAGE].attrs.get("form", "full"))


def is_compact(root: zarr.Group) -> bool:
    return store_form(root) == "compact"


def require_full_attention(root: zarr.Group, what: str, store: str = "the store") -> None:
    """ValueError (one line, naming the store and what asked) when the store has no full tensor."""
    if is_compact(root) or f"{STAGE}/self" not in root:
        raise ValueError(
            f"{store} is a compact store (its self-attention was segmented and pooled at extraction, "
            f"the (qy, qx, ky, kx) tensor was not kept): {what} needs the full tensor; re-extract with "
            "`diffparts extract --keep-attention` (a new store, or --new-version)")


def read_self_attention(root: zarr.Group, index: int) -> np.ndarray:
    """float32 (qy, qx, ky, kx) self-attention of image ``index``, dequantised, maps sum to 1.

    A compact store has none: ValueError naming it (``store.compact.require_full_attention``).
    """
    require_full_attention(root, "reading the self-attention")
    group = root[STAGE]
    index = int(index)
    stored = group["self"][index]
    if stored.dtype != np.uint8:
        return dequantise_key_maps(stored, None)
    scale = group["self_scale"][index]
    if group.attrs.get("precision") == "uint8-log":
        return dequantise_key_maps_log(stored, scale)
    return dequantise_key_maps(stored, scale)


def read_cross_attention(root: zarr.Group, index: int) -> np.ndarray:
    """float32 (token, qy, qx) cross-attention of image ``index``."""
    return to_float32(root[STAGE]["cross"][int(index)])


def attention_tokens(root: zarr.Group) -> list[str]:
    """The prompt tokens along ``attention/cross``'s token axis."""
    return list(root[STAGE].attrs.get("tokens", []))
