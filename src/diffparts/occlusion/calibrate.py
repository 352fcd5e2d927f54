"""The detector's calibration on a store's complete training images (docs/design.md §5.7 "Occlusion").

What "normal" evidence looks like: for a seeded subset of the training images (never the
held-out ones the cases come from; ``occlusion.split.training_images``), each image at the
model's input size goes through the detector's evidence exactly as a case will, with the
store's own map (``parts/labels``: the same assignment a case gets, made by the parts stage)
as its regions: ``img2img`` (imagine and compare, :mod:`~diffparts.occlusion.imagine`) and/or
``repaint`` (each category's region repainted from its context, :mod:`~diffparts.occlusion.repaint`).
Per kind, the per-category values and the object pixels' disagreement make a
:class:`~diffparts.occlusion.evidence.Calibration` (a case's evidence -> robust z; the occlusion
map's pixel threshold); over kinds, the family-wise threshold of the maximum score
(:func:`~diffparts.occlusion.evidence.leave_one_out_maxima`). The stage's set-up computes it
once and keeps it as JSON in the ``occlusion`` group's attributes (``calibration``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def min_spread(kind: str) -> float:
    """The robust spread's floor of a kind of evidence: the appearance detector's are a mean
    surprise in nats and a log grain, and differences under 0.05 of either are noise, not
    evidence (a near-perfect classifier would otherwise turn its last digits into large scores)."""
    from diffparts.occlusion.appearance import MIN_SPREAD as APPEARANCE_SPREAD
    from diffparts.occlusion.evidence import MIN_SPREAD

    return APPEARANCE_SPREAD if kind in ("appearance", "grain") else MIN_SPREAD


def pixel_quantile(kind: str, config) -> float:
    """The quantile of the training images' object pixels that makes a kind's occlusion-map
    threshold: ``config.pixel_quantile`` (a :class:`~diffparts.occlusion.detect.DetectConfig`),
    grain's own (``config.appearance.grain_quantile``) for grain."""
    return config.appearance.grain_quantile if kind == "grain" else config.pixel_quantile


def score_offset(kind: str, config) -> float:
    """Spreads taken off a kind's calibrated scores before the larger over kinds is taken: grain's
    ``config.appearance.grain_offset``, else 0."""
    return config.appearance.grain_offset if kind == "grain" else 0.0


def detector_pipelines(detect, pipe, inpaint, root=None, load_image: Callable[[int], np.ndarray] | None = None,
                       seed: int = 0, log: Callable[[str], None] | None = None) -> dict:
    """{kind: pipeline} of a calibrated ``detect`` config: img2img on ``pipe``'s components,
    repaint with the completion's inpainting pipeline ``inpaint`` (a 9-channel checkpoint, or
    latent blending on ``pipe``: either never sees the pixels it repaints), colour: the store
    ``root``'s colour reference (:func:`~diffparts.occlusion.colour.colour_reference`, its
    training images loaded by ``load_image``; deterministic for ``seed``), appearance: its fold
    classifiers (:func:`~diffparts.occlusion.appearance.appearance_reference`, the same images)."""
    from diffparts.occlusion.appearance import appearance_reference
    from diffparts.occlusion.colour import colour_reference
    from diffparts.occlusion.imagine import img2img_pipeline

    references = {"colour": lambda: colour_reference(root, load_image, detect.colour, seed, log),
                  "appearance": lambda: appearance_reference(root, load_image, detect.appearance, seed, log)}
    out = {}
    for kind in detect.kinds:
        if kind == "img2img":
            out[kind] = img2img_pipeline(pipe)
        elif kind == "grain":
            out[kind] = None                    # no model: the image alone
        elif kind in references:                # built from the store's training images
            if root is None or load_image is None:
                raise ValueError(f"the {kind} detector needs the store and its image loader for its reference")
            out[kind] = references[kind]()
        else:
            out[kind] = inpaint
    return out


