"""Phase 1 of the toy trainer: the VAE (docs/design.md §4 "The embedded default").

An ``AutoencoderKL`` learns to reconstruct the birds (MSE + L1 + a tiny KL term, as Stable
Diffusion's first stage without the perceptual and adversarial terms); ``encode_posteriors``
then gives every image's posterior, from which ``train.toy`` sets the scaling factor and samples
the UNet phase's latents; ``psnr_db`` measures the held-out reconstructions.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch

from diffparts.train.toy_config import ToyTrainConfig
from diffparts.train.toy_data import _flip
from diffparts.train.toy_schedule import _warmup

def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] image batches (peak-to-peak range 2)."""
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean())
    return 10.0 * math.log10(4.0 / max(mse, 1e-12))



def train_vae(vae, images: torch.Tensor, config: ToyTrainConfig, generator: torch.Generator,
              deadline: float | None, log: Callable[[str], None]) -> tuple[int, list]:
    """Phase 1: reconstruct ``images`` (image, 3, y, x); returns (steps run, loss history)."""
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup(s, config.warmup_steps))
    vae.train()
    history, window, step = [], [], 0
    for step in range(config.vae_steps):
        if deadline is not None and time.monotonic() > deadline:
            log(f"vae: budget reached after {step} steps")
            break
        idx = torch.randint(images.shape[0], (config.vae_batch_size,), generator=generator)
        x = images[idx]  # image 3 y x
        if config.vae_crop is not None and config.vae_crop < x.shape[-1]:
            c = config.vae_crop
            offsets = torch.randint(x.shape[-1] - c + 1, (x.shape[0], 2), generator=generator)
            x = torch.stack([img[:, oy:oy + c, ox:ox + c] for img, (oy, ox) in zip(x, offsets.tolist())])
        if config.flip:
            x = _flip(x, generator)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
        recon = vae.decode(z).sample
        loss = (
            torch.nn.functional.mse_loss(recon, x)
            + torch.nn.functional.l1_loss(recon, x)
            + config.kl_weight * posterior.kl().mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        window.append(loss.item())
        if (step + 1) % config.log_every == 0:
            history.append((step + 1, float(np.mean(window))))
            log(f"vae step {step + 1}: loss {history[-1][1]:.4f}")
            window = []
    else:
        step = config.vae_steps
    if window:
        history.append((step, float(np.mean(window))))
    vae.eval()
    return step, history


@torch.no_grad()
def encode_posteriors(vae, images: torch.Tensor, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image: two (image, channel, y, x) tensors."""
    means, stds = [], []
    for start in range(0, images.shape[0], batch):
        post = vae.encode(images[start:start + batch]).latent_dist
        means.append(post.mean)
        stds.append(post.std)
    return torch.cat(means), torch.cat(stds)
