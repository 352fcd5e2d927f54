"""A picture of the part world (docs/corpus.md "The part world"): images, part masks, captions.

    python benchmarks/part_world_grid.py --n 80 --seed 0 --out docs/images/part-world-grid.png

Renders ``--n`` part-world images (``generate_birds(..., world=PartWorldConfig())``) into a
temporary folder and writes a grid of the first ``--birds`` whole birds, ``--closeups``
close-ups and ``--scenes`` scenes: each cell is the image beside its part mask (one colour per
part), with the caption's first words under it; prints as JSON the caption of every cell and
a summary of all ``--n`` images: images per kind, close-ups per part, parts named per whole-bird
caption, shape words, caption tokens (with the part world's tokenizer) and seconds per image.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from diffparts.corpus import SynthConfig, generate_birds, open_corpus  # noqa: E402
from diffparts.corpus.synth_caption import PART_WORLD_WORDS  # noqa: E402
from diffparts.corpus.synth_species import PART_NAMES  # noqa: E402
from diffparts.corpus.synth_world import PartWorldConfig, read_image_kinds  # noqa: E402
from diffparts.model.build import build_tokenizer  # noqa: E402

# One colour per part-mask value (0 = background).
_PALETTE = np.array([(0, 0, 0), (230, 25, 75), (255, 225, 25), (255, 255, 255), (60, 180, 75),
                     (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)],
                    np.uint8)


def _summary(root, kinds, tok_dir) -> dict:
    """Counts over every image of the corpus (the JSON's "summary")."""
    records = list(open_corpus(root))
    tok = build_tokenizer(tok_dir, PART_WORLD_WORDS, max_length=77)
    birds = [r.caption for r in records if kinds[r.image_id][0] == "bird"]
    named = [sum(p in re.findall(r"[a-z]+", c) for p in PART_NAMES) for c in birds]
    tokens = [len(tok(r.caption).input_ids) for r in records]
    shapes = Counter(w for c in birds for w in re.findall(r"\b(short|long|hooked|fanned|forked|crested)\b", c))
    return {
        "images": len(records),
        "kinds": dict(Counter(k for k, _ in kinds.values())),
        "closeup_parts": dict(Counter(p for k, p in kinds.values() if k == "closeup").most_common()),
        "parts_named_per_bird": {"mean": round(sum(named) / max(len(named), 1), 2),
                                 "min": min(named, default=0), "max": max(named, default=0)},
        "shape_words_in_bird_captions": dict(shapes.most_common()),
        "caption_tokens": {"mean": round(sum(tokens) / len(tokens), 1), "max": max(tokens)},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=80, help="images rendered to choose the cells from")
    parser.add_argument("--birds", type=int, default=10, help="whole-bird cells")
    parser.add_argument("--closeups", type=int, default=10, help="close-up cells")
    parser.add_argument("--scenes", type=int, default=4, help="scene cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cols", type=int, default=6)
    parser.add_argument("--out", default="docs/images/part-world-grid.png")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="diffparts-partworld-") as tmp:
        t0 = time.perf_counter()
        root = generate_birds(tmp, args.n, args.seed, SynthConfig(), PartWorldConfig())
        seconds = (time.perf_counter() - t0) / args.n
        kinds = read_image_kinds(root)
        summary = _summary(root, kinds, Path(tmp) / "tok")
        summary["seconds_per_image"] = round(seconds, 3)
        cell, text_h = 128, 54
        want = {"bird": args.birds, "closeup": args.closeups, "scene": args.scenes}
        chosen = []
        for rec in open_corpus(root):
            kind = kinds[rec.image_id][0]
            if want[kind] > 0:
                want[kind] -= 1
                chosen.append(rec)
        rows = (len(chosen) + args.cols - 1) // args.cols
        sheet = Image.new("RGB", (args.cols * 2 * cell, rows * (cell + text_h)), "white")
        draw = ImageDraw.Draw(sheet)
        captions = []
        for k, rec in enumerate(chosen):
            x, y = (k % args.cols) * 2 * cell, (k // args.cols) * (cell + text_h)
            img = Image.open(rec.path).convert("RGB")
            mask = _PALETTE[np.asarray(Image.open(rec.part_mask_path))]
            sheet.paste(img, (x, y))
            sheet.paste(Image.fromarray(mask), (x + cell, y))
            lines = textwrap.wrap(f"[{kinds[rec.image_id][0]}] {rec.caption}", 42)[:4]
            draw.multiline_text((x + 2, y + cell + 1), "\n".join(lines), fill=(0, 0, 0), spacing=1)
            captions.append({"image_id": rec.image_id, "kind": kinds[rec.image_id][0], "caption": rec.caption})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(json.dumps({"out": args.out, "summary": summary, "cells": captions}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
