"""``diffparts run``: the whole pipeline (extract -> segment -> parts -> embeddings -> occlusion)."""

from __future__ import annotations

import argparse
import json

from diffparts.pipeline import STAGE_ALIASES  # cheap: no torch, no Prefect (--help stays instant)
from diffparts.pipeline import STAGES as STAGE_NAMES


def stage_name(text: str) -> str:
    """A stage's name from itself or an alias (``embed`` -> ``embeddings``, ``occlude`` -> ``occlusion``)."""
    return STAGE_ALIASES.get(text, text)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the five stages as one pipeline (finished work is skipped)",
        description=(
            "Run the bird-parts flow: extract -> segment -> parts -> embeddings -> occlusion, each a subflow "
            "that skips its finished work, so a re-run after a crash, or on a corpus that grew, does only the "
            "new work (a grown corpus re-clusters the parts; the stages that read the categories then redo "
            "themselves, and say so). Each stage's line is printed as it finishes; at the end, the path of a "
            "self-contained HTML report (also linked from the dashboard's summary artifact). How long: with the "
            "defaults, 48 synthetic birds take about 16 minutes on 2 CPU cores, most of it the embeddings "
            "(--embed-steps) and occlusion (--occlusion-cases) stages; `make demo`'s settings (--embed-steps 60 "
            "--occlusion-cases 8) about 2 minutes (docs/pipeline.md)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--corpus", required=True, metavar="DIR", help="CUB-layout folder or a folder of images")
    parser.add_argument("--store", required=True, metavar="PATH", help="the Zarr store (created if missing)")
    parser.add_argument("--model", default=None, metavar="ID_OR_PATH",
                        help="hub id or diffusers folder (default: the embedded checkpoint)")
    stage = {"type": stage_name, "choices": STAGE_NAMES, "default": None}
    parser.add_argument("--from-stage", **stage, help="first stage to run (default: extract; `embed` and `occlude`, "
                                                      "the commands' names, work too)")
    parser.add_argument("--to-stage", **stage, help="last stage to run (default: occlusion)")
    parser.add_argument("--force", **stage, metavar="STAGE",
                        help="redo this stage and every stage after it (their results are cleared first)")
    parser.add_argument("--method", choices=("diffseg", "ncut"), default="ncut", help="segmenter")
    parser.add_argument("--k", type=int, default=None, help="part categories (default: the clusterer's fixed K)")
    parser.add_argument("--features", action=argparse.BooleanOptionalAction, default=True,
                        help="also store UNet features (DIFT) for the part descriptors and keypoint transfer")
    parser.add_argument("--keep-attention", action=argparse.BooleanOptionalAction, default=None,
                        help="keep the full self-attention tensor (needed to re-segment with other settings); "
                             "--no-keep-attention: a compact store, segmented right after the forward; default: "
                             "compact when one image's tensor exceeds 8 MiB (SD's 64 x 64), kept below")
    parser.add_argument("--embed-loss", default="noise", choices=("noise", "noise-unmasked", "attention", "combined", "all"),
                        help="textual-inversion objective of the embeddings stage")
    parser.add_argument("--embed-steps", type=int, default=300, help="optimiser steps per part token")
    parser.add_argument("--occlusion-cases", type=int, default=50, help="held-out occlusion cases")
    parser.add_argument("--device", default="cpu", help="torch device (cuda for a GPU)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32", help="model dtype")
    parser.add_argument("--extract-batch-size", type=int, default=4, help="images per UNet forward (part of the store's identity)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per segment task")
    parser.add_argument("--max-workers", type=int, default=2, help="threads of the default task runner")
    dask = parser.add_mutually_exclusive_group()
    dask.add_argument("--dask-address", default=None, metavar="TCP_URL", help="run the tasks on this Dask scheduler")
    dask.add_argument("--dask-workers", type=int, default=None, metavar="N", help="start a local Dask cluster of N workers")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the keypoint scores of the parts stage")
    parser.add_argument("--no-report", action="store_true", help="write no HTML report")
    parser.add_argument("--synthetic-birds", type=int, default=None, metavar="N",
                        help="when --corpus does not exist, render N synthetic birds there first")
    parser.add_argument("--json", action="store_true", help="print the run's records as JSON at the end")
    parser.set_defaults(handler=run_pipeline)


def run_pipeline(args) -> int:
    from diffparts.pipeline import check_run_inputs, select_stages

    # bad input is refused here, before Prefect starts (fast, and nothing is written); the flow checks again
    check_run_inputs(args.corpus, args.store, args.synthetic_birds, select_stages(args.from_stage, args.to_stage))
    from flows.pipeline import bird_parts

    result = bird_parts(
        corpus=args.corpus, store=args.store, model=args.model, from_stage=args.from_stage,
        to_stage=args.to_stage, force=args.force, method=args.method, k=args.k, features=args.features, keep_attention=args.keep_attention,
        embed_loss=args.embed_loss, embed_steps=args.embed_steps, occlusion_cases=args.occlusion_cases,
        device=args.device, dtype=args.dtype, extract_batch_size=args.extract_batch_size,
        batch_size=args.batch_size, max_workers=args.max_workers, dask_address=args.dask_address,
        dask_workers=args.dask_workers, evaluate=not args.no_evaluate, report=not args.no_report,
        synthetic_birds=args.synthetic_birds, echo=True,
    )
    from diffparts.pipeline import summary_lines

    print("\n".join(summary_lines(result, "diffparts run: " + ", ".join(
        r["name"] for r in result["stages"] if r["status"] != "not run"))))
    if any(r["summary"].get("failed") for r in result["stages"]):
        print(f"some work failed and is redone by the next run; why: diffparts failures --store {args.store}")
    if args.json:
        print(json.dumps(result, default=str))
    # a failed stage raised above; exit 1 when a stage finished but left images, tokens or cases
    # failed (as `diffparts extract` does), so a script or scheduler sees it
    return 1 if any(r["summary"].get("failed") for r in result["stages"]) else 0
