"""Extract DiffSeg-aggregated attention from a batch of images (docs/design.md §5.1 "Extract").

One UNet forward per call: the VAE posterior mean of each image (times the VAE's scaling
factor) at timestep ``t`` (300 by default: DiffSeg's convention) with the prompt's embedding and
no guidance, every ``attn1``/``attn2`` captured by :class:`AttentionCapture`, then aggregated over
resolutions by :mod:`diffparts.attention.aggregate`. Optionally UNet up-block features
(``features=FeatureConfig(...)``, DIFT): from the same forward by forward hooks when their
timestep and prompt are the attention's and no noise samples are asked for, else from one
extra forward over the noised copies (:mod:`diffparts.model.features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from diffparts.attention.aggregate import aggregate_cross_attention, aggregate_self_attention, resolution_weights
from diffparts.model.capture import AttentionCapture
from diffparts.model.features import FeatureCapture, FeatureConfig, noised_forwards, resolve_blocks


@dataclass(frozen=True)
class CaptureConfig:
    """How attention is extracted from a diffusion model."""

    timestep: int = 300  # DiffSeg's t: late enough to shape the layout, early enough to keep detail
    prompt: str = ""  # DiffSeg's unconditional (empty) prompt; a class prompt is an option
    noise: bool = False  # False: clean latent (DiffSeg); True: latent noised to `timestep` by the scheduler
    seed: int = 0  # seed of the noise when `noise` is True (same images -> same noise)
    resolution_weights: str | Mapping[int, float] = "diffseg"  # preset ("diffseg" r/sum r, "uniform", "inverse") or {r: w}
    image_size: int | None = None  # pixel side fed to the VAE; None: the model's native size
    self_attn: bool = True  # capture and aggregate self-attention (attn1)
    cross_attn: bool = True  # capture and aggregate cross-attention (attn2) for the prompt tokens

    def __post_init__(self):
        if self.timestep < 0:
            raise ValueError(f"timestep must be >= 0, got {self.timestep}")
        if self.image_size is not None and self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if not (self.self_attn or self.cross_attn):
            raise ValueError("CaptureConfig with self_attn=False and cross_attn=False extracts nothing")
        if isinstance(self.resolution_weights, str):
            resolution_weights([1], self.resolution_weights)  # validates the preset name


@dataclass(frozen=True)
class AttentionResult:
    """Aggregated attention of a batch of images."""

    self_attn: np.ndarray | None  # float32 (image, qy, qx, ky, kx); each key map sums to 1 (a torch
                                  # tensor on the model's device with device_tensors=True)
    cross_attn: np.ndarray | None  # float32 (image, token, qy, qx); sums to 1 over tokens at each query
    tokens: list[str]  # the prompt's tokens (tokenizer strings, padded to the model's length)
    resolution: int  # R, the largest attention resolution (side of the query / key grids)
    image_size: int  # pixel side of the (square) images fed to the VAE
    features: dict[int, np.ndarray] | None = None  # up_blocks index -> float32 (image, channel, y, x)


def native_image_size(pipe) -> int:
    """The pixel side a pipeline's UNet was trained for: ``unet.config.sample_size * vae_scale_factor``."""
    sample = pipe.unet.config.sample_size
    if isinstance(sample, (list, tuple)):
        if len(set(sample)) != 1:
            raise ValueError(f"the UNet's sample_size {sample} is not square; set CaptureConfig.image_size")
        sample = sample[0]
    return int(sample) * int(pipe.vae_scale_factor)


def prepare_images(images: np.ndarray, size: int) -> np.ndarray:
    """(image, y, x, 3) uint8 -> (image, size, size, 3) uint8, resized with PIL's bicubic filter."""
    from PIL import Image

    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must be a uint8 array (image, y, x, 3), got {images.dtype} with shape {images.shape}"
        )
    if images.shape[0] == 0:
        raise ValueError("images is empty (no image to extract)")
    if images.shape[1:3] == (size, size):
        return images
    return np.stack(
        [np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BICUBIC)) for img in images]
    )


