"""Learn one text embedding for a part category (textual inversion, docs/design.md §5.6 "Part embeddings").

Four objectives, all on the same data and the same frozen model:

- ``noise``: the noise-estimation loss of textual inversion, masked to the part's discovered
  mask at the latent grid (:mod:`diffparts.inversion.noise_loss`); timesteps uniform over the
  scheduler's training range.
- ``noise-unmasked``: the same, over the whole image (the standard textual inversion).
- ``attention``: Hedlin et al.'s localisation loss (:mod:`diffparts.inversion.attention_loss`):
  the token's head-averaged cross-attention at the two coarsest up-block resolutions,
  upsampled to the image, regressed by MSE onto an unnormalised Gaussian at the part's
  centroid (or onto the part mask), at one small timestep (140), with random crops that keep
  the part. Kept from their recipe: Adam, the timestep, the layers, the Gaussian target and
  the crops; changed: one embedding per category over many images (theirs is per image and
  point) and a fixed number of steps.
- ``combined``: masked noise loss + ``attention_weight`` x MSE between the max-normalised map
  and the part mask (Break-A-Scene's form, lambda = 1e-2), both from ONE forward.

Training is a pure function of (model, examples, config): every step draws its images,
timesteps, noise and crops from a generator seeded by (seed, step, micro-batch), so a run
resumed from a checkpoint ends with exactly the vectors of an uninterrupted one. Checkpoints
are safetensors (vectors and Adam moments) plus JSON (step, losses, config): nothing is
unpickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from diffparts.inversion.attention_loss import TokenAttention, gaussian_targets, localisation_loss, up_block_layers
from diffparts.inversion.data import CategoryExamples, random_crop_keep
from diffparts.inversion.noise_loss import latent_mask, masked_mse, noise_target
from diffparts.inversion.tokens import TrainableTokens, add_part_tokens, expand_prompt, freeze

LOSSES = ("noise", "noise-unmasked", "attention", "combined")


@dataclass(frozen=True)
class InversionConfig:
    """How one part token is learned."""

    loss: str = "noise"                 # noise (masked) | noise-unmasked | attention | combined
    steps: int = 300                    # optimiser steps (Hedlin et al.: ~130 per point)
    learning_rate: float = 2e-2         # Adam on the token's rows; chosen on validation birds (seed 999)
                                        # among 1e-3, 5e-3, 2e-2: best localisation, no loss elsewhere
    batch_size: int = 4                 # images of the category per micro-batch (with replacement)
    gradient_accumulation: int = 1      # micro-batches per optimiser step
    num_vectors: int = 1                # vectors per token (diffusers' multi-vector form tok, tok_1, ...)
    initializer: str = "bird"           # word whose embedding every vector starts from (the class word)
    template: str = "a photo of a bird with {token}"   # prompt in the words the model knows
    attention_timestep: int = 140       # Hedlin et al.'s t for the attention loss
    attention_target: str = "gaussian"  # attention loss target: gaussian at the centroid | mask
    sigma: float = 0.08                 # Gaussian sigma as a fraction of the image side
    crops: bool | None = None           # random crops keeping the part; None: on for attention only
    crop_min_scale: float = 0.6         # smallest crop side as a fraction of the image side
    attention_weight: float = 1e-2      # lambda of the combined loss (Break-A-Scene)
    attention_resolutions: tuple[int, ...] | None = None  # up-block attn2 resolutions; None: two coarsest
    max_images: int = 256               # training images per category at most (a seeded subset), so
                                        # memory stays bounded on CUB-scale corpora
    seed: int = 0                       # every draw of step s comes from (seed, s, micro-batch)
    loss_scale: float | None = None     # static loss scale; None: 1024 for a float16 UNet, else 1
    checkpoint_every: int = 50          # steps between checkpoints (0: only at the end)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("steps", "batch_size", "gradient_accumulation", "num_vectors", "max_images"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if "{token}" not in self.template:
            raise ValueError(f"template {self.template!r} must contain {{token}}")
        if self.attention_target not in ("gaussian", "mask"):
            raise ValueError(f"attention_target must be 'gaussian' or 'mask', got {self.attention_target!r}")
        if not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")

    @property
    def use_crops(self) -> bool:
        return self.loss == "attention" if self.crops is None else bool(self.crops)

    def identity(self) -> str:
        """Hash of every field that changes the result of a step (not ``steps``/checkpointing)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("steps", "checkpoint_every")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    """What training one token gave."""

    token: str
    category: int
    loss: str
    vectors: torch.Tensor          # (vector, channel) float32
    losses: list[float]            # one per optimiser step
    steps: int
    seconds: float
    resumed_from: int              # step the run started from (0 = fresh)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return float(np.mean(tail)) if tail else float("nan")


