"""UNet features for dense correspondence (DIFT, Tang et al. NeurIPS 2023; docs/design.md §5.5 "Parts").

DIFT takes the output of one up-block (SD 2.1: ``up_blocks[1]``, 1/16 of the image, i.e. half
the latent side) for the latent noised to a moderate timestep (t=261), averages it over a few
noise samples (8) with the class prompt, and matches pixels by cosine nearest neighbour.

:class:`FeatureCapture` records up-block outputs with forward hooks (``register_forward_hook``,
removed in a ``finally``): the UNet is not modified. It can wrap the attention forward of
``extract_attention`` (same latent, same timestep: no extra forward), or separate forwards
over noised latents (``FeatureConfig.noise_samples``), whose outputs it averages.

Which up-block by default (``default_feature_blocks``): DIFT's choice adapted to the model's
layout, the first up-block whose output side is half the latent side (SD: ``up_blocks[1]``,
32 x 32 at 512 px), else the first one nearest to it (the toy model, whose up-blocks both end at
the latent side 16: ``up_blocks[0]``, 96 channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class FeatureConfig:
    """Which UNet features extraction stores beside the attention (``features/`` group)."""

    blocks: tuple[int, ...] | None = None  # up_blocks indices; None = DIFT's choice adapted (module doc)
    timestep: int | None = None      # None = the attention forward's timestep (same forward, no extra cost)
    noise_samples: int = 0           # 0 = the attention forward's own latent; n >= 1: n latents noised
                                     # to `timestep` in extra forwards, features averaged (DIFT: 8)
    prompt: str | None = None        # None = the attention's prompt; DIFT uses the class prompt
    seed: int = 0                    # seed of the noise samples (same images -> same noise)

    def __post_init__(self) -> None:
        if self.blocks is not None and (not self.blocks or any(int(b) < 0 for b in self.blocks)):
            raise ValueError(f"blocks must be None or non-negative up_blocks indices, got {self.blocks}")
        if self.timestep is not None and self.timestep < 0:
            raise ValueError(f"timestep must be >= 0 or None, got {self.timestep}")
        if self.noise_samples < 0:
            raise ValueError(f"noise_samples must be >= 0, got {self.noise_samples}")

    def same_forward(self, timestep: int, prompt: str) -> bool:
        """Whether the features come from the attention forward itself (no extra forward)."""
        return (self.noise_samples == 0 and self.timestep in (None, timestep)
                and self.prompt in (None, prompt))


def up_block_sides(unet, latent: int | None = None) -> list[int]:
    """Output side of every up-block for a latent of side ``latent`` (default: the UNet's
    ``sample_size``); every block with an upsampler doubles the side."""
    sample = unet.config.sample_size if latent is None else latent
    if sample is None:
        raise ValueError("the UNet's config has no sample_size: give the latent side")
    side = int(sample[0] if isinstance(sample, (list, tuple)) else sample)
    n_down = sum(1 for block in unet.down_blocks if getattr(block, "downsamplers", None) is not None)
    side //= 2 ** n_down                                      # the mid block's side
    out = []
    for block in unet.up_blocks:
        if getattr(block, "upsamplers", None) is not None:
            side *= 2
        out.append(side)
    return out


def default_feature_blocks(unet, latent: int | None = None) -> tuple[int, ...]:
    """DIFT's up-block adapted to this UNet: output side half the latent side, else the nearest."""
    sides = up_block_sides(unet, latent)
    target = max(sides) / 2
    best = min(range(len(sides)), key=lambda i: (abs(sides[i] - target), i))
    return (best,)


def resolve_blocks(unet, blocks: Sequence[int] | None) -> tuple[int, ...]:
    """The up_blocks indices to capture; ValueError naming an index the UNet lacks."""
    blocks = default_feature_blocks(unet) if blocks is None else tuple(int(b) for b in blocks)
    n = len(unet.up_blocks)
    bad = [b for b in blocks if not 0 <= b < n]
    if bad:
        raise ValueError(f"up_blocks {bad} do not exist: the UNet has {n} up-blocks (0..{n - 1})")
    return blocks


class FeatureCapture:
    """Context manager: forward hooks on ``unet.up_blocks[i]`` that sum each output over forwards.

    ``sums[i]`` is (image, channel, y, x) float32, summed over the forwards run inside the
    ``with``; ``mean(i)`` divides by the number of forwards (noise samples averaged).
    ``repeats``: each forward's batch holds ``repeats`` consecutive copies per image (noise
    samples batched together), averaged into one.
    """

    def __init__(self, unet, blocks: Sequence[int]):
        self.unet, self.blocks = unet, tuple(blocks)
        self.sums: dict[int, torch.Tensor] = {}
        self.forwards = 0
        self.repeats = 1
        self._handles: list = []

    def _hook(self, index: int):
        def record(module, inputs, output):
            out = output[0] if isinstance(output, tuple) else output   # (image sample) channel y x
            out = out.detach().float()
            if self.repeats > 1:
                out = out.unflatten(0, (-1, self.repeats)).mean(1)       # image channel y x
            self.sums[index] = out if index not in self.sums else self.sums[index] + out
            if index == self.blocks[-1]:
                self.forwards += 1
        return record

    def mean(self, index: int) -> torch.Tensor:
        if index not in self.sums:
            raise ValueError(f"up_blocks[{index}] produced no output inside the capture")
        return self.sums[index] / max(self.forwards, 1)

    def __enter__(self) -> "FeatureCapture":
        try:
            for i in self.blocks:
                self._handles.append(self.unet.up_blocks[i].register_forward_hook(self._hook(i)))
        except BaseException:
            self._remove()
            raise
        return self

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __exit__(self, exc_type, exc, tb) -> None:
        self._remove()


def noised_forwards(pipe, latents: torch.Tensor, embedding: torch.Tensor, config: FeatureConfig,
                    timestep: int, capture: FeatureCapture) -> None:
    """DIFT's ensemble: one forward over ``noise_samples`` noised copies of every latent.

    latents: (image, channel, y, x) clean latents; embedding: (image, token, channel). With
    ``noise_samples == 0`` the clean latents go through once at ``timestep``.
    """
    unet = pipe.unet
    n = max(config.noise_samples, 1)
    batch = latents.repeat_interleave(n, 0)                               # (image sample) c y x
    t = torch.tensor([timestep], device=unet.device)
    if config.noise_samples:
        generator = torch.Generator("cpu").manual_seed(config.seed)
        noise = torch.randn(batch.shape, generator=generator, dtype=torch.float32)
        batch = pipe.scheduler.add_noise(batch, noise.to(batch.device, batch.dtype), t.cpu())
    capture.repeats = n
    try:
        unet(batch.to(unet.device, unet.dtype), t, encoder_hidden_states=embedding.repeat_interleave(n, 0))
    finally:
        capture.repeats = 1
