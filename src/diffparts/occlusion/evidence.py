"""Evidence of absence: is a category's region what the model imagines there? (docs/design.md §5.7 "Occlusion").

*Where* category k belongs comes from position and context: the occluded image's own
assignment to the fitted categories (``parts.assign.assign_image``), which puts k where k
should be even when an occluder is there. *Whether* k is there comes from the pixels: the
disagreement between the image and the model's imagination of it
(:mod:`diffparts.occlusion.imagine`), averaged over k's region. A region the model repaints
more than k's regions usually are is evidence that k is not there.

- :func:`category_disagreement`: (category,) mean disagreement over each category's region
  (NaN where the category has fewer than ``min_pixels``: no region, no evidence either way);
- :class:`Calibration`: per category the same value on complete TRAINING images (sorted), and
  the per-pixel threshold of the occlusion map (a quantile of the training images' object
  pixels); :func:`calibrate` builds it, :meth:`Calibration.to_json` / ``from_json`` store it;
- :func:`calibrated_scores`: the missing score of k = how many robust spreads this image's
  value lies above the median of k's training values (0 where k has no region: absence of a
  region is no evidence, since most absent categories are ones this species never had);
- :func:`occlusion_map`: the pixels whose disagreement exceeds the calibrated threshold
  ("matches nothing": evidence of no category at all), background excluded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import numpy as np


MIN_SPREAD = 1e-3            # the robust spread's default floor (a category with identical training values)


def _resized(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(y, x) float map to ``shape`` by block mean (integer factor) or nearest neighbour."""
    from diffparts.occlusion.occluders import resize_labels

    values = np.asarray(values, np.float32)
    if values.shape == tuple(shape):
        return values
    fy, fx = values.shape[0] // shape[0], values.shape[1] // shape[1]
    if fy >= 1 and fx >= 1 and values.shape == (shape[0] * fy, shape[1] * fx):
        return values.reshape(shape[0], fy, shape[1], fx).mean((1, 3))
    idx = resize_labels(np.arange(values.size).reshape(values.shape), shape)
    return values.ravel()[idx]


def category_disagreement(dmap: np.ndarray, labels: np.ndarray, n_categories: int,
                          min_pixels: int = 4) -> np.ndarray:
    """(category,) float32: mean of the (y, x) disagreement ``dmap`` over each category's
    pixels of the (y, x) category map ``labels`` (resized to it); NaN for background (0) and
    for categories with fewer than ``min_pixels`` pixels."""
    labels = np.asarray(labels)
    d = _resized(dmap, labels.shape)
    out = np.full(n_categories, np.nan, np.float32)
    for k in range(1, n_categories):
        sel = labels == k
        if int(sel.sum()) >= min_pixels:
            out[k] = float(d[sel].mean())
    return out


@dataclass(frozen=True)
class Calibration:
    """What complete training images look like to the detector."""

    values: tuple                 # per category (index = category, 0 unused): sorted training values (tuple of floats)
    pixel_threshold: float        # disagreement above which an object pixel matches nothing
    images: tuple                 # the training images it was made from (store indices)
    min_spread: float = MIN_SPREAD   # floor of the robust spread: smaller differences are not evidence
    offset: float = 0.0           # spreads taken off every score: a kind that counts only well above its usual values

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_dict(self) -> dict:
        return {"values": [list(v) for v in self.values], "pixel_threshold": self.pixel_threshold,
                "images": list(self.images), "min_spread": self.min_spread, "offset": self.offset}

    @staticmethod
    def from_json(text: str | dict) -> "Calibration":
        d = json.loads(text) if isinstance(text, str) else text
        return Calibration(tuple(tuple(float(x) for x in v) for v in d["values"]), float(d["pixel_threshold"]),
                           tuple(int(i) for i in d["images"]), float(d.get("min_spread", MIN_SPREAD)),
                           float(d.get("offset", 0.0)))


@dataclass(frozen=True)
class Calibrations:
    """The detector's calibration: one :class:`Calibration` per kind of evidence it combines
    (``img2img``: :mod:`~diffparts.occlusion.imagine`; ``repaint``: :mod:`~diffparts.occlusion.repaint`)
    and the family-wise threshold of the maximum score over categories."""

    kinds: tuple                  # ((name, Calibration), ...) in the detector's order
    family_threshold: float | None = None   # the (1 - alpha) quantile, over training images, of their
                                            # leave-one-out maximum score over categories (and kinds)
    family_alpha: float | None = None       # that alpha: the false-alarm rate aimed at on complete images

    def __getitem__(self, name: str) -> Calibration:
        return dict(self.kinds)[name]

    @property
    def names(self) -> tuple:
        return tuple(n for n, _ in self.kinds)

    def to_json(self) -> str:
        return json.dumps({"kinds": {n: c.to_dict() for n, c in self.kinds}, "family_threshold": self.family_threshold,
                           "family_alpha": self.family_alpha})

    @staticmethod
    def from_json(text: str) -> "Calibrations":
        d = json.loads(text)
        if "kinds" not in d:                                     # a single img2img calibration (before the repaint)
            return Calibrations((("img2img", Calibration.from_json(d)),))
        return Calibrations(tuple((n, Calibration.from_json(c)) for n, c in d["kinds"].items()),
                            None if d.get("family_threshold") is None else float(d["family_threshold"]),
                            None if d.get("family_alpha") is None else float(d["family_alpha"]))


