"""The evidence detector's calibration on a store's complete training images (docs/design.md §5.7 "Occlusion").

What "normal" disagreement looks like: for a seeded subset of the training images (never the
held-out ones the cases come from; ``occlusion.split.training_images``), each image at the
model's input size is imagined exactly as a case will be (same :class:`ImagineConfig`), and
its disagreement is averaged over each category's region of the store's own map
(``parts/labels``: the same assignment a case gets, made by the parts stage). The per-category
values and the object pixels' disagreement make the :class:`~diffparts.occlusion.evidence.Calibration`
that turns a case's evidence into a missing score in [0, 1] and gives the occlusion map's
pixel threshold. The stage's set-up computes it once and keeps it as JSON in the
``occlusion`` group's attributes (``calibration``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def calibrate_store(root, load_image: Callable[[int], np.ndarray], img2img, config, seed: int = 0,
                    log: Callable[[str], None] | None = None):
    """The :class:`~diffparts.occlusion.evidence.Calibration` of a store.

    load_image(i): store image i as (y, x, 3) uint8 at the model's input size. config: the
    stage's :class:`~diffparts.occlusion.detect.DetectConfig` (imagine settings, min_pixels,
    pixel_quantile, calibration_images). ValueError when the store has no training image.
    """
    from diffparts.occlusion.evidence import _resized, calibrate, category_disagreement
    from diffparts.occlusion.imagine import disagreement, imagine
    from diffparts.occlusion.split import training_images

    say = log or (lambda _m: None)
    train = training_images(root)
    if len(train) == 0:
        raise ValueError("no training image to calibrate the detector on (every labelled image is held out)")
    rng = np.random.default_rng(seed)
    chosen = sorted(int(i) for i in rng.permutation(train)[: max(1, int(config.calibration_images))])
    k1 = int(root["parts"].attrs["n_categories"]) if "n_categories" in root["parts"].attrs \
        else int(len(root["parts/prevalence"]))
    rows, pixels = [], []
    for n, i in enumerate(chosen):
        image = load_image(i)
        labels = np.asarray(root["parts/labels"][i])                                   # ly lx
        dmap = disagreement(image, imagine(img2img, image, config.imagine, seed=i))
        rows.append(category_disagreement(dmap, labels, k1, config.min_pixels))
        pixels.append(_resized(dmap, labels.shape)[labels > 0])
        if (n + 1) % 8 == 0 or n + 1 == len(chosen):
            say(f"calibration: {n + 1}/{len(chosen)} training images imagined")
    return calibrate(rows, np.concatenate(pixels), config.pixel_quantile, chosen)
