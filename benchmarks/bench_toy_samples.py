"""How recognisable the toy checkpoint's samples are (issue 3): a species classifier and KID.

No Inception network can be downloaded here, so the judge is trained on the domain itself: a
small CNN learns the 16 species of the synthetic birds from real renders (corpus seed
``--judge-seed``, never used to train the checkpoint). Then, for held-out birds (corpus seed
``--seed``), the checkpoint generates one sample from each bird's caption, and the script reports:

- ``species_accuracy``: how often the judge names the captioned bird's species on the sample.
  The same judge on the real held-out birds gives the ceiling; chance is 1/16. Captions give
  colours and some parts, not the species name, so even perfect samples need not reach the
  ceiling: read it against the ceiling and against other checkpoints;
- ``kid``: kernel inception distance (Binkowski et al. 2018: unbiased MMD^2 with the cubic
  polynomial kernel) between the samples' and the real held-out birds' judge features (the
  penultimate layer). 0 means the same distribution. The held-out birds are split in two
  disjoint halves: a reference set, and a query set whose captions the samples come from, so
  the query birds' own KID against the reference (``real.kid``) is the floor, ``random_init``
  samples the other end.

``vae_reconstruction`` scores the checkpoint's VAE reconstructions of the query birds:
the best any sample can look after decoding through this VAE.

Both are computed for each ``--guidance`` scale given, so the sampler setting shown in the model
card is chosen by a measure, not by eye. Prints JSON.

    .venv/bin/python benchmarks/bench_toy_samples.py --guidance 1 2 4 7 --compare data/models/other
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffparts.train.toy import load_corpus_images, to_tensor  # noqa: E402  (after the thread setting)


def load_birds(root: Path, size: int):
    """(image, size, size, 3) uint8 renders box-downsampled to ``size``, 0-based species, captions."""
    from diffparts.corpus import open_corpus

    images, captions = load_corpus_images(root, size)
    species = np.asarray([rec.class_id - 1 for rec in open_corpus(root)])  # same record order
    return images, species, captions


def build_judge(n_classes: int):
    """A 4-stage strided CNN (64 px -> 4 x 4), global average pool, linear head."""
    import torch.nn as nn

    def stage(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU())

    features = nn.Sequential(stage(3, 32), stage(32, 64), stage(64, 96), stage(96, 128),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return nn.Sequential(features, nn.Linear(128, n_classes))


def train_judge(images: np.ndarray, labels: np.ndarray, n_classes: int, steps: int, seed: int):
    """Train the judge with flips and small shifts (samples are not pixel-aligned with renders)."""
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_judge(n_classes)
    x_all, y_all = to_tensor(images), torch.from_numpy(labels).long()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x_all), (64,), generator=gen)
        x = x_all[idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        dy, dx = torch.randint(-4, 5, (2,), generator=gen).tolist()
        x = torch.roll(x, (dy, dx), dims=(2, 3))
        loss = torch.nn.functional.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def judge(model, images: np.ndarray):
    """(predicted class, penultimate features) for uint8 images."""
    import torch

    with torch.no_grad():
        feats = torch.cat([model[0](to_tensor(images[i:i + 128])) for i in range(0, len(images), 128)])
        preds = model[1](feats).argmax(1)
    return preds.numpy(), feats.double().numpy()


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018, as in KID)."""
    d = a.shape[1]
    kaa, kbb, kab = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
    m, n = len(a), len(b)
    return float((kaa.sum() - np.trace(kaa)) / (m * (m - 1)) + (kbb.sum() - np.trace(kbb)) / (n * (n - 1))
                 - 2 * kab.mean())