def encode_prompt(pipe, prompt: str, images: int) -> tuple[torch.Tensor, list[str]]:
    """Prompt embedding repeated per image (image, token, channel) and the token strings."""
    tokenizer = pipe.tokenizer
    ids = tokenizer(
        prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids  # 1 token
    device = pipe.text_encoder.device
    embedding = pipe.text_encoder(ids.to(device))[0]  # 1 token channel
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    return embedding.expand(images, -1, -1), tokens


def extract_attention(pipe, images: np.ndarray, config: CaptureConfig = CaptureConfig(),
                      features: FeatureConfig | None = None, device_tensors: bool = False) -> AttentionResult:
    """Aggregated self- and cross-attention of ``images`` (image, y, x, 3) uint8, in one UNet forward.

    ``pipe``: a Stable Diffusion pipeline (vae, unet, text_encoder, tokenizer, scheduler) on any
    device and dtype. All images go through one forward; the caller chooses the batch size.
    ``features``: also return up-block outputs (``AttentionResult.features``), see the module doc.
    ``device_tensors``: leave ``self_attn`` a float32 torch tensor on the UNet's device (a compact
    store's worker segments and pools it there, ``tasks/extract.py``) instead of a numpy copy.
    """
    unet, vae = pipe.unet, pipe.vae
    if config.timestep >= pipe.scheduler.config.num_train_timesteps:
        raise ValueError(
            f"timestep {config.timestep} is beyond the scheduler's {pipe.scheduler.config.num_train_timesteps} steps"
        )
    if features is not None and (features.timestep or 0) >= pipe.scheduler.config.num_train_timesteps:
        raise ValueError(f"feature timestep {features.timestep} is beyond the scheduler's "
                         f"{pipe.scheduler.config.num_train_timesteps} steps")
    size = config.image_size or native_image_size(pipe)
    factor = int(pipe.vae_scale_factor)
    if size % factor:
        raise ValueError(f"image_size {size} is not a multiple of the VAE's downsampling factor {factor}")

    with torch.inference_mode():
        # 1. Images -> [-1, 1] tensors at the VAE's size (image, channel, y, x).
        pixels = prepare_images(images, size)
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(vae.device, torch.float32) / 127.5 - 1.0
        x = x.to(vae.dtype)

        # 2. Latent: VAE posterior mean x scaling factor (docs/design.md §5.1 "Extract"); optionally noised to t.
        latents = vae.encode(x).latent_dist.mean * vae.config.scaling_factor  # image channel y x
        timestep = torch.tensor([config.timestep], device=unet.device)
        clean = latents
        if config.noise:
            generator = torch.Generator("cpu").manual_seed(config.seed)
            noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
            latents = pipe.scheduler.add_noise(latents, noise.to(latents.device, latents.dtype), timestep.cpu())
        latents = latents.to(unet.device, unet.dtype)

        # 3. Prompt embedding, one per image, no classifier-free guidance.
        embedding, tokens = encode_prompt(pipe, config.prompt, latents.shape[0])
        embedding = embedding.to(unet.device, unet.dtype)

        # 4. One UNet forward with every attn1 / attn2 captured (and the up-blocks hooked when
        #    the features share its latent, timestep and prompt).
        blocks = resolve_blocks(unet, features.blocks) if features is not None else ()
        same = features is not None and features.same_forward(config.timestep, config.prompt)
        hooks = FeatureCapture(unet, blocks if same else ())
        with AttentionCapture(unet, self_attn=config.self_attn, cross_attn=config.cross_attn) as capture, hooks:
            unet(latents, timestep, encoder_hidden_states=embedding)
        if features is not None and not same:
            # 4b. DIFT's ensemble: noised copies at the feature timestep, the feature prompt.
            hooks = FeatureCapture(unet, blocks)
            prompt = config.prompt if features.prompt is None else features.prompt
            feat_embedding = encode_prompt(pipe, prompt, latents.shape[0])[0].to(unet.device, unet.dtype)
            t_feat = config.timestep if features.timestep is None else features.timestep
            with hooks:
                noised_forwards(pipe, clean, feat_embedding, features, t_feat, hooks)
        feats = {b: hooks.mean(b).cpu().numpy() for b in blocks} if features is not None else None

        # 5. Aggregate over resolutions (DiffSeg, docs/design.md §5.1 "Extract").
        self_attn = cross_attn = None
        resolutions = []
        if config.self_attn:
            maps = capture.self_maps
            if not maps:
                raise ValueError("the UNet has no self-attention (attn1) layers to capture")
            self_attn = aggregate_self_attention(maps, config.resolution_weights).float()
            self_attn = self_attn if device_tensors else self_attn.cpu().numpy()
            resolutions.append(max(maps))
        if config.cross_attn:
            maps = capture.cross_maps
            if not maps:
                raise ValueError("the UNet has no cross-attention (attn2) layers to capture")
            cross_attn = aggregate_cross_attention(maps, config.resolution_weights).cpu().numpy()
            resolutions.append(max(maps))
    return AttentionResult(
        self_attn=self_attn,
        cross_attn=cross_attn,
        tokens=list(tokens),
        resolution=max(resolutions),
        image_size=size,
        features=feats,
    )
