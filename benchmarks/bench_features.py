"""Cost of UNet feature capture (issue 14, docs/design.md §5.5 and §7): prints one JSON object.

- ``toy``: the embedded checkpoint (or ``--model``), one extraction forward
  (``extract_attention``: VAE encode, UNet forward with attention capture, aggregation) on a
  batch of synthetic birds, alternated with the same call plus ``FeatureConfig()`` (forward hooks
  on DIFT's up-block in the same forward), and with DIFT's ensemble (extra forward over
  ``--noise-samples`` noised copies at t=261, class prompt) for comparison.
- ``sd`` (``--sd``): an SD-1.5-shaped UNet (``build_unet(SD15_ARCH)``, random weights, no download),
  one 512 px forward (latent 64, 77 tokens) with attention capture, alternated with the same
  forward plus the feature hooks. Several minutes on 2 cores.

Bytes per image: float16 ``channel x y x x`` of the default block (``features/up_<i>``).
Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_features.py [--sd] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _alternate(calls: dict, repeats: int) -> dict:
    """Run each call once to warm up, then ``repeats`` rounds alternating them; medians in s."""
    for fn in calls.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": round(statistics.median(v), 4), "runs_s": [round(x, 4) for x in v]}
            for name, v in times.items()}


def toy(model, batch: int, repeats: int, noise_samples: int) -> dict:
    from diffparts.corpus import SynthConfig, generate_birds, load_rgb, open_corpus
    from diffparts.model.extract import CaptureConfig, extract_attention, native_image_size, prepare_images
    from diffparts.model.features import FeatureConfig
    from diffparts.model.load import load_pipeline

    import tempfile

    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    size = native_image_size(pipe)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = generate_birds(tmp, n=batch, seed=5, config=SynthConfig(image_size=size))
        images = np.stack([prepare_images(load_rgb(r.path)[None], size)[0] for r in open_corpus(corpus)])
    cfg = CaptureConfig()
    same = FeatureConfig()
    dift = FeatureConfig(timestep=261, noise_samples=noise_samples, prompt="a photo of a bird")
    probe = extract_attention(pipe, images[:1], cfg, same).features
    times = _alternate({
        "attention": lambda: extract_attention(pipe, images, cfg),
        "attention+features": lambda: extract_attention(pipe, images, cfg, same),
        "attention+dift_ensemble": lambda: extract_attention(pipe, images, cfg, dift),
    }, repeats)
    base = times["attention"]["median_s"]
    return {
        "model": str(model), "batch": batch, "image_size": size, "repeats": repeats,
        "blocks": {f"up_{b}": list(f.shape[1:]) for b, f in probe.items()},
        "bytes_per_image": int(sum(np.prod(f.shape[1:]) * 2 for f in probe.values())),
        "times": times,
        "overhead_features": round(times["attention+features"]["median_s"] / base, 3),
        "overhead_dift_ensemble": round(times["attention+dift_ensemble"]["median_s"] / base, 3),
        "dift_noise_samples": noise_samples,
    }


def sd(repeats: int) -> dict:
    from diffparts.attention.aggregate import aggregate_cross_attention, aggregate_self_attention
    from diffparts.model.build import SD15_ARCH, build_unet
    from diffparts.model.capture import AttentionCapture
    from diffparts.model.features import FeatureCapture, default_feature_blocks, up_block_sides

    torch.manual_seed(0)
    unet = build_unet(SD15_ARCH).eval()           # SD-1.5 shape, random weights
    latent = unet.config.sample_size              # 512 px / the VAE's 8
    blocks = default_feature_blocks(unet, latent)
    inputs = (torch.randn(1, 4, latent, latent), torch.tensor([300]), torch.randn(1, SD15_ARCH.max_length, unet.config.cross_attention_dim))
    shapes = {}

    def forward(with_features: bool):
        hooks = FeatureCapture(unet, blocks if with_features else ())
        with torch.inference_mode(), AttentionCapture(unet) as capture, hooks:
            unet(inputs[0], inputs[1], encoder_hidden_states=inputs[2])
            aggregate_self_attention(capture.self_maps)
            aggregate_cross_attention(capture.cross_maps)
        for b in hooks.blocks:
            shapes[f"up_{b}"] = list(hooks.mean(b).shape[1:])

    times = _alternate({"attention": lambda: forward(False), "attention+features": lambda: forward(True)}, repeats)
    return {
        "latent": latent, "up_block_sides": up_block_sides(unet, latent), "blocks": shapes, "repeats": repeats,
        "bytes_per_image": int(sum(np.prod(s) * 2 for s in shapes.values())),
        "times": times,
        "overhead_features": round(times["attention+features"]["median_s"] / times["attention"]["median_s"], 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="diffusers folder (default: the embedded checkpoint)")
    parser.add_argument("--batch", type=int, default=8, help="images per extraction forward (toy)")
    parser.add_argument("--repeats", type=int, default=5, help="alternated rounds (toy)")
    parser.add_argument("--noise-samples", type=int, default=4, help="DIFT ensemble size compared (toy)")
    parser.add_argument("--sd", action="store_true", help="also the SD-1.5-shaped UNet (minutes)")
    parser.add_argument("--sd-repeats", type=int, default=2)
    args = parser.parse_args(argv)
    from diffparts.model.load import DEFAULT_MODEL

    report = {"benchmark": "bench_features", "torch_threads": torch.get_num_threads(),
              "toy": toy(args.model or DEFAULT_MODEL, args.batch, args.repeats, args.noise_samples)}
    if args.sd:
        report["sd"] = sd(args.sd_repeats)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
