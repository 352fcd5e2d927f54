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

The pieces: settings and record ``train.toy_config``, data ``train.toy_data``, phase 1
``train.toy_vae``, warm-up, EMA, Min-SNR weights and the saved sampler ``train.toy_schedule``;
their public names are importable from here too. This module holds the run itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from diffparts.model.build import SDComponents, build_components, caption_words, save_components
from diffparts.train.toy_config import (QUICK_ARCH, QUICK_CONFIG, TOY_ARCH, ToyTrainConfig, TrainResult, _config_dict,
                                        _result_dict, quick_config)
from diffparts.train.toy_data import _flip, _text_ids, load_corpus_images, to_tensor
from diffparts.train.toy_schedule import _EMA, _inference_scheduler, _warmup, min_snr_weights
from diffparts.train.toy_vae import encode_posteriors, psnr_db, train_vae

__all__ = [
    "QUICK_ARCH", "QUICK_CONFIG", "TOY_ARCH", "ToyTrainConfig", "TrainResult", "encode_posteriors",
    "load_corpus_images", "min_snr_weights", "psnr_db", "quick_config", "to_tensor", "train_toy", "train_vae",
]


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
            from diffparts.corpus.synth_caption import PART_WORLD_WORDS
        except ImportError:  # an older corpus module without the constants
            CAPTION_WORDS = PART_WORLD_WORDS = ()
        base = PART_WORLD_WORDS if config.vocabulary == "parts" else CAPTION_WORDS
        words = list(dict.fromkeys([*base, *caption_words(captions)]))
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
        record = {"final": final, "config": _config_dict(config), "corpus": str(corpus), **_result_dict(result)}
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
