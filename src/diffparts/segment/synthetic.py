"""Synthetic aggregated self-attention with regions known in advance.

Tests of both segmenters (DiffSeg, random-walk NCut) and their benchmarks need attention that
looks like Stable Diffusion's aggregated self-attention (docs/design.md §5.1 "Extract"): every query's key map is a
distribution that is smooth, concentrated near the query, and concentrated on the query's own
region. This module builds such tensors from a label map, so the right segmentation is known.

Construction (one idea: a softmax of feature similarity minus a distance penalty):

1. every region gets a random unit feature vector; a pixel's feature is its region's vector,
   blurred across boundaries by ``boundary_blur`` pixels, plus smooth noise (``noise``);
2. logits(q, k) = sharpness * cos(f_q, f_k) - locality * (|pos_q - pos_k| / side)^2;
3. each query's key map is the softmax of its logits over all keys; values below ``zero_below``
   (optional) are set to exact zeros and the map renormalised (peaky attention, as at 64 x 64
   in float16).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["make_region_attention", "make_region_labels", "realistic_attention"]


def make_region_labels(size: int, n_regions: int = 4, seed: int = 0) -> np.ndarray:
    """A (y, x) int64 label map of ``n_regions`` Voronoi cells of random seed points, 0..n-1.

    The cells are relabelled so that every label 0..n_regions-1 occurs.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 1 <= n_regions <= size * size:
        raise ValueError(f"n_regions must be in 1..{size * size}, got {n_regions}")
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, size, size=(n_regions, 2))  # segment (y x)
    yy, xx = np.mgrid[0:size, 0:size]
    dist = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2  # y x segment
    labels = dist.argmin(-1)
    _, labels = np.unique(labels, return_inverse=True)
    return labels.reshape(size, size).astype(np.int64)


def make_region_attention(
    labels: np.ndarray,
    sharpness: float = 12.0,
    locality: float = 3.0,
    seed: int = 0,
    noise: float = 0.15,
    boundary_blur: float = 1.0,
    zero_below: float = 0.0,
) -> np.ndarray:
    """Aggregated self-attention (qy, qx, ky, kx) float32 whose groups follow ``labels``.

    labels: (y, x) integer label map (any integers; y == x not required). Returns
    ``attn[qy, qx, ky, kx]`` with each key map summing to 1 (float32 rounding).

    sharpness: scale of the feature-similarity logits; higher means attention stays more
        inside the query's region (SD at 64 x 64 is peaky; a small model is diffuse: ~3-6).
    locality: weight of the squared-distance penalty (distance in units of the longer side);
        0 gives no locality.
    seed: seed of the region features and the smooth noise.
    noise: amplitude of the smooth per-pixel feature noise (relative to the unit region vector).
    boundary_blur: Gaussian sigma in pixels applied to the features (soft region boundaries).
    zero_below: key-map values below this become exact zeros, then the map is renormalised.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty (y, x) array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if sharpness < 0 or locality < 0 or noise < 0 or boundary_blur < 0 or zero_below < 0:
        raise ValueError(
            f"sharpness, locality, noise, boundary_blur, zero_below must be >= 0, got "
            f"{sharpness}, {locality}, {noise}, {boundary_blur}, {zero_below}"
        )
    rng = np.random.default_rng(seed)
    h, w = labels.shape
    _, index = np.unique(labels, return_inverse=True)
    index = index.reshape(h, w)
    n_regions = int(index.max()) + 1
    dim = max(8, n_regions + 4)

    # 1. region features, blurred across boundaries, plus smooth noise
    region_vec = rng.standard_normal((n_regions, dim)).astype(np.float64)  # segment feature
    region_vec /= np.linalg.norm(region_vec, axis=1, keepdims=True)
    feat = region_vec[index]  # y x feature
    if boundary_blur > 0:
        feat = ndimage.gaussian_filter(feat, sigma=(boundary_blur, boundary_blur, 0))
    if noise > 0:
        smooth = ndimage.gaussian_filter(
            rng.standard_normal((h, w, dim)), sigma=(max(h, w) / 16, max(h, w) / 16, 0)
        )
        smooth /= smooth.std() + 1e-12
        feat = feat + noise * smooth
    feat = feat.reshape(h * w, dim)  # q feature
    feat /= np.linalg.norm(feat, axis=1, keepdims=True) + 1e-12

    # 2. logits: feature similarity minus a squared-distance penalty
    yy, xx = np.mgrid[0:h, 0:w]
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64) / max(h, w)  # q 2
    sq = (pos**2).sum(1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * pos @ pos.T, 0.0)  # q k
    logits = sharpness * (feat @ feat.T) - locality * dist2  # q k

    # 3. softmax over keys; optional exact zeros
    logits -= logits.max(axis=1, keepdims=True)
    attn = np.exp(logits)
    attn /= attn.sum(axis=1, keepdims=True)
    if zero_below > 0:
        attn[attn < zero_below] = 0.0
        attn /= attn.sum(axis=1, keepdims=True)
    return attn.astype(np.float32).reshape(h, w, h, w)  # qy qx ky kx


def realistic_attention(size: int = 64, n_regions: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A benchmark-sized (size, size, size, size) tensor and its (y, x) region labels.

    SD-like at 64 x 64: peaky (sharpness 14), local, with soft boundaries of about 1.5 px.
    """
    labels = make_region_labels(size, n_regions=n_regions, seed=seed)
    attn = make_region_attention(
        labels, sharpness=14.0, locality=4.0, seed=seed, noise=0.2, boundary_blur=1.5
    )
    return attn, labels
