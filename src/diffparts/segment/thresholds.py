"""KL thresholds for DiffSeg chosen from the data (docs/design.md §5.2 "DiffSeg merge"; issue 5 item 4).

DiffSeg's thresholds are absolute KL distances: 1.1 (COCO-Stuff) and 0.9 (Cityscapes) suit
Stable Diffusion's peaky 64 x 64 maps, where maps of one object are close and maps of different
objects are far apart (KL of 10-20). A small model's maps are diffuse, every distance shrinks,
and 1.1 merges the whole image into one segment (a first trial here found ~0.02 right). The
scale of the distances belongs to the model, so the threshold is read off the distances.

The distribution: the symmetric KL from every anchor's map to every query map (exactly what
round 0 thresholds), pooled over a sample of images (``sample_kl_distances``, a fixed number of
distances per image so that memory does not grow with the sample).

Rules (``threshold_from_distances``):

- ``"quantile"`` (default): the ``quantile``-th quantile of the pooled distances. Round 0 then
  averages, per anchor, about that fraction of the image's query maps into its proposal: the
  rule fixes how local a proposal is, whatever the model's scale. The default 0.2 is the
  quantile where SD-like attention of birds (attention synthesised from the synthetic birds'
  part masks at sharpness 16, ``benchmarks/bench_diffseg.py --synthetic-sharpness 16``) has
  the reference's 1.1 (it gives 1.20 there); on ``synthetic.realistic_attention`` (64 x 64, six
  Voronoi regions) 1.1 sits near the 0.05 quantile. The README compares the rule with fixed
  values on a toy checkpoint and on synthetic attention of three sharpnesses: fixed values give
  1 to 250 segments per image depending on the model, the rule at 0.2 gives 12 to 28.
- ``"otsu"``: Otsu's threshold of the log distances (the valley between the "same region" and
  "other region" modes of a bimodal distribution), times ``otsu_scale``; parameter-free but
  coarse (it tends to merge whole regions of similar parts).

All merge rounds get the same value t (as the reference's ``[1.1] * 3``). The hierarchy's
levels (a DiffSeg threshold sweep, ``hierarchy.diffseg_levels``) take the quantiles
``F(t) * m`` of the same distances, with F(t) the share of distances below t and m in
``level_multipliers`` (1, 1.5, 2.5, 4; capped at 0.95): for the quantile rule at 0.2 that is
the quantiles 0.2, 0.3, 0.5, 0.8, and every rule gets levels that merge more and more in steps
of the data's own scale. ``PRESETS`` keeps the reference values for real SD checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from diffparts.segment.diffseg import anchor_kl_distances

__all__ = [
    "PRESETS",
    "RULES",
    "ThresholdChoice",
    "ThresholdRule",
    "choose_thresholds",
    "distance_statistics",
    "level_thresholds",
    "sample_kl_distances",
    "threshold_from_distances",
]

#: Reference thresholds (one per round) for Stable Diffusion's 64 x 64 maps (DiffSeg paper).
PRESETS: dict[str, tuple[float, ...]] = {
    "sd": (1.1, 1.1, 1.1),  # COCO-Stuff setting; the default for real SD checkpoints
    "cityscapes": (0.9, 0.9, 0.9),  # Cityscapes setting
}
RULES = ("quantile", "otsu")


@dataclass(frozen=True)
class ThresholdRule:
    """How thresholds are chosen from a sample of images (stored with the segments)."""

    rule: str = "quantile"  # "quantile" or "otsu" (see module docstring)
    quantile: float = 0.2  # quantile of anchor-to-query KL distances (SD-like bird maps: ~1.1)
    otsu_scale: float = 1.0  # multiplier on Otsu's threshold
    rounds: int = 3  # merge rounds; every round gets the same threshold (reference: 3)
    level_multipliers: tuple[float, ...] = (1.0, 1.5, 2.5, 4.0)  # sweep levels: quantile F(t) times these
    anchors_per_side: int = 16  # the anchor grid whose distances are pooled (as DiffSeg's)
    max_per_image: int = 20000  # distances kept per image (bounded memory over the sample)
    eps: float = 1e-10  # the log floor, as in DiffSeg
    random_state: int = 0  # which distances are kept per image


@dataclass(frozen=True)
class ThresholdChoice:
    """Thresholds picked by a rule and the statistics they came from (JSON-ready)."""

    thresholds: tuple[float, ...]  # one per merge round
    level_thresholds: tuple[float, ...]  # non-decreasing, one per hierarchy level
    statistics: dict = field(default_factory=dict)  # rule, parameters, sample size, percentiles

    def as_dict(self) -> dict:
        return {
            "thresholds": list(self.thresholds),
            "level_thresholds": list(self.level_thresholds),
            "statistics": dict(self.statistics),
        }


def sample_kl_distances(
    attns: Iterable[np.ndarray],
    anchors_per_side: int = 16,
    max_per_image: int = 20000,
    eps: float = 1e-10,
    random_state: int = 0,
) -> tuple[np.ndarray, int]:
    """Pooled anchor-to-query symmetric KL distances of several images: ((distance,) float32, n_images).

    attns: iterable of (qy, qx, ky, kx) attention. An anchor's distance to its own map is left
    out; at most ``max_per_image`` distances per image are kept (uniformly at random).
    """
    if max_per_image < 1:
        raise ValueError(f"max_per_image must be >= 1, got {max_per_image}")
    rng = np.random.default_rng(random_state)
    pooled, n_images = [], 0
    for attn in attns:
        distance = anchor_kl_distances(attn, anchors_per_side, eps)  # anchor q
        values = distance[distance > 1e-6]  # the anchors' own maps (and exact copies) left out
        if values.size > max_per_image:
            values = rng.choice(values, size=max_per_image, replace=False)
        pooled.append(values.astype(np.float32))
        n_images += 1
    if n_images == 0:
        raise ValueError("no images to choose thresholds from")
    distances = np.concatenate(pooled)
    return distances, n_images


def _otsu_log(distances: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of log(distance), returned as a distance."""
    logs = np.log(distances)
    hist, edges = np.histogram(logs, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    weight = hist.astype(np.float64)
    w0 = np.cumsum(weight)  # pixels below each cut
    w1 = w0[-1] - w0
    m0 = np.cumsum(weight * centres) / np.maximum(w0, 1)
    m1 = (np.sum(weight * centres) - np.cumsum(weight * centres)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a plateau across an empty gap
    return float(np.exp(0.5 * (edges[best[0] + 1] + edges[best[-1] + 1])))  # its middle


def threshold_from_distances(
    distances: np.ndarray, rule: str = "quantile", quantile: float = 0.2, otsu_scale: float = 1.0
) -> float:
    """One KL threshold from pooled distances by ``rule`` (see the module docstring)."""
    distances = np.asarray(distances, dtype=np.float64).ravel()
    distances = distances[np.isfinite(distances) & (distances > 0)]
    if distances.size == 0:
        raise ValueError("no positive finite distances: every map is identical (one segment)")
    if rule == "quantile":
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        return float(np.quantile(distances, quantile))
    if rule == "otsu":
        if not otsu_scale > 0:
            raise ValueError(f"otsu_scale must be > 0, got {otsu_scale}")
        return otsu_scale * _otsu_log(distances)
    raise ValueError(f"rule must be one of {RULES}, got {rule!r}")


def level_thresholds(distances: np.ndarray, quantiles: Sequence[float]) -> tuple[float, ...]:
    """Non-decreasing thresholds for a DiffSeg threshold sweep from increasing quantiles."""
    quantiles = [float(q) for q in quantiles]
    if not quantiles or any(not 0 < q < 1 for q in quantiles) or quantiles != sorted(quantiles):
        raise ValueError(f"quantiles must be non-decreasing values in (0, 1), got {quantiles}")
    return tuple(threshold_from_distances(distances, "quantile", q) for q in quantiles)


def distance_statistics(distances: np.ndarray) -> dict:
    """JSON-ready summary of pooled distances: count, mean and percentiles 1..99."""
    distances = np.asarray(distances, dtype=np.float64)
    points = (1, 5, 10, 25, 50, 75, 90, 99)
    values = np.percentile(distances, points) if distances.size else [float("nan")] * len(points)
    return {
        "n_distances": int(distances.size),
        "mean": float(distances.mean()) if distances.size else float("nan"),
        "percentiles": {f"p{p}": float(v) for p, v in zip(points, values)},
    }


def choose_thresholds(attns: Iterable[np.ndarray], rule: ThresholdRule = ThresholdRule()) -> ThresholdChoice:
    """Thresholds for every merge round and every sweep level from a sample of images.

    attns: iterable of (qy, qx, ky, kx) attention (e.g. the first N images of a store).
    """
    if rule.rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rule.rounds}")
    # 1. Pool the anchor-to-query distances (what round 0 thresholds)
    distances, n_images = sample_kl_distances(
        attns, rule.anchors_per_side, rule.max_per_image, rule.eps, rule.random_state
    )
    # 2. One threshold by the rule, the same for every round (reference: [t] * 3)
    value = threshold_from_distances(distances, rule.rule, rule.quantile, rule.otsu_scale)
    # 3. Increasing thresholds for the hierarchy levels: quantiles F(t) * m, starting at t
    share = float(np.mean(distances < value))  # F(t)
    quantiles = np.minimum(np.maximum(share, 1e-6) * np.asarray(rule.level_multipliers, dtype=float), 0.95)
    levels = [value] + list(level_thresholds(distances, np.maximum.accumulate(quantiles).tolist()))[1:]
    levels = tuple(float(t) for t in np.maximum.accumulate(levels))
    statistics = {
        "rule": rule.rule,
        "quantile": rule.quantile,
        "otsu_scale": rule.otsu_scale,
        "share_below": share,
        "level_quantiles": [float(q) for q in quantiles],
        "n_images": n_images,
        "value": value,
        **distance_statistics(distances),
    }
    return ThresholdChoice((value,) * rule.rounds, levels, statistics)
