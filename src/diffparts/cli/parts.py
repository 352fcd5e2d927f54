"""``diffparts parts`` and ``diffparts transfer``: part categories across a store (docs/design.md §5.5 "Parts")."""

from __future__ import annotations

import argparse
import json

#: ``diffparts.parts.transfer.METHODS`` (spelled out: registration imports nothing heavy).
METHOD_CHOICES = ("auto", "parts", "features", "features-box", "features-part")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "parts",
        help="cluster the segments of every image into part categories consistent across the dataset",
        description=(
            "Run the discover-parts flow on a store whose segment stage has finished: describe every "
            "segment (binned self-attention in the object box, position, size), cluster all segments "
            "of the dataset into K part categories with a streaming k-means over Zarr blocks "
            "(background = category 0), write per-pixel maps parts/labels, per-category prevalence, "
            "an overlay grid and a crop gallery per category (PNG, also Prefect artifacts) and, where "
            "the corpus has keypoints, NMI/ARI at keypoints and PCK@0.05/0.1 over same-class pairs. "
            "Refuses to run while any image's segmentation is unfinished."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--store", required=True, help="the Zarr store (after extract and segment)")
    parser.add_argument("--k", type=_k_value, default=None,
                        help="foreground part categories, or 'auto' (silhouette on a fixed sample, 3..12; it "
                             "picks the smallest K on bird parts); default: ClusterConfig's fixed K (8, chosen "
                             "on validation birds)")
    parser.add_argument("--corpus", default=None,
                        help="corpus folder (boxes, keypoints, classes, pictures); default: the store manifest's")
    parser.add_argument("--level", type=int, default=0, help="segment hierarchy level described (0 = finest)")
    parser.add_argument("--out", default=None, help="folder for the PNGs; default: <store>.parts")
    parser.add_argument("--max-pairs", type=int, default=2000, help="same-class pairs drawn for PCK")
    parser.add_argument("--seed", type=int, default=0, help="seed of the clustering and of the pairs")
    parser.add_argument("--no-eval", action="store_true", help="skip NMI/ARI/PCK even if keypoints exist")
    parser.add_argument("--method", choices=METHOD_CHOICES, default="auto",
                        help="keypoint transfer scored by PCK (see `diffparts transfer --help`)")
    parser.set_defaults(handler=run_parts)

    transfer = subparsers.add_parser(
        "transfer",
        help="transfer the keypoints of one image to another through the part categories",
        description=(
            "After `diffparts parts`: move each visible keypoint of the source image to the target "
            "image (same part category: same relative place in the part's box, snapped into the part; "
            "background or a category the target lacks: same relative place in the object box). "
            "Prints JSON: predicted points, categories used and, when the target has keypoints, the "
            "distances over max(w, h) of the target box and the pair's PCK@0.1."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    transfer.add_argument("--store", required=True, help="the Zarr store (after `diffparts parts`)")
    transfer.add_argument("--source", type=int, required=True, help="source image id (corpus image_id)")
    transfer.add_argument("--target", type=int, required=True, help="target image id (corpus image_id)")
    transfer.add_argument("--corpus", default=None, help="corpus folder; default: the store manifest's")
    transfer.add_argument("--method", choices=METHOD_CHOICES, default="auto",
                          help="auto: features when the store has them, else parts; parts: relative position through the part categories; features: cosine nearest "
                               "neighbour of UNet features (DIFT) over the target image; features-box: inside the "
                               "target's object box; features-part: inside the corresponding part (the part decides "
                               "where, the features decide the point; relative position where the part is missing). "
                               "The feature methods need a store extracted with --features")
    transfer.set_defaults(handler=run_transfer)


def _k_value(text: str):
    if text == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k must be an integer or 'auto', got {text!r}") from None


def run_parts(args) -> int:
    import sys

    from diffparts.cli.failures import report_failures
    from flows.parts import discover_parts

    result = discover_parts(args.store, k=args.k, corpus=args.corpus, level=args.level, out_dir=args.out,
                            evaluate=not args.no_eval, max_pairs=args.max_pairs, seed=args.seed,
                            method=args.method)
    print(json.dumps(result, indent=1, default=str))
    if result.get("left_out"):
        print(f"{result['left_out']} images left out (an earlier stage failed on them):", file=sys.stderr)
        report_failures(args.store, ("attention", "segments"))
    return 0


def run_transfer(args) -> int:
    from diffparts.parts.dataset import load_infos
    from diffparts.parts.scoring import transfer_between
    from diffparts.store import open_store

    root = open_store(args.store)
    print(json.dumps(transfer_between(root, load_infos(root, args.corpus), args.source, args.target,
                                      method=args.method)))
    return 0