def detector_regions(image: np.ndarray, labels: np.ndarray, pipelines: dict, config,
                     index: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(the (ly, lx) map whose regions the detector judges, the appearance classifiers'
    probabilities or None): for the appearance method, the assignment (or a training image's
    stored map) with each category it lost given its usual places
    (:func:`~diffparts.occlusion.appearance.appearance_regions`), and the probabilities to pass
    on to :func:`image_evidence`; else ``(labels, None)``. index: as :func:`image_evidence`."""
    from diffparts.occlusion.appearance import AppearanceReference, appearance_regions

    reference = pipelines.get("appearance")
    if "appearance" not in config.kinds or not isinstance(reference, AppearanceReference):
        return np.asarray(labels), None
    return appearance_regions(image, labels, reference, exclude=index, min_pixels=config.min_pixels)


def image_evidence(kind: str, image: np.ndarray, labels: np.ndarray, n_categories: int, pipelines: dict,
                   config, seed: int = 0, index: int | None = None,
                   probabilities: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((category,) evidence, (y, x) pixel disagreement) of one (y, x, 3) uint8 image whose
    categories are the (ly, lx) map ``labels``; kind "img2img", "repaint", "colour",
    "appearance" or "grain". pipelines: {kind: pipeline, or the colour / appearance reference}; config: the
    stage's :class:`~diffparts.occlusion.detect.DetectConfig`; index: the store index of a
    training image being calibrated (left out of the colour reference; read by the appearance
    fold that never saw it); probabilities: the appearance classifiers' reading of this image
    from :func:`detector_regions` (None: read here)."""
    if kind == "colour":
        from diffparts.occlusion.colour import colour_evidence, reference_for

        return colour_evidence(image, labels, n_categories, reference_for(pipelines), exclude=index)
    if kind == "appearance":
        from diffparts.occlusion.appearance import appearance_evidence, reference_for

        return appearance_evidence(image, labels, n_categories, reference_for(pipelines), exclude=index,
                                   min_pixels=config.min_pixels, probabilities=probabilities)
    if kind == "grain":
        from diffparts.occlusion.appearance import grain_evidence

        return grain_evidence(image, labels, n_categories, config.min_pixels)
    if kind == "img2img":
        from diffparts.occlusion.evidence import category_disagreement
        from diffparts.occlusion.imagine import disagreement, imagine

        dmap = disagreement(image, imagine(pipelines[kind], image, config.imagine, seed=seed))
        return category_disagreement(dmap, labels, n_categories, config.min_pixels), dmap
    if kind == "repaint":
        from diffparts.occlusion.repaint import region_masks, repaint, repaint_disagreement, repaint_evidence

        r = config.repaint
        cats, masks = region_masks(labels, n_categories, image.shape[0], r.dilate, config.min_pixels)
        maps = np.zeros((0, *image.shape[:2]), np.float32)
        if cats:
            painted = repaint(pipelines[kind], image, masks, r, seed)                  # category seed y x 3
            maps = repaint_disagreement(image, painted, r.texture, r.spread, r.colour)
        return repaint_evidence(maps, cats, labels, n_categories)
    raise ValueError(f"unknown kind of evidence {kind!r}: img2img, repaint, colour, appearance or grain")


def calibrate_store(root, load_image: Callable[[int], np.ndarray], pipelines: dict, config, seed: int = 0,
                    log: Callable[[str], None] | None = None):
    """The :class:`~diffparts.occlusion.evidence.Calibrations` of a store for the detector's
    kinds (``config.kinds``).

    load_image(i): store image i as (y, x, 3) uint8 at the model's input size. pipelines: {kind:
    pipeline} (img2img: ``imagine.img2img_pipeline``; repaint: an inpainting pipeline). config:
    the stage's :class:`~diffparts.occlusion.detect.DetectConfig` (imagine / repaint settings,
    min_pixels, pixel_quantile, calibration_count, family_alpha). ValueError when the store
    has no training image.
    """
    from diffparts.occlusion.evidence import (Calibrations, _resized, calibrate, family_threshold,
                                              leave_one_out_maxima)
    from diffparts.occlusion.split import training_images

    say = log or (lambda _m: None)
    train = training_images(root)
    if len(train) == 0:
        raise ValueError("no training image to calibrate the detector on (every labelled image is held out)")
    rng = np.random.default_rng(seed)
    chosen = sorted(int(i) for i in rng.permutation(train)[: config.calibration_count])
    k1 = int(root["parts"].attrs["n_categories"]) if "n_categories" in root["parts"].attrs \
        else int(root["parts/prevalence"].shape[0])
    kinds = config.kinds
    rows = {k: [] for k in kinds}
    pixels = {k: [] for k in kinds}
    for n, i in enumerate(chosen):
        image = load_image(i)
        labels, p = detector_regions(image, np.asarray(root["parts/labels"][i]), pipelines, config, i)   # ly lx
        for kind in kinds:
            values, dmap = image_evidence(kind, image, labels, k1, pipelines, config, seed=i, index=i, probabilities=p)
            rows[kind].append(values)
            pixels[kind].append(_resized(dmap, labels.shape)[labels > 0])
        if (n + 1) % 8 == 0 or n + 1 == len(chosen):
            say(f"calibration: {n + 1}/{len(chosen)} training images ({', '.join(kinds)})")
    floors = [min_spread(k) for k in kinds]
    offsets = [score_offset(k, config) for k in kinds]
    cals = tuple((k, calibrate(rows[k], np.concatenate(pixels[k]), pixel_quantile(k, config), chosen, f, o))
                 for k, f, o in zip(kinds, floors, offsets))
    alpha = config.family_alpha
    threshold = None
    if alpha is not None and len(chosen) >= 2:
        threshold = family_threshold(leave_one_out_maxima([np.asarray(rows[k]) for k in kinds], floors, offsets),
                                     alpha)
    return Calibrations(cals, threshold, alpha)
