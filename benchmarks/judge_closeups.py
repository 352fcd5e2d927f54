"""How a part judge reads part-world close-ups it never saw; prints JSON (docs/model.md).

Renders ``--n`` close-ups of the part world (``diffparts corpus synth --world parts`` with every
image a close-up of one part) of corpus seed ``--seed``, reads them with the judge, and reports the
share whose most-read part (``judge.shown_parts``) is the close-up's part, overall and per part.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/judge_closeups.py --judge data/models/diffparts-part-judge/judge.safetensors
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/judge_closeups.py --judge data/models/diffparts-part-judge-parts/judge.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    import numpy as np

    from diffparts.corpus import generate_birds
    from diffparts.corpus.synth_species import PART_NAMES
    from diffparts.corpus.synth_world import PartWorldConfig
    from diffparts.judge import PartJudge, shown_parts
    from diffparts.train.renders import load_renders

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--judge", required=True, help="judge.safetensors")
    ap.add_argument("--n", type=int, default=80, help="close-ups to render")
    ap.add_argument("--seed", type=int, default=77, help="corpus seed (disjoint from the judges' 5151 / 5252)")
    args = ap.parse_args(argv)

    judge = PartJudge.load(args.judge)
    with tempfile.TemporaryDirectory(prefix="diffparts-closeups-") as work:
        generate_birds(work, n=args.n, seed=args.seed, world=PartWorldConfig(closeup_share=1.0, scene_share=0.0))
        images, truth, _ = load_renders(work, judge.net.arch.size)
    want, got = shown_parts(truth), shown_parts(judge.labels(images))
    per = {PART_NAMES[p - 1]: {"n": int((want == p).sum()), "right": round(float((got[want == p] == p).mean()), 4)}
           for p in np.unique(want) if p > 0}
    out = {"judge": args.judge, "seed": args.seed, "closeups": int(len(want)),
           "part_shown_right": round(float((got == want).mean()), 4), "per_part": per}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
