"""Cross-attention of a token, captured with gradients, and the localisation losses on it.

Hedlin et al. (NeurIPS 2023) optimise a text embedding so that the head-averaged
cross-attention map of its token, upsampled to the image, matches a Gaussian at a point (MSE
to an unnormalised Gaussian, peak 1). Their setting: Adam, about 130 steps, one small timestep
(t = 140 of 1000, the latent noised to it), the 16 x 16 and first 32 x 32 up-block maps of SD
(the two coarsest resolutions of the decoder), random crops that keep the point. Break-A-Scene
(Avrahami et al. 2023) instead max-normalises each token's map and regresses it onto the
concept's mask.

:class:`TokenAttention` installs a processor on the chosen ``attn2`` layers that computes the
default attention math (``head_to_batch_dim``, ``get_attention_scores``) with autograd, keeps
the head mean of the probabilities at the token positions only, and returns the layer output
from the same probabilities; every other layer keeps its own (fast) processor. It differs from
the extraction capture (``diffparts.model.capture``), which works in place under
``inference_mode`` and keeps every query-key pair.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F


def up_block_layers(unet, resolutions: Sequence[int] | None = None, latent_side: int | None = None) -> list[str]:
    """Processor names of the up-block ``attn2`` layers at the given query resolutions.

    ``resolutions=None``: the two coarsest cross-attention resolutions of the up blocks
    (Hedlin et al.'s 16 and 32 on SD at 64 x 64 latents; 8 and 16 on the embedded 16 x 16 model).
    The resolution of ``up_blocks.i`` is read from the block layout: the latent side divided by
    2 for every upsampler before it.
    """
    side = int(latent_side or (unet.config.sample_size if isinstance(unet.config.sample_size, int)
                               else unet.config.sample_size[0]))
    n_down = sum(1 for b in unet.down_blocks if getattr(b, "downsamplers", None))
    by_res: dict[int, list[str]] = {}
    scale = 2 ** n_down
    for i, block in enumerate(unet.up_blocks):
        res = side // scale
        for name in unet.attn_processors:
            if name.startswith(f"up_blocks.{i}.") and name.endswith("attn2.processor"):
                by_res.setdefault(res, []).append(name)
        if getattr(block, "upsamplers", None):
            scale //= 2
    if not by_res:
        raise ValueError("the UNet has no cross-attention (attn2) in its up blocks")
    if resolutions is None:
        resolutions = sorted(by_res)[:2]
    missing = [r for r in resolutions if r not in by_res]
    if missing:
        raise ValueError(f"no up-block cross-attention at resolution(s) {missing}; the UNet has {sorted(by_res)}")
    return [name for r in resolutions for name in by_res[r]]


class _TokenProcessor:
    """Default attention math with autograd; records head-mean probabilities at token positions."""

    def __init__(self, owner: "TokenAttention"):
        self.owner = owner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is None:
            raise ValueError("TokenAttention is installed on a self-attention layer")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))             # (image head) q d
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))       # (image head) token d
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))     # (image head) token d
        probs = attn.get_attention_scores(query, key, attention_mask)        # (image head) q token
        self.owner.record(probs.unflatten(0, (batch, attn.heads)))           # image head q token
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))      # image q (head d)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class TokenAttention:
    """Context manager: the cross-attention maps of some token positions, with gradients.

    ```python
    with TokenAttention(unet, layers, positions) as maps:
        unet(latents, t, encoder_hidden_states=emb)
    maps.maps(out_size=64)      # (image, y, x): mean over layers and resolutions
    ```

    ``positions``: the prompt positions of the token's vectors; their probabilities are summed
    (a multi-vector token attends through all its vectors).
    """

    def __init__(self, unet, layers: Sequence[str], positions: Sequence[int]):
        if not layers:
            raise ValueError("no layers to capture")
        if not positions:
            raise ValueError("no token positions to capture (is the token in the prompt?)")
        self.unet, self.layers = unet, list(layers)
        self.positions = torch.as_tensor(list(positions), dtype=torch.long)
        self._originals: dict[str, Any] | None = None
        self._sums: dict[int, torch.Tensor] = {}
        self._counts: dict[int, int] = {}

    def record(self, probs: torch.Tensor) -> None:
        token = probs[..., self.positions.to(probs.device)].sum(-1).mean(1).float()  # image q
        side = math.isqrt(token.shape[1])
        if side not in self._sums:
            self._sums[side], self._counts[side] = token, 1
        else:
            self._sums[side], self._counts[side] = self._sums[side] + token, self._counts[side] + 1

    def maps(self, out_size: int | tuple[int, int]) -> torch.Tensor:
        """(image, y, x): each resolution's layer mean upsampled bilinearly, then averaged."""
        if not self._sums:
            raise ValueError("no cross-attention was captured (did the forward run inside the with-block?)")
        size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
        ups = []
        for side, total in self._sums.items():
            m = (total / self._counts[side]).unflatten(1, (side, side))[:, None]  # image 1 y x
            ups.append(F.interpolate(m, size=size, mode="bilinear", align_corners=False)[:, 0])
        return torch.stack(ups).mean(0)

    def __enter__(self) -> "TokenAttention":
        originals = dict(self.unet.attn_processors)
        unknown = [n for n in self.layers if n not in originals]
        if unknown:
            raise ValueError(f"the UNet has no attention layers {unknown}")
        processor = _TokenProcessor(self)
        self._originals = originals
        self.unet.set_attn_processor({n: (processor if n in self.layers else p) for n, p in originals.items()})
        return self

    def __exit__(self, *exc) -> None:
        originals, self._originals = self._originals, None
        if originals is not None:
            self.unet.set_attn_processor(dict(originals))


def gaussian_targets(masks: torch.Tensor, sigma: float) -> torch.Tensor:
    """(image, y, x) unnormalised Gaussians (peak 1) at each mask's centroid; sigma in image sides."""
    n, h, w = masks.shape
    ys = torch.arange(h, dtype=torch.float32, device=masks.device)
    xs = torch.arange(w, dtype=torch.float32, device=masks.device)
    weight = masks.float()
    total = weight.sum((1, 2)).clamp_min(1e-8)
    cy = (weight.sum(2) * ys).sum(1) / total                  # image
    cx = (weight.sum(1) * xs).sum(1) / total                  # image
    s = float(sigma) * max(h, w)
    d2 = (ys[None, :, None] - cy[:, None, None]) ** 2 + (xs[None, None, :] - cx[:, None, None]) ** 2
    return torch.exp(-d2 / (2 * s * s))                       # image y x


def localisation_loss(maps: torch.Tensor, targets: torch.Tensor, normalise: str = "none") -> torch.Tensor:
    """MSE between token maps and targets (image, y, x); ``normalise="max"`` divides each map by
    its maximum first (Break-A-Scene), ``"none"`` keeps the probabilities (Hedlin et al.)."""
    if maps.shape != targets.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and targets {tuple(targets.shape)} differ in shape")
    if normalise == "max":
        maps = maps / maps.flatten(1).amax(1).clamp_min(1e-8)[:, None, None]
    elif normalise != "none":
        raise ValueError(f"normalise must be 'none' or 'max', got {normalise!r}")
    return F.mse_loss(maps.float(), targets.float())