# -- shared helpers (also used by the measures) ---------------------------------------------
def encode_latents(pipe, images: np.ndarray, batch: int = 16) -> torch.Tensor:
    """(image, y, x, 3) uint8 -> VAE posterior mean x scaling factor (image, channel, ly, lx) float32."""
    vae = pipe.vae
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch])).permute(0, 3, 1, 2)
            x = (x.to(vae.device, torch.float32) / 127.5 - 1.0).to(vae.dtype)
            out.append((vae.encode(x).latent_dist.mean * vae.config.scaling_factor).float())
    return torch.cat(out)


def prompt_inputs(tokenizer, prompt: str, multi: dict[str, int] | None = None) -> torch.Tensor:
    """(1, token) ids of ``prompt`` padded to the model's length, multi-vector tokens expanded."""
    text = expand_prompt(prompt, multi or {})
    return tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def token_positions(ids: torch.Tensor, token_ids) -> list[int]:
    """Positions in ``ids`` (1, token) holding any of ``token_ids``."""
    wanted = set(int(i) for i in token_ids)
    return [p for p, i in enumerate(ids[0].tolist()) if i in wanted]


def step_generator(seed: int, step: int, micro: int) -> tuple[torch.Generator, np.random.Generator]:
    """The torch and numpy generators of one micro-batch (independent of every other step)."""
    state = np.random.SeedSequence([int(seed), int(step), int(micro)]).generate_state(2)
    return torch.Generator("cpu").manual_seed(int(state[0])), np.random.default_rng(int(state[1]))


def training_scheduler(pipe):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


