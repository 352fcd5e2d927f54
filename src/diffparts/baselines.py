"""Label-free baselines to compare discovered parts against (issue 2; docs/design.md §8 "Measures").

``kmeans_pixels`` clusters the pixels of one image on colour plus scaled position: the
baseline the synthetic corpus must defeat (colour alone should not solve part discovery).
``kmeans_features`` clusters any per-pixel feature map (a VAE latent, UNet features) and
brings the labels to a target size by nearest-neighbour upsampling.
"""

from __future__ import annotations

import numpy as np


def _check_k(k: int, n_items: int) -> int:
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n_items:
        raise ValueError(f"k={k} exceeds the number of pixels ({n_items})")
    return k


def _position_grid(y: int, x: int) -> np.ndarray:
    """(y x, 2) pixel centres scaled to [0, 1] along each axis, so the weight is size-free."""
    ys = (np.arange(y) + 0.5) / y
    xs = (np.arange(x) + 0.5) / x
    yy, xx = np.meshgrid(ys, xs, indexing="ij")  # y x
    return np.stack([yy.ravel(), xx.ravel()], axis=1)


def _kmeans(points: np.ndarray, k: int, random_state: int, n_init: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=n_init, random_state=random_state)
    return model.fit_predict(points).astype(np.int64)


def upsample_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (y, x) label map to (height, width) = ``size``.

    Output pixel (i, j) takes input pixel (floor(i * y / height), floor(j * x / width)), so an
    integer upscale repeats every label in a block.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (y, x), got shape {labels.shape}")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    y, x = labels.shape
    rows = np.arange(height) * y // height
    cols = np.arange(width) * x // width
    return labels[rows[:, None], cols[None, :]]


def kmeans_pixels(
    image: np.ndarray,
    k: int,
    *,
    position_weight: float = 1.0,
    random_state: int = 0,
    n_init: int = 4,
) -> np.ndarray:
    """K-means on the pixels of one image: colour and scaled position.

    Args:
        image: (y, x, 3) uint8 RGB.
        k: number of clusters (e.g. the true number of parts, background included).
        position_weight: scale of the (y, x) position, each in [0, 1], against colour in
            [0, 1] per channel; 0 clusters on colour alone, 1 weighs crossing the image like
            going from black to full red.
        random_state: seed of k-means' initialisation.
        n_init: k-means restarts (the best inertia is kept).

    Returns:
        (y, x) int64 labels in 0..k-1.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (y, x, 3) RGB, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {image.dtype}")
    if position_weight < 0:
        raise ValueError(f"position_weight must be >= 0, got {position_weight}")
    y, x, _ = image.shape
    k = _check_k(k, y * x)
    # 1. Colour in [0, 1] per channel, one row per pixel.
    colour = image.reshape(y * x, 3).astype(np.float64) / 255.0  # (y x) 3
    # 2. Position scaled by position_weight, so both terms share one Euclidean distance.
    points = np.concatenate([colour, position_weight * _position_grid(y, x)], axis=1)
    return _kmeans(points, k, random_state, n_init).reshape(y, x)


def kmeans_features(
    features: np.ndarray,
    k: int,
    *,
    out_size: tuple[int, int] | None = None,
    position_weight: float = 0.0,
    standardize: bool = True,
    random_state: int = 0,
    n_init: int = 4,
) -> np.ndarray:
    """K-means on a per-pixel feature map (e.g. a VAE latent), optionally upsampled.

    Args:
        features: (c, y, x) float features.
        k: number of clusters.
        out_size: (height, width) to bring the labels to by nearest neighbour; None keeps (y, x).
        position_weight: weight of the (y, x) position in [0, 1], appended after scaling.
        standardize: z-score each channel first so no channel dominates by its scale alone
            (a constant channel is left at zero).
        random_state: seed of k-means' initialisation.
        n_init: k-means restarts.

    Returns:
        (y, x) or ``out_size`` int64 labels in 0..k-1.
    """
    features = np.asarray(features)
    if features.ndim != 3:
        raise ValueError(f"features must be (c, y, x), got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("features contain nan or inf")
    if position_weight < 0:
        raise ValueError(f"position_weight must be >= 0, got {position_weight}")
    c, y, x = features.shape
    k = _check_k(k, y * x)
    # 1. One row per pixel: (c, y, x) -> (y x, c).
    points = features.reshape(c, y * x).T.astype(np.float64)  # (y x) c
    # 2. Per-channel z-score.
    if standardize:
        std = points.std(axis=0)
        points = (points - points.mean(axis=0)) / np.where(std > 0, std, 1.0)
    # 3. Optional position term, then k-means.
    if position_weight > 0:
        points = np.concatenate([points, position_weight * _position_grid(y, x)], axis=1)
    labels = _kmeans(points, k, random_state, n_init).reshape(y, x)
    return labels if out_size is None else upsample_labels(labels, out_size)
