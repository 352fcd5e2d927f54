"""From NCut segments at attention resolution to labels at image resolution (docs/design.md §5.3, §5.4).

What this file holds:

- ``concept_assignment`` (DiffCut, Couairon et al., NeurIPS 2024): each pixel goes to the
  segment whose mean normalised feature is nearest to the pixel's feature, the features being
  bilinearly upsampled to the output size. Computed without materialising the upsampled
  features: bilinear upsampling is linear, so ``up(F) . m_s = up(F . m_s)``, and a pixel's own
  norm does not change which unit-length mean is nearest (``|u - m|^2 = |u|^2 - 2 u.m + 1``).
  So the scores (q, segment) are computed at attention resolution and only they are upsampled.
- ``nearest_upsample``: the plain alternative, every position repeated as a block.
- ``pamr``: a refinement of label maps by the image's local colour affinities, after PAMR
  (pixel-adaptive mask refinement; Araslanov & Roth, "Single-Stage Semantic Segmentation from
  Image Labels", CVPR 2020), written here from the paper's description: for every pixel i and
  its 8 neighbours j at each dilation in ``dilations``, ``k(i, j) = -mean_c |I_ic - I_jc| /
  (temperature * sigma_ic)`` with ``sigma_ic`` the standard deviation of channel c over i's
  neighbours; ``alpha_ij = softmax_j k(i, j)``; the one-hot masks are replaced ``iterations``
  times by ``m_i <- sum_j alpha_ij m_j``; the label is the argmax.
- ``levels_from_finest``: the coarser levels read off the finest labels through the tree, so
  the levels stay nested whatever the assignment did to the finest one.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ASSIGNMENTS",
    "bilinear_weights",
    "concept_assignment",
    "levels_from_finest",
    "nearest_upsample",
    "pamr",
    "segment_means",
]

ASSIGNMENTS = ("concept", "nearest")


def bilinear_weights(n_out: int, n_in: int) -> np.ndarray:
    """(out, in) float32 bilinear interpolation matrix, half-pixel centres (``align_corners=False``)."""
    if n_out < 1 or n_in < 1:
        raise ValueError(f"sizes must be >= 1, got out={n_out}, in={n_in}")
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    R = np.zeros((n_out, n_in), dtype=np.float64)
    np.add.at(R, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(R, (np.arange(n_out), hi), frac)
    return R.astype(np.float32)


def segment_means(features: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit-length mean feature (segment, d) of each label 0..K-1 of ``labels`` (q,)."""
    labels = np.asarray(labels).ravel()
    K = int(labels.max()) + 1
    onehot = np.zeros((K, labels.size), dtype=np.float64)
    onehot[labels, np.arange(labels.size)] = 1.0
    sums = onehot @ np.asarray(features, dtype=np.float64)  # one BLAS product, not a per-row scatter
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-30)).astype(np.float32)


def concept_assignment(features: np.ndarray, labels: np.ndarray, shape: tuple[int, int],
                       out_size: int | tuple[int, int]) -> np.ndarray:
    """Labels (Y, X) int64: every output pixel to the segment with the nearest mean feature.

    features: (q, d) unit-length rows on the (h, w) = ``shape`` grid; labels: (q,) or (h, w)
    segment labels 0..K-1 on that grid. The features are bilinearly upsampled to ``out_size``
    (implicitly, module docstring). Ties go to the lower label.
    """
    h, w = shape
    Y, X = (out_size, out_size) if np.isscalar(out_size) else tuple(out_size)
    F = np.asarray(features, dtype=np.float32)
    if F.ndim != 2 or F.shape[0] != h * w:
        raise ValueError(f"features must be (q, d) with q = {h * w}, got shape {F.shape}")
    means = segment_means(F, labels)  # segment d
    scores = (F @ means.T).reshape(h, w, -1)  # y x segment
    Ry, Rx = bilinear_weights(Y, h), bilinear_weights(X, w)  # Y y, X x
    K = scores.shape[-1]
    up = (Ry @ scores.reshape(h, w * K)).reshape(Y, w, K)  # Y x segment (one BLAS product)
    out = np.empty((Y, X), dtype=np.int64)
    for start in range(0, Y, 64):  # Y X segment in row blocks: one (64, X, segment) block at a time
        block = np.matmul(Rx[None], up[start:start + 64])  # rows X segment
        out[start:start + 64] = block.argmax(-1)
    return out