# -- checkpoints ------------------------------------------------------------------------------
def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(path: Path, trainable: TrainableTokens, optimizer: torch.optim.Optimizer, step: int,
                    losses: list[float], meta: dict) -> None:
    """``path`` (.safetensors: vectors + Adam moments) and ``path.json`` (step, losses, meta)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"vectors": trainable.vectors.detach().cpu().contiguous()}
    state = optimizer.state.get(trainable.vectors, {})
    adam_step = 0
    if state:
        tensors["exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
        tensors["exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
        adam_step = int(state["step"])
    _atomic_write(path, lambda p: save_file(tensors, str(p)))
    record = {**meta, "step": int(step), "adam_step": adam_step, "losses": [float(v) for v in losses]}
    _atomic_write(Path(str(path) + ".json"), lambda p: p.write_text(json.dumps(record)))


def load_checkpoint(path: Path, trainable: TrainableTokens, optimizer: torch.optim.Optimizer,
                    meta: dict) -> tuple[int, list[float]]:
    """Restore vectors and Adam state; (step, losses). A checkpoint of another run raises."""
    from safetensors.torch import load_file

    record = json.loads(Path(str(path) + ".json").read_text())
    what = {"config": "other training settings (InversionConfig)", "images": "other training images",
            "token": "another token", "category": "another category"}
    for key, value in meta.items():
        if record.get(key) != value:
            raise ValueError(f"checkpoint {path} was made with {what.get(key, key)} ({key} {record.get(key)!r}, "
                             f"this run {value!r}); delete it to start again")
    tensors = load_file(str(path))
    device = trainable.vectors.device
    with torch.no_grad():
        trainable.vectors.copy_(tensors["vectors"].to(device))
    if "exp_avg" in tensors:
        optimizer.state[trainable.vectors] = {
            "step": torch.tensor(float(record["adam_step"])),
            "exp_avg": tensors["exp_avg"].to(device),
            "exp_avg_sq": tensors["exp_avg_sq"].to(device),
        }
    return int(record["step"]), [float(v) for v in record["losses"]]


# -- training ---------------------------------------------------------------------------------
class _Batches:
    """Latents, latent masks and image masks of the examples; crops re-encode per draw."""

    def __init__(self, pipe, examples: CategoryExamples, config: InversionConfig):
        self.pipe, self.examples, self.config = pipe, examples, config
        self.latents = None if config.use_crops else encode_latents(pipe, examples.images)

    def draw(self, torch_gen: torch.Generator, np_gen: np.random.Generator):
        n, b = len(self.examples), self.config.batch_size
        idx = torch.randint(n, (b,), generator=torch_gen).numpy()
        masks = self.examples.masks[idx]
        if self.latents is None:
            pairs = [random_crop_keep(self.examples.images[i], self.examples.masks[i], np_gen,
                                      self.config.crop_min_scale) for i in idx]
            latents = encode_latents(self.pipe, np.stack([p[0] for p in pairs]))
            masks = np.stack([p[1] for p in pairs])
        else:
            latents = self.latents[idx]
        return latents, torch.from_numpy(np.ascontiguousarray(masks))   # image c ly lx, image y x


def _step_loss(pipe, scheduler, config, ids, trainable, layers, positions, latents, masks, torch_gen):
    """The loss of one micro-batch (float32 scalar tensor with a graph to the vectors)."""
    unet, te = pipe.unet, pipe.text_encoder
    device = unet.device
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=torch_gen)
    if config.loss == "attention":
        t = torch.full((b,), int(config.attention_timestep), dtype=torch.long)
    else:
        t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=torch_gen)
    latents, noise, t, masks = latents.to(device), noise.to(device), t.to(device), masks.to(device)
    with trainable.installed(te):
        hidden = te(ids.repeat(b, 1).to(device))[0]                       # image token channel
    noisy = scheduler.add_noise(latents, noise, t).to(unet.dtype)
    hidden = hidden.to(unet.dtype)
    if config.loss in ("noise", "noise-unmasked"):
        pred = unet(noisy, t, encoder_hidden_states=hidden).sample
        cells = latent_mask(masks, tuple(latents.shape[-2:])) if config.loss == "noise" else None
        return masked_mse(pred, noise_target(scheduler, latents, noise, t), cells)
    with TokenAttention(unet, layers, positions) as capture:
        pred = unet(noisy, t, encoder_hidden_states=hidden).sample
    maps = capture.maps(tuple(masks.shape[-2:]))                            # image y x
    if config.loss == "attention":
        target = gaussian_targets(masks, config.sigma) if config.attention_target == "gaussian" else masks
        return localisation_loss(maps, target, "none")
    cells = latent_mask(masks, tuple(latents.shape[-2:]))
    denoise = masked_mse(pred, noise_target(scheduler, latents, noise, t), cells)
    return denoise + config.attention_weight * localisation_loss(maps, masks, "max")


def train_token(pipe, examples: CategoryExamples, token: str, config: InversionConfig = InversionConfig(),
                checkpoint: str | Path | None = None, progress: Callable[[int, int, float], None] | None = None,
                stop_after: int | None = None) -> TrainResult:
    """Add ``token`` to ``pipe`` and learn its vectors on ``examples`` (one part category).

    Only the token's vectors learn; the pipeline's weights are frozen and stay bit-identical
    (its embedding matrix gains the token's rows, set to the initializer word's row until
    training ends, then to the learned vectors). ``checkpoint``: a ``.safetensors`` path; an
    existing checkpoint of the same run is resumed, and one is written every
    ``config.checkpoint_every`` steps and at the end. ``progress(step, steps, loss)`` is called
    after every step. ``stop_after``: return after that many steps in total (tests: a crash).
    """
    if len(examples) == 0:
        raise ValueError(f"part category {examples.category} has no training images")
    start_time = time.perf_counter()
    # 1. Token, frozen model, trainable rows.
    added = add_part_tokens(pipe.tokenizer, pipe.text_encoder, [token], config.num_vectors, config.initializer)
    freeze(pipe.unet, pipe.vae, pipe.text_encoder)
    pipe.unet.eval(), pipe.vae.eval(), pipe.text_encoder.eval()
    trainable = TrainableTokens.from_encoder(pipe.text_encoder, added)
    optimizer = torch.optim.Adam(trainable.parameters(), lr=config.learning_rate, weight_decay=0.0)
    scheduler = training_scheduler(pipe)
    ids = prompt_inputs(pipe.tokenizer, config.template.format(token=token), added.multi)   # 1 token
    positions = token_positions(ids, added.flat_ids)
    layers = up_block_layers(pipe.unet, config.attention_resolutions) if config.loss in ("attention", "combined") else []
    scale = config.loss_scale or (1024.0 if pipe.unet.dtype == torch.float16 else 1.0)

    # 2. Resume.
    meta = {"token": token, "category": int(examples.category), "config": config.identity(),
            "images": [int(i) for i in examples.indices]}
    step, losses = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file() and Path(str(ckpt) + ".json").is_file():
        step, losses = load_checkpoint(ckpt, trainable, optimizer, meta)
        if step > config.steps:
            raise ValueError(f"checkpoint {ckpt} is at step {step}, beyond the {config.steps} steps asked; "
                             "ask for at least as many steps, or delete it to start again")
    resumed_from = step

    # 3. Steps: micro-batches, accumulation, Adam on the vectors only.
    batches = _Batches(pipe, examples, config)
    end = config.steps if stop_after is None else min(config.steps, int(stop_after))
    while step < end:
        total = 0.0
        for micro in range(config.gradient_accumulation):
            torch_gen, np_gen = step_generator(config.seed, step, micro)
            latents, masks = batches.draw(torch_gen, np_gen)
            loss = _step_loss(pipe, scheduler, config, ids, trainable, layers, positions, latents, masks, torch_gen)
            (loss * (scale / config.gradient_accumulation)).backward()
            total += float(loss.detach()) / config.gradient_accumulation
        grad = trainable.vectors.grad
        if grad is not None:
            grad.div_(scale)
            if torch.isfinite(grad).all():
                optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.append(total)
        if progress is not None:
            progress(step, config.steps, total)
        if ckpt is not None and ((config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.steps):
            save_checkpoint(ckpt, trainable, optimizer, step, losses, meta)
        if not math.isfinite(total):
            raise ValueError(f"training {token} diverged at step {step} (loss {total}); lower the learning rate")

    # 4. The learned rows go into the encoder, so the pipeline generates with them.
    trainable.write_into(pipe.text_encoder)
    return TrainResult(token, int(examples.category), config.loss, trainable.vectors.detach().cpu()[0].clone(),
                       losses, step, time.perf_counter() - start_time, resumed_from)
