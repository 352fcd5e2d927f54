"""Imagine each part from its context, never from its own pixels (docs/design.md §5.7 "Occlusion").

img2img (:mod:`diffparts.occlusion.imagine`) sees the pixels it judges: a flat grey box or a
leaf survives six DDIM steps almost unchanged, so it is no evidence. Here the model is not
shown them: for every category k with a region R_k in the occluded image's assignment, R_k
(dilated a little, to whole latent cells) is masked and repainted by the inpainting checkpoint
(a 9-channel UNet conditioned on the mask and the masked image, ``complete.load_inpaint_pipeline``)
from the class prompt and its context alone, a few seeds each, every category's mask in one
batch. A present head comes back as a head-like thing; a grey box or a leaf where the head
belongs disagrees with the head that is painted there.

- :class:`RepaintConfig`: the repaintings' settings;
- :func:`region_masks`: the (category, y, x) masks to repaint, from a (y, x) category map;
- :func:`repaint`: (category, seed, y, x, 3) uint8 repaintings of one image, one per mask and seed;
- :func:`repaint_disagreement`: (category, y, x) how far the input is from each category's
  repaintings, per pixel, relative to how far the repaintings are from each other there (the
  model's own uncertainty), on a local-contrast view that weighs texture and edges besides colour.

Arrays in, arrays out; the image is at the model's input size (as extraction fed it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RepaintConfig:
    steps: int = 10                       # DDIM steps of each repainting (strength 1: the region starts from noise)
    seeds: tuple = (0, 1)                 # one repainting per seed and category (offset by the case's seed)
    guidance_scale: float = 7.0           # classifier-free guidance of the class prompt
    prompt: str = "a photo of a bird"     # the class prompt: what the object is, not which part to paint
    dilate: int = 1                       # segment-map cells added around each region before masking
    colour: float = 0.0                   # weight of the colour channels (0: the toy checkpoint paints a region's
                                          # colour near the mean, so colour misleads; docs/occlusion.md)
    texture: float = 1.0                  # weight of the local-contrast channels (edges, eyes, patterns)
    spread: float = 0.0                   # weight of the repaintings' own spread subtracted (the model's doubt;
                                          # validation birds: it did not help)

    def __post_init__(self):
        if self.steps < 1 or not self.seeds:
            raise ValueError(f"repaint needs steps >= 1 and at least one seed, got {self.steps}, {self.seeds}")
        if min(self.dilate, self.colour, self.texture, self.spread) < 0 or self.colour + self.texture <= 0:
            raise ValueError(f"repaint dilate, colour, texture and spread must be >= 0 (colour + texture > 0), got "
                             f"{self.dilate}, {self.colour}, {self.texture}, {self.spread}")


def _dilate(mask: np.ndarray, n: int) -> np.ndarray:
    """(y, x) bool grown by ``n`` cells (8-neighbourhood)."""
    out = np.asarray(mask, bool).copy()
    for _ in range(n):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        grown[1:, 1:] |= out[:-1, :-1]
        grown[:-1, :-1] |= out[1:, 1:]
        grown[1:, :-1] |= out[:-1, 1:]
        grown[:-1, 1:] |= out[1:, :-1]
        out = grown
    return out


def region_masks(labels: np.ndarray, n_categories: int, size: int, dilate: int = 1,
                 min_pixels: int = 4) -> tuple[list[int], np.ndarray]:
    """(categories, (category, y, x) bool masks at ``size`` x ``size``): each category of the
    (ly, lx) map ``labels`` with at least ``min_pixels`` pixels, its region grown by ``dilate``
    cells (not into nothing: a region is never empty) and resized to the image by nearest."""
    from diffparts.occlusion.occluders import resize_labels

    labels = np.asarray(labels)
    cats, masks = [], []
    for k in range(1, n_categories):
        sel = labels == k
        if int(sel.sum()) < min_pixels:
            continue
        grown = _dilate(sel, dilate).astype(np.int16)
        cats.append(k)
        masks.append(resize_labels(grown, (size, size)) > 0)
    return cats, (np.stack(masks) if masks else np.zeros((0, size, size), bool))


def repaint(inpaint, image: np.ndarray, masks: np.ndarray, config: RepaintConfig = RepaintConfig(),
            seed: int = 0) -> np.ndarray:
    """(category, seed, y, x, 3) uint8: ``image`` (y, x, 3) uint8 with each (category, y, x)
    mask repainted from its context by the inpainting pipeline ``inpaint``, one per
    ``config.seeds`` (offset by ``seed``); outside each mask the input, pasted back."""
    import torch
    from PIL import Image

    from diffparts.model.extract import native_image_size, prepare_images
    from diffparts.occlusion.complete import latent_cell_mask

    image, masks = np.asarray(image), np.asarray(masks, bool)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (y, x, 3) uint8, got {image.dtype} {image.shape}")
    if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
        raise ValueError(f"masks {masks.shape} do not match the image {image.shape[:2]}")
    n, ns = len(masks), len(config.seeds)
    if n == 0:
        return np.zeros((0, ns, *image.shape), np.uint8)
    size = native_image_size(inpaint)
    factor = int(inpaint.vae_scale_factor)
    model_image = Image.fromarray(prepare_images(image[None], size)[0])
    cells = [Image.fromarray(latent_cell_mask(np.asarray(Image.fromarray(m).resize((size, size),
             Image.Resampling.NEAREST), bool), factor).astype(np.uint8) * 255) for m in masks]
    generators = [torch.Generator(device="cpu").manual_seed(int(seed) * 7919 + int(s))
                  for _ in range(n) for s in config.seeds]
    with torch.no_grad():
        out = inpaint(prompt=[config.prompt] * (n * ns), image=[model_image] * (n * ns),
                      mask_image=[c for c in cells for _ in range(ns)], height=size, width=size, strength=1.0,
                      num_inference_steps=config.steps, guidance_scale=config.guidance_scale,
                      generator=generators, output_type="np").images                 # (category seed) y x 3
    painted = np.clip(np.round(np.asarray(out) * 255.0), 0, 255).astype(np.uint8)
    if painted.shape[1:3] != image.shape[:2]:
        painted = np.stack([np.asarray(Image.fromarray(p).resize(image.shape[1::-1], Image.Resampling.BICUBIC))
                            for p in painted])
    painted = painted.reshape(n, ns, *image.shape)
    return np.where(masks[:, None, :, :, None], painted, image[None, None])


def appearance(images: np.ndarray, texture: float = 1.0, colour: float = 1.0) -> np.ndarray:
    """(..., y, x, 3) uint8 -> (..., y, x, 5) float32 in [0, 1]-ish: ``colour`` x the colour
    channels and ``texture`` x the local contrast (absolute horizontal and vertical differences
    of the grey level): a flat fill has none where a part has edges, an eye or a pattern."""
    x = np.asarray(images, np.float32) / 255.0
    grey = x.mean(-1)
    gy = np.abs(np.diff(grey, axis=-2, append=grey[..., -1:, :]))
    gx = np.abs(np.diff(grey, axis=-1, append=grey[..., :, -1:]))
    return np.concatenate([colour * x, texture * gy[..., None], texture * gx[..., None]], -1)


def repaint_disagreement(image: np.ndarray, painted: np.ndarray, texture: float = 1.0,
                         spread: float = 0.0, colour: float = 0.0) -> np.ndarray:
    """(category, y, x) float32: per pixel, the mean distance of the (y, x, 3) input from each
    category's (category, seed, y, x, 3) repaintings minus ``spread`` x the mean distance between
    the repaintings (how unsure the model is there; an energy score at 0.5), on
    :func:`appearance`. Outside a category's mask its repaintings are the input: 0 there
    (up to the spread term, which is 0 there too)."""
    a = appearance(image, texture, colour)                                           # y x c
    p = appearance(painted, texture, colour)                                         # category seed y x c
    if p.ndim != 5 or p.shape[2:] != a.shape:
        raise ValueError(f"repaintings {np.shape(painted)} do not match the image {np.shape(image)}")
    to_input = np.abs(p - a[None, None]).mean(-1).mean(1)                            # category y x
    ns = p.shape[1]
    if ns < 2 or spread == 0:
        return to_input.astype(np.float32)
    among = np.mean([np.abs(p[:, i] - p[:, j]).mean(-1) for i in range(ns) for j in range(i + 1, ns)], 0)
    return (to_input - spread * among).astype(np.float32)


def repaint_evidence(maps: np.ndarray, categories, labels: np.ndarray,
                     n_categories: int) -> tuple[np.ndarray, np.ndarray]:
    """((category,) evidence, (y, x) pixel map) from :func:`repaint_disagreement`'s (j, y, x)
    ``maps`` of ``categories`` (category j of the list) and the (ly, lx) category map ``labels``.

    Evidence of k: the mean of k's own map over k's region (undilated, at the maps' size); NaN
    for background and for categories without a region. Pixel map: each object pixel's value
    in the map of the category it is assigned to (0 on background and unrepainted pixels)."""
    from diffparts.occlusion.occluders import resize_labels

    maps = np.asarray(maps, np.float32)
    shape = maps.shape[1:] if maps.ndim == 3 and len(maps) else None
    out = np.full(n_categories, np.nan, np.float32)
    if shape is None:
        return out, np.zeros(np.asarray(labels).shape, np.float32)
    lab = resize_labels(np.asarray(labels, np.int16), shape)
    pixel = np.zeros(shape, np.float32)
    for j, k in enumerate(categories):
        sel = lab == k
        if sel.any():
            out[k] = float(maps[j][sel].mean())
            pixel[sel] = maps[j][sel]
    return out, pixel
