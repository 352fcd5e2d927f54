"""DiffSeg's aggregation of attention over resolutions (docs/design.md §5.1 "Extract"; Tian et al. 2024, 3.1).

Input: per resolution ``r`` (the side of the query grid), the attention of that resolution's
layers, in any of these forms (values may be numpy arrays or torch tensors):

- ``(image, q, k)``: already the mean over layers and heads (what :class:`AttentionCapture` gives);
- ``(image, head, q, k)``: one layer, averaged over heads here;
- a list of those: layers, each head-averaged, then averaged over layers here.

Self-attention (``k = r*r``): each key map is upsampled bilinearly (``align_corners=False``) to the
largest resolution ``R`` and renormalised to sum 1; query positions are repeated (nearest) to
``R x R``; resolutions are mixed with weights (DiffSeg: ``r / sum(r)``). Result
``(image, qy, qx, ky, kx)``, every key map a distribution.

Cross-attention (``k = token``): each token's map over the queries is upsampled bilinearly to
``R x R`` (a convex mix of neighbouring queries, so each query's token distribution still sums
to 1) and mixed with the same weights. Result ``(image, token, qy, qx)``.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = Union[np.ndarray, torch.Tensor]
Maps = Mapping[int, Union[ArrayLike, Sequence[ArrayLike]]]

#: Named resolution-weight presets; a mapping {resolution: weight} is accepted too.
#: "diffseg": r / sum(r) (DiffSeg's choice: 64:32:16:8 -> .533 .267 .133 .067);
#: "uniform": every resolution alike; "inverse": 1/r, favouring the coarse maps (useful when a
#: small model's finest maps are nearly uniform).
WEIGHT_PRESETS = ("diffseg", "uniform", "inverse")


def resolution_weights(resolutions: Sequence[int], weights: str | Mapping[int, float] = "diffseg") -> dict[int, float]:
    """Normalised weight per resolution (sum 1) from a preset name or a mapping.

    A mapping must give a non-negative weight to every resolution present (extra keys are an
    error too, since they usually mean a different model was expected); it is rescaled to sum 1.
    """
    resolutions = sorted({int(r) for r in resolutions}, reverse=True)
    if not resolutions:
        raise ValueError("no resolutions to weight (nothing was captured)")
    if isinstance(weights, str):
        if weights == "diffseg":
            raw = {r: float(r) for r in resolutions}
        elif weights == "uniform":
            raw = {r: 1.0 for r in resolutions}
        elif weights == "inverse":
            raw = {r: 1.0 / r for r in resolutions}
        else:
            raise ValueError(f"unknown resolution weights {weights!r}; use one of {WEIGHT_PRESETS} or a mapping")
    elif isinstance(weights, Mapping):
        raw = {int(r): float(w) for r, w in weights.items()}
        if set(raw) != set(resolutions):
            raise ValueError(
                f"resolution weights {dict(weights)!r} must name exactly the captured resolutions {resolutions}"
            )
        if any(w < 0 or not math.isfinite(w) for w in raw.values()):
            raise ValueError(f"resolution weights {dict(weights)!r} must be finite and non-negative")
    else:
        raise ValueError(f"resolution weights must be a preset name or a mapping, got {weights!r}")
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"resolution weights {raw!r} sum to zero")
    return {r: raw[r] / total for r in resolutions}


def _as_tensor(value: ArrayLike) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(value)) if isinstance(value, np.ndarray) else value
    return tensor.to(torch.float32)


def _layer_head_mean(value) -> torch.Tensor:
    """(image, q, k) from one of the accepted forms (see module docstring)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("an empty list of layers")
        layers = [_layer_head_mean(layer) for layer in value]
        return torch.stack(layers).mean(0)  # image q k
    tensor = _as_tensor(value)
    if tensor.ndim == 4:
        return tensor.mean(1)  # image head q k -> image q k
    if tensor.ndim != 3:
        raise ValueError(f"attention maps must be (image, q, k) or (image, head, q, k), got shape {tuple(tensor.shape)}")
    return tensor


