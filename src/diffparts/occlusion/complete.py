"""Completion: inpaint the hidden region, the original pasted back outside it (docs/design.md §5.7 "Occlusion").

diffusers' ``StableDiffusionInpaintPipeline`` built from the same components as the pipeline
the store was made with. With a standard 4-channel UNet it starts the masked latents from noise
and, at every step, replaces the unmasked latents with the image's own, noised to that step.
It takes the mask down to the latent grid by nearest interpolation, so the mask it gets here is
first dilated to whole latent cells (:func:`latent_cell_mask`): a cell the occluder touched is
regenerated whole, never half-kept. The VAE does not reproduce the outside exactly, so after
decoding the input is pasted back outside the hidden pixel mask: outside it the output equals
the input bit for bit. The generator is seeded per call, so every prompt of one case starts
from the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class CompletionConfig:
    steps: int = 25                                  # DDIM steps (the embeddings stage's generation setting)
    guidance_scale: float = 7.0                      # classifier-free guidance, as the embeddings measures
    template: str = "a photo of a bird with {token}"  # the tokens' training prompt
    class_prompt: str = "a photo of a bird"          # the class prompt without part tokens
    max_tokens: int = 2                              # at most this many missing tokens in one prompt


def latent_cell_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """(y, x) bool -> the same shape, True on every whole ``factor`` x ``factor`` cell that holds
    a True pixel (cells aligned to the top-left corner, as the VAE's grid)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (y, x), got shape {mask.shape}")
    if factor < 1 or mask.shape[0] % factor or mask.shape[1] % factor:
        raise ValueError(f"mask shape {mask.shape} is not a multiple of the latent factor {factor}")
    h, w = mask.shape
    cells = mask.reshape(h // factor, factor, w // factor, factor).any((1, 3))    # cy cx
    return np.repeat(np.repeat(cells, factor, 0), factor, 1)


def token_prompt(categories: Sequence[int], template: str = CompletionConfig.template) -> str:
    """The template naming the tokens of ``categories``: "... with <part-3> and <part-5>"."""
    from diffparts.inversion.tokens import part_token

    if not categories:
        raise ValueError("token_prompt needs at least one category")
    return template.format(token=" and ".join(part_token(int(k)) for k in categories))


def inpaint_pipeline(pipe):
    """A ``StableDiffusionInpaintPipeline`` sharing ``pipe``'s components (no copy of weights)."""
    from diffusers import StableDiffusionInpaintPipeline

    parts = {k: v for k, v in pipe.components.items() if k in ("vae", "text_encoder", "tokenizer", "unet",
                                                               "scheduler", "image_encoder")}
    out = StableDiffusionInpaintPipeline(**parts, safety_checker=None, feature_extractor=None,
                                         requires_safety_checker=False)
    out.set_progress_bar_config(disable=True)
    return out


def encode_prompts(pipe, prompts: Sequence[str]) -> list[tuple]:
    """(prompt embeds, negative embeds) per prompt, through ``pipe``'s own ``encode_prompt``
    (which expands multi-vector textual-inversion tokens); the negative prompt is empty."""
    import torch

    with torch.no_grad():
        return [tuple(e.detach().clone() for e in pipe.encode_prompt(p, pipe.device, 1, True, ""))
                for p in prompts]


def complete(inpaint, image: np.ndarray, mask: np.ndarray, prompt, seed: int,
             config: CompletionConfig = CompletionConfig()) -> np.ndarray:
    """(y, x, 3) uint8: ``image`` with its ``mask`` pixels inpainted from ``prompt``.

    prompt: a string, or a (prompt embeds, negative embeds) pair from :func:`encode_prompts`
    (so tokens loaded in another pipeline can be used here).

    The image is resized to the model's native size for the pipeline (if it is not already) and
    the result resized back; outside ``mask`` the output is ``image`` exactly.
    """
    import torch
    from PIL import Image

    from diffparts.model.extract import native_image_size, prepare_images

    image, mask = np.asarray(image), np.asarray(mask, bool)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (y, x, 3) uint8, got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
    if not mask.any():
        return image.copy()
    # 1. Model size; the mask to whole latent cells there.
    size = native_image_size(inpaint)
    factor = int(inpaint.vae_scale_factor)
    model_image = prepare_images(image[None], size)[0]
    model_mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST), bool)
    cells = latent_cell_mask(model_mask, factor)
    # 2. Inpaint (known latents blended at every step for a 4-channel UNet).
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    text = {"prompt": prompt} if isinstance(prompt, str) else {"prompt_embeds": prompt[0],
                                                                "negative_prompt_embeds": prompt[1]}
    out = inpaint(**text, image=Image.fromarray(model_image), mask_image=Image.fromarray(cells.astype(np.uint8) * 255),
                  height=size, width=size, strength=1.0, num_inference_steps=config.steps,
                  guidance_scale=config.guidance_scale, generator=generator, output_type="np").images[0]
    generated = np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)             # y x 3
    if generated.shape[:2] != image.shape[:2]:
        generated = np.asarray(Image.fromarray(generated).resize(image.shape[1::-1], Image.Resampling.BICUBIC))
    # 3. Paste the input back outside the hidden pixels.
    return np.where(mask[..., None], generated, image)
