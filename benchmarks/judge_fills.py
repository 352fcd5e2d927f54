"""Part judges side by side on their held-out renders: the share of occluder pixels over the bird
each reads as "no part", per occluder fill; prints JSON (and ``--markdown`` a table on stderr).

The held-out birds are the judges' own (corpus seed 5252, never trained on: ``JudgeTrainConfig.val_seed``),
with one seeded occluder of each fill per bird (``diffparts.judge.train.occluder_read_as_no_part``:
a part's shape, a box or strokes; ``object`` is a leaf or a branch, the occlusion benchmark's
``object`` fill). By default the committed judge (``DEFAULT_JUDGE``) and the one also trained
with leaves and branches (``LEAVES_JUDGE``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/judge_fills.py --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("judges", nargs="*", help="judge.safetensors files (default: the committed and the leaves judge)")
    ap.add_argument("--n", type=int, default=128, help="held-out birds")
    ap.add_argument("--seed", type=int, default=1, help="seed of the occluders (the cards use 1)")
    ap.add_argument("--markdown", action="store_true", help="also the table as markdown (stderr)")
    args = ap.parse_args(argv)

    import torch

    from diffparts.judge import DEFAULT_JUDGE, LEAVES_JUDGE, PartJudge
    from diffparts.judge.train import JUDGE_FILLS, JudgeTrainConfig, occluder_read_as_no_part
    from diffparts.train.renders import render_birds

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    paths = [Path(p) for p in args.judges] or [DEFAULT_JUDGE, LEAVES_JUDGE]
    judges = {str(p): PartJudge.load(p) for p in paths}                  # refused by name before rendering
    images, labels, _ = render_birds(args.n, JudgeTrainConfig().val_seed, 64, lambda m: print(m, file=sys.stderr))
    rows = [{"judge": name, **{f: occluder_read_as_no_part(j, images, labels, f, args.seed) for f in JUDGE_FILLS}}
            for name, j in judges.items()]
    print(json.dumps({"held_out_birds": args.n, "rows": rows}, indent=1))
    if args.markdown:
        lines = ["| judge | " + " | ".join(JUDGE_FILLS) + " |", "| --- " * (len(JUDGE_FILLS) + 1) + "|"]
        for r in rows:
            lines.append(f"| `{Path(r['judge']).parent.name}` | "
                         + " | ".join("-" if r[f] is None else f"{r[f]:.3f}" for f in JUDGE_FILLS) + " |")
        print("\n".join(lines), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
