"""Missing-part detection (docs/design.md §5.7 "Occlusion"): which part categories does an occluded image lack?

Calibrated methods (``DetectConfig.method``): *where* a category belongs comes from position
and context, *whether* it is there from evidence that the pixels disagree with it.

1. The occluded image goes through the corpus's own capture, segmentation and descriptor code
   and its segments are assigned to the store's **fitted** categories, no refit
   (:func:`diffparts.parts.assign.assign_image`): this says where each category should be (an
   occluder at the head's place is labelled head: fine, that is where the head belongs).
2. Evidence of each category's region, of one or two kinds
   (:func:`diffparts.occlusion.calibrate.image_evidence`): **appearance** (the default) = does
   the region look like bird at all, to a small per-pixel classifier trained on the store's
   training images, and is it grainy where no part is (``appearance`` and ``grain``,
   :mod:`diffparts.occlusion.appearance`: no diffusion model); **colour** = its colours against
   the category's on birds like this one (:mod:`diffparts.occlusion.colour`); **evidence** = ``img2img``, the model
   imagines the whole image from it (:mod:`diffparts.occlusion.imagine`: it sees the pixels it
   judges, so a flat fill it keeps is no evidence); **repaint** = each category's region masked
   and repainted from its context by the inpainting pipeline (:mod:`diffparts.occlusion.repaint`:
   it never sees those pixels); **combined** = both.
3. The missing score of k: per kind, how many robust spreads k's evidence lies above k's values
   on complete training images (:mod:`diffparts.occlusion.evidence`), the larger over kinds;
   categories scoring at least the threshold are predicted missing, ranked. The threshold is
   family-wise (``family_alpha``): the (1 - alpha) quantile of complete training images'
   maximum score over categories (leave-one-out), so an image that hides nothing raises an
   alarm with probability about alpha. A category with no region scores 0 (no evidence); the
   appearance method first gives a category the assignment lost its usual places, where the
   pixels are not clearly background (:mod:`diffparts.occlusion.layout`), and judges those.
4. Outcomes per pixel: background (0, from the assignment), a category (1..K), or "matches
   nothing" (-1): an object pixel whose disagreement (of ``map_kind``) exceeds the calibrated
   pixel threshold. The -1 pixels are ``Detection.occlusion_map``.

**area** (the earlier rule, kept as a baseline row): each category k has a dataset
expectation, its prevalence p_k (``parts/prevalence``) and typical size n_k (median pixel count
in the training images that contain it); the missing score is ``p_k * max(0, 1 - present_k /
n_k)``. Optionally (``unknown_quantile``) a pixel far from every fitted centre is unknown and
counts for no category. Position decides everything here, so a grey box where the head was
still counts as the head (docs/occlusion.md, Results).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from diffparts.occlusion.appearance import AppearanceConfig
from diffparts.occlusion.colour import ColourConfig
from diffparts.occlusion.imagine import ImagineConfig
from diffparts.occlusion.repaint import RepaintConfig


METHODS = ("repaint", "evidence", "combined", "colour", "appearance", "area")
KINDS = {"evidence": ("img2img",), "repaint": ("repaint",), "combined": ("img2img", "repaint"), "colour": ("colour",),
         "appearance": ("grain", "appearance"),
         "area": ()}
MAP_KINDS = {"appearance": "any"}   # the occlusion map's kind where not the method's last (validation birds:
                                   # the classifier calls noise bird, its grain flags it)
MODEL_FREE_KINDS = {"appearance", "grain", "colour"}   # kinds of evidence computed without a diffusion model
MODEL_FREE_CALIBRATION = 256   # calibration images of methods with only those kinds (fewer where the store has fewer)
MODEL_CALIBRATION = 32         # ... of methods that generate per image (img2img, repaint)
AREA_THRESHOLD = 0.1        # the area rule's threshold (best F1 on the validation birds, seed 999: 0.085)
EVIDENCE_THRESHOLD = 4.0    # the evidence rules' fixed one, in robust spreads, where no family-wise threshold is
                            # calibrated (validation birds, img2img: best F1, <= 10 % false alarms)


@dataclass(frozen=True)
class DetectConfig:
    method: str = "appearance"   # appearance (is the region bird at all, by a small per-pixel classifier
                              # cross-fitted on training images, and its texture; calibrated, no diffusion
                              # model; the default: best on the validation birds) | repaint (each region
                              # repainted from its context, calibrated) | evidence (img2img
                              # imagine and compare, calibrated) | combined (the larger calibrated score of the
                              # two) | colour (pixels against the category's colours on birds like this one,
                              # calibrated, no model) | area (prevalence x size, baseline)
    threshold: float | None = None   # missing when score >= this; None = the calibration's family-wise one
                                     # (family_alpha), else the method's (AREA_/EVIDENCE_THRESHOLD)
    min_pixels: int = 4       # a category counts as present (has a region) from this many pixels
    unknown_quantile: float | None = None   # area only: corpus-distance quantile beyond which a unit is unknown;
                                            # None = off (validation birds: no quantile helps, docs/occlusion.md)
    imagine: ImagineConfig = field(default_factory=ImagineConfig)   # evidence / combined: the imaginations
    repaint: RepaintConfig = field(default_factory=RepaintConfig)   # repaint / combined: the repaintings
    colour: ColourConfig = field(default_factory=ColourConfig)      # colour: the reference and its neighbours
    appearance: AppearanceConfig = field(default_factory=AppearanceConfig)   # appearance: its classifiers
    pixel_quantile: float = 0.95  # calibrated methods: occlusion map = object pixels above this quantile of
                                  # the training images' (of the map's kind)
    calibration_images: int | None = None   # calibrated methods: training images the calibration is made from
                                            # (seeded); None: the method's (calibration_count)
    family_alpha: float | None = 0.1   # calibrated methods: threshold = the (1 - alpha) quantile of complete
                                       # training images' maximum score (leave-one-out); None: the fixed one
    map_kind: str | None = None   # the kind whose pixels make the occlusion map; "any": a pixel above any
                                  # kind's threshold; None: the method's (MAP_KINDS, else its last kind)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown detection method {self.method!r}: the methods are {', '.join(METHODS)}")
        for name, cls in (("imagine", ImagineConfig), ("repaint", RepaintConfig), ("colour", ColourConfig),
                          ("appearance", AppearanceConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, cls(**{k: tuple(v) if k == "seeds" else v for k, v in value.items()}))
        if self.calibration_images is not None and (isinstance(self.calibration_images, bool)
                                                    or not isinstance(self.calibration_images, int)
                                                    or self.calibration_images < 1):
            raise ValueError(f"calibration_images must be a whole number >= 1 or None (the method's), "
                             f"got {self.calibration_images!r}")
        if self.map_kind not in (None, "any") and self.map_kind not in self.kinds:
            raise ValueError(f"map_kind {self.map_kind!r} is not a kind of evidence of method {self.method!r} "
                             f"({', '.join(self.kinds) or 'none'})")

    @property
    def kinds(self) -> tuple:
        """The kinds of evidence the method combines (img2img, repaint); () for the area rule."""
        return KINDS[self.method]

    @property
    def calibration_count(self) -> int:
        """Training images to calibrate on: ``calibration_images``, else up to
        ``MODEL_FREE_CALIBRATION`` for methods whose evidence needs no diffusion model (a few
        hundredths of a second per image), ``MODEL_CALIBRATION`` for the others (a generation
        per image and kind). The family-wise threshold is a 0.9 quantile of these images'
        maxima: from 32 it is about the 4th largest, and on the validation birds (64 training
        images) the background controls alarmed on 12-17 % of cases with 32 against 6-8 % with
        all 64 (docs/occlusion.md "Detection")."""
        if self.calibration_images is not None:
            return self.calibration_images
        model_free = set(self.kinds) <= MODEL_FREE_KINDS
        return MODEL_FREE_CALIBRATION if model_free else MODEL_CALIBRATION

    @property
    def cutoff(self) -> float:
        """The fixed threshold: ``threshold``, or the method's default (see :meth:`cutoff_for`)."""
        if self.threshold is not None:
            return float(self.threshold)
        return AREA_THRESHOLD if self.method == "area" else EVIDENCE_THRESHOLD

    def cutoff_for(self, calibration=None) -> float:
        """The threshold in use with a store's ``calibration`` (``evidence.Calibrations``):
        ``threshold`` when given, else its family-wise threshold when ``family_alpha`` is set and
        it has one, else :attr:`cutoff`."""
        if self.threshold is None and self.family_alpha is not None and self.method != "area" \
                and getattr(calibration, "family_threshold", None) is not None:
            return float(calibration.family_threshold)
        return self.cutoff


