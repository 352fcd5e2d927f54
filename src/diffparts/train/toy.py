"""Train the embedded toy checkpoint from scratch on synthetic birds (docs/design.md §4 "The embedded default").

Two phases, both seeded and deterministic for a given number of steps:

1. VAE: an ``AutoencoderKL`` learns to reconstruct the birds (MSE + L1 + a tiny KL term, as
   Stable Diffusion's first stage without the perceptual and adversarial terms). Its
   ``scaling_factor`` is then set to 1 / std of the latents, so scaled latents have unit
   variance (Rombach et al. 2022, section 4.3.2).
2. UNet + text encoder: the posterior of every training image is computed once; each step
   samples a latent from it, noises it with diffusers' ``DDPMScheduler.add_noise`` at a uniform
   timestep and regresses the noise (Ho et al. 2020, eq. 14) with the caption's CLIP embedding
   as cross-attention context. Captions are dropped (empty prompt) with a small probability so
   the unconditional branch, which DiffSeg's capture uses, is trained too. An exponential
   moving average of the weights is what gets saved.

A wall-clock budget can end either phase early; the steps actually run are recorded, so the same
result is reproduced by passing them as fixed step counts (without the budget). Checkpoints are
written periodically, so an interrupted run still leaves a loadable folder.

A run can also continue from a folder this trainer saved (``init_from``): the VAE, its scaling
factor and the tokenizer are kept (phase 1 is skipped), the UNet and text encoder start from the
saved EMA weights with a fresh optimiser, and ``training.json`` records the earlier run, so the
checkpoint's whole lineage (commands, steps, times) stays on record. ``snr_gamma`` weights each
sample's loss by min(SNR, gamma) / SNR (Min-SNR weighting, Hang et al. 2023), which stops the
many nearly-clean timesteps from dominating the gradient and speeds up learning of global shape.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from diffparts.model.build import SDArchConfig, SDComponents, build_components, caption_words, save_components

# The toy checkpoint's architecture: 64 px birds, a 4x VAE (latent 16 x 16 x 4), a UNet with
# self- and cross-attention at 16 x 16 and 8 x 8 (plus the 8 x 8 mid block), a 2-layer CLIP text
# encoder. About 3.9 M parameters, 15.5 MB in float32 safetensors; a training step at batch 32
# takes about 0.5 s on 2 CPU cores.
TOY_ARCH = SDArchConfig(
    sample_size=64,
    vae_block_out_channels=(32, 64, 64),
    vae_layers_per_block=1,
    vae_norm_num_groups=8,
    vae_mid_block_attention=False,  # convolution only, so training on 32 px crops generalises
    unet_block_out_channels=(64, 96),
    unet_down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    unet_up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    unet_layers_per_block=1,
    unet_norm_num_groups=8,
    unet_attention_heads=4,
    cross_attention_dim=64,
    text_layers=2,
    text_heads=4,
    text_intermediate_size=128,
    max_length=32,
)

# The --quick setting's architecture: the tests' tiny model (32 px, latent 16, attention 16 and 8).
QUICK_ARCH = SDArchConfig()


@dataclass(frozen=True)
class ToyTrainConfig:
    """Everything that determines a toy training run (with the corpus it reads)."""

    arch: SDArchConfig = TOY_ARCH  # model shapes; arch.sample_size is the training image side
    seed: int = 0  # seeds initialisation, batch order, noise and caption dropout
    n_val: int = 64  # images held out of training for the VAE PSNR and the validation loss
    vae_steps: int = 3000  # VAE optimiser steps (a budget may stop earlier)
    vae_batch_size: int = 16  # images per VAE step
    vae_lr: float = 1e-3  # AdamW learning rate of the VAE (constant after warm-up)
    vae_crop: int | None = 32  # train the (fully convolutional) VAE on random crops: 4x cheaper; None = whole images
    kl_weight: float = 1e-6  # KL weight of the VAE loss; tiny, as in SD's first stage
    unet_steps: int = 20000  # UNet + text encoder steps (a budget may stop earlier)
    unet_batch_size: int = 16  # latents per UNet step (more small steps beat fewer big ones on 2 cores)
    unet_lr: float = 7e-4  # AdamW learning rate (constant after warm-up; the EMA anneals)
    weight_decay: float = 1e-2  # AdamW weight decay of both phases
    warmup_steps: int = 100  # linear learning-rate warm-up of both phases
    caption_dropout: float = 0.1  # share of captions replaced by "" (trains the unconditional branch)
    ema_decay: float = 0.995  # EMA of UNet and text-encoder weights (what gets saved)
    flip: bool = True  # random horizontal flips (the corpus' captions do not name a side)
    budget_s: float | None = None  # wall-clock budget of both phases together; None = step counts only
    vae_budget_fraction: float = 0.22  # share of budget_s the VAE phase may use
    checkpoint_every_s: float = 600.0  # write the folder this often during the UNet phase
    log_every: int = 50  # steps between progress lines and loss-history entries
    threads: int = 1  # torch CPU threads; on 2 cores shared with other jobs, 2 threads ran 5-10x slower than 1
    snr_gamma: float | None = None  # Min-SNR loss weighting min(SNR, gamma) / SNR; None = plain MSE
    init_from: str | None = None  # continue from a folder this trainer saved (phase 1 skipped); None = scratch

    def __post_init__(self):
        for name in ("vae_steps", "unet_steps", "n_val"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("vae_batch_size", "unet_batch_size", "log_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1], got {self.caption_dropout}")
        if self.budget_s is not None and self.budget_s <= 0:
            raise ValueError(f"budget_s must be positive, got {self.budget_s}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be positive, got {self.snr_gamma}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


# The --quick setting: seconds on 2 cores, for tests and smoke runs.
QUICK_CONFIG = ToyTrainConfig(
    arch=QUICK_ARCH,
    n_val=2,
    vae_steps=3,
    vae_batch_size=4,
    vae_crop=None,
    unet_steps=3,
    unet_batch_size=4,
    warmup_steps=1,
    log_every=1,
)


@dataclass
class TrainResult:
    """What a run did: the saved folder, the steps run, the losses and the times."""

    path: Path
    vae_steps: int
    unet_steps: int
    vae_loss: float  # mean training loss over the last log window
    vae_psnr_db: float  # reconstruction PSNR on the held-out images (posterior mean)
    unet_loss: float  # mean training loss over the last log window
    unet_val_loss: float  # noise-prediction MSE on the held-out images (fixed noise and timesteps)
    scaling_factor: float
    vae_seconds: float
    unet_seconds: float
    n_train: int
    n_val: int
    params: dict = field(default_factory=dict)  # component -> parameter count
    history: dict = field(default_factory=dict)  # phase -> [(step, loss)]
    previous: dict | None = None  # the training.json of the run continued from (init_from), else None


def load_corpus_images(root: str | Path, size: int) -> tuple[np.ndarray, list[str]]:
    """The images of a synthetic-bird corpus at ``size`` px and their captions.

    Returns (image, y, x, 3) uint8 resized with PIL's box filter (an exact 2x average for the
    128 px renders) and one caption per image, in the corpus' image-id order.
    """
    from PIL import Image

    from diffparts.corpus import open_corpus

    records = list(open_corpus(root))
    if not records:
        raise ValueError(f"corpus {str(root)!r} has no images")
    images, captions = [], []
    for rec in records:
        with Image.open(rec.path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BOX)
            images.append(np.asarray(img))
        captions.append(rec.caption or "")
    return np.stack(images), captions


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(image, y, x, 3) uint8 -> (image, 3, y, x) float32 in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two [-1, 1] image batches (peak-to-peak range 2)."""
    mse = float(((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean())
    return 10.0 * math.log10(4.0 / max(mse, 1e-12))


def _warmup(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / max(warmup, 1))


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip a random half of the batch left-right (the last axis is x)."""
    mask = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


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


def _text_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    """(image, token) ids, padded and truncated as the SD pipeline's encode_prompt does."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids


def min_snr_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample loss weights min(SNR(t), gamma) / SNR(t) for noise prediction (Hang et al. 2023).

    SNR(t) = alpha_bar_t / (1 - alpha_bar_t). Noisy timesteps (SNR <= gamma) keep weight 1; nearly
    clean ones, whose noise is easy to regress but which add little to the samples' shape, are
    down-weighted.
    """
    alpha_bar = scheduler.alphas_cumprod.to(torch.float64)[t]
    snr = alpha_bar / (1.0 - alpha_bar)
    return (snr.clamp(max=gamma) / snr).to(torch.float32)


def _denoise_loss(unet, text_encoder, scheduler, latents, ids, noise, t, weights=None) -> torch.Tensor:
    noisy = scheduler.add_noise(latents, noise, t)  # image channel y x
    context = text_encoder(ids)[0]  # image token channel
    pred = unet(noisy, t, encoder_hidden_states=context).sample
    if weights is None:
        return torch.nn.functional.mse_loss(pred, noise)
    per_sample = ((pred - noise) ** 2).flatten(1).mean(1)  # image
    return (weights * per_sample).mean()


def _load_for_continuation(path: str | Path) -> tuple[SDComponents, dict, int]:
    """The components of a folder this trainer saved, ready to train on, its training.json and
    the pixel side it works on."""
    from diffusers import DDPMScheduler

    from diffparts.model.extract import native_image_size
    from diffparts.model.load import load_pipeline

    path = Path(path)
    record_path = path / "training.json"
    if not record_path.is_file():
        raise ValueError(f"init_from {str(path)!r} has no training.json: only a folder saved by train-toy can be continued")
    record = json.loads(record_path.read_text())
    pipe = load_pipeline(path, device="cpu", dtype=torch.float32)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    comps = SDComponents(pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer, scheduler)
    return comps, record, native_image_size(pipe)


def train_toy(
    corpus: str | Path,
    out_dir: str | Path,
    config: ToyTrainConfig = ToyTrainConfig(),
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train the toy checkpoint on the corpus at ``corpus`` and save it to ``out_dir``.

    ``out_dir`` becomes a complete diffusers Stable Diffusion folder (safetensors only) plus
    ``training.json`` (config, steps, losses, times). Deterministic for a seed and step counts.
    """
    t_start = time.monotonic()
    deadline_vae = deadline_unet = None
    if config.budget_s is not None:
        deadline_vae = t_start + config.vae_budget_fraction * config.budget_s
        deadline_unet = t_start + config.budget_s
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)  # denormals made CPU steps up to 10x slower in a first trial
    out_dir = Path(out_dir)
    arch = config.arch
    if config.init_from is not None and out_dir.resolve() == Path(config.init_from).resolve():
        raise ValueError(f"out_dir {str(out_dir)!r} is the init_from folder: write the continued model elsewhere "
                         "so the one it starts from stays intact")

    # 1. Data: images at the model's size, captions, a held-out tail for validation.
    images_np, captions = load_corpus_images(corpus, arch.sample_size)
    if images_np.shape[0] <= config.n_val:
        raise ValueError(f"corpus has {images_np.shape[0]} images, not more than n_val={config.n_val}")
    # The corpus is ordered by class: hold out a seeded random subset, not the tail.
    order = torch.randperm(images_np.shape[0], generator=torch.Generator().manual_seed(config.seed))
    n_train = images_np.shape[0] - config.n_val
    images = to_tensor(images_np)[order]  # image 3 y x
    captions = [captions[i] for i in order.tolist()]
    train_images, val_images = images[:n_train], images[n_train:]
    log(f"data: {n_train} training + {config.n_val} held-out images at {arch.sample_size} px")

    # 2. Components: from scratch (the tokenizer learns the captions' words as whole tokens), or
    #    the saved folder being continued.
    previous = None
    if config.init_from is not None:
        comps, previous, side = _load_for_continuation(config.init_from)
        for name in ("seed", "n_val"):
            # the held-out split comes from seed and n_val: others would train on held-out images
            if previous.get("config", {}).get(name, getattr(config, name)) != getattr(config, name):
                raise ValueError(
                    f"init_from {config.init_from!r} was trained with {name}={previous['config'][name]}; "
                    f"continue it with the same {name} (got {getattr(config, name)}) so its held-out images stay held out"
                )
        if side != arch.sample_size:
            raise ValueError(f"init_from {config.init_from!r} works on {side} px images, not arch.sample_size={arch.sample_size}")
    else:
        try:
            from diffparts.corpus import CAPTION_WORDS
        except ImportError:  # an older corpus module without the constant
            CAPTION_WORDS = ()
        words = list(dict.fromkeys([*CAPTION_WORDS, *caption_words(captions)]))
        import tempfile

        # the tokenizer reads its vocabulary files into memory, so the folder is not needed after
        with tempfile.TemporaryDirectory(prefix="diffparts-toy-tok-") as work:
            comps = build_components(arch, tokenizer_dir=work, words=words, seed=config.seed)
    ids = _text_ids(comps.tokenizer, captions)  # image token
    empty_ids = _text_ids(comps.tokenizer, [""])[0]  # token
    params = {name: sum(p.numel() for p in getattr(comps, name).parameters())
              for name in ("vae", "unet", "text_encoder")}
    log(f"params: {params}")
    # A continued run draws a fresh batch/noise stream (not a replay of the first run's).
    stream_seed = config.seed if previous is None else config.seed + 1 + int(previous.get("unet_steps", 0))
    generator = torch.Generator().manual_seed(stream_seed)

    # 3. Phase 1: the VAE (section 1 of the module docstring); kept as loaded when continuing.
    if previous is None:
        vae_steps, vae_history = train_vae(comps.vae, train_images, config, generator, deadline_vae, log)
    else:
        vae_steps, vae_history = 0, []
        comps.vae.eval()
    t_vae = time.monotonic() - t_start
    with torch.no_grad():
        post = comps.vae.encode(val_images).latent_dist
        vae_psnr = psnr_db(comps.vae.decode(post.mean).sample, val_images)
    mean, std = encode_posteriors(comps.vae, train_images)  # image channel y x
    if previous is None:
        # std of sampled latents: total variance = variance of the means + mean posterior variance
        latent_std = float(torch.sqrt(mean.var() + (std**2).mean()))
        scaling = 1.0 / max(latent_std, 1e-6)
        comps.vae.register_to_config(scaling_factor=scaling)
    else:
        scaling = float(comps.vae.config.scaling_factor)  # the UNet was trained on these latents
    comps.vae.requires_grad_(False)
    log(f"vae: {vae_steps} steps, {t_vae:.0f} s, held-out PSNR {vae_psnr:.2f} dB, scaling {scaling:.4f}")

    # 4. Phase 2: UNet + text encoder on DDPM noise prediction (section 2 of the docstring).
    scheduler = comps.scheduler
    T = scheduler.config.num_train_timesteps
    val_mean, _ = encode_posteriors(comps.vae, val_images)
    val_gen = torch.Generator().manual_seed(config.seed + 1)
    val_latents = val_mean * scaling
    val_noise = torch.randn(val_latents.shape, generator=val_gen)
    val_t = torch.randint(0, T, (val_latents.shape[0],), generator=val_gen)
    val_ids = ids[n_train:]

    trainable = list(comps.unet.parameters()) + list(comps.text_encoder.parameters())
    opt = torch.optim.AdamW(trainable, lr=config.unet_lr, weight_decay=config.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup(s, config.warmup_steps))
    ema = _EMA([comps.unet, comps.text_encoder], config.ema_decay)
    comps.unet.requires_grad_(True)
    comps.text_encoder.requires_grad_(True)
    comps.unet.train()
    comps.text_encoder.train()
    t_phase = time.monotonic()
    last_ckpt = t_phase
    history, window, step = [], [], 0

    def snapshot(unet_steps: int, final: bool) -> TrainResult:
        unet_ema, text_ema = ema.copies()
        with torch.no_grad():
            val_loss = float(_denoise_loss(unet_ema, text_ema, scheduler, val_latents, val_ids, val_noise, val_t))
        saved = SDComponents(comps.vae, unet_ema, text_ema, comps.tokenizer, _inference_scheduler(scheduler))
        save_components(saved, out_dir)
        result = TrainResult(
            path=out_dir, vae_steps=vae_steps, unet_steps=unet_steps,
            vae_loss=vae_history[-1][1] if vae_history else float("nan"), vae_psnr_db=vae_psnr,
            unet_loss=history[-1][1] if history else float("nan"), unet_val_loss=val_loss,
            scaling_factor=scaling, vae_seconds=t_vae, unet_seconds=time.monotonic() - t_phase,
            n_train=n_train, n_val=config.n_val, params=params,
            history={"vae": vae_history, "unet": history}, previous=previous,
        )
        record = {"final": final, "config": _config_dict(config), **_result_dict(result)}
        (out_dir / "training.json").write_text(json.dumps(record, indent=1) + "\n")
        log(f"saved {out_dir} at UNet step {unet_steps} (EMA val loss {val_loss:.4f}, final={final})")
        return result

    for step in range(config.unet_steps):
        now = time.monotonic()
        if deadline_unet is not None and now > deadline_unet:
            log(f"unet: budget reached after {step} steps")
            break
        if now - last_ckpt > config.checkpoint_every_s:
            snapshot(step, final=False)
            last_ckpt = time.monotonic()
        # 4a. A batch: latents sampled from the stored posteriors, flipped, scaled.
        idx = torch.randint(n_train, (config.unet_batch_size,), generator=generator)
        z = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=generator)  # image channel y x
        if config.flip:
            z = _flip(z, generator)
        z = z * scaling
        # 4b. Captions, a random share dropped to the empty prompt.
        batch_ids = ids[idx].clone()  # image token
        drop = torch.rand(idx.shape[0], generator=generator) < config.caption_dropout
        batch_ids[drop] = empty_ids
        # 4c. DDPM: uniform timestep, noise through the scheduler, predict the noise.
        noise = torch.randn(z.shape, generator=generator)
        t = torch.randint(0, T, (idx.shape[0],), generator=generator)
        weights = None if config.snr_gamma is None else min_snr_weights(scheduler, t, config.snr_gamma)
        loss = _denoise_loss(comps.unet, comps.text_encoder, scheduler, z, batch_ids, noise, t, weights)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"UNet loss is {loss.item()} at step {step}; lower unet_lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        lr_sched.step()
        ema.update()
        window.append(loss.item())
        if (step + 1) % config.log_every == 0:
            history.append((step + 1, float(np.mean(window))))
            rate = (time.monotonic() - t_phase) / (step + 1)
            log(f"unet step {step + 1}: loss {history[-1][1]:.4f} ({rate:.2f} s/step)")
            window = []
    else:
        step = config.unet_steps
    if window:
        history.append((step, float(np.mean(window))))

    # 5. The final folder (EMA weights) and its training record.
    return snapshot(step, final=True)


def _inference_scheduler(train_scheduler):
    """A DDIM scheduler with the training betas: good samples in 25-50 steps (DDPM needs ~1000)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(train_scheduler.config, set_alpha_to_one=False, clip_sample=False)


def _config_dict(config: ToyTrainConfig) -> dict:
    out = asdict(config)
    out["arch"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["arch"].items()}
    return out


def _result_dict(result: TrainResult) -> dict:
    out = asdict(result)
    out["path"] = str(result.path)
    return out


def quick_config(**overrides) -> ToyTrainConfig:
    """The --quick setting with some fields replaced."""
    return replace(QUICK_CONFIG, **overrides)
