"""Evidence of absence from appearance: are a category's pixels the colours that category has on
birds like this one? (docs/design.md §5.7 "Occlusion"; docs/occlusion.md "Detection").

The diffusion detectors (:mod:`~diffparts.occlusion.imagine`, :mod:`~diffparts.occlusion.repaint`)
ask the model what belongs in a region; the toy model paints a region's colour near the mean, so
their evidence is texture, blind to a green leaf or a flat patch where a red head belongs. This
one asks the store instead, without labels and without a forward pass:

1. **Reference**: for up to ``images`` seeded training images (never held-out ones), each
   category's mean colour and a small palette of its pixels' colours (k-means in CIELAB), from
   the image and the parts stage's own map (``parts/labels``).
2. **Birds like this one**: for category k of an image, the ``neighbours`` reference images
   whose *other* categories' mean colours are nearest to this image's (k's own colour is never
   used to choose them: an occluder at k would choose birds with leaves for heads; and each
   category's distance is capped at ``match_cap``, so an occluder over another category counts
   as one mismatch, not as a different bird). That is the species, found from what is visible.
3. **Disagreement**: each pixel of k's region (the image's own assignment: where k belongs) is
   as far as its colour is from the nearest colour of k's palettes on those birds (CIELAB
   distance); k's evidence is the mean over its region. The per-pixel map is the same distance
   for every object pixel against its own category's palettes ("matches nothing" where large).

A grey box where a grey bird's head belongs is a plausible grey head here too: grey is reported
on its own in the tables for that reason.

- :class:`ColourConfig`: the settings; :class:`ColourReference`: the reference, from
  :func:`colour_reference`; :func:`colour_evidence`: one image's ((category,) evidence, (y, x)
  pixel map), the interface of ``calibrate.image_evidence``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from diffparts.occlusion.occluders import resize_labels


@dataclass(frozen=True)
class ColourConfig:
    palette: int = 4          # colours per (image, category) palette (k-means in CIELAB)
    neighbours: int = 3       # reference images whose other categories' colours are nearest
    images: int = 256         # training images in the reference (seeded; fewer if the store has fewer)
    min_pixels: int = 4       # pixels (at the segment map's size) for a category to have a colour
    match_cap: float = 20.0   # choosing neighbours: a category's colour distance counts at most this (CIELAB
                              # units), so one occluded category cannot outvote the others

    def __post_init__(self):
        if self.match_cap <= 0:
            raise ValueError(f"colour match_cap must be > 0, got {self.match_cap}")
        if min(self.palette, self.neighbours, self.images, self.min_pixels) < 1:
            raise ValueError(f"colour palette, neighbours, images and min_pixels must be >= 1, got {self.palette}, "
                             f"{self.neighbours}, {self.images}, {self.min_pixels}")


def to_lab(image: np.ndarray) -> np.ndarray:
    """(y, x, 3) uint8 sRGB -> (y, x, 3) float32 CIELAB (D65)."""
    rgb = np.asarray(image, np.float32) / 255.0
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]], np.float32)
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883], np.float32)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
                    -1).astype(np.float32)


def _palette(colours: np.ndarray, n: int, iterations: int = 8) -> np.ndarray:
    """(n, 3) k-means centres of (m, 3) colours (deterministic: started at colour quantiles of
    lightness; fewer distinct colours than ``n`` repeat a centre)."""
    order = np.argsort(colours[:, 0], kind="stable")
    centres = colours[order[np.linspace(0, len(colours) - 1, n).round().astype(int)]].copy()
    for _ in range(iterations):
        nearest = ((colours[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        for c in range(n):
            sel = nearest == c
            if sel.any():
                centres[c] = colours[sel].mean(0)
    return centres


def image_colours(image: np.ndarray, labels: np.ndarray, n_categories: int,
                  config: ColourConfig = ColourConfig(), palettes: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """((category, 3) mean CIELAB, (category, palette, 3) palettes or None without ``palettes``)
    of one (y, x, 3) uint8 image whose categories are the (ly, lx) map ``labels``; NaN for
    background and for categories with fewer than ``min_pixels`` pixels in ``labels``."""
    lab = to_lab(image).reshape(-1, 3)
    labels = np.asarray(labels)
    pix = resize_labels(labels, image.shape[:2]).ravel()
    means = np.full((n_categories, 3), np.nan, np.float32)
    pals = np.full((n_categories, config.palette, 3), np.nan, np.float32) if palettes else None
    for k in range(1, n_categories):
        if int((labels == k).sum()) < config.min_pixels or not (pix == k).any():
            continue
        colours = lab[pix == k]
        means[k] = colours.mean(0)
        if palettes:
            pals[k] = _palette(colours, config.palette)
    return means, pals


@dataclass(frozen=True)
class ColourReference:
    """Per reference image (training images of the store): category colours and palettes."""

    images: np.ndarray        # (image,) int store indices
    means: np.ndarray         # (image, category, 3) float32 CIELAB, NaN where the category is absent
    palettes: np.ndarray      # (image, category, palette, 3) float32, NaN where absent
    config: ColourConfig = ColourConfig()


def colour_reference(root, load_image: Callable[[int], np.ndarray], config: ColourConfig = ColourConfig(),
                     seed: int = 0, log: Callable[[str], None] | None = None) -> ColourReference:
    """The :class:`ColourReference` of a store: up to ``config.images`` of its training images
    (``occlusion.split.training_images``, a seeded choice), each loaded by ``load_image(i)`` at
    the model's input size with ``parts/labels`` as its categories. ValueError without one."""
    from diffparts.occlusion.split import training_images

    train = training_images(root)
    if len(train) == 0:
        raise ValueError("no training image for the colour reference (every labelled image is held out)")
    chosen = sorted(int(i) for i in np.random.default_rng(seed).permutation(train)[: config.images])
    k1 = int(root["parts/prevalence"].shape[0])
    means, palettes = [], []
    for n, i in enumerate(chosen):
        m, p = image_colours(load_image(i), np.asarray(root["parts/labels"][i]), k1, config)
        means.append(m)
        palettes.append(p)
        if log and ((n + 1) % 64 == 0 or n + 1 == len(chosen)):
            log(f"colour reference: {n + 1}/{len(chosen)} training images")
    return ColourReference(np.asarray(chosen), np.stack(means), np.stack(palettes), config)