def score_samples(model, fake: np.ndarray, species: np.ndarray, real_feats: np.ndarray) -> dict:
    preds, feats = judge(model, fake)
    return {"species_accuracy": round(float((preds == species).mean()), 4), "kid": round(kid(feats, real_feats), 5)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the embedded one)")
    parser.add_argument("--compare", nargs="*", default=[], help="other checkpoint folders scored the same way")
    parser.add_argument("--n-test", type=int, default=128, help="held-out birds (one sample per caption)")
    parser.add_argument("--n-judge", type=int, default=1600, help="real birds the judge learns from")
    parser.add_argument("--judge-steps", type=int, default=600, help="judge optimiser steps (batch 64)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed of the held-out birds")
    parser.add_argument("--judge-seed", type=int, default=2, help="corpus seed of the judge's birds")
    parser.add_argument("--guidance", type=float, nargs="+", default=[4.0], help="guidance scales to score")
    parser.add_argument("--steps", type=int, default=30, help="DDIM steps")
    parser.add_argument("--no-random-init", action="store_true", help="skip the random-init reference")
    parser.add_argument("--work", type=Path, default=None, help="keep the generated corpora here")
    args = parser.parse_args(argv)

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_toy_quality import generate_samples, random_init_pipeline

    from diffparts.corpus import generate_birds
    from diffparts.model.extract import native_image_size
    from diffparts.model.load import DEFAULT_MODEL, load_pipeline

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.set_flush_denormal(True)
    t0 = time.perf_counter()
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="diffparts-samples-")
        args.work = Path(tmp.name)
    model_path = Path(args.model) if args.model else DEFAULT_MODEL
    pipe = load_pipeline(model_path)
    size = native_image_size(pipe)

    # 1. Real birds: the judge's (seed judge_seed) and the held-out ones (seed seed; two halves).
    corpora = {}
    for name, seed, n in (("judge", args.judge_seed, args.n_judge), ("test", args.seed, 2 * args.n_test)):
        root = args.work / f"{name}-{seed}-{n}"
        if not (root / "images.txt").is_file():
            generate_birds(root, n, seed)
        corpora[name] = load_birds(root, size)
    judge_x, judge_y, _ = corpora["judge"]
    test_x, test_y, test_captions = corpora["test"]
    n_classes = int(max(judge_y.max(), test_y.max())) + 1
    model = train_judge(judge_x, judge_y, n_classes, args.judge_steps, seed=0)
    t_judge = time.perf_counter() - t0

    # 2. Two disjoint halves of the held-out birds: the reference set (KID's "real" side) and the
    #    query set, whose captions the samples come from. Every set scored against the reference
    #    (the query birds themselves, their VAE reconstructions, the samples) is thus equally
    #    unpaired with it, so real-vs-real KID is a fair floor.
    reference, query = slice(0, args.n_test), slice(args.n_test, 2 * args.n_test)
    preds, feats = judge(model, test_x)
    real_feats = feats[reference]
    out = {
        "benchmark": "toy_samples", "image_size": size, "n_test": args.n_test, "n_judge": args.n_judge,
        "sampler": f"DDIM {args.steps} steps", "chance": round(1.0 / n_classes, 4),
        "real": {"species_accuracy": round(float((preds[query] == test_y[query]).mean()), 4),
                 "kid": round(kid(feats[query], real_feats), 5)},
        "models": {},
    }

    # The VAE's reconstructions of the query birds: what decoding alone costs.
    with torch.no_grad():
        x = to_tensor(test_x[query])
        recon = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample
    recon = ((recon.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    out["vae_reconstruction"] = score_samples(model, recon, test_y[query], real_feats)

    # 3. Samples from the held-out birds' captions, per model and guidance scale.
    captions, species = test_captions[args.n_test:2 * args.n_test], test_y[query]
    models = {str(model_path): pipe, **{str(p): None for p in args.compare}}
    if not args.no_random_init:
        models["random_init"] = random_init_pipeline(load_pipeline(model_path), seed=0)
    for name, candidate in models.items():
        candidate = candidate if candidate is not None else load_pipeline(name)
        scores = {}
        for g in args.guidance:
            fake = generate_samples(candidate, captions, size, args.seed, args.steps, g)
            scores[f"guidance_{g:g}"] = score_samples(model, fake, species, real_feats)
        out["models"][name] = scores
    out["timings"] = {"judge_s": round(t_judge, 1), "total_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
