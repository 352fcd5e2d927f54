"""The embeddings stage's measures on held-out images (issue 10: explains, localises, generates).

For part category k and one prompt (the token's, the initializer word's, or a reference):

- **Explains the part**: masked denoising MSE on held-out images of k (the noise loss with k's
  discovered mask) at fixed timesteps and fixed noise, so every prompt sees the same draws.
  Lower: the prompt tells the model more about what is inside the part.
- **Localises the part**: the token's cross-attention (the two coarsest up-block resolutions,
  the latent noised to ``attention_timestep`` with fixed noise) thresholded at
  ``attention_threshold`` x its maximum; IoU with k's discovered mask and with the ground-truth
  part that best matches k (highest pooled IoU over the held-out images).
- **Generates the part**: images generated from the prompt with fixed seeds, read by the
  independent part judge (:mod:`diffparts.judge`, a supervised segmenter of the synthetic part
  types, trained apart from the pipeline): the fraction of them in which the judge finds the true
  part type that best matches k, and the share of their bird pixels it reads as that type,
  against the class prompt alone (:func:`judge_presence`). Re-assigning the generated images to
  the store's own categories (:func:`contains_fraction`, the earlier measure) is biased by
  position (a descriptor weighs where a pixel is, so any bird "contains" every category at its
  place) and is no longer used for this measure. Where the corpus has no part masks (a real
  corpus) no judge applies and the measure is n/a (None).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from diffparts.inversion.attention_loss import TokenAttention, up_block_layers
from diffparts.inversion.noise_loss import latent_mask, masked_mse, noise_target
from diffparts.inversion.train import prompt_inputs, token_positions, training_scheduler


@dataclass(frozen=True)
class MeasureConfig:
    """How the measures are taken (the same for every loss and reference)."""

    timesteps: tuple[int, ...] = (100, 250, 400, 550, 700, 850)  # denoising MSE timesteps
    noise_seed: int = 1234              # fixed noise: image i, timestep j from (seed, i, j)
    attention_timestep: int = 140       # the token's map, as the attention loss reads it
    attention_threshold: float = 0.5    # map >= this x its maximum counts as the token's region
    n_generate: int = 8                 # images generated per prompt
    generate_steps: int = 25            # DDIM steps
    guidance: float = 7.0               # classifier-free guidance (the toy card's best)
    generate_seed: int = 0              # image j from seed generate_seed + j, for every prompt
    min_pixels: int = 4                 # a category is "in" an image with at least this many pixels
    max_images: int = 128               # held-out images per category at most (a seeded subset)


def _fixed_noise(shape, seed: int, index: int, j: int) -> torch.Tensor:
    state = np.random.SeedSequence([int(seed), int(index), int(j)]).generate_state(1)
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(state[0])))


@torch.no_grad()
def encode_prompt_ids(pipe, ids: torch.Tensor) -> torch.Tensor:
    return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0]


@torch.no_grad()
def denoising_error(pipe, latents: torch.Tensor, masks: torch.Tensor, prompt: str | list[str],
                    config: MeasureConfig = MeasureConfig(), image_keys=None) -> float:
    """Mean masked denoising MSE of ``prompt`` over images x ``config.timesteps``.

    latents (image, channel, ly, lx) float32; masks (image, y, x) the part at image size;
    prompt: one for every image, or a list with one per image (e.g. their captions);
    image_keys: an id per image for its fixed noise (default 0..n-1).
    """
    unet, scheduler = pipe.unet, training_scheduler(pipe)
    keys = list(range(len(latents))) if image_keys is None else [int(k) for k in image_keys]
    prompts = [prompt] * len(latents) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(latents):
        raise ValueError(f"{len(prompts)} prompts for {len(latents)} images")
    hidden = torch.cat([encode_prompt_ids(pipe, prompt_inputs(pipe.tokenizer, pipe.maybe_convert_prompt(p, pipe.tokenizer)))
                        for p in dict.fromkeys(prompts)])               # unique prompt token channel
    which = torch.tensor([list(dict.fromkeys(prompts)).index(p) for p in prompts])
    cells = latent_mask(masks, tuple(latents.shape[-2:]))
    errors = []
    for j, t in enumerate(config.timesteps):
        noise = torch.stack([_fixed_noise(latents.shape[1:], config.noise_seed, k, j) for k in keys])
        ts = torch.full((len(latents),), int(t), dtype=torch.long)
        lat, noise, ts = latents.to(unet.device), noise.to(unet.device), ts.to(unet.device)
        noisy = scheduler.add_noise(lat, noise, ts).to(unet.dtype)
        pred = unet(noisy, ts, encoder_hidden_states=hidden[which.to(hidden.device)].to(unet.dtype)).sample
        target = noise_target(scheduler, lat, noise, ts)
        errors += [float(masked_mse(pred[i:i + 1], target[i:i + 1], cells[i:i + 1].to(unet.device)))
                   for i in range(len(lat)) if float(cells[i].sum()) > 0]
    return float(np.mean(errors)) if errors else float("nan")


@torch.no_grad()
def token_maps(pipe, latents: torch.Tensor, prompt: str, token: str, size: int,
               config: MeasureConfig = MeasureConfig(), image_keys=None) -> torch.Tensor:
    """(image, size, size) cross-attention of ``token`` in ``prompt`` (all its vectors summed);
    ``token`` is a placeholder token or a word of the prompt."""
    unet, scheduler = pipe.unet, training_scheduler(pipe)
    text = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
    ids = prompt_inputs(pipe.tokenizer, text)
    vocab = pipe.tokenizer.get_vocab()
    names = [w for w in pipe.maybe_convert_prompt(token, pipe.tokenizer).split() if w in vocab]
    # a placeholder token is its own vocabulary entry; a plain word ("beak") is what the tokenizer makes of it
    wanted = [vocab[w] for w in names] or pipe.tokenizer(token, add_special_tokens=False).input_ids
    positions = token_positions(ids, wanted)
    if not positions:
        raise ValueError(f"{token!r} is not a token of {prompt!r} for this tokenizer")
    keys = list(range(len(latents))) if image_keys is None else [int(k) for k in image_keys]
    noise = torch.stack([_fixed_noise(latents.shape[1:], config.noise_seed, k, 999) for k in keys])
    ts = torch.full((len(latents),), int(config.attention_timestep), dtype=torch.long, device=unet.device)
    noisy = scheduler.add_noise(latents.to(unet.device), noise.to(unet.device), ts).to(unet.dtype)
    hidden = encode_prompt_ids(pipe, ids).expand(len(latents), -1, -1).to(unet.dtype)
    with TokenAttention(unet, up_block_layers(unet), positions) as capture:
        unet(noisy, ts, encoder_hidden_states=hidden)
    return capture.maps(size).float().cpu()


def threshold_maps(maps: torch.Tensor, fraction: float, minmax: bool = False) -> np.ndarray:
    """(image, y, x) bool: pixels at or above ``fraction`` x each map's maximum; with ``minmax``,
    of each map rescaled to [0, 1] first (min-max), so a nearly flat map (a token that attends
    everywhere about equally) still yields the place it prefers rather than the whole image."""
    m = maps.numpy()
    flat = m.reshape(len(m), -1)
    high = flat.max(1)[:, None, None]
    if minmax:
        low = flat.min(1)[:, None, None]
        return (m - low) >= fraction * (high - low)
    return m >= fraction * high


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Pooled IoU of two stacks of boolean masks."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def best_gt_part(category_masks: np.ndarray, gt_parts: np.ndarray) -> tuple[int, float]:
    """The foreground ground-truth part (id >= 1) with the highest pooled IoU with the category."""
    best, score = 0, -1.0
    for p in np.unique(gt_parts):
        if p == 0:
            continue
        value = iou(category_masks, gt_parts == p)
        if value > score:
            best, score = int(p), value
    return best, score


def generate_images(pipe, prompt: str, config: MeasureConfig = MeasureConfig()) -> np.ndarray:
    """(image, y, x, 3) uint8 generated from ``prompt``; image j from seed generate_seed + j."""
    from diffusers import DDIMScheduler

    original = pipe.scheduler
    pipe.scheduler = DDIMScheduler.from_config(original.config)
    try:
        out = []
        for j in range(config.n_generate):
            gen = torch.Generator("cpu").manual_seed(config.generate_seed + j)
            img = pipe(prompt, num_inference_steps=config.generate_steps, guidance_scale=config.guidance,
                       generator=gen, output_type="np").images[0]
            out.append(np.clip(np.round(img * 255), 0, 255).astype(np.uint8))
        return np.stack(out)
    finally:
        pipe.scheduler = original


def part_presence(part_maps, category: int, min_pixels: int = 4) -> tuple[float, float]:
    """(fraction of maps holding >= ``min_pixels`` of ``category``, mean share of each map's
    foreground that is ``category``) over assigned part maps (y, x)."""
    if not len(part_maps):
        return float("nan"), float("nan")
    hits = [float((m == category).sum() >= min_pixels) for m in part_maps]
    shares = [float((m == category).sum() / max(int((m > 0).sum()), 1)) for m in part_maps]
    return float(np.mean(hits)), float(np.mean(shares))


def contains_fraction(fitted, pipe, images: np.ndarray, category: int, min_pixels: int = 4) -> tuple[float, float]:
    """:func:`part_presence` of ``images`` assigned to the store's fitted categories."""
    from diffparts.parts.assign import assign_image

    return part_presence([assign_image(fitted, pipe, img) for img in images], category, min_pixels)


def judge_for(has_part_masks: bool, path=None):
    """The part judge (``diffparts.judge.PartJudge``) when the corpus has synthetic part masks,
    else None (the judge measures are then n/a)."""
    if not has_part_masks:
        return None
    from diffparts.judge import PartJudge

    return PartJudge.load(path)


def judge_presence(judge, images: np.ndarray, gt_part: int | None, min_pixels: int = 4) -> tuple:
    """(fraction of ``images`` in which the judge reads >= ``min_pixels`` of part type ``gt_part``,
    mean share of each image's bird pixels read as it); (None, None) without a judge or a part."""
    if judge is None or gt_part is None:
        return None, None
    from diffparts.judge import part_presence_by_judge

    return part_presence_by_judge(judge, images, int(gt_part), min_pixels)