def _neighbours(means: np.ndarray, reference: ColourReference, k: int, keep: np.ndarray) -> np.ndarray:
    """Indices into the reference of the images nearest to ``means`` (category, 3) over the
    categories other than k that both have; only reference images with k (``keep``)."""
    other = np.arange(len(means)) != k
    diff = np.minimum(np.linalg.norm(reference.means[:, other] - means[None, other], axis=-1),
                      reference.config.match_cap)                                  # image category
    shared = np.isfinite(diff)
    dist = np.where(shared.any(1), np.where(shared, diff, 0.0).sum(1) / np.maximum(shared.sum(1), 1), np.inf)
    candidates = np.flatnonzero(keep)
    return candidates[np.argsort(dist[candidates], kind="stable")][: reference.config.neighbours]


def colour_evidence(image: np.ndarray, labels: np.ndarray, n_categories: int, reference: ColourReference,
                    exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """((category,) evidence, (y, x) pixel distance) of one (y, x, 3) uint8 image whose
    categories are the (ly, lx) map ``labels``: see the module's steps 2-3. NaN evidence for
    background, for a category with fewer than ``min_pixels`` pixels and for one no reference
    image has. ``exclude``: a store index left out of the reference (a training image being
    calibrated is not its own neighbour)."""
    config = reference.config
    if reference.means.shape[1] != n_categories:
        raise ValueError(f"the colour reference has {reference.means.shape[1]} categories, the store {n_categories}")
    labels = np.asarray(labels)
    lab = to_lab(image)
    pix = resize_labels(labels, image.shape[:2])
    means, _ = image_colours(image, labels, n_categories, config, palettes=False)
    usable = reference.images != exclude if exclude is not None else np.ones(len(reference.images), bool)
    evidence = np.full(n_categories, np.nan, np.float32)
    dmap = np.zeros(image.shape[:2], np.float32)
    for k in range(1, n_categories):
        region = pix == k
        if not region.any():
            continue
        keep = usable & np.isfinite(reference.means[:, k, 0])
        if not keep.any():
            continue
        near = _neighbours(means, reference, k, keep)
        colours = reference.palettes[near, k].reshape(-1, 3)
        colours = colours[np.isfinite(colours[:, 0])]
        d = np.sqrt(((lab[region][:, None, :] - colours[None]) ** 2).sum(-1)).min(1)
        dmap[region] = d
        if int((labels == k).sum()) >= config.min_pixels:
            evidence[k] = float(d.mean())
    return evidence, dmap


def reference_for(references: dict, kind: str = "colour") -> ColourReference:
    """The colour reference among a detector's ``pipelines`` ({kind: ...})."""
    ref = references.get(kind)
    if not isinstance(ref, ColourReference):
        raise ValueError("the colour detector needs the store's colour reference (occlusion.colour.colour_reference)")
    return ref

