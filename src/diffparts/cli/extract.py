"""``diffparts extract``: attention of every corpus image into a Zarr store (docs/design.md §5.1, §6).

Registration imports nothing heavy; the handler imports the Prefect flow (flows/extract.py).
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract diffusion attention of a corpus into a Zarr store",
        description=(
            "Run the extract-attention Prefect flow: every image of the corpus through the "
            "diffusion model once (clean latent at --timestep, --prompt, no guidance), DiffSeg-"
            "aggregated self- and cross-attention written to the store, one chunk per image. "
            "Re-running skips finished images (done markers); new images in the corpus are "
            "appended and processed alone; a different model or setting is refused unless "
            "--new-version starts version group versions/<n> in the same store."
        ),
    )
    parser.add_argument("--corpus", required=True, metavar="DIR",
                        help="CUB-layout folder (with images.txt) or a folder of images")
    parser.add_argument("--model", default=None, metavar="ID_OR_PATH",
                        help="hub id or diffusers folder (default: the embedded toy checkpoint)")
    parser.add_argument("--store", required=True, metavar="PATH", help="Zarr store (local path or fsspec URL)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="images per UNet forward, one task each (default 4)")
    parser.add_argument("--timestep", type=int, default=300, metavar="T", help="diffusion timestep (default 300, DiffSeg's)")
    parser.add_argument("--prompt", default="", help="prompt for the cross-attention (default: empty, DiffSeg's)")
    parser.add_argument("--precision", choices=("float16", "uint8", "uint8-log"), default="float16",
                        help="storage of self-attention: float16, or uint8 per key map with a scale (linear, "
                             "or log-spaced: keeps small values for DiffSeg's KL) (default float16)")
    parser.add_argument("--keep-attention", action=argparse.BooleanOptionalAction, default=None,
                        help="keep the full (image, qy, qx, ky, kx) self-attention at --precision (needed to "
                             "re-segment with other settings); --no-keep-attention: a compact store (segments and "
                             "pooled attention written right after the forward); default: compact when one "
                             "image's tensor exceeds 8 MiB (SD's 64 x 64), kept below (docs/store.md)")
    parser.add_argument("--max-workers", type=int, default=2, metavar="N",
                        help="threads of the default task runner (default 2)")
    dask = parser.add_mutually_exclusive_group()
    dask.add_argument("--dask-address", default=None, metavar="TCP_URL",
                      help="run the batches on this Dask scheduler (tcp://host:8786)")
    dask.add_argument("--dask-workers", type=int, default=None, metavar="N",
                      help="run the batches on a local Dask cluster of N single-thread workers")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu; with cuda, Dask workers get GPU=1 resources, and the "
                             "workers of --dask-workers each their own GPU, cuda:<worker number>)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="model dtype (default float32)")
    parser.add_argument("--new-version", action="store_true",
                        help="if the store was written with another model, config, device kind, dtype or "
                             "batch size, start versions/<n> in it")
    parser.add_argument("--lock-stale-s", type=float, default=600.0, metavar="S",
                        help="take over a set-up lock older than S seconds (default 600; a lock whose holder "
                             "on this host is gone is taken over at once)")
    feats = parser.add_argument_group("UNet features (DIFT) for dense correspondence, stored in features/")
    feats.add_argument("--features", action=argparse.BooleanOptionalAction, default=True,
                       help="also store up-block features (default block: DIFT's up_blocks[1] adapted to the "
                            "model, from the attention forward itself); --no-features: attention only (stores "
                            "extracted before issue 14 have none: extend them with --no-features)")
    feats.add_argument("--feature-blocks", type=int, nargs="+", default=None, metavar="I",
                       help="up_blocks indices to store (default: the block at half the latent side, else the nearest)")
    feats.add_argument("--feature-timestep", type=int, default=None, metavar="T",
                       help="timestep of the features (default: --timestep, same forward)")
    feats.add_argument("--feature-noise-samples", type=int, default=0, metavar="N",
                       help="noised latents averaged in extra forwards (DIFT: 8); 0 = the attention forward")
    feats.add_argument("--feature-prompt", default=None, help="prompt of the feature forwards (default: --prompt)")
    limits = parser.add_argument_group("what the corpus reader refuses (the image becomes a named failure)")
    limits.add_argument("--max-file-mb", type=float, default=None, metavar="MB",
                        help="largest image file read (default: ReadLimits' 256 MiB)")
    limits.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="largest width x height decoded, checked on the header (default: ReadLimits' 40 M)")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")
    parser.set_defaults(handler=run_extract)


def feature_settings(args) -> dict | None:
    """FeatureConfig fields from the --feature-* options (None without --features)."""
    if not args.features:
        return None
    out = {"noise_samples": args.feature_noise_samples}
    for key, value in (("blocks", args.feature_blocks), ("timestep", args.feature_timestep),
                       ("prompt", args.feature_prompt)):
        if value is not None:
            out[key] = value
    return out


def read_limits(args) -> dict | None:
    """ReadLimits fields from --max-file-mb / --max-pixels (None: the defaults)."""
    out = {}
    if args.max_file_mb is not None:
        out["max_file_bytes"] = int(args.max_file_mb * 2**20)
    if args.max_pixels is not None:
        out["max_pixels"] = args.max_pixels
    return out or None


def run_extract(args) -> int:
    from diffparts.cli.failures import report_failures
    from diffparts.pipeline import check_run_inputs

    check_run_inputs(args.corpus, args.store, None, ["extract"])   # before Prefect starts; nothing written
    from flows.extract import extract_attention

    summary = extract_attention(
        corpus=args.corpus,
        model=args.model,
        store=args.store,
        batch_size=args.batch_size,
        timestep=args.timestep,
        prompt=args.prompt,
        precision=args.precision,
        max_workers=args.max_workers,
        dask_address=args.dask_address,
        dask_workers=args.dask_workers,
        device=args.device,
        dtype=args.dtype,
        new_version=args.new_version,
        features=feature_settings(args),
        limits=read_limits(args),
        lock_stale_s=args.lock_stale_s,
        keep_attention=args.keep_attention,
    )
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{summary['written']} images extracted, {summary['skipped']} skipped (done before), "
            f"{summary['failed']} failed; {summary['stored_bytes'] / 1e6:.2f} MB written to "
            f"{summary['store']} (version {summary['version']}) in {summary['seconds']:.1f} s"
        )
    if summary["failed"]:
        report_failures(summary["store"], ("attention",))
    return 0 if summary["failed"] == 0 else 1
