"""Imagine the whole object and compare it with what is there (docs/design.md §5.7 "Occlusion").

The generative model's own imagination is the detector's evidence of absence: img2img from
the (possibly occluded) image at a moderate strength, a few DDIM steps, a few seeds, the class
prompt. Where the pixels are a plausible bird the model keeps them (small change); where they
are an occluder it does not believe (noise, a leaf, a texture from the background) it repaints
them towards a bird (large change). The per-pixel disagreement is the mean absolute
difference between the imaginations and the input, averaged over seeds and channels, minus
the image's own median (so an image the model changes everywhere is not all occluded).

- :func:`img2img_pipeline`: a diffusers ``StableDiffusionImg2ImgPipeline`` sharing a
  pipeline's components (no copy of weights);
- :func:`imagine`: (seed, y, x, 3) uint8 imaginations of one image;
- :func:`disagreement`: the (y, x) disagreement map of an image and its imaginations.

Arrays in, arrays out; the image is at the model's input size (as extraction fed it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ImagineConfig:
    strength: float = 0.6                 # img2img strength: the share of the DDIM schedule re-run from noise
    steps: int = 10                       # DDIM steps of the full schedule (strength * steps are run)
    seeds: tuple = (0, 1)                 # one imagination per seed (offset by the case's seed)
    guidance_scale: float = 7.0           # classifier-free guidance of the class prompt
    prompt: str = "a photo of a bird"     # the class prompt: what the object is, not which parts it has

    def __post_init__(self):
        if not 0.0 < self.strength <= 1.0:
            raise ValueError(f"imagine strength must be in (0, 1], got {self.strength}")
        if self.steps < 1 or not self.seeds:
            raise ValueError(f"imagine needs steps >= 1 and at least one seed, got {self.steps}, {self.seeds}")


def img2img_pipeline(pipe):
    """A ``StableDiffusionImg2ImgPipeline`` sharing ``pipe``'s components (no copy of weights)."""
    from diffusers import StableDiffusionImg2ImgPipeline

    parts = {k: v for k, v in pipe.components.items() if k in ("vae", "text_encoder", "tokenizer", "unet",
                                                               "scheduler", "image_encoder")}
    out = StableDiffusionImg2ImgPipeline(**parts, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False)
    out.set_progress_bar_config(disable=True)
    return out


def imagine(img2img, image: np.ndarray, config: ImagineConfig = ImagineConfig(), seed: int = 0) -> np.ndarray:
    """(seed, y, x, 3) uint8: one img2img imagination of the (y, x, 3) uint8 ``image`` per
    ``config.seeds`` (each offset by ``seed``), at the image's own size."""
    import torch
    from PIL import Image

    from diffparts.model.extract import native_image_size, prepare_images

    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (y, x, 3) uint8, got {image.dtype} {image.shape}")
    size = native_image_size(img2img)
    model_image = Image.fromarray(prepare_images(image[None], size)[0])
    n = len(config.seeds)
    generators = [torch.Generator(device="cpu").manual_seed(int(seed) * 7919 + int(s)) for s in config.seeds]
    with torch.no_grad():
        out = img2img(prompt=[config.prompt] * n, image=[model_image] * n, strength=config.strength,
                      num_inference_steps=config.steps, guidance_scale=config.guidance_scale,
                      generator=generators, output_type="np").images                    # seed y x 3 in [0, 1]
    imagined = np.clip(np.round(np.asarray(out) * 255.0), 0, 255).astype(np.uint8)
    if imagined.shape[1:3] != image.shape[:2]:
        imagined = np.stack([np.asarray(Image.fromarray(m).resize(image.shape[1::-1], Image.Resampling.BICUBIC))
                             for m in imagined])
    return imagined


def disagreement(image: np.ndarray, imagined: np.ndarray) -> np.ndarray:
    """(y, x) float32: mean |imagined - image| / 255 over seeds and channels, minus its median
    over the image (so 0 is this image's typical change; occluders stand out above it)."""
    image, imagined = np.asarray(image), np.asarray(imagined)
    if imagined.ndim == 3:
        imagined = imagined[None]
    if imagined.shape[1:] != image.shape or image.ndim != 3:
        raise ValueError(f"imaginations {imagined.shape} do not match the image {image.shape}")
    diff = np.abs(imagined.astype(np.float32) - image.astype(np.float32)[None]).mean((0, 3)) / 255.0   # y x
    return (diff - np.median(diff)).astype(np.float32)
