"""Completion judged by the independent part judge: inpainting checkpoint vs latent blending (issue 18 item 4).

On held-out synthetic birds (corpus seed 1234, the evaluation corpus; never seen by the judge,
seeds 5151/5252, nor by the inpainting fine-tune, seeds 0/4242), one true part hidden per bird
(seeded, among the parts with at least ``--min-pixels`` pixels at the model's side), filled with
each ``--fills``; then completed with the prompt(s) of ``--prompts`` by

- ``blend``: the embedded text-to-image model, latent blending (the baseline row);
- ``inpaint``: the toy inpainting checkpoint (``--inpaint-model``, default the committed one);

and read by the judge (``diffparts.judge``): IoU of the hidden part's type with its true mask
(whole image and inside the hidden region), accuracy over the hidden pixels, the share of the
part's pixels read as it; PSNR inside the region. ``occluded`` (the input, the floor) and
``original`` (the ceiling) are read alike. Paired differences inpaint - blend with their
standard error. Speed: seconds per completion of each model, the two alternated on the first
bird in the same run (``--speed``), for the detector-cost comparison. Prints JSON.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_inpaint_judge.py --n 32 --fills grey,noise --out runs/inpaint-judge.json
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

import numpy as np  # noqa: E402

SCORES = ("iou", "iou_hidden", "hidden_accuracy", "part_recall", "psnr")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def paired(a: list, b: list) -> dict:
    """Mean and standard error of a - b over the cases where both are defined."""
    d = np.array([x - y for x, y in zip(a, b) if x is not None and y is not None], float)
    if not len(d):
        return {"mean": None, "se": None, "n": 0}
    return {"mean": round(float(d.mean()), 4), "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4) if len(d) > 1
            else None, "n": int(len(d))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32, help="held-out birds (one hidden part each)")
    parser.add_argument("--seed", type=int, default=1234, help="corpus seed of the held-out birds")
    parser.add_argument("--fills", default="grey,noise", help="occluder fills (grey, noise)")
    parser.add_argument("--prompts", default="class", help="class and/or caption")
    parser.add_argument("--model", default=None, help="text-to-image model (default: the embedded one)")
    parser.add_argument("--inpaint-model", default=None, help="inpainting checkpoint (default: the toy one)")
    parser.add_argument("--judge", default=None, help="judge weights (default: the committed judge)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps of every completion")
    parser.add_argument("--min-pixels", type=int, default=20, help="smallest part to hide, pixels at model size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--cache", default=None,
                        help="npz of the completions and their timings: completions found there (same "
                             "arguments) are read instead of recomputed; the new ones are added to it")
    parser.add_argument("--models", default="blend,inpaint", help="completion models to run (blend, inpaint)")
    parser.add_argument("--speed", type=int, default=3,
                        help="time this many completions of each model, alternating, on the first bird "
                             "(the speed figures: both models in the same run, under the same load)")
    parser.add_argument("--completions-only", action="store_true",
                        help="stop after the completions are cached (score in a later run)")
    args = parser.parse_args(argv)

    import torch

    from diffparts.judge import PartJudge, score_completion
    from diffparts.metrics.occlusion import masked_psnr
    from diffparts.model.extract import native_image_size
    from diffparts.model.load import load_pipeline
    from diffparts.occlusion.complete import (CompletionConfig, complete, default_inpaint_model, inpaint_pipeline)
    from diffparts.occlusion.occluders import fill_region
    from diffparts.train.renders import render_birds

    torch.set_num_threads(args.threads)
    fills = [f for f in args.fills.split(",") if f]
    prompts = [p for p in args.prompts.split(",") if p]
    pipe = load_pipeline(args.model)
    size = native_image_size(pipe)
    inpaint_model = args.inpaint_model or default_inpaint_model(args.model)
    if inpaint_model is None:
        raise SystemExit("no inpainting checkpoint for this model: pass --inpaint-model")
    wanted = [m for m in args.models.split(",") if m]
    models = {}
    if "blend" in wanted:
        models["blend"] = inpaint_pipeline(pipe)
    if "inpaint" in wanted:
        models["inpaint"] = inpaint_pipeline(pipe, inpaint_model)
    config = CompletionConfig(steps=args.steps)
    images, maps, captions = render_birds(args.n, args.seed, size, log)
    rng = np.random.default_rng(args.seed)
    cases = []                                   # (bird, part, fill, {variant: image})
    seconds = {name: [] for name in models}
    cache = Path(args.cache) if args.cache else None
    cached = dict(np.load(cache)) if cache is not None and cache.is_file() else {}
    computed = {}
    for i, (image, truth, caption) in enumerate(zip(images, maps, captions)):
        counts = np.bincount(truth.ravel(), minlength=10)
        candidates = [p for p in range(1, 10) if counts[p] >= args.min_pixels]
        part = int(rng.choice(candidates))
        hidden = truth == part
        for fill in fills:
            occluded = fill_region(image, hidden, fill, np.random.default_rng([args.seed, i]))
            variants = {"original": image, "occluded": occluded}
            for prompt_kind in prompts:
                text = config.class_prompt if prompt_kind == "class" else caption
                for name, model in models.items():
                    key = f"{i}/{fill}/{name}:{prompt_kind}"
                    if key in cached:
                        variants[f"{name}:{prompt_kind}"] = cached[key]
                        seconds[name].append(float(cached["seconds/" + key]))
                        continue
                    t0 = time.perf_counter()
                    variants[f"{name}:{prompt_kind}"] = complete(model, occluded, hidden, text, seed=i, config=config)
                    seconds[name].append(time.perf_counter() - t0)
                    computed[key], computed["seconds/" + key] = variants[f"{name}:{prompt_kind}"], seconds[name][-1]
            cases.append((i, part, fill, variants))
        log(f"bird {i + 1}/{args.n}: part {part}")
    if cache is not None and computed:
        np.savez_compressed(cache, **{**cached, **{k: np.asarray(v) for k, v in computed.items()}})
        log(f"{len(computed) // 2} completions added to {cache}")
    if args.completions_only:
        return 0
    speed = {name: [] for name in models}
    if args.speed and len(models) == 2:
        image, truth = images[0], maps[0]
        hidden = truth == cases[0][1]
        occluded = fill_region(image, hidden, fills[0], np.random.default_rng([args.seed, 0]))
        for _ in range(args.speed):
            for name, model in models.items():
                t0 = time.perf_counter()
                complete(model, occluded, hidden, config.class_prompt, seed=0, config=config)
                speed[name].append(time.perf_counter() - t0)
        log(f"speed: {speed}")
    judge = PartJudge.load(args.judge)
    rows = []
    for i, part, fill, variants in cases:
        image, truth = images[i], maps[i]
        hidden = truth == part
        for variant, img in variants.items():
            s = score_completion(judge, img, hidden, truth, [part])
            rows.append({"bird": i, "part": part, "fill": fill, "variant": variant,
                         **{k: s[k] for k in SCORES if k in s},
                         "psnr": None if variant == "original" else round(masked_psnr(img, image, hidden), 4)})

    table = {}
    for fill in fills:
        for variant in dict.fromkeys(r["variant"] for r in rows):
            sub = [r for r in rows if r["fill"] == fill and r["variant"] == variant]
            table[f"{fill}/{variant}"] = {k: (round(float(np.mean([r[k] for r in sub if r[k] is not None])), 4)
                                              if any(r[k] is not None for r in sub) else None) for k in SCORES}
            table[f"{fill}/{variant}"]["cases"] = len(sub)
    differences = {}
    for fill in fills:
        for prompt_kind in prompts:
            def col(variant, key):
                return [r[key] for r in sorted((r for r in rows if r["fill"] == fill and r["variant"] == variant),
                                               key=lambda r: r["bird"])]
            for key in ("iou", "iou_hidden", "hidden_accuracy", "psnr"):
                differences[f"{fill}/{prompt_kind}/{key}/inpaint-blend"] = paired(col(f"inpaint:{prompt_kind}", key),
                                                                                   col(f"blend:{prompt_kind}", key))
                differences[f"{fill}/{prompt_kind}/{key}/inpaint-occluded"] = paired(col(f"inpaint:{prompt_kind}", key),
                                                                                      col("occluded", key))
    result = {
        "n_birds": args.n, "corpus_seed": args.seed, "fills": fills, "prompts": prompts, "image_size": size,
        "inpaint_model": str(inpaint_model), "judge": str(judge.path), "steps": args.steps,
        "guidance": config.guidance_scale, "threads": args.threads,
        "table": table, "paired_differences": differences,
        # the speed figures: both models alternated in this run (the per-case times may come from a cache
        # filled at another time, under another load, so they are kept apart)
        "seconds_per_completion": {name: {"median": round(float(np.median(v)), 4), "min": round(float(np.min(v)), 4),
                                          "n": len(v)} for name, v in speed.items() if v},
        "seconds_per_completion_cases": {name: {"median": round(float(np.median(v)), 4), "n": len(v)}
                                         for name, v in seconds.items() if v},
        "rows": rows,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