def nearest_upsample(labels: np.ndarray, out_size: int | tuple[int, int]) -> np.ndarray:
    """(..., h, w) labels repeated by nearest neighbour to (..., Y, X)."""
    h, w = labels.shape[-2:]
    Y, X = (out_size, out_size) if np.isscalar(out_size) else tuple(out_size)
    ys = (np.arange(Y) * h) // Y
    xs = (np.arange(X) * w) // X
    return labels[..., ys, :][..., xs]


def _neighbours(image: np.ndarray, dilations) -> np.ndarray:
    """(neighbour, Y, X, ...) values of the 8 neighbours at every dilation (edges replicated)."""
    Y, X = image.shape[:2]
    pad = max(dilations)
    padded = np.pad(image, [(pad, pad), (pad, pad)] + [(0, 0)] * (image.ndim - 2), mode="edge")
    out = []
    for d in dilations:
        for dy in (-d, 0, d):
            for dx in (-d, 0, d):
                if dy == 0 and dx == 0:
                    continue
                out.append(padded[pad + dy:pad + dy + Y, pad + dx:pad + dx + X])
    return np.stack(out)


def pamr(image: np.ndarray, labels: np.ndarray, iterations: int = 10,
         dilations: tuple[int, ...] = (1, 2, 4, 8, 12, 24), temperature: float = 0.1) -> np.ndarray:
    """Labels (Y, X) int64 refined by the image's local affinities (PAMR, module docstring).

    image: (Y, X, 3) uint8 or float; labels: (Y, X) 0..K-1. Returns labels in the same 0..K-1
    space (a label may vanish).
    """
    labels = np.asarray(labels)
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[:2] != labels.shape:
        raise ValueError(f"image {img.shape[:2]} and labels {labels.shape} differ in size")
    if iterations < 0 or not dilations or min(dilations) < 1 or not temperature > 0:
        raise ValueError(f"pamr needs iterations >= 0, dilations >= 1, temperature > 0; got "
                         f"{iterations}, {dilations}, {temperature}")
    if iterations == 0:
        return labels.astype(np.int64)
    nb = _neighbours(img, dilations)  # neighbour Y X channel
    sigma = nb.std(0) + 1e-8  # Y X channel
    k = -(np.abs(nb - img[None]) / (temperature * sigma[None])).mean(-1)  # neighbour Y X
    k -= k.max(0, keepdims=True)
    alpha = np.exp(k)
    alpha /= alpha.sum(0, keepdims=True)  # neighbour Y X: softmax over neighbours
    K = int(labels.max()) + 1
    masks = (labels[..., None] == np.arange(K)).astype(np.float32)  # Y X segment
    for _ in range(iterations):
        masks = np.einsum("nyx,nyxs->yxs", alpha, _neighbours(masks, dilations))
    return masks.argmax(-1).astype(np.int64)


def levels_from_finest(finest: np.ndarray, level_labels: np.ndarray) -> np.ndarray:
    """Nested levels (level, Y, X) int64 from finest labels (Y, X) at any resolution.

    level_labels: (level, q) the tree's levels at attention resolution (level 0 the finest, the
    values ``finest`` uses). Each coarser label is the finest segment's ancestor; every level is
    renumbered 0..K-1 (in label order) over the segments still present.
    """
    level_labels = np.asarray(level_labels).reshape(len(level_labels), -1)
    K = int(level_labels[0].max()) + 1
    first = np.zeros(K, dtype=np.int64)  # a position of every finest segment
    first[level_labels[0][::-1]] = np.arange(level_labels.shape[1])[::-1]
    present = np.bincount(np.asarray(finest).ravel(), minlength=K) > 0  # finest segments at out size
    out = []
    for level in level_labels:
        ancestor = level[first]  # finest segment -> its ancestor's label at this level
        kept = np.unique(ancestor[present])  # the ancestors still present, in label order
        renumber = np.zeros(int(ancestor.max()) + 1, dtype=np.int64)
        renumber[kept] = np.arange(kept.size)
        out.append(renumber[ancestor][finest])  # Y X, renumbered 0..K-1 (a table of K, not a sort of Y X)
    return np.stack(out)
