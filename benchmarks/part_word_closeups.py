"""How the part judge reads close-ups generated from each part word ("a close-up of a bird head"
should show a head); prints JSON. The part-world checkpoint's card and docs/model.md quote it.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/part_word_closeups.py --n-generate 16

``right``: share of the word's close-ups whose most-read part (``judge.shown_parts``) is the word's
part; ``shown``: what they show, as shares. "(class)" is "a close-up of a bird" (no right answer).
``mean_right`` is over every part word; ``mean_right_closeup_parts`` over the words the part world
has close-ups of (``PartWorldConfig.closeup_parts``: not "eye", which never fills a crop).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> dict:
    import numpy as np

    from benchmarks.claim_table import PARTS_MODEL
    from diffparts.corpus.synth_world import PartWorldConfig
    from diffparts.inversion.claim import ClaimConfig, closeup_reading
    from diffparts.inversion.evaluate import MeasureConfig
    from diffparts.judge import PARTS_JUDGE, PartJudge
    from diffparts.model.load import load_pipeline

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(PARTS_MODEL), help="model id or folder (default: the part-world checkpoint)")
    ap.add_argument("--judge", default=str(PARTS_JUDGE), help="judge.safetensors (default: the part world's judge)")
    ap.add_argument("--n-generate", type=int, default=16, help="close-ups per word (seeds 0..n-1)")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps")
    ap.add_argument("--guidance", type=float, default=7.0, help="classifier-free guidance")
    ap.add_argument("--card", action="store_true",
                    help="save closeups.json in the model folder and rewrite its card (README.md)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    pipe = load_pipeline(args.model)
    measure = MeasureConfig(n_generate=args.n_generate, generate_steps=args.steps, guidance=args.guidance)
    reading = closeup_reading(pipe, PartJudge.load(args.judge), measure, ClaimConfig())
    rights = [v["right"] for v in reading.values() if v["right"] is not None]
    closeup_parts = list(PartWorldConfig().closeup_parts)          # the words the world shows close up
    in_world = [v["right"] for w, v in reading.items() if w in closeup_parts]
    out = {"model": args.model, "judge": args.judge, "n_generate": args.n_generate, "steps": args.steps,
           "guidance": args.guidance, "mean_right": round(float(np.mean(rights)), 4),
           "closeup_parts": closeup_parts, "mean_right_closeup_parts": round(float(np.mean(in_world)), 4),
           "words": reading,
           "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1))
    if args.card:
        from diffparts.train.card import train_commands, write_model_card

        model = Path(args.model)
        out["command"] = (f".venv/bin/python benchmarks/part_word_closeups.py --model {args.model} --n-generate "
                          f"{args.n_generate} --steps {args.steps} --guidance {args.guidance:g} --card")
        (model / "closeups.json").write_text(json.dumps(out, indent=1) + "\n")
        record = json.loads((model / "training.json").read_text())
        write_model_card(model, train_commands(record), out["command"])
    return out


if __name__ == "__main__":
    main()