@dataclass(frozen=True)
class Expectation:
    """What a complete image of the dataset holds, per category (index = category, 0 unused)."""

    prevalence: np.ndarray    # (category,) float32, fraction of images containing the category
    typical: np.ndarray       # (category,) float32, median pixels where present (segment-map pixels)


@dataclass(frozen=True)
class Detection:
    labels: np.ndarray = field(repr=False)   # (y, x) int16 categories of the occluded image
    scores: np.ndarray                       # (category,) float32 missing score, [0] = 0 (background)
    ranking: tuple[int, ...]                 # categories 1..K by decreasing score (ties: smaller k)
    missing: tuple[int, ...]                 # predicted missing (score >= threshold), ranked
    occlusion_map: np.ndarray | None = None  # (y, x) bool where occluded, if the method gives one
    assignment: np.ndarray | None = field(default=None, repr=False)   # (y, x) int16 the plain assignment

    @property
    def assigned(self) -> np.ndarray:
        """(y, x) int16: the occluded image's plain assignment (before any pixel is marked -1)."""
        return self.labels if self.assignment is None else self.assignment

    def top(self, n: int) -> tuple[int, ...]:
        """The predicted missing categories, at least one and at most ``n`` (best ranked)."""
        return (self.missing or self.ranking[:1])[:max(1, n)]