def leave_one_out_maxima(rows_by_kind: Sequence[np.ndarray], min_spreads: Sequence[float] | None = None,
                         offsets: Sequence[float] | None = None) -> np.ndarray:
    """(image,) float64: for each training image, the maximum over categories and kinds of its
    :func:`calibrated_scores` against a calibration made from the OTHER training images (so its
    own values do not pull its scores towards the median). rows_by_kind: per kind the
    (image, category) values, the same images in the same order; min_spreads, offsets: per kind
    the spread's floor (default :data:`MIN_SPREAD`) and the score's offset (default 0)."""
    rows_by_kind = [np.asarray(r, np.float64) for r in rows_by_kind]
    floors = [MIN_SPREAD] * len(rows_by_kind) if min_spreads is None else list(min_spreads)
    offsets = [0.0] * len(rows_by_kind) if offsets is None else list(offsets)
    m = len(rows_by_kind[0])
    if m < 2 or any(len(r) != m for r in rows_by_kind):
        raise ValueError("the family-wise threshold needs at least 2 training images, the same for every kind")
    out = np.empty(m, np.float64)
    for i in range(m):
        best = -np.inf
        for rows, floor, offset in zip(rows_by_kind, floors, offsets):
            rest = np.delete(rows, i, 0)
            cal = Calibration(tuple(tuple(np.sort(c[np.isfinite(c)])) for c in rest.T), 0.0, (), floor, offset)
            best = max(best, float(calibrated_scores(rows[i], cal)[1:].max(initial=-np.inf)))
        out[i] = best
    return out


def family_threshold(maxima: np.ndarray, alpha: float) -> float:
    """The (1 - alpha) quantile of the training images' :func:`leave_one_out_maxima`: a complete
    image's maximum score exceeds it with probability about ``alpha``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"family_alpha must be in (0, 1), got {alpha}")
    return float(np.quantile(np.asarray(maxima, np.float64), 1.0 - alpha))


def calibrate(rows: Sequence[np.ndarray], pixel_values: np.ndarray, pixel_quantile: float = 0.9,
              images: Sequence[int] = (), min_spread: float = MIN_SPREAD, offset: float = 0.0) -> Calibration:
    """A :class:`Calibration` from training images: ``rows`` their (category,)
    :func:`category_disagreement` values, ``pixel_values`` their object pixels' disagreement,
    ``min_spread`` the robust spread's floor, ``offset`` the spreads taken off every score."""
    if not 0.0 < pixel_quantile < 1.0:
        raise ValueError(f"pixel_quantile must be in (0, 1), got {pixel_quantile}")
    rows = np.asarray(rows, np.float64)
    if rows.ndim != 2 or len(rows) == 0:
        raise ValueError("calibration needs at least one training image's category values")
    pixel_values = np.asarray(pixel_values, np.float64).ravel()
    if pixel_values.size == 0:
        raise ValueError("calibration needs the training images' object pixels")
    values = tuple(tuple(float(x) for x in np.sort(col[np.isfinite(col)])) for col in rows.T)
    return Calibration(values, float(np.quantile(pixel_values, pixel_quantile)), tuple(int(i) for i in images),
                       float(min_spread), float(offset))


def calibrated_scores(evidence: np.ndarray, calibration: Calibration) -> np.ndarray:
    """(category,) float32 missing scores: how far ``evidence[k]`` lies above k's training
    values, in units of their spread (a robust z: (e - median) / (1.4826 * MAD), the spread
    floored at the calibration's ``min_spread``, so a category with identical training values
    does not divide by zero, nor a near-perfect classifier's last digits count). It is not
    capped: a region far outside everything seen in training scores far above one just
    outside (an empirical CDF would tie them at 1). The calibration's ``offset`` is taken off
    every score of a region (a kind that should count only well above its usual values). 0 for
    background, for a category without a region (NaN: no evidence either way) and for one never
    seen in training; negative values (more familiar than usual) are kept."""
    evidence = np.asarray(evidence, np.float64)
    if len(evidence) != len(calibration.values):
        raise ValueError(f"{len(evidence)} categories of evidence, the calibration has {len(calibration.values)}")
    out = np.zeros(len(evidence), np.float32)
    for k in range(1, len(evidence)):
        ref = np.asarray(calibration.values[k])
        if np.isfinite(evidence[k]) and ref.size:
            med = float(np.median(ref))
            spread = max(1.4826 * float(np.median(np.abs(ref - med))), calibration.min_spread)
            out[k] = (evidence[k] - med) / spread - calibration.offset
    return out


def occlusion_map(dmap: np.ndarray, labels: np.ndarray, calibration: Calibration) -> np.ndarray:
    """(y, x) bool at the labels' size: object pixels (label != 0) whose disagreement exceeds
    the calibrated pixel threshold."""
    labels = np.asarray(labels)
    return (_resized(dmap, labels.shape) > calibration.pixel_threshold) & (labels != 0)
