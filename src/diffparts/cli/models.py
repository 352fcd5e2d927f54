"""``diffparts train-inpaint`` and ``diffparts train-judge``: the two models trained beside the
embedded checkpoint (docs/model.md): the toy inpainting checkpoint and the independent part judge."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    inp = subparsers.add_parser(
        "train-inpaint",
        help="fine-tune a 9-channel inpainting UNet from a 4-channel text-to-image model",
        description=(
            "Make an inpainting checkpoint as Stable Diffusion's were made: the UNet's conv_in gets "
            "5 zero-initialised input channels (mask + masked-image latent), then it is fine-tuned on "
            "synthetic birds with random masks (parts, boxes, strokes). VAE, text encoder and tokenizer "
            "are kept, so part tokens of the base model load into it. Saves a diffusers "
            "StableDiffusionInpaintPipeline folder (safetensors) with training.json."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    inp.add_argument("--out", required=True, help="output folder (created or overwritten)")
    inp.add_argument("--model", default=None, help="base text-to-image model (default: the embedded checkpoint)")
    inp.add_argument("--n-images", type=int, default=None, help="training birds (default: the config's)")
    inp.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the config's)")
    inp.add_argument("--batch-size", type=int, default=None, help="latents per step")
    inp.add_argument("--lr", type=float, default=None, help="learning rate")
    inp.add_argument("--masks-per-image", type=int, default=None, help="random masks per training bird")
    inp.add_argument("--outside-weight", type=float, default=None,
                     help="loss weight of the latent cells outside the mask (inside: 1)")
    inp.add_argument("--budget-minutes", type=float, default=None, help="wall-clock budget of the optimisation")
    inp.add_argument("--checkpoint-minutes", type=float, default=None, help="write the folder this often")
    inp.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    inp.add_argument("--seed", type=int, default=0, help="seed of masks, batches and noise")
    inp.add_argument("--quick", action="store_true", help="seconds-long smoke setting (tests)")
    inp.set_defaults(handler=run_train_inpaint)

    judge = subparsers.add_parser(
        "train-judge",
        help="train the independent part judge (a per-pixel part segmenter) on synthetic renders",
        description=(
            "Train a small fully convolutional part segmenter on synthetic birds with their true part "
            "masks (corpus seeds disjoint from every evaluation corpus), with occluders whose pixels are "
            "labelled 'no part'. For assessment only: it never feeds the pipeline. Saves judge.safetensors "
            "and judge.json (config, CPU seconds, held-out accuracy and IoU per part)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    judge.add_argument("--out", required=True, help="output folder (created)")
    judge.add_argument("--n-images", type=int, default=None, help="training birds (default: the config's)")
    judge.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the config's)")
    judge.add_argument("--budget-minutes", type=float, default=None, help="wall-clock budget of the optimisation")
    judge.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    judge.add_argument("--init-from", default=None, help="continue from a judge.safetensors (fresh optimiser)")
    judge.add_argument("--occluder-weight", type=float, default=None, help="loss weight of occluder pixels")
    judge.add_argument("--lr", type=float, default=None, help="peak learning rate")
    judge.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and augmentation")
    judge.add_argument("--world", choices=("birds", "parts"), default=None,
                       help="renders of the default birds, or of the part world (close-ups and scenes too)")
    judge.add_argument("--vae-model", default=None,
                       help="model whose VAE reconstructs the training images (default: the embedded checkpoint)")
    judge.add_argument("--occluder-fills", default=None,
                       help="comma-separated occluder fills (grey, noise, patch, flat, smooth, object: a leaf or a "
                            "branch; default: all but object)")
    judge.add_argument("--quick", action="store_true", help="seconds-long smoke setting (tests)")
    judge.set_defaults(handler=run_train_judge)


def _overrides(args, names: dict) -> dict:
    out = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    if getattr(args, "budget_minutes", None) is not None:
        out["budget_s"] = 60.0 * args.budget_minutes
    if getattr(args, "checkpoint_minutes", None) is not None:
        out["checkpoint_every_s"] = 60.0 * args.checkpoint_minutes
    return out


def _command_line(args, command: str, fields: tuple[str, ...]) -> str:
    """The command that reproduces ``args`` (the options given), for the card."""
    import shlex

    parts = [f"diffparts {command}"]
    for name in fields:
        value = getattr(args, name, None)
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        parts.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def run_train_inpaint(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from diffparts.train.inpaint import QUICK_INPAINT, InpaintTrainConfig, inpaint_card, loss_text, train_inpaint

    config = QUICK_INPAINT if args.quick else InpaintTrainConfig()
    config = replace(config, **_overrides(args, {"n_images": "n_images", "steps": "steps", "batch_size": "batch_size",
                                                  "lr": "lr", "threads": "threads", "seed": "seed",
                                                  "masks_per_image": "masks_per_image",
                                                  "outside_weight": "outside_weight"}))
    record = train_inpaint(args.model, args.out, config, log=lambda msg: print(msg, flush=True))
    command = _command_line(args, "train-inpaint", ("model", "out", "n_images", "steps", "batch_size", "lr",
                                                    "masks_per_image", "outside_weight", "budget_minutes",
                                                    "checkpoint_minutes", "threads", "seed", "quick"))
    (Path(args.out) / "README.md").write_text(inpaint_card(args.out, command))
    print(f"saved {args.out} (card: README.md): {record['steps']} steps in {record['seconds'] / 60:.1f} min; "
          f"held-out noise-prediction loss {loss_text(record['held_out_loss'], record['held_out_loss_4ch_start'])}")
    return 0


def run_train_judge(args) -> int:
    from dataclasses import replace

    from pathlib import Path

    from diffparts.judge.train import QUICK_JUDGE, JudgeTrainConfig, judge_card, train_judge

    config = QUICK_JUDGE if args.quick else JudgeTrainConfig()
    config = replace(config, **_overrides(args, {"n_images": "n_images", "steps": "steps", "threads": "threads",
                                                  "seed": "seed", "init_from": "init_from",
                                                  "occluder_weight": "occluder_weight", "lr": "lr",
                                                  "world": "world", "vae_model": "vae_model"}))
    if args.occluder_fills is not None:
        config = replace(config, occluder_fills=tuple(f.strip() for f in args.occluder_fills.split(",") if f.strip()))
    record = train_judge(args.out, config, log=lambda msg: print(msg, flush=True))
    command = _command_line(args, "train-judge", ("out", "init_from", "n_images", "steps", "lr", "occluder_weight",
                                                  "budget_minutes", "threads", "seed", "world", "vae_model", "occluder_fills",
                                                  "quick"))
    (Path(args.out) / "README.md").write_text(judge_card(args.out, command))
    print(f"saved {args.out}: {record['steps']} steps, held-out pixel accuracy {record['held_out']['pixel_accuracy']:.3f}, "
          f"part mIoU {record['held_out']['part_miou']:.3f}, {record['seconds']:.0f} s")
    return 0
