"""``make demo``: all five stages on the embedded default, printed for a person.

Synthetic birds (CUB layout, exact ground truth) -> attention and UNet features from the
embedded checkpoint -> segments -> part categories -> a text embedding per category -> occluded
held-out birds, their missing parts detected and painted back. Each stage's line is printed as
it finishes, then a table of each stage's measures against the ground truth and the path of the
run's HTML report. Running it again reuses the corpus and the store, and every stage says that
it skipped its finished work.

    python -m flows.demo [--out runs/demo] [--n 48] [--seed 0] [--steps 60] [--cases 8] [--fresh] [--verbose]

Prefect's own log (a line per task) goes to the dashboard; on the terminal only with --verbose.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

#: The token pictures: 2 images generated per token with 10 DDIM steps (the stage's default,
#: 4 images with 25 steps, triples the demo's time on 2 cores).
PICTURES = {"n_images": 2, "generate_steps": 10}


def print_summary(result: dict, wall: float) -> None:
    """The table a person reads after the run: per stage status, seconds and measures."""
    from diffparts.pipeline import summary_lines

    print("\n".join(summary_lines(result, "diffparts demo: five stages")))
    print(f"wall    {wall:.1f} s, with rendering the corpus and starting Prefect's temporary server")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="work folder (corpus, store, pictures, reports)")
    parser.add_argument("--n", type=int, default=48, help="synthetic birds to make (default 48)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    parser.add_argument("--method", default="ncut", choices=("diffseg", "ncut"), help="segmenter")
    parser.add_argument("--model", default=None, help="model id or folder (default: embedded checkpoint)")
    parser.add_argument("--steps", type=int, default=60, help="textual-inversion steps per part token (default 60)")
    parser.add_argument("--cases", type=int, default=8, help="occlusion cases (default 8)")
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    parser.add_argument("--verbose", action="store_true", help="also print Prefect's own log")
    args = parser.parse_args(argv)

    # Prefect's temporary server: no analytics (no network here), and time to start on 2 busy cores.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from flows.runtime import ServerUnreachable, check_api, prefect_console
    from diffparts.corpus import generate_birds
    from diffparts.model.load import DEFAULT_MODEL
    from diffparts.pipeline import shown_path
    from flows.pipeline import bird_parts

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    corpus_dir = out / "corpus"
    start = time.perf_counter()
    if not (corpus_dir / "images.txt").exists():
        generate_birds(corpus_dir, n=args.n, seed=args.seed)
    print(f"corpus: {corpus_dir} ({args.n} synthetic birds, seed {args.seed})")
    print(f"model:  {args.model or shown_path(DEFAULT_MODEL)}")
    with prefect_console(args.verbose):
        try:
            check_api()
        except ServerUnreachable as err:
            print(f"make demo: error: {err}", file=sys.stderr)
            return 2
        result = bird_parts(str(corpus_dir), str(out / "store.zarr"), model=args.model, method=args.method,
                            embed_steps=args.steps, occlusion_cases=args.cases, echo=True,
                            stage_options={"embeddings": {"picture_config": PICTURES},
                                           # a demo store made by an older diffparts: a new version group
                                           "extract": {"new_version": True}})
    print_summary(result, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
