"""Seconds per textual-inversion step: each diffparts loss vs a plain loop in the style of
diffusers' ``examples/textual_inversion/textual_inversion.py``, same model, batch and steps,
one process, side by side; prints JSON (issue 10, Speed).

The peer loop, as that script writes it (without accelerate): the whole token-embedding matrix
is the optimiser's parameter (AdamW, weight decay 1e-2), the VAE encodes the batch every step
(``latent_dist.sample()``), the text encoder runs in train mode, the unmasked MSE is taken, and
after every step every row but the new token's is copied back from a saved copy of the matrix.
diffparts' losses: ``noise`` (masked), ``noise-unmasked``, ``attention`` (with Hedlin's random
crops, so the VAE runs every step too; ``attention (no crops)`` shows the capture alone) and
``combined``. The attention loss's capture should cost at most 1.3x the noise loss's step.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_inversion.py --steps 40 --batch-size 4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def load_examples(n: int, seed: int, size: int):
    """``n`` synthetic birds at ``size`` px with their true head mask (a stand-in part mask)."""
    from diffparts.corpus import SynthConfig, generate_birds, load_mask, load_rgb, open_corpus
    from diffparts.inversion.data import CategoryExamples, resize_mask
    from diffparts.model.extract import prepare_images

    folder = generate_birds(Path(tempfile.mkdtemp(prefix="bench-inv-")) / "birds", n=n, seed=seed,
                            config=SynthConfig(image_size=size))
    records = list(open_corpus(folder))
    images = np.stack([prepare_images(load_rgb(r.path)[None], size)[0] for r in records])
    parts = [load_mask(r.part_mask_path) for r in records]          # 1 head, 2 beak, 3 eye
    masks = np.stack([resize_mask((p > 0) & (p <= 3), size) for p in parts])
    return CategoryExamples(1, np.arange(n), images, masks.astype(np.float32))


def peer_loop(pipe, examples, steps: int, batch: int, lr: float, seed: int) -> list[float]:
    """diffusers' textual_inversion.py training step, written out; seconds of each step."""
    import torch
    import torch.nn.functional as F

    from diffparts.inversion.train import training_scheduler

    tok, te, unet, vae = pipe.tokenizer, pipe.text_encoder, pipe.unet, pipe.vae
    tok.add_tokens(["<peer>"])
    init = tok.encode("bird", add_special_tokens=False)[0]
    te.resize_token_embeddings(len(tok))
    token_id = tok.convert_tokens_to_ids("<peer>")
    embeds = te.get_input_embeddings().weight
    with torch.no_grad():
        embeds[token_id] = embeds[init].clone()
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    te.requires_grad_(False)
    te.get_input_embeddings().requires_grad_(True)
    te.train()
    optimizer = torch.optim.AdamW(te.get_input_embeddings().parameters(), lr=lr, betas=(0.9, 0.999),
                                  weight_decay=1e-2, eps=1e-8)
    orig = te.get_input_embeddings().weight.data.clone()
    scheduler = training_scheduler(pipe)
    ids = tok("a photo of a bird with <peer>", padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="pt").input_ids
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.from_numpy(examples.images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        idx = torch.randint(len(pixels), (batch,), generator=gen)
        latents = vae.encode(pixels[idx]).latent_dist.sample(generator=gen).detach() * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        hidden = te(ids.repeat(batch, 1))[0]
        pred = unet(noisy, timesteps, hidden).sample
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        keep = torch.ones((len(tok),), dtype=torch.bool)
        keep[token_id] = False
        with torch.no_grad():
            te.get_input_embeddings().weight[keep] = orig[keep]
        times.append(time.perf_counter() - t0)
    return times


def ours(pipe, examples, loss: str, steps: int, batch: int, lr: float, seed: int, crops=None) -> list[float]:
    from diffparts.inversion.train import InversionConfig, train_token

    times, last = [], [time.perf_counter()]

    def tick(step, total, value):
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
    config = InversionConfig(loss=loss, steps=steps, batch_size=batch, learning_rate=lr, seed=seed,
                             crops=crops, checkpoint_every=0)
    train_token(pipe, examples, "<part-1>", config, progress=tick)
    return times


def main() -> None:
    import torch

    from diffparts.model.load import load_pipeline

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default: the embedded checkpoint")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=5, help="first steps left out of the median")
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from diffparts.model.extract import native_image_size

    size = native_image_size(load_pipeline(args.model))
    examples = load_examples(16, 7, size)
    arms = [("peer: diffusers textual_inversion.py loop", lambda p: peer_loop(p, examples, args.steps,
                                                                              args.batch_size, args.lr, args.seed))]
    for loss in ("noise", "noise-unmasked", "attention", "combined"):
        arms.append((loss, lambda p, loss=loss: ours(p, examples, loss, args.steps, args.batch_size, args.lr,
                                                     args.seed)))
    arms.append(("attention (no crops)", lambda p: ours(p, examples, "attention", args.steps, args.batch_size,
                                                        args.lr, args.seed, crops=False)))
    out = {"model": str(args.model or "embedded"), "batch_size": args.batch_size, "steps": args.steps,
           "torch_threads": torch.get_num_threads(), "arms": {}}
    for name, run in arms:
        pipe = load_pipeline(args.model)                          # a fresh pipeline per arm
        times = run(pipe)[args.warmup:]
        out["arms"][name] = {"median_s_per_step": round(float(np.median(times)), 5),
                             "mean_s_per_step": round(float(np.mean(times)), 5)}
    med = {k: v["median_s_per_step"] for k, v in out["arms"].items()}
    peer = med["peer: diffusers textual_inversion.py loop"]
    out["ratios"] = {"noise-unmasked / peer": round(med["noise-unmasked"] / peer, 3),
                     "noise / peer": round(med["noise"] / peer, 3),
                     "attention / noise": round(med["attention"] / med["noise"], 3),
                     "attention (no crops) / noise": round(med["attention (no crops)"] / med["noise"], 3),
                     "combined / noise": round(med["combined"] / med["noise"], 3)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
