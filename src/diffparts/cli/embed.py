"""``diffparts embed``: one learned text embedding per part category (docs/design.md §5.6 "Part embeddings")."""

from __future__ import annotations

import argparse
import json


def _categories(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"categories must be comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("no categories given")
    return values


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "embed",
        help="learn a text embedding <part-k> per part category (textual inversion)",
        description=(
            "Run the train-part-embeddings flow on a store whose parts stage has finished: for every part "
            "category k (or --categories) learn the placeholder token <part-k> on the training images that "
            "contain k, with k's discovered mask (never ground truth; the corpus's test split, or a seeded "
            "half for a folder, is held out). Losses: noise (noise-estimation loss masked to the part), "
            "noise-unmasked, attention (Hedlin et al.: the token's cross-attention regressed onto a Gaussian "
            "at the part), combined (masked noise + 0.01 x attention onto the mask), or all. Only the new "
            "embedding rows learn. Files: <store>.embeddings/<loss>/part-<k>.safetensors (diffusers' "
            "textual-inversion format: pipe.load_textual_inversion(path, token='<part-k>')) and index.json; "
            "store: embeddings/<loss>/. Finished categories are skipped; an interrupted one resumes from its "
            "checkpoint. Refuses a store whose parts stage is not done."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--store", required=True, help="the Zarr store (after extract, segment and parts)")
    parser.add_argument("--model", default=None,
                        help="hub id or diffusers folder; default: the model the store was extracted with")
    parser.add_argument("--corpus", default=None, help="corpus folder; default: the store manifest's")
    parser.add_argument("--loss", default="noise", choices=["noise", "noise-unmasked", "attention", "combined", "all"],
                        help="training objective")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per category")
    parser.add_argument("--categories", type=_categories, default=None,
                        help="comma-separated part categories (1..K); default: all")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: InversionConfig's)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per micro-batch")
    parser.add_argument("--accumulate", type=int, default=None, help="micro-batches per step (gradient accumulation)")
    parser.add_argument("--num-vectors", type=int, default=None, help="vectors per token (multi-vector form)")
    parser.add_argument("--initializer", default=None, help="initial word of every vector (default: bird)")
    parser.add_argument("--template", default=None, help="training prompt with {token} (default: 'a photo of a bird with {token}')")
    parser.add_argument("--seed", type=int, default=None, help="seed of every draw (images, timesteps, noise, crops)")
    parser.add_argument("--out", default=None, help="folder for the files; default: <store>.embeddings")
    parser.add_argument("--device", default="cpu", help="torch device (cuda for a GPU)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="model dtype; the token's rows always train in float32")
    parser.add_argument("--max-workers", type=int, default=2, help="threads of the default task runner")
    parser.add_argument("--dask-address", default=None, help="run the tasks on this Dask scheduler")
    parser.add_argument("--dask-workers", type=int, default=None, help="start a local Dask cluster of N workers")
    parser.add_argument("--no-pictures", action="store_true", help="skip the per-category pictures")
    parser.add_argument("--measure", action="store_true",
                        help="also measure the tokens on the held-out images (explains / localises / generates)")
    parser.set_defaults(handler=run_embed)


def run_embed(args) -> int:
    from flows.embeddings import train_part_embeddings

    names = {"lr": "learning_rate", "batch_size": "batch_size", "accumulate": "gradient_accumulation",
             "num_vectors": "num_vectors", "initializer": "initializer", "template": "template", "seed": "seed"}
    config = {field: getattr(args, arg) for arg, field in names.items() if getattr(args, arg) is not None}
    result = train_part_embeddings(
        args.store, model=args.model, corpus=args.corpus, loss=args.loss, steps=args.steps,
        categories=args.categories, config=config, out_dir=args.out, max_workers=args.max_workers,
        dask_address=args.dask_address, dask_workers=args.dask_workers, device=args.device, dtype=args.dtype,
        pictures=not args.no_pictures, measure=args.measure)
    print(json.dumps(result, indent=1, default=str))
    return 1 if result["failed"] else 0