def _prepare(maps: Maps) -> tuple[dict[int, torch.Tensor], bool]:
    """Mean maps per resolution, checked against the grid side; and whether the input was numpy."""
    if not maps:
        raise ValueError("no attention maps given")
    first = next(iter(maps.values()))
    as_numpy = isinstance(first[0] if isinstance(first, (list, tuple)) else first, np.ndarray)
    out = {}
    for r, value in maps.items():
        tensor = _layer_head_mean(value)
        if tensor.shape[1] != int(r) * int(r):
            raise ValueError(f"maps at resolution {r} have {tensor.shape[1]} queries, expected {int(r) ** 2}")
        out[int(r)] = tensor
    images = {t.shape[0] for t in out.values()}
    if len(images) != 1:
        raise ValueError(f"resolutions disagree on the number of images: {sorted(images)}")
    return out, as_numpy


def _nearest_index(r: int, big: int, device) -> torch.Tensor:
    """Index of the r-grid position under each of ``big`` positions (nearest, torch's convention)."""
    return (torch.arange(big, device=device) * r) // big


def aggregate_self_attention(maps: Maps, weights: str | Mapping[int, float] = "diffseg") -> ArrayLike:
    """DiffSeg aggregation of self-attention -> (image, qy, qx, ky, kx), float32.

    ``maps``: {r: (image, q, k) | (image, head, q, k) | [layers]} with q = k = r*r.
    Returns numpy if the maps were numpy, else a torch tensor on their device.
    """
    means, as_numpy = _prepare(maps)
    w = resolution_weights(means, weights)
    big = max(means)
    images = next(iter(means.values())).shape[0]
    device = next(iter(means.values())).device
    out = None  # image qy qx k, started by the largest resolution
    for r in sorted(means, reverse=True):
        mean = means[r]
        if mean.shape[2] != r * r:
            raise ValueError(f"self-attention at resolution {r} has {mean.shape[2]} keys, expected {r * r}")
        # 1. Upsample each key map bilinearly to R x R and renormalise it to sum 1.
        keys = mean.reshape(images * r * r, 1, r, r)  # (image q) 1 ky kx
        if r != big:
            keys = F.interpolate(keys, size=(big, big), mode="bilinear", align_corners=False)
        keys = keys.reshape(images, r, r, big * big)  # image qy qx k
        total = keys.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)  # image qy qx 1
        if r == big:  # the first term: a new tensor (never write into the caller's maps)
            out = keys * (w[r] / total)
            continue
        keys.div_(total)
        # 2. Repeat query positions (nearest) to R x R and add with the resolution's weight.
        if big % r == 0:  # a broadcast view: no R x R x R x R temporary
            f = big // r
            view = out.view(images, r, f, r, f, big * big)  # image qy . qx . k
            view.add_(keys.view(images, r, 1, r, 1, big * big), alpha=w[r])
        else:
            index = _nearest_index(r, big, device)
            keys = keys.index_select(1, index).index_select(2, index)  # image qy qx k at R
            out.add_(keys, alpha=w[r])
    out = out.reshape(images, big, big, big, big)  # image qy qx ky kx
    return out.cpu().numpy() if as_numpy else out


def aggregate_cross_attention(maps: Maps, weights: str | Mapping[int, float] = "diffseg") -> ArrayLike:
    """Cross-attention over resolutions -> (image, token, qy, qx), float32.

    ``maps``: {r: (image, q, token) | (image, head, q, token) | [layers]} with q = r*r.
    Each token's query map is upsampled bilinearly (align_corners=False) to the largest
    resolution R; resolutions are mixed with ``weights``. Returns numpy if the maps were numpy.
    """
    means, as_numpy = _prepare(maps)
    w = resolution_weights(means, weights)
    big = max(means)
    tokens = {m.shape[2] for m in means.values()}
    if len(tokens) != 1:
        raise ValueError(f"resolutions disagree on the number of tokens: {sorted(tokens)}")
    images = next(iter(means.values())).shape[0]
    device = next(iter(means.values())).device
    out = torch.zeros(images, tokens.pop(), big, big, dtype=torch.float32, device=device)  # image token qy qx
    for r, mean in means.items():
        grid = mean.transpose(1, 2).reshape(images, -1, r, r)  # image token qy qx
        if r != big:
            grid = F.interpolate(grid, size=(big, big), mode="bilinear", align_corners=False)
        out.add_(grid, alpha=w[r])
    return out.cpu().numpy() if as_numpy else out
