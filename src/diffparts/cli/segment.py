"""``diffparts segment``: nested segments of every image of a store (docs/design.md §5.2-5.4)."""

from __future__ import annotations

import argparse
import json


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment every image of a store into nested levels (DiffSeg or random-walk NCut)",
        description=(
            "Run the segment-dataset flow on a store whose attention is extracted: every image with "
            "attention and no finished segments is segmented into nested levels (level 0 = finest) "
            "written to segments/ (labels, segment counts, parent of every segment = HSG transition "
            "matrices, done markers); finished images are skipped. DiffSeg (Tian et al.): a threshold "
            "sweep of the KL merge; thresholds 'auto' are picked from the KL distances of a sample of "
            "images and stored with the segments, 'sd' is the reference 1.1. NCut (Ivanova et al.): "
            "recursive random-walk Normalised Cuts with constant or automatic tau. With --corpus (or "
            "the manifest's corpus) part masks give Hungarian mIoU, pixel accuracy and NFCovering. "
            "Prints a JSON summary; the flow also publishes Prefect table artifacts."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--store", required=True, help="the Zarr store (after `diffparts extract`)")
    parser.add_argument("--method", choices=("diffseg", "ncut"), default="ncut", help="segmenter")
    dseg = parser.add_argument_group("DiffSeg")
    dseg.add_argument("--thresholds", default="auto",
                      help="KL threshold: 'auto' (from the data), a preset ('sd' = 1.1, 'cityscapes' = 0.9) "
                           "or numbers, e.g. 0.02 or 0.02,0.02,0.02")
    dseg.add_argument("--rule", choices=("quantile", "otsu"), default="quantile",
                      help="rule of --thresholds auto: a quantile of anchor-to-query KL distances, or "
                           "Otsu's threshold of their logarithm")
    dseg.add_argument("--quantile", type=float, default=0.2, help="quantile of the 'quantile' rule")
    dseg.add_argument("--sample", type=int, default=16, help="images the auto rule looks at")
    dseg.add_argument("--levels", type=_floats, default=None,
                      help="thresholds of the hierarchy levels, finest first (default: auto: the quantiles "
                           "F(t) x 1,1.5,2.5,4 of the KL distances; fixed t: t,2t,4t,8t)")
    dseg.add_argument("--rounds", type=int, default=3, help="merge rounds (reference: 3)")
    dseg.add_argument("--anchors", type=int, default=16, help="anchors per side of the grid")
    ncut = parser.add_argument_group("NCut")
    ncut.add_argument("--tau", type=float, default=None,
                      help="constant NCut stop value (NCutConfig.tau); implies --tau-mode constant")
    ncut.add_argument("--tau-mode", choices=("constant", "auto"), default=None, help="constant tau or the eigengap rule")
    ncut.add_argument("--walk-steps", type=int, default=None, help="k of the k-step random walk P^k")
    ncut.add_argument("--affinity", choices=("random_walk", "cosine"), default=None, help="NCut affinity")
    ncut.add_argument("--max-depth", type=int, default=None, help="deepest cut (levels stored)")
    parser.add_argument("--out-size", type=int, default=None,
                        help="side of the stored label maps (default: the image size of the attention)")
    parser.add_argument("--corpus", default=None, help="corpus with part masks to score against")
    parser.add_argument("--names", action="store_true", help="name level-0 segments from cross-attention words")
    parser.add_argument("--batch-size", type=int, default=8, help="images per task")
    parser.add_argument("--workers", type=int, default=2, help="threads of the task runner")
    parser.add_argument("--dask-address", default=None, help="run the tasks on this Dask scheduler")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete segments made with other settings and redo them")
    parser.set_defaults(handler=run_segment)


def run_segment(args) -> int:
    from diffparts.cli.failures import report_failures
    from flows.segment import segment_dataset

    tau_mode = args.tau_mode or ("constant" if args.tau is not None else None)
    ncut = {k: v for k, v in {"tau": args.tau, "tau_mode": tau_mode, "walk_steps": args.walk_steps,
                              "affinity": args.affinity, "max_depth": args.max_depth}.items() if v is not None}
    result = segment_dataset(
        args.store, method=args.method, thresholds=args.thresholds, rule=args.rule, quantile=args.quantile,
        level_thresholds=args.levels, rounds=args.rounds, anchors_per_side=args.anchors, sample=args.sample,
        ncut=ncut, out_size=args.out_size, corpus=args.corpus, names=args.names, batch_size=args.batch_size,
        max_workers=args.workers, dask_address=args.dask_address, overwrite=args.overwrite,
    )
    print(json.dumps(result, indent=1, default=str))
    if result.get("failed", 0):
        report_failures(args.store, ("segments",))
    return 0 if result.get("failed", 0) == 0 else 1
