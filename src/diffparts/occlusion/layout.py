"""Where a category usually lies on the bird, and where to look for one the assignment lost
(docs/design.md §5.7 "Occlusion"; docs/occlusion.md "Lost categories").

The detector looks for category k's evidence in k's region of the occluded image's assignment.
An occluder at the edge of the bird (a tail, the legs) is often assigned to the background, so
k loses its region and, with no region, its score is 0: no evidence either way. This module
gives such a *lost* category the places where it usually lies, so that the pixels there can be
judged like any region's (position says where to look; the pixels still decide whether k is
there):

- :class:`LayoutPrior`, from :func:`layout_prior`: per category, the share of the training
  images' maps (``parts/labels``) holding it at each place of the object's frame, on a
  ``GRID`` x ``GRID`` grid over ``EXTENT`` standard deviations either side, smoothed. The frame
  is the map's own (:func:`object_frame`: its object pixels' centroid and standard deviation
  along each axis), never an annotated box, so an occluded image is placed by what is left of
  it and nothing knows the hidden part's extent; a lost tail moves the moments a little where it
  would move the bounding box's edge a lot;
- :func:`place_shares`: those shares at every pixel of one map;
- :func:`lost_places`: a map with each lost category (fewer than ``min_pixels``) given the
  background pixels where it is the likeliest category, where some category is usual
  (share >= ``min_share``) and which the appearance classifier does not find clearly background
  (p(background) < ``max_background``). Complete training images go through the same rule
  before they are calibrated, so what it adds on a complete bird (a category that vanished by
  pose, the pixels along its outline) is in the calibration's spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

GRID = 32               # cells per side of the object-normalised grid
EXTENT = 2.5            # the grid spans this many standard deviations of the object either side of its centroid
SMOOTH = 1.0            # Gaussian smoothing of the counts, in cells


@dataclass(frozen=True)
class LayoutPrior:
    """Per category, the share of training maps holding it at each object-normalised place."""

    share: np.ndarray             # (category, GRID, GRID) float32, background included (index 0)
    images: int                   # training maps it was made from


def object_frame(labels: np.ndarray) -> tuple[float, float, float, float] | None:
    """(x centroid, y centroid, x std, y std) of a (y, x) map's object pixels (label > 0), the
    standard deviations floored at 1 pixel; None without any."""
    ys, xs = np.nonzero(np.asarray(labels) > 0)
    if len(ys) == 0:
        return None
    return float(xs.mean()), float(ys.mean()), max(float(xs.std()), 1.0), max(float(ys.std()), 1.0)


def _cells(shape: tuple[int, int], frame) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) grid cell of every pixel of a map of ``shape`` whose object frame is ``frame``."""
    cx, cy, sx, sy = frame
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    col = np.clip(((xx - cx) / sx + EXTENT) / (2 * EXTENT) * GRID, 0, GRID - 1).astype(np.int64)
    row = np.clip(((yy - cy) / sy + EXTENT) / (2 * EXTENT) * GRID, 0, GRID - 1).astype(np.int64)
    return row, col


def layout_prior(maps: Sequence[np.ndarray], n_categories: int) -> LayoutPrior:
    """The :class:`LayoutPrior` of (y, x) training category maps (-1 pixels, maps without an
    object: skipped). ValueError without a usable map."""
    from scipy.ndimage import gaussian_filter

    counts = np.zeros((n_categories, GRID, GRID))
    seen = np.zeros((GRID, GRID))
    used = 0
    for labels in maps:
        labels = np.asarray(labels)
        frame = object_frame(labels)
        if frame is None:
            continue
        row, col = _cells(labels.shape, frame)
        ok = (labels >= 0) & (labels < n_categories)
        np.add.at(seen, (row[ok], col[ok]), 1.0)
        np.add.at(counts, (labels[ok], row[ok], col[ok]), 1.0)
        used += 1
    if used == 0:
        raise ValueError("no training map with an object to learn where the categories lie")
    counts = np.stack([gaussian_filter(c, SMOOTH) for c in counts])
    seen = gaussian_filter(seen, SMOOTH)
    return LayoutPrior((counts / np.maximum(seen, 1e-9)).astype(np.float32), used)


def place_shares(prior: LayoutPrior, labels: np.ndarray) -> np.ndarray:
    """(category, y, x) float32: the prior's share of each category at every pixel of the (y, x)
    map ``labels``, placed by the map's own object frame; zeros for a map without an object."""
    labels = np.asarray(labels)
    frame = object_frame(labels)
    if frame is None:
        return np.zeros((prior.share.shape[0], *labels.shape), np.float32)
    row, col = _cells(labels.shape, frame)
    return prior.share[:, row, col]


def lost_places(labels: np.ndarray, p_background: np.ndarray, prior: LayoutPrior, max_background: float = 0.9,
                min_share: float = 0.05, min_pixels: int = 4) -> np.ndarray:
    """(y, x) map: ``labels`` with every lost category (fewer than ``min_pixels`` pixels) given
    the background pixels where the prior finds it the likeliest category, where some category
    is usual (shares summing to at least ``min_share``) and whose ``p_background`` (y, x, the
    appearance classifier's, at the map's size) is below ``max_background``. The object pixels
    and the present categories are unchanged."""
    labels = np.asarray(labels)
    p_background = np.asarray(p_background)
    if p_background.shape != labels.shape:
        raise ValueError(f"p_background {p_background.shape} must be at the map's size {labels.shape}")
    k1 = prior.share.shape[0]
    counts = np.bincount(labels[labels > 0].ravel(), minlength=k1)[:k1]
    lost = counts < min_pixels
    lost[0] = False
    if not lost.any():
        return labels
    shares = place_shares(prior, labels)[1:]                                  # category-1 y x
    likeliest = 1 + np.argmax(shares, 0)
    take = (labels == 0) & (p_background < max_background) & (shares.sum(0) >= min_share) & lost[likeliest]
    return np.where(take, likeliest, labels).astype(labels.dtype)