def dataset_expectation(labels: np.ndarray, prevalence: np.ndarray | None = None,
                        min_pixels: int = 4) -> Expectation:
    """Prevalence and typical size from (image, y, x) category maps (-1 = unlabelled: skipped).

    prevalence: the store's ``parts/prevalence`` to use instead of recounting it.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be (image, y, x) category maps, got shape {labels.shape}")
    k1 = int(max(labels.max(initial=0) + 1, 0 if prevalence is None else len(prevalence)))
    counts = np.stack([np.bincount(m[m >= 0].ravel(), minlength=k1)[:k1] for m in labels if (m >= 0).any()])
    if len(counts) == 0:
        raise ValueError("no labelled image to learn the categories' expectations from")
    present = counts >= min_pixels                                    # image part
    typical = np.array([np.median(counts[present[:, k], k]) if present[:, k].any() else 0.0 for k in range(k1)],
                       np.float32)
    prev = present.mean(0).astype(np.float32) if prevalence is None else np.asarray(prevalence, np.float32)
    if len(prev) != k1:
        raise ValueError(f"prevalence has {len(prev)} categories, the labels {k1}")
    prev, typical = prev.copy(), typical.copy()
    prev[0], typical[0] = 0.0, 0.0                                   # background is never missing
    return Expectation(prev, typical)


def missing_scores(labels: np.ndarray, expectation: Expectation) -> np.ndarray:
    """(category,) float32 ``p_k * max(0, 1 - present_k / n_k)`` of one (y, x) category map."""
    k1 = len(expectation.prevalence)
    labels = np.asarray(labels)
    if labels.max(initial=0) >= k1:
        raise ValueError(f"labels hold category {int(labels.max())}, the expectation only 0..{k1 - 1}")
    present = np.bincount(labels[labels >= 0].ravel(), minlength=k1)[:k1].astype(np.float64)
    typical = expectation.typical.astype(np.float64)
    short = np.where(typical > 0, np.clip(1.0 - present / np.maximum(typical, 1e-9), 0.0, 1.0), 0.0)
    scores = (expectation.prevalence * short).astype(np.float32)
    scores[0] = 0.0
    return scores


def rank_missing(labels: np.ndarray, expectation: Expectation, config: DetectConfig = DetectConfig(),
                 occlusion_map: np.ndarray | None = None) -> Detection:
    """Scores, ranking and the predicted missing categories of one category map."""
    scores = missing_scores(labels, expectation)
    order = sorted(range(1, len(scores)), key=lambda k: (-float(scores[k]), k))
    missing = tuple(k for k in order if scores[k] >= config.cutoff and scores[k] > 0)
    return Detection(np.asarray(labels, np.int16), scores, tuple(order), missing, occlusion_map)


def rank_with_unknown(labels: np.ndarray, distance: np.ndarray, expectation: Expectation,
                      threshold: float | None, config: DetectConfig = DetectConfig()) -> Detection:
    """:func:`rank_missing` counting only confidently assigned pixels: a foreground pixel farther
    than ``threshold`` (squared distance to its nearest centre) is unknown (-1) and goes to the
    occlusion map. threshold None: plain :func:`rank_missing`, no map."""
    if threshold is None:
        return rank_missing(labels, expectation, config)
    from diffparts.parts.assign import mark_unknown

    confident = mark_unknown(labels, distance, threshold)
    return rank_missing(confident, expectation, config, occlusion_map=(confident < 0) & (np.asarray(labels) > 0))


def rank_evidence(labels: np.ndarray, dmap, calibration, config: DetectConfig = DetectConfig(),
                  assignment: np.ndarray | None = None) -> Detection:
    """The calibrated methods' steps 2-4 on a (y, x) category map: calibrated scores (per
    kind, the larger), ranking, predicted missing (at :meth:`DetectConfig.cutoff_for`), and the
    labels with "matches nothing" (-1).

    dmap: {kind: ((category,) evidence, (y, x) pixel disagreement)} of the method's kinds
    (:func:`diffparts.occlusion.calibrate.image_evidence`), or one (y, x) img2img disagreement
    map; calibration: ``evidence.Calibrations`` (or one img2img ``Calibration``); assignment:
    the plain assignment when ``labels`` are the regions judged (lost categories placed), kept
    as ``Detection.assignment``."""
    from diffparts.occlusion.evidence import (Calibration, Calibrations, calibrated_scores, category_disagreement,
                                              occlusion_map)

    labels = np.asarray(labels)
    if isinstance(calibration, Calibration):
        calibration = Calibrations((("img2img", calibration),))
    if not isinstance(dmap, dict):
        dmap = {"img2img": (category_disagreement(dmap, labels, len(calibration["img2img"].values),
                                                  config.min_pixels), dmap)}
    kinds = [k for k in calibration.names if k in dmap]
    if not kinds:
        raise ValueError(f"no evidence of the calibrated kinds {calibration.names}: got {sorted(dmap)}")
    scores = np.max([calibrated_scores(dmap[k][0], calibration[k]) for k in kinds], 0).astype(np.float32)
    order = sorted(range(1, len(scores)), key=lambda k: (-float(scores[k]), k))
    cutoff = config.cutoff_for(calibration)
    missing = tuple(k for k in order if scores[k] >= cutoff and scores[k] > 0)
    map_kind = config.map_kind or MAP_KINDS.get(config.method)
    map_kinds = kinds if map_kind == "any" else [map_kind if map_kind in kinds else kinds[-1]]
    omap = np.any([occlusion_map(dmap[k][1], labels, calibration[k]) for k in map_kinds], 0)
    return Detection(np.where(omap, -1, labels).astype(np.int16), scores, tuple(order), missing, omap,
                     np.asarray(labels if assignment is None else assignment).astype(np.int16))


def detect_missing(fitted, pipe, image: np.ndarray, expectation: Expectation | None = None,
                   config: DetectConfig = DetectConfig(), box=None,
                   unknown_threshold: float | None = None, pipelines: dict | None = None, calibration=None,
                   seed: int = 0) -> Detection:
    """Assign the occluded (y, x, 3) uint8 ``image`` to the fitted categories and rank what is
    missing. box: the object box (x, y, w, h) in segment-map pixels, as for the corpus.

    Calibrated methods (repaint, evidence, combined): ``pipelines`` {kind: pipeline} (img2img:
    :func:`diffparts.occlusion.imagine.img2img_pipeline` of ``pipe``; repaint: an inpainting
    pipeline) and the store's ``calibration`` (:func:`diffparts.occlusion.calibrate.calibrate_store`);
    ``seed`` offsets the seeds. area: ``expectation``; unknown_threshold: the store's
    :func:`diffparts.parts.assign.unknown_threshold` (used when ``config.unknown_quantile`` is
    set), beyond which a pixel is unknown."""
    from diffparts.parts.assign import assign_image

    if config.method != "area":
        from diffparts.occlusion.calibrate import detector_regions, image_evidence

        if calibration is None or any(k not in (pipelines or {}) for k in config.kinds):
            raise ValueError(f"the {config.method} method needs pipelines for {', '.join(config.kinds)} "
                             "and the store's calibration")
        assignment = assign_image(fitted, pipe, image, box=box)
        labels, p = detector_regions(image, assignment, pipelines, config)
        k1 = len(calibration[config.kinds[0]].values)
        evidence = {k: image_evidence(k, image, labels, k1, pipelines, config, seed, probabilities=p)
                    for k in config.kinds}
        return rank_evidence(labels, evidence, calibration, config, assignment)
    if expectation is None:
        raise ValueError("the area method needs the dataset expectation (store_expectation)")
    if config.unknown_quantile is None or unknown_threshold is None:
        return rank_missing(assign_image(fitted, pipe, image, box=box), expectation, config)
    labels, distance = assign_image(fitted, pipe, image, box=box, return_distance=True)
    return rank_with_unknown(labels, distance, expectation, unknown_threshold, config)


def store_expectation(root, min_pixels: int = 4) -> Expectation:
    """:func:`dataset_expectation` of a store: ``parts/prevalence`` and the typical sizes of the
    labelled training images (``occlusion.split.training_images``: held-out ones excluded)."""
    from diffparts.occlusion.split import training_images

    idx = training_images(root)
    if len(idx) == 0:
        raise ValueError("the store has no labelled (training) image: run the parts stage first")
    labels = np.stack([np.asarray(root["parts/labels"][int(i)]) for i in idx])
    return dataset_expectation(labels, np.asarray(root["parts/prevalence"][:]), min_pixels)
