"""``diffparts corpus``: make the synthetic birds, describe a corpus.

Registration imports nothing heavy; the handlers import diffparts.corpus (numpy, Pillow).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "corpus",
        help="make the synthetic bird corpus or describe an image corpus",
        description="Image corpora: the synthetic birds (docs/design.md §4 \"The embedded default\"), CUB-200-2011 layout "
                    "folders and plain folders of images.",
    )
    sub = parser.add_subparsers(dest="corpus_command", metavar="SUBCOMMAND")
    sub.required = True

    synth = sub.add_parser(
        "synth",
        help="render N synthetic birds in the CUB-200-2011 layout",
        description="Render N synthetic birds (deterministic for a seed) into DIR in the "
                    "CUB-200-2011 layout, with part masks under part_segmentations/ and "
                    "captions.txt.",
    )
    synth.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    synth.add_argument("--n", type=int, default=200, metavar="N", help="number of images (default 200)")
    synth.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    synth.add_argument("--size", type=int, default=128, metavar="PX",
                       help="image side in pixels (default 128)")
    synth.add_argument("--classes", type=int, default=None, metavar="C",
                       help="number of species (default: all 16)")
    synth.add_argument("--world", choices=("birds", "parts"), default="birds",
                       help="birds: the default corpus; parts: the part world (captions naming every "
                            "visible part, part close-ups, scenes without a bird, part shape variants; "
                            "docs/corpus.md \"The part world\")")
    synth.add_argument("--closeup-share", type=float, default=None, metavar="F",
                       help="part world: share of part close-ups (default 0.25)")
    synth.add_argument("--scene-share", type=float, default=None, metavar="F",
                       help="part world: share of scenes without a bird (default 0.08)")
    synth.add_argument("--plain-share", type=float, default=None, metavar="F",
                       help="part world: share of close-ups captioned by the part alone, "
                            "\"a close-up of a bird head\" (default 0; the images are the same)")
    synth.set_defaults(handler=run_synth)

    info = sub.add_parser(
        "info",
        help="summarise a corpus folder (CUB layout or plain images)",
        description="Counts, classes, split sizes, part legend, image size range, and every file "
                    "that cannot be used, with the reason.",
    )
    info.add_argument("dir", metavar="DIR", help="CUB-layout folder (with images.txt) or image folder")
    info.add_argument("--min-size", type=int, default=None, metavar="PX",
                      help="smallest usable image side (default: the loader's, 16)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(handler=run_info)


def run_synth(args) -> int:
    from dataclasses import replace

    from diffparts.corpus import SynthConfig, generate_birds

    from diffparts.corpus.synth_world import PartWorldConfig

    config = SynthConfig(image_size=args.size)
    if args.classes is not None:
        config = replace(config, n_classes=args.classes)
    world = None
    if args.world == "parts":
        shares = {name: getattr(args, name) for name in ("closeup_share", "scene_share", "plain_share")
                  if getattr(args, name) is not None}
        world = PartWorldConfig(**shares)
    elif any(getattr(args, name) is not None for name in ("closeup_share", "scene_share", "plain_share")):
        raise ValueError("--closeup-share / --scene-share / --plain-share need --world parts")
    out = generate_birds(args.out, args.n, args.seed, config, world)
    what = "synthetic birds" if world is None else "part-world images"
    print(f"wrote {args.n} {what} ({args.size} px, seed {args.seed}) to {out}")
    return 0


def summarise(path, min_size: int | None = None) -> dict:
    """The summary ``diffparts corpus info`` prints, as a dict."""
    from pathlib import Path

    from diffparts.corpus import CubDataset, iter_images, open_corpus
    from diffparts.corpus.imageio import DEFAULT_MIN_SIZE

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    corpus = open_corpus(path)
    records = list(corpus)
    summary: dict = {"path": str(path.resolve()),
                     "layout": "cub" if isinstance(corpus, CubDataset) else "folder",
                     "images": len(records)}
    if isinstance(corpus, CubDataset):
        counts: dict[str, int] = {}
        for r in records:
            counts[r.class_name or str(r.class_id)] = counts.get(r.class_name or str(r.class_id), 0) + 1
        summary["classes"] = counts
        summary["split"] = {"train": sum(r.is_train is True for r in records),
                            "test": sum(r.is_train is False for r in records)}
        summary["keypoints"] = corpus.part_names
        summary["part_legend"] = {str(k): v for k, v in sorted(corpus.part_legend.items())}
        summary["with_mask"] = sum(r.mask_path is not None for r in records)
        summary["with_part_mask"] = sum(r.part_mask_path is not None for r in records)
        summary["with_caption"] = sum(r.caption is not None for r in records)
    it = iter_images(records, min_size=min_size or DEFAULT_MIN_SIZE)
    sizes = [rgb.shape[:2] for _, rgb in it]
    if sizes:
        hs, ws = zip(*sizes)
        summary["size_range"] = {"height": [min(hs), max(hs)], "width": [min(ws), max(ws)]}
    summary["usable"] = len(sizes)
    summary["skipped"] = [{"name": r.name, "reason": reason} for r, reason in it.skipped]
    return summary


def run_info(args) -> int:
    s = summarise(args.dir, args.min_size)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0 if s["usable"] else 1
    print(f"{s['path']}  ({s['layout']} layout)")
    print(f"images: {s['images']}  usable: {s['usable']}  skipped: {len(s['skipped'])}")
    if "size_range" in s:
        h, w = s["size_range"]["height"], s["size_range"]["width"]
        print(f"image size: height {h[0]}..{h[1]}, width {w[0]}..{w[1]} px")
    if s["layout"] == "cub":
        print(f"split: train {s['split']['train']}, test {s['split']['test']}")
        print(f"classes: {len(s['classes'])}")
        for name, count in s["classes"].items():
            print(f"  {name}: {count}")
        print(f"keypoints ({len(s['keypoints'])}): {', '.join(s['keypoints'])}")
        if s["part_legend"]:
            print("part legend: " + ", ".join(f"{k} {v}" for k, v in s["part_legend"].items()))
        print(f"with mask: {s['with_mask']}, part mask: {s['with_part_mask']}, "
              f"caption: {s['with_caption']}")
    for item in s["skipped"]:
        print(f"skipped {item['name']}: {item['reason']}")
    if not s["usable"]:
        print(f"diffparts corpus info: error: {s['path']} holds no usable image", file=sys.stderr)
        return 1
    return 0
