"""The toy trainer's schedules: learning-rate warm-up, weight EMA, Min-SNR weights, the saved sampler.

``_warmup`` is the linear warm-up of both phases, ``_EMA`` the exponential moving average of the
UNet and text-encoder weights (what gets saved), ``min_snr_weights`` the Min-SNR loss weighting
(Hang et al. 2023) and ``_inference_scheduler`` the DDIM scheduler written into the saved folder.
Used by ``train.toy``.
"""

from __future__ import annotations

import copy

import torch

def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / max(warmup, 1))



def _ema_update(ema: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    with torch.no_grad():
        torch._foreach_lerp_(ema, params, 1.0 - decay)


class _EMA:
    """EMA copies of some modules' parameters, with the usual (1 + n) / (10 + n) warm-up."""

    def __init__(self, modules, decay: float):
        self.modules = modules
        self.decay = decay
        self.shadow = [[p.detach().clone() for p in m.parameters()] for m in modules]
        self.updates = 0

    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for shadow, module in zip(self.shadow, self.modules):
            _ema_update(shadow, [p.detach() for p in module.parameters()], decay)

    def copies(self) -> list:
        """Deep copies of the modules carrying the EMA weights (the originals keep training)."""
        out = []
        for shadow, module in zip(self.shadow, self.modules):
            clone = copy.deepcopy(module)
            with torch.no_grad():
                for p, s in zip(clone.parameters(), shadow):
                    p.copy_(s)
            out.append(clone.eval())
        return out



def min_snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights min(SNR(t), gamma) / SNR(t) for noise prediction (Hang et al. 2023).

    SNR(t) = alpha_bar_t / (1 - alpha_bar_t). Noisy timesteps (SNR <= gamma) keep weight 1; nearly
    clean ones, whose noise is easy to regress but which add little to the samples' shape, are
    down-weighted.
    """
    alpha_bar = scheduler.alphas_cumprod.to(torch.float64)[t]
    snr = alpha_bar / (1.0 - alpha_bar)
    return (snr.clamp(max=gamma) / snr).to(torch.float32)



def _inference_scheduler(train_scheduler):
    """A DDIM scheduler with the training betas: good samples in 25-50 steps (DDPM needs ~1000)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(train_scheduler.config, set_alpha_to_one=False, clip_sample=False)
