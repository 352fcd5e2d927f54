"""The noise-estimation loss of textual inversion, optionally masked to a part (docs/design.md §5.6 "Part embeddings").

The standard objective (Gal et al. 2023; diffusers' ``textual_inversion.py``): noise the
latent to a random timestep, predict with the UNet conditioned on the prompt, and take the MSE
against the scheduler's target (the noise for ``epsilon``, the velocity for ``v_prediction``,
the clean latent for ``sample``). The masked variant weights every latent cell by the part's
share of it (the part mask averaged over each cell), so cells outside the part contribute
nothing: the token has to explain the part, not the whole image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def noise_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict, by the scheduler's ``prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"unknown prediction_type {kind!r} (expected epsilon, v_prediction or sample)")


def latent_mask(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """(image, y, x) mask at image size -> (image, ly, lx) share of each latent cell in the part.

    Area averaging (each latent cell covers ``y / ly`` x ``x / lx`` pixels), so a cell half in
    the part weighs 0.5.
    """
    if mask.ndim != 3:
        raise ValueError(f"mask must be (image, y, x), got shape {tuple(mask.shape)}")
    return F.adaptive_avg_pool2d(mask[:, None].float(), latent_size)[:, 0]  # image ly lx


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over (image channel y x), weighted by ``mask`` (image, y, x) in [0, 1].

    Unmasked: the plain mean. Masked: sum(mask * err) / (sum(mask) * channels), computed in
    float32; a cell with weight 0 does not enter the loss or its gradient.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    err = (pred.float() - target.float()) ** 2  # image channel y x
    if mask is None:
        return err.mean()
    if mask.shape != (pred.shape[0], *pred.shape[2:]):
        raise ValueError(f"mask must be (image, y, x) = {(pred.shape[0], *pred.shape[2:])}, got {tuple(mask.shape)}")
    weight = mask[:, None].float()  # image 1 y x
    total = weight.sum() * err.shape[1]
    if float(total) <= 0:
        raise ValueError("the mask is empty: no cell of any image is in the part")
    return (err * weight).sum() / total


def denoising_error(unet, scheduler, latents, encoder_hidden_states, noise, timesteps, mask=None) -> torch.Tensor:
    """Noise ``latents`` to ``timesteps``, predict, and return :func:`masked_mse` to the target.

    latents/noise: (image, channel, y, x); encoder_hidden_states: (image, token, channel);
    timesteps: (image,) long; mask: (image, y, x) at the latent grid or None.
    """
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy.to(unet.dtype), timesteps, encoder_hidden_states=encoder_hidden_states.to(unet.dtype)).sample
    return masked_mse(pred, noise_target(scheduler, latents, noise, timesteps), mask)
