"""Part-segmentation quality of the toy checkpoint on held-out synthetic birds (issue 3).

Four methods, scored against the part masks with per-image Hungarian matching (docs/design.md §8 "Measures",
``diffparts.metrics``), every one at the model's native image size (64 px):

- ``trained``: DiffSeg (docs/design.md §5.2 "DiffSeg merge") on the checkpoint's aggregated self-attention (clean latent,
  t=300, empty prompt: ``diffparts.model.extract`` defaults);
- ``random_init``: the same, for the same architecture at random initialisation (all components);
- ``kmeans_vae_latent``: k-means on the checkpoint's VAE latent (posterior mean), true K;
- ``kmeans_pixels``: k-means on pixel colour + position, true K.

"True K" is the number of part labels present in the image's mask (background included), which
favours the k-means baselines; each is also run with K = true K x (1, 2, 4, 8), the multiplier
chosen on validation, since per-image Hungarian mIoU can reward over-segmentation (small parts
find a matching small segment) and DiffSeg's threshold has that freedom too. DiffSeg's KL threshold is chosen on a separate validation split:
the data-driven quantile rule of ``diffparts.segment.thresholds`` at each of a few quantiles,
keeping the best validation mIoU (done separately for the trained and the random model); the
k-means baselines likewise keep the position weight with the best validation mIoU. All numbers
in the JSON are on the test split. Optional: ``--grid PNG`` writes real held-out birds (top row)
above samples generated from their captions (bottom row).

    .venv/bin/python benchmarks/bench_toy_quality.py --n-val 16 --n-test 64 --seed 1 \\
        --grid data/models/diffparts-toy-birds/samples.png
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

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the machine is shared
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUANTILES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5)  # DiffSeg threshold rule: quantiles tried on validation
POSITION_WEIGHTS = {"kmeans_pixels": (0.5, 1.0, 2.0), "kmeans_vae_latent": (0.0, 1.0, 3.0)}
K_MULTIPLIERS = (1, 2, 4, 8)  # k-means K = true K times these, chosen on validation (see evaluate_kmeans)


def load_split(root: Path, size: int):
    """(image, size, size, 3) uint8 images, (image, size, size) uint8 part masks, captions."""
    from PIL import Image

    from diffparts.corpus import CubDataset

    ds = CubDataset(root)
    images, masks, captions = [], [], []
    for rec in ds:
        with Image.open(rec.path) as img:
            images.append(np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BOX)))
        with Image.open(rec.part_mask_path) as mask:
            masks.append(np.asarray(mask.resize((size, size), Image.Resampling.NEAREST)))
        captions.append(rec.caption or "")
    n_classes = len(ds.part_legend)
    return np.stack(images), np.stack(masks), captions, n_classes


def random_init_pipeline(pipe, seed: int = 0):
    """The same architecture as ``pipe`` with every weight at random initialisation."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    vae = AutoencoderKL.from_config(pipe.vae.config)
    unet = UNet2DConditionModel.from_config(pipe.unet.config)
    text = CLIPTextModel(pipe.text_encoder.config)
    return StableDiffusionPipeline(vae=vae, text_encoder=text.eval(), tokenizer=pipe.tokenizer, unet=unet.eval(),
                                   scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def self_attention(pipe, images: np.ndarray, batch: int = 16) -> np.ndarray:
    """(image, qy, qx, ky, kx) aggregated self-attention, DiffSeg's capture settings."""
    from diffparts.model.extract import CaptureConfig, extract_attention

    config = CaptureConfig(cross_attn=False)
    return np.concatenate([extract_attention(pipe, images[i:i + batch], config).self_attn
                           for i in range(0, len(images), batch)])


def vae_latents(pipe, images: np.ndarray) -> np.ndarray:
    """(image, channel, y, x) posterior means."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return pipe.vae.encode(x).latent_dist.mean.numpy()


def vae_psnr(pipe, images: np.ndarray) -> float:
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        recon = pipe.vae.decode(pipe.vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
        mse = float(((recon - x) ** 2).mean())
    return 10 * np.log10(4.0 / mse)


def score(preds, gts, n_classes: int) -> dict:
    from diffparts.metrics import segmentation_scores

    res = segmentation_scores(preds, gts, n_classes, ignore_index=None)
    return {"miou": round(float(res.miou), 4), "pixel_accuracy": round(float(res.pixel_accuracy), 4),
            "iou_per_class": [round(float(v), 4) for v in res.iou],
            "segments_per_image": round(float(np.mean([len(np.unique(p)) for p in preds])), 2)}


def diffseg_labels(attns, thresholds, size: int):
    from diffparts.segment.diffseg import DiffSeg

    return [DiffSeg(kl_thresholds=thresholds, out_size=size).fit(a).labels_ for a in attns]


def evaluate_diffseg(val_attn, val_gt, test_attn, test_gt, n_classes: int, size: int) -> dict:
    """Pick the threshold quantile on validation, report test; also quantile 0.05 for reference."""
    from diffparts.segment.thresholds import ThresholdRule, choose_thresholds

    sweep = {}
    for q in QUANTILES:
        choice = choose_thresholds(list(val_attn), ThresholdRule(quantile=q))
        val = score(diffseg_labels(val_attn, choice.thresholds, size), val_gt, n_classes)
        sweep[q] = {"threshold": round(choice.thresholds[0], 5), "val_miou": val["miou"],
                    "val_segments": val["segments_per_image"]}
    best_q = max(sweep, key=lambda q: sweep[q]["val_miou"])
    test = score(diffseg_labels(test_attn, (sweep[best_q]["threshold"],) * 3, size), test_gt, n_classes)
    default = score(diffseg_labels(test_attn, (sweep[0.05]["threshold"],) * 3, size), test_gt, n_classes)
    # A reading without over-segmentation: the best quantile giving at most 2x the true number
    # of parts per image on validation (or the coarsest one).
    limit = 2 * np.mean([len(np.unique(g)) for g in val_gt])
    coarse = [q for q in sweep if sweep[q]["val_segments"] <= limit] or [max(sweep)]
    q_c = max(coarse, key=lambda q: sweep[q]["val_miou"])
    coarse_test = score(diffseg_labels(test_attn, (sweep[q_c]["threshold"],) * 3, size), test_gt, n_classes)
    return {**test, "quantile": best_q, "threshold": sweep[best_q]["threshold"],
            "test_miou_at_quantile_0.05": default["miou"],
            "at_most_2x_true_k": {**coarse_test, "quantile": q_c, "threshold": sweep[q_c]["threshold"]},
            "validation_sweep": sweep}


def kmeans_attention(attns, gts, n_classes: int, size: int) -> dict:
    """k-means (true K) on the attention rows: a threshold-free view of the same attention."""
    from diffparts.baselines import kmeans_features

    preds = []
    for a, gt in zip(attns, gts):
        qy, qx = a.shape[:2]
        feats = a.reshape(qy, qx, -1).transpose(2, 0, 1)  # (ky kx) qy qx
        preds.append(kmeans_features(np.sqrt(feats), len(np.unique(gt)), out_size=(size, size),
                                     standardize=False))
    return score(preds, gts, n_classes)


def evaluate_kmeans(name, inputs_val, val_gt, inputs_test, test_gt, n_classes: int, size: int) -> dict:
    """k-means with the true K (position weight chosen on validation), and with K = true K times a
    multiplier chosen on validation too (the same freedom DiffSeg's threshold has to over-segment)."""
    from diffparts.baselines import kmeans_features, kmeans_pixels

    def run(inputs, gts, w, mult):
        ks = [len(np.unique(gt)) * mult for gt in gts]
        if name == "kmeans_pixels":
            return [kmeans_pixels(img, k, position_weight=w) for img, k in zip(inputs, ks)]
        return [kmeans_features(z, min(k, z.shape[1] * z.shape[2]), out_size=(size, size), position_weight=w)
                for z, k in zip(inputs, ks)]

    sweep = {f"w={w},k_mult={m}": score(run(inputs_val, val_gt, w, m), val_gt, n_classes)["miou"]
             for w in POSITION_WEIGHTS[name] for m in K_MULTIPLIERS}
    true_k = {key: v for key, v in sweep.items() if key.endswith("k_mult=1")}
    best_true = max(true_k, key=true_k.get)
    best_any = max(sweep, key=sweep.get)

    def parse(key):
        w, m = key.split(",")
        return float(w[2:]), int(m[7:])

    out = {**score(run(inputs_test, test_gt, *parse(best_true)), test_gt, n_classes),
           "setting": best_true, "validation_sweep": sweep}
    out["validated_k"] = {**score(run(inputs_test, test_gt, *parse(best_any)), test_gt, n_classes),
                          "setting": best_any}
    return out


def generate_samples(pipe, captions: list[str], size: int, seed: int, steps: int = 30, guidance: float = 4.0,
                     batch: int = 32) -> np.ndarray:
    """(image, size, size, 3) uint8 samples from ``captions``: DDIM, one seeded generator for all."""
    import torch
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(captions), batch):
        fake = pipe(captions[start:start + batch], num_inference_steps=steps, guidance_scale=guidance, height=size,
                    width=size, generator=generator, output_type="np").images
        out.append((np.clip(fake, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)


def sample_grid(pipe, images: np.ndarray, captions: list[str], path: Path, seed: int, steps: int = 30,
                guidance: float = 4.0) -> None:
    """Real birds (top row) above samples from their captions (bottom row), 2x nearest upscale."""
    from PIL import Image

    fake = generate_samples(pipe, captions, images.shape[1], seed, steps, guidance)
    grid = np.concatenate([np.concatenate(list(images), axis=1), np.concatenate(list(fake), axis=1)], axis=0)
    grid = grid.repeat(2, axis=0).repeat(2, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: the embedded checkpoint)")
    parser.add_argument("--n-val", type=int, default=16, help="validation birds (threshold choice)")
    parser.add_argument("--n-test", type=int, default=64, help="test birds (reported figures)")
    parser.add_argument("--seed", type=int, default=1, help="corpus seed of the held-out birds (training used 0)")
    parser.add_argument("--data", type=Path, default=None, help="existing synthetic corpus (first n-val images validate)")
    parser.add_argument("--grid", type=Path, default=None, help="write the real-vs-generated sample grid here")
    parser.add_argument("--grid-n", type=int, default=8, help="birds in the sample grid")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale of the grid's samples")
    parser.add_argument("--grid-steps", type=int, default=30, help="DDIM steps of the grid's samples")
    parser.add_argument("--card", action="store_true",
                        help="also write quality.json and the model card README.md into the model folder "
                             "(needs the folder's training.json)")
    parser.add_argument("--card-notes", default="", help="extra Markdown for the card's Notes section")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    from diffparts.corpus import generate_birds
    from diffparts.model.extract import native_image_size
    from diffparts.model.load import DEFAULT_MODEL, load_pipeline

    t0 = time.perf_counter()
    model = Path(args.model) if args.model else DEFAULT_MODEL
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    size = native_image_size(pipe)
    # 1. Held-out birds: a corpus seed the training never saw; the classes are interleaved by
    #    a seeded permutation so validation and test both cover every species.
    tmp = None
    root = args.data
    if root is None:
        tmp = tempfile.TemporaryDirectory()
        root = generate_birds(tmp.name, args.n_val + args.n_test, args.seed)
    images, gts, captions, n_classes = load_split(Path(root), size)
    order = np.random.default_rng(args.seed).permutation(len(images))[: args.n_val + args.n_test]
    images, gts, captions = images[order], gts[order], [captions[i] for i in order]
    val, test = slice(0, args.n_val), slice(args.n_val, args.n_val + args.n_test)
    t_data = time.perf_counter() - t0

    # 2. Attention of the trained and the random-init model; DiffSeg with validated thresholds.
    out = {"benchmark": "toy_quality", "model": str(model), "image_size": size, "n_val": args.n_val,
           "n_test": args.n_test, "corpus_seed": args.seed, "n_classes": n_classes, "methods": {}}
    timings = {"data_s": round(t_data, 1)}
    for name, p in (("trained", pipe), ("random_init", random_init_pipeline(pipe))):
        t = time.perf_counter()
        attn = self_attention(p, images)
        timings[f"{name}_extract_s"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        out["methods"][name] = evaluate_diffseg(attn[val], gts[val], attn[test], gts[test], n_classes, size)
        out["methods"][name]["kmeans_on_attention_true_k"] = kmeans_attention(attn[test], gts[test], n_classes, size)
        timings[f"{name}_segment_s"] = round(time.perf_counter() - t, 1)
        row = attn[test].reshape(len(attn[test]), -1, attn.shape[-2] * attn.shape[-1])
        entropy = -(row * np.log(np.maximum(row, 1e-12))).sum(-1).mean() / np.log(row.shape[-1])
        out["methods"][name]["attention_row_entropy_of_max"] = round(float(entropy), 4)

    # 3. k-means baselines, true K, position weight chosen on validation.
    t = time.perf_counter()
    latents = vae_latents(pipe, images)
    out["methods"]["kmeans_vae_latent"] = evaluate_kmeans("kmeans_vae_latent", latents[val], gts[val], latents[test],
                                                          gts[test], n_classes, size)
    out["methods"]["kmeans_pixels"] = evaluate_kmeans("kmeans_pixels", images[val], gts[val], images[test],
                                                      gts[test], n_classes, size)
    timings["kmeans_s"] = round(time.perf_counter() - t, 1)
    out["vae_psnr_db_test"] = round(vae_psnr(pipe, images[test]), 2)
    trained, rnd = out["methods"]["trained"]["miou"], out["methods"]["random_init"]["miou"]
    out["summary"] = {name: m["miou"] for name, m in out["methods"].items()}
    for name in ("kmeans_vae_latent", "kmeans_pixels"):
        out["summary"][f"{name}_validated_k"] = out["methods"][name]["validated_k"]["miou"]
    for name in ("trained", "random_init"):
        out["summary"][f"{name}_at_most_2x_true_k"] = out["methods"][name]["at_most_2x_true_k"]["miou"]
    out["summary"]["trained_minus_random"] = round(trained - rnd, 4)

    # 4. Optional sample grid: real test birds above samples from their captions.
    if args.grid is not None:
        t = time.perf_counter()
        k = min(args.grid_n, args.n_test)
        sample_grid(pipe, images[test][:k], captions[test][:k], args.grid, seed=args.seed,
                    steps=args.grid_steps, guidance=args.guidance)
        out["grid"] = {"path": str(args.grid), "captions": captions[test][:k],
                       "sampler": f"DDIM {args.grid_steps} steps, guidance {args.guidance:g}"}
        timings["grid_s"] = round(time.perf_counter() - t, 1)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    out["timings"] = timings
    print(json.dumps(out, indent=1))
    if args.card:
        from diffparts.train.card import train_commands, write_model_card

        (model / "quality.json").write_text(json.dumps(out, indent=1) + "\n")
        record = json.loads((model / "training.json").read_text())
        bench = (f".venv/bin/python benchmarks/bench_toy_quality.py --model {model} --n-val {args.n_val} "
                 f"--n-test {args.n_test} --seed {args.seed}"
                 + (f" --grid {args.grid} --grid-n {args.grid_n} --guidance {args.guidance:g} "
                    f"--grid-steps {args.grid_steps}" if args.grid else "") + " --card")
        write_model_card(model, train_commands(record), bench, args.card_notes)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
