"""The toy inpainting checkpoint: the embedded model's UNet taught to inpaint (docs/design.md §5.7 "Occlusion").

Made as Stable Diffusion's inpainting checkpoints were made from their text-to-image ones
(Rombach et al. 2022; the SD 1.5 / 2 inpainting model cards): the UNet's first convolution gets
five more input channels, zero-initialised, for the mask (1, at latent size) and the latent of
the masked image (4: the image with the hidden pixels set to 0 in [-1, 1], i.e. mid-grey, through
the VAE), in diffusers' order ``[noisy latents, mask, masked-image latents]``. At the start the
model is exactly the 4-channel one (the new channels have zero weight); fine-tuning on random
masks (true parts, boxes over the object, strokes, the whole image) with the DDPM
noise-prediction loss teaches it to use them. The loss weighs the latent cells outside the mask
by ``outside_weight`` (there the masked image's latent gives the answer away; at inference the
outside is pasted back anyway). The VAE, the text encoder and the tokenizer are the
embedded model's, unchanged (frozen), so part tokens learned on the embedded model load into the
inpainting pipeline's text encoder as they are. Masks are dilated to whole latent cells, as
:func:`diffparts.occlusion.complete.latent_cell_mask` does at inference.

The saved folder is a diffusers ``StableDiffusionInpaintPipeline`` (safetensors, DDIM scheduler)
plus ``training.json``: config, steps, loss history and the held-out noise-prediction loss of the
4-channel start and of the result, over the whole latent and inside the mask, on held-out birds
of another corpus seed with fixed masks, noise and timesteps.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

#: Where the committed toy inpainting checkpoint lives (made by ``diffparts train-inpaint``).
INPAINT_DIR_NAME = "diffparts-toy-birds-inpaint"


@dataclass(frozen=True)
class InpaintTrainConfig:
    """Everything that determines a fine-tuning run (with the base model it starts from)."""

    n_images: int = 1200          # training birds, corpus seed ``corpus_seed`` (the base model's own corpus)
    corpus_seed: int = 0          # the embedded model was trained on seed 0; evaluations use 999 and 1234
    n_val: int = 64               # held-out birds for the loss, of corpus seed ``val_seed``
    val_seed: int = 4242          # a corpus seed no other corpus of the project uses
    masks_per_image: int = 2      # random masks drawn per training image (fixed pool, encoded once)
    steps: int = 3000             # optimiser steps (a budget may stop earlier)
    batch_size: int = 16          # latents per step
    lr: float = 2e-4              # AdamW learning rate (constant after warm-up)
    weight_decay: float = 1e-2    # AdamW weight decay
    warmup_steps: int = 50        # linear learning-rate warm-up
    caption_dropout: float = 0.1  # share of captions replaced by "" (keeps the unconditional branch)
    # Loss weight of the latent cells outside the mask (inside: 1). Outside, the masked image's
    # latent gives the answer away, so on a small step budget the unweighted loss is spent there
    # (a first run: held-out loss outside fell, inside the mask it rose 0.119 -> 0.125 in 176 steps).
    outside_weight: float = 0.1
    ema_decay: float = 0.998      # EMA of the UNet weights (what gets saved)
    seed: int = 0                 # masks, batch order, noise, dropout
    budget_s: float | None = None  # wall-clock budget of the optimisation; None = steps only
    checkpoint_every_s: float = 600.0  # write the folder this often
    log_every: int = 50           # steps between progress lines and history entries
    threads: int = 1              # torch CPU threads

    def __post_init__(self):
        for name in ("n_images", "n_val", "masks_per_image", "batch_size", "log_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not 0.0 <= self.outside_weight <= 1.0:
            raise ValueError(f"outside_weight must be in [0, 1], got {self.outside_weight}")
        if self.val_seed == self.corpus_seed:
            raise ValueError(f"val_seed {self.val_seed} must differ from corpus_seed (held-out birds)")


# Seconds-long setting for tests.
QUICK_INPAINT = InpaintTrainConfig(n_images=8, n_val=2, masks_per_image=1, steps=2, batch_size=2, warmup_steps=1,
                                   log_every=1)


def inflate_unet(unet, extra_channels: int = 5):
    """A copy of a 4-channel ``UNet2DConditionModel`` with ``extra_channels`` more input channels
    whose conv_in weights are zero: on any extra input it computes what ``unet`` computes."""
    from diffusers import UNet2DConditionModel

    if unet.config.in_channels != 4:
        raise ValueError(f"the UNet to inflate has {unet.config.in_channels} input channels, not 4")
    config = dict(unet.config)
    config["in_channels"] = 4 + extra_channels
    new = UNet2DConditionModel.from_config(config)
    state = {k: v.clone() for k, v in unet.state_dict().items()}
    w = state["conv_in.weight"]                                               # out in ky kx
    state["conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra_channels, *w.shape[2:])], 1)
    new.load_state_dict(state)
    return new.to(dtype=unet.dtype, device=unet.device)


def cell_masks(masks: np.ndarray, factor: int) -> np.ndarray:
    """(image, y, x) bool -> the same, dilated to whole latent cells (``latent_cell_mask``)."""
    from diffparts.occlusion.complete import latent_cell_mask

    return np.stack([latent_cell_mask(m, factor) for m in masks])


@torch.no_grad()
def encode_pairs(vae, images: torch.Tensor, masks: torch.Tensor, batch: int = 64):
    """Posterior (mean, std) of the images and of the masked images.

    images (image, 3, y, x) in [-1, 1]; masks (image, y, x) bool at pixel size (whole cells).
    The masked image is ``image * (mask < 0.5)``, as the inpainting pipeline forms it.
    """
    out = {"mean": [], "std": [], "masked_mean": [], "masked_std": []}
    for s in range(0, len(images), batch):
        x, m = images[s:s + batch], masks[s:s + batch, None].float()
        for key, inp in (("", x), ("masked_", x * (m < 0.5))):
            post = vae.encode(inp).latent_dist
            out[key + "mean"].append(post.mean)
            out[key + "std"].append(post.std)
    return {k: torch.cat(v) for k, v in out.items()}


def latent_masks(masks: torch.Tensor, latent: int) -> torch.Tensor:
    """(image, y, x) bool pixel masks -> (image, 1, latent, latent) float, nearest (the pipeline's)."""
    return torch.nn.functional.interpolate(masks[:, None].float(), size=(latent, latent))


def unet_input(scheduler, latents, noise, t, mask, masked_latents) -> torch.Tensor:
    """(image, 9, ly, lx): the noisy latents, the mask and the masked image's latents."""
    return torch.cat([scheduler.add_noise(latents, noise, t), mask, masked_latents], 1)


def _mse(pred, noise, mask=None) -> torch.Tensor:
    """MSE, or its ``mask``-weighted mean ((image, 1, ly, lx) weights)."""
    if mask is None:
        return torch.nn.functional.mse_loss(pred, noise)
    weight = mask.expand_as(pred)
    return ((pred - noise) ** 2 * weight).sum() / weight.sum().clamp(min=1)


class _Data:
    """Training pairs (image, mask) encoded once, and held-out pairs with fixed draws."""

    def __init__(self, pipe, config: InpaintTrainConfig, log):
        from diffparts.train.renders import random_mask, render_birds
        from diffparts.train.toy import to_tensor

        side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        factor = int(pipe.vae_scale_factor)
        self.scaling = float(pipe.vae.config.scaling_factor)
        rng = np.random.default_rng(config.seed)

        def pairs(images, maps, repeats):
            idx = np.repeat(np.arange(len(images)), repeats)
            drawn = [random_mask(rng, maps[i]) for i in idx]
            masks = cell_masks(np.stack([m for m, _ in drawn]), factor)
            return idx, masks, [k for _, k in drawn]

        images, maps, captions = render_birds(config.n_images, config.corpus_seed, side, log)
        idx, masks, kinds = pairs(images, maps, config.masks_per_image)
        names, counts = np.unique(kinds, return_counts=True)
        shares = ", ".join(f"{int(c)} {n}" for n, c in zip(names.tolist(), counts.tolist()))
        log(f"encoding {len(idx)} (image, mask) pairs: masks {shares}")
        self.train = encode_pairs(pipe.vae, to_tensor(images)[idx], torch.from_numpy(masks))
        self.train_mask = latent_masks(torch.from_numpy(masks), side // factor)
        self.train_ids = pipe.tokenizer(
            [captions[i] for i in idx], padding="max_length", max_length=pipe.tokenizer.model_max_length,
            truncation=True, return_tensors="pt").input_ids
        self.empty_ids = pipe.tokenizer([""], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                        return_tensors="pt").input_ids[0]
        v_images, v_maps, v_captions = render_birds(config.n_val, config.val_seed, side, log)
        v_idx, v_masks, _ = pairs(v_images, v_maps, 1)
        val = encode_pairs(pipe.vae, to_tensor(v_images)[v_idx], torch.from_numpy(v_masks))
        self.val_latents = val["mean"] * self.scaling
        self.val_masked = val["masked_mean"] * self.scaling
        self.val_mask = latent_masks(torch.from_numpy(v_masks), side // factor)
        self.val_ids = pipe.tokenizer([v_captions[i] for i in v_idx], padding="max_length",
                                      max_length=pipe.tokenizer.model_max_length, truncation=True,
                                      return_tensors="pt").input_ids
        gen = torch.Generator().manual_seed(config.seed + 1)
        self.val_noise = torch.randn(self.val_latents.shape, generator=gen)
        self.val_t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(v_idx),), generator=gen)


def loss_text(loss: dict, start: dict | None = None) -> str:
    """A :func:`held_out_loss` result as a person reads it, with the start's beside it if given."""
    def part(key: str, name: str) -> str:
        return f"{name} {loss[key]:.4f}" + (f" (start {start[key]:.4f})" if start is not None else "")
    return f"{part('masked', 'inside the mask')}, {part('all', 'whole latent')}"


@torch.no_grad()
def held_out_loss(unet, text_encoder, scheduler, data: _Data) -> dict:
    """Noise-prediction MSE on the held-out pairs: whole latent and inside the mask."""
    x = unet_input(scheduler, data.val_latents, data.val_noise, data.val_t, data.val_mask, data.val_masked)
    if unet.config.in_channels == 4:
        x = x[:, :4]
    pred = unet(x, data.val_t, encoder_hidden_states=text_encoder(data.val_ids)[0]).sample
    return {"all": float(_mse(pred, data.val_noise)), "masked": float(_mse(pred, data.val_noise, data.val_mask))}


def save_inpaint_folder(pipe, unet, out_dir: str | Path) -> Path:
    """A diffusers ``StableDiffusionInpaintPipeline`` folder (safetensors) from ``pipe``'s VAE,
    text encoder, tokenizer and scheduler and the 9-channel ``unet``."""
    from diffusers import StableDiffusionInpaintPipeline

    from diffparts.model.build import _LOAD_TIME_KEYS

    out_dir = Path(out_dir)
    inpaint = StableDiffusionInpaintPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                             unet=unet, scheduler=pipe.scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    inpaint.save_pretrained(out_dir, safe_serialization=True)
    backend = getattr(pipe.tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.model.save(str(out_dir / "tokenizer"))
    for path in (*out_dir.glob("*/config.json"), out_dir / "tokenizer" / "tokenizer_config.json"):
        if path.is_file():
            cfg = json.loads(path.read_text())
            if any(k in cfg for k in _LOAD_TIME_KEYS):
                path.write_text(json.dumps({k: v for k, v in cfg.items() if k not in _LOAD_TIME_KEYS},
                                           indent=2, sort_keys=True) + "\n")
    return out_dir


def train_inpaint(base: str | Path | None, out_dir: str | Path, config: InpaintTrainConfig = InpaintTrainConfig(),
                  log: Callable[[str], None] = print) -> dict:
    """Fine-tune an inflated copy of ``base``'s UNet to inpaint; save it to ``out_dir``.

    base: a text-to-image model folder or id (None: the embedded checkpoint). Returns the
    ``training.json`` record. Deterministic for a seed and a step count.
    """
    from diffusers import DDPMScheduler

    from diffparts.model.load import load_pipeline
    from diffparts.train.toy import _EMA, _warmup

    t0, cpu0 = time.monotonic(), time.process_time()
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(config.seed)
    pipe = load_pipeline(base, device="cpu", dtype=torch.float32)
    if pipe.unet.config.in_channels != 4:
        raise ValueError(f"base model {str(base)!r} has a {pipe.unet.config.in_channels}-channel UNet; "
                         "train-inpaint starts from a 4-channel text-to-image model")
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    data = _Data(pipe, config, log)
    start_loss = held_out_loss(pipe.unet, pipe.text_encoder, scheduler, data)
    unet = inflate_unet(pipe.unet)
    inflated_loss = held_out_loss(unet, pipe.text_encoder, scheduler, data)
    log(f"held-out loss of the 4-channel start: {loss_text(start_loss)}; inflated with zero channels: "
        f"{loss_text(inflated_loss)}; data ready in {time.monotonic() - t0:.0f} s")
    unet.requires_grad_(True)
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup(s, config.warmup_steps))
    ema = _EMA([unet], config.ema_decay)
    gen = torch.Generator().manual_seed(config.seed + 2)
    T = scheduler.config.num_train_timesteps
    n_pairs = len(data.train_ids)
    history, window, val_history = [], [], []
    t_phase = last = time.monotonic()
    deadline = None if config.budget_s is None else t_phase + config.budget_s

    def snapshot(steps: int, final: bool) -> dict:
        (ema_unet,) = ema.copies()
        loss = held_out_loss(ema_unet, pipe.text_encoder, scheduler, data)
        val_history.append((steps, loss))
        save_inpaint_folder(pipe, ema_unet, out_dir)
        record = {"final": final, "base": str(base) if base is not None else "embedded (data/models/diffparts-toy-birds)",
                  "config": asdict(config), "steps": steps, "seconds": round(time.monotonic() - t0, 1),
                  "cpu_seconds": round(time.process_time() - cpu0, 1),
                  "train_seconds": round(time.monotonic() - t_phase, 1),
                  "held_out_loss_4ch_start": start_loss, "held_out_loss_inflated_start": inflated_loss,
                  "held_out_loss": loss, "history": history, "val_history": val_history, "n_pairs": n_pairs}
        (Path(out_dir) / "training.json").write_text(json.dumps(record, indent=1) + "\n")
        log(f"{'saved' if final else 'checkpoint:'} {out_dir} at step {steps}: held-out loss "
            f"{loss_text(loss, start_loss)}")
        return record

    step = 0
    for step in range(config.steps):
        now = time.monotonic()
        if deadline is not None and now > deadline:
            log(f"budget reached after {step} steps")
            break
        if now - last > config.checkpoint_every_s:
            snapshot(step, final=False)
            last = time.monotonic()
        idx = torch.randint(n_pairs, (config.batch_size,), generator=gen)
        d = data.train
        z = (d["mean"][idx] + d["std"][idx] * torch.randn(d["mean"][idx].shape, generator=gen)) * data.scaling
        zm = (d["masked_mean"][idx] + d["masked_std"][idx] * torch.randn(d["mean"][idx].shape, generator=gen)) \
            * data.scaling
        ids = data.train_ids[idx].clone()
        ids[torch.rand(len(idx), generator=gen) < config.caption_dropout] = data.empty_ids
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, T, (len(idx),), generator=gen)
        with torch.no_grad():
            context = pipe.text_encoder(ids)[0]
        pred = unet(unet_input(scheduler, z, noise, t, data.train_mask[idx], zm), t, encoder_hidden_states=context).sample
        m = data.train_mask[idx]                                   # image 1 ly lx
        loss = _mse(pred, noise, m + config.outside_weight * (1.0 - m))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update()
        window.append(loss.item())
        if (step + 1) % config.log_every == 0:
            history.append((step + 1, float(np.mean(window))))
            log(f"step {step + 1}: loss {history[-1][1]:.4f} ({(time.monotonic() - t_phase) / (step + 1):.2f} s/step)")
            window = []
    else:
        step = config.steps
    return snapshot(step, final=True)


