"""The default CLI path a new user takes (issue 14): prints one JSON object.

Runs the `diffparts` commands themselves, with no flag beyond the corpus at extraction::

    diffparts corpus synth --out W/birds --n N --seed S
    diffparts extract --corpus W/birds --store W/store.zarr
    diffparts segment --store W/store.zarr
    diffparts parts --store W/store.zarr
    diffparts transfer --store W/store.zarr --source A --target B     (one same-class pair)

and reports what `parts` printed (K and how it was chosen, NMI/ARI at keypoints, PCK over
same-class pairs with the default transfer method), the transfer command's output and the
seconds of each command. Extra arguments after ``--`` go to `diffparts extract` (e.g.
``-- --no-features`` for the attention-only path).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_default_path.py --n 32 --seed 1234 [--work DIR] [-- --no-features]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def diffparts(*args: str) -> tuple[str, float]:
    """Run ``diffparts ARGS`` (this checkout's CLI) and return its stdout and seconds."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    t0 = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).parent / "diffparts"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"diffparts {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, round(time.perf_counter() - t0, 1)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="synthetic birds")
    parser.add_argument("--seed", type=int, default=1234, help="corpus seed (1234: the held-out evaluation birds)")
    parser.add_argument("--work", type=Path, default=Path("out/default_path"), help="corpus and store (git-ignored)")
    args = parser.parse_args(argv)

    work = (ROOT / args.work).resolve() if not args.work.is_absolute() else args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    corpus, store = work / "birds", work / "store.zarr"
    seconds = {}
    _, seconds["corpus synth"] = diffparts("corpus", "synth", "--out", str(corpus), "--n", str(args.n),
                                           "--seed", str(args.seed))
    _, seconds["extract"] = diffparts("extract", "--corpus", str(corpus), "--store", str(store), *extra)
    _, seconds["segment"] = diffparts("segment", "--store", str(store))
    out, seconds["parts"] = diffparts("parts", "--store", str(store))
    parts = json.loads(out)

    from diffparts.corpus import open_corpus

    records = list(open_corpus(corpus))
    by_class: dict[int, list[int]] = {}
    for r in records:
        by_class.setdefault(r.class_id, []).append(r.image_id)
    source, target = next(ids[:2] for ids in by_class.values() if len(ids) > 1)
    out, seconds["transfer"] = diffparts("transfer", "--store", str(store), "--source", str(source),
                                         "--target", str(target))
    transfer = json.loads(out)
    print(json.dumps({"benchmark": "eval_default_path", "n": args.n, "seed": args.seed, "extract_args": extra,
                      "k": parts["clusters"]["k"], "k_scores": parts["clusters"]["k_scores"],
                      "scores": parts.get("scores"), "descriptor_features": parts["descriptors"]["features"],
                      "transfer": {k: transfer[k] for k in ("source", "target", "method", "pck@0.1") if k in transfer},
                      "seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
