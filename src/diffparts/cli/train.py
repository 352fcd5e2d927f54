"""``diffparts train-toy``: train the embedded toy checkpoint from scratch (docs/design.md §4 "The embedded default")."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train-toy",
        help="train the small Stable-Diffusion-format toy model on synthetic birds",
        description=(
            "Train an AutoencoderKL, a UNet2DConditionModel (self- and cross-attention at 16x16 "
            "and 8x8), a small CLIP text encoder and a CLIP tokenizer learned on the captions, "
            "from scratch on synthetic birds, and save them as a diffusers Stable Diffusion "
            "folder (safetensors only) with training.json. Deterministic for a seed and step "
            "counts; --budget-minutes stops each phase early and training.json records the "
            "steps actually run (pass them as --vae-steps/--unet-steps to reproduce)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output model folder (created or overwritten)")
    parser.add_argument("--corpus", default=None,
                        help="synthetic-bird corpus folder (CUB layout); generated there with "
                             "--n-images and --seed when it has no images.txt; default: a "
                             "temporary folder, deleted afterwards")
    parser.add_argument("--n-images", type=int, default=4000, help="birds to generate when the corpus is made here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus and of training")
    parser.add_argument("--vae-steps", type=int, default=None, help="VAE steps (default: the config's)")
    parser.add_argument("--unet-steps", type=int, default=None, help="UNet + text-encoder steps (default: the config's)")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="wall-clock budget for training both phases (the VAE may use "
                             "--vae-fraction of it); default: no budget, step counts only")
    parser.add_argument("--vae-fraction", type=float, default=None, help="share of the budget for the VAE")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--checkpoint-minutes", type=float, default=None,
                        help="write the folder this often during UNet training")
    parser.add_argument("--init-from", default=None,
                        help="continue from a folder train-toy saved: keep its VAE and tokenizer "
                             "(no VAE phase), train its UNet and text encoder further; same --seed")
    parser.add_argument("--unet-batch-size", type=int, default=None, help="latents per UNet step")
    parser.add_argument("--unet-lr", type=float, default=None, help="UNet + text-encoder learning rate")
    parser.add_argument("--ema-decay", type=float, default=None, help="EMA decay of the saved weights")
    parser.add_argument("--snr-gamma", type=float, default=None,
                        help="Min-SNR loss weighting min(SNR, gamma)/SNR (e.g. 5); default: plain MSE")
    parser.add_argument("--world", choices=("birds", "parts"), default="birds",
                        help="birds: the default synthetic birds; parts: the part world (captions naming "
                             "every part, part close-ups, scenes; docs/corpus.md \"The part world\"), "
                             "with its words in the tokenizer and 77 text positions")
    parser.add_argument("--quick", action="store_true",
                        help="seconds-long smoke setting: 32 px tiny model, 3 + 3 steps (for tests)")
    parser.set_defaults(handler=run_train_toy)


def run_train_toy(args) -> int:
    import shutil
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from diffparts.corpus import generate_birds
    from diffparts.corpus.synth_world import PartWorldConfig
    from diffparts.train.card import TEMPORARY_CORPUS_PREFIX
    from diffparts.train.toy import QUICK_CONFIG, ToyTrainConfig, train_toy
    from diffparts.train.toy_config import PARTS_ARCH

    config = QUICK_CONFIG if args.quick else ToyTrainConfig()
    overrides = {"seed": args.seed, "threads": args.threads}
    if args.world == "parts":
        overrides["vocabulary"] = "parts"
        overrides["arch"] = replace(config.arch, max_length=PARTS_ARCH.max_length)
    if args.vae_steps is not None:
        overrides["vae_steps"] = args.vae_steps
    if args.unet_steps is not None:
        overrides["unet_steps"] = args.unet_steps
    if args.budget_minutes is not None:
        overrides["budget_s"] = 60.0 * args.budget_minutes
    if args.vae_fraction is not None:
        overrides["vae_budget_fraction"] = args.vae_fraction
    if args.checkpoint_minutes is not None:
        overrides["checkpoint_every_s"] = 60.0 * args.checkpoint_minutes
    for name in ("init_from", "unet_batch_size", "unet_lr", "ema_decay", "snr_gamma"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    config = replace(config, **overrides)
    if args.n_images <= config.n_val:
        raise ValueError(f"--n-images {args.n_images} must exceed the {config.n_val} held-out images")

    temporary = args.corpus is None
    corpus = Path(tempfile.mkdtemp(prefix=TEMPORARY_CORPUS_PREFIX)) if temporary else Path(args.corpus)
    try:
        if not (corpus / "images.txt").is_file():
            world = PartWorldConfig() if args.world == "parts" else None
            print(f"generating {args.n_images} {'part-world images' if world else 'synthetic birds'} "
                  f"(seed {args.seed}) in {corpus}", flush=True)
            generate_birds(corpus, args.n_images, args.seed, world=world)
        if (corpus / "image_kinds.txt").is_file() and args.world != "parts":
            raise ValueError(f"{corpus} is a part-world corpus (it has image_kinds.txt): pass --world parts")
        result = train_toy(corpus, args.out, config, log=lambda msg: print(msg, flush=True))
    finally:
        if temporary:
            shutil.rmtree(corpus, ignore_errors=True)
    print(
        f"saved {result.path}: VAE {result.vae_steps} steps (PSNR {result.vae_psnr_db:.2f} dB), "
        f"UNet {result.unet_steps} steps (loss {result.unet_loss:.4f}, val {result.unet_val_loss:.4f}), "
        f"{result.vae_seconds + result.unet_seconds:.0f} s"
    )
    return 0