def inpaint_card(out_dir: str | Path, command: str, cpu_minutes: float | None = None) -> str:
    """The card (README.md text) of a folder :func:`train_inpaint` saved, from its training.json.

    cpu_minutes: the process's CPU time when the record lacks ``cpu_seconds`` (measured outside).
    """
    out_dir = Path(out_dir)
    r = json.loads((out_dir / "training.json").read_text())
    cfg = r["config"]
    cpu = r.get("cpu_seconds", None)
    cpu_text = f"{cpu / 60:.1f}" if cpu is not None else (f"{cpu_minutes:.1f} (process CPU time read by ps)"
                                                          if cpu_minutes is not None else "not recorded")
    start, inflated, end = r["held_out_loss_4ch_start"], r["held_out_loss_inflated_start"], r["held_out_loss"]
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()) / 2**20
    lines = [
        f"# {out_dir.name}",
        "",
        "The embedded toy checkpoint (`data/models/diffparts-toy-birds`) made into an inpainting model as",
        "Stable Diffusion's inpainting checkpoints were made: the UNet's `conv_in` extended from 4 to 9 input",
        "channels (noisy latents, the mask at latent size, the latent of the masked image), the 5 new channels",
        "zero-initialised, then fine-tuned with the DDPM noise-prediction loss on random masks of true parts,",
        "boxes over the bird, strokes and (5 %) the whole image. The VAE, the text encoder and the tokenizer are",
        "the embedded model's, unchanged, so part tokens learned on it load into this pipeline's text encoder.",
        "A diffusers `StableDiffusionInpaintPipeline` folder (safetensors, DDIM scheduler); the default",
        "completion model of the occlusion stage for the embedded model (docs/occlusion.md).",
        "",
        "## How it was made",
        "",
        "```",
        command,
        "```",
        "",
        f"- Data: {cfg['n_images']} synthetic birds of corpus seed {cfg['corpus_seed']} (the embedded model's own "
        f"training corpus) at 64 px, {cfg['masks_per_image']} random masks each ({r['n_pairs']} pairs, encoded once); "
        f"masks dilated to whole latent cells, the masked image = image with the hidden pixels at 0 in [-1, 1].",
        f"- {r['steps']} steps at batch {cfg['batch_size']}, AdamW lr {cfg['lr']:g} (warm-up {cfg['warmup_steps']}), "
        f"loss outside the mask weighted {cfg.get('outside_weight', 1.0):g}, "
        f"{cfg['caption_dropout']:.0%} empty captions, EMA {cfg['ema_decay']} (saved), seed {cfg['seed']}.",
        f"- Time: {r['seconds'] / 60:.1f} min wall ({r['train_seconds'] / 60:.1f} min of optimisation, "
        f"{cfg['threads']} torch thread{'s' if cfg['threads'] > 1 else ''} on 2 CPU cores); CPU minutes: {cpu_text}.",
        f"- Folder size: {size:.1f} MB.",
        "",
        "## Held-out loss",
        "",
        f"Noise-prediction MSE on {cfg['n_val']} held-out birds of corpus seed {cfg['val_seed']} (never trained on), "
        "one seeded mask each, fixed noise and timesteps; the whole latent and the latent cells under the mask:",
        "",
        "| model | whole latent | inside the mask |",
        "| --- | --- | --- |",
        f"| 4-channel start (the embedded UNet, no mask or masked image) | {start['all']:.4f} | {start['masked']:.4f} |",
        f"| inflated start (9 channels, extra ones zero) | {inflated['all']:.4f} | {inflated['masked']:.4f} |",
        f"| this checkpoint | **{end['all']:.4f}** | **{end['masked']:.4f}** |",
        "",
        "Held-out loss during training (EMA weights): "
        + ", ".join(f"step {s}: {v['all']:.4f} / {v['masked']:.4f}" for s, v in r["val_history"]) + ".",
        "",
        "What its completions are worth is measured by the independent part judge in docs/occlusion.md",
        "(`benchmarks/eval_inpaint_judge.py`).",
    ]
    return "\n".join(lines) + "\n"


def quick_inpaint_config(**overrides) -> InpaintTrainConfig:
    """The seconds-long test setting with some fields replaced."""
    return replace(QUICK_INPAINT, **overrides)
