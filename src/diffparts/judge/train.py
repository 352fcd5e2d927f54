"""Train the part judge on synthetic renders with their true part masks (``diffparts train-judge``).

Data: birds of ``diffparts.corpus.generate_birds`` at 64 px with their part maps, corpus seeds
:attr:`JudgeTrainConfig.corpus_seed` (training) and ``val_seed`` (held out), both disjoint from
the project's evaluation and validation corpora (1234, 999), the embedded model's (0) and the
inpainting checkpoint's held-out birds (4242). Augmentation, per image and step:

- half the images are the embedded VAE's reconstruction instead of the render (the judge reads
  model outputs, which are that VAE's decodings: softer than renders);
- half get an occluder (a true part's shape, a box or strokes, ``train.renders.random_mask``)
  filled with grey, uniform noise, another image's background texture, a flat random colour or
  a smooth random colour field (``occluder_fills``; ``object`` adds a leaf or a branch), and its
  pixels are labelled background ("no part") with loss
  weight ``occluder_weight``: a grey region where the head was is not a head. So the judge must
  read parts from what is painted;
- random horizontal flips.

Loss: cross-entropy with class weights 1/sqrt(frequency) (small parts such as the eye count;
occluder pixels weigh ``occluder_weight``), AdamW, cosine learning rate. ``init_from`` continues
a saved judge (fresh optimiser), e.g. with another occluder weight. The record (``judge.json`` beside the weights) holds the config,
the CPU seconds and the held-out figures of :func:`evaluate_judge`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from diffparts.judge.model import CLASSES, JudgeArch, JudgeNet, PartJudge, save_judge

OCCLUDER_FILLS = ("grey", "noise", "patch", "flat", "smooth")   # the default judge's occluders
JUDGE_FILLS = OCCLUDER_FILLS + ("object",)   # every fill a judge can be trained with: also a leaf or a branch
FILL_WORDS = {"grey": "grey", "noise": "noise", "patch": "another bird's background", "flat": "a flat random colour",
              "smooth": "a smooth random colour field", "object": "a leaf or a branch"}   # the card's words for them


@dataclass(frozen=True)
class JudgeTrainConfig:
    """Everything that determines a judge training run."""

    arch: JudgeArch = JudgeArch()   # network shapes
    n_images: int = 1500            # training birds, corpus seed ``corpus_seed``
    corpus_seed: int = 5151         # disjoint from every evaluation corpus of the project
    n_val: int = 128                # held-out birds, corpus seed ``val_seed``
    val_seed: int = 5252            # never seen in training
    steps: int = 1000               # optimiser steps (a budget may stop earlier)
    batch_size: int = 16            # images per step
    lr: float = 2e-3                # AdamW peak learning rate (cosine to 5 % of it over ``steps``)
    weight_decay: float = 1e-4      # AdamW weight decay
    vae_fraction: float = 0.5       # share of images replaced by the embedded VAE's reconstruction
    occluder_fraction: float = 0.5  # share of images with an occluder labelled background
    seed: int = 0                   # initialisation, batches, augmentation
    budget_s: float | None = None   # wall-clock budget of the optimisation; None = steps only
    log_every: int = 50             # steps between progress lines
    threads: int = 1                # torch CPU threads
    vae_model: str | None = None    # whose VAE reconstructs (None: the embedded checkpoint)
    # Loss weight of occluder pixels (read as "no part"); None = the background class weight, which
    # 1/sqrt(frequency) makes small: a first judge then read 85-90 % of occluders as the part.
    occluder_weight: float | None = 3.0
    init_from: str | None = None    # continue from a judge.safetensors (its architecture is kept)
    # "birds": whole birds (the default corpus); "parts": the part world's images (docs/corpus.md
    # "The part world"): whole birds, close-ups of one part (share ``closeup_share``) and scenes
    # without a bird, so the judge also reads a zoomed part (issue 23's close-up prompts).
    world: str = "birds"
    closeup_share: float = 0.4      # part world only: share of close-ups among the training images
    # Occluder fills, drawn uniformly (JUDGE_FILLS): "object" adds the occlusion benchmark's leaves and
    # branches (occlusion.occluders.object_texture), which a judge never shown one reads as the part.
    occluder_fills: tuple[str, ...] = OCCLUDER_FILLS

    def __post_init__(self):
        for name in ("n_images", "n_val", "batch_size", "log_every", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.world not in ("birds", "parts"):
            raise ValueError(f"world must be 'birds' or 'parts', got {self.world!r}")
        if not 0.0 <= self.closeup_share <= 0.9:
            raise ValueError(f"closeup_share={self.closeup_share} must be in [0, 0.9]")
        unknown = [f for f in self.occluder_fills if f not in JUDGE_FILLS]
        if unknown or not self.occluder_fills:
            raise ValueError(f"occluder_fills {tuple(self.occluder_fills)!r}: one or more of {', '.join(JUDGE_FILLS)}")
        object.__setattr__(self, "occluder_fills", tuple(self.occluder_fills))
        if self.corpus_seed == self.val_seed:
            raise ValueError("corpus_seed and val_seed must differ (the held-out birds are never trained on)")


# Seconds-long setting for tests.
QUICK_JUDGE = JudgeTrainConfig(arch=JudgeArch(widths=(8, 8, 16, 16)), n_images=8, n_val=4, steps=2, batch_size=4,
                               log_every=1)


@torch.no_grad()
def vae_roundtrip(images: np.ndarray, model: str | None = None, batch: int = 64) -> np.ndarray:
    """(image, y, x, 3) uint8 through a model's VAE (posterior mean, decoded) at the model's side."""
    from diffparts.model.load import load_pipeline
    from diffparts.train.toy import to_tensor

    vae = load_pipeline(model).vae
    out = []
    for s in range(0, len(images), batch):
        x = to_tensor(images[s:s + batch])
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        out.append(((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def occlude_for_training(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, other: np.ndarray,
                         other_labels: np.ndarray, fills: tuple[str, ...] = OCCLUDER_FILLS
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A copy of (image, labels) with a random occluder (a fill drawn from ``fills``) whose pixels
    are labelled 0 (no part), and the occluder's (y, x) bool mask."""
    from diffparts.occlusion.occluders import background_patch, object_texture
    from diffparts.train.renders import random_mask

    mask, _ = random_mask(rng, labels, probabilities=(0.5, 0.3, 0.2, 0.0))
    if not mask.any():
        return image, labels, mask
    fill = fills[int(rng.integers(len(fills)))]
    h, w = labels.shape
    if fill == "object":
        paint = object_texture((h, w), rng)
    elif fill == "grey":
        paint = np.full((h, w, 3), int(rng.integers(96, 160)), np.uint8)
    elif fill == "noise":
        paint = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    elif fill == "patch":
        paint = background_patch(other, other_labels == 0, (h, w), rng)
    elif fill == "flat":
        paint = np.broadcast_to(rng.integers(0, 256, 3).astype(np.uint8), (h, w, 3))
    else:
        coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        from PIL import Image

        paint = np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((w, h), Image.Resampling.BICUBIC))
                          for c in range(3)], -1).clip(0, 255).astype(np.uint8)
    out = image.copy()
    out[mask] = paint[mask]
    return out, np.where(mask, 0, labels).astype(labels.dtype), mask


def confusion(pred: np.ndarray, truth: np.ndarray, n: int = len(CLASSES)) -> np.ndarray:
    """(truth class, predicted class) pixel counts."""
    return np.bincount(truth.astype(np.int64).ravel() * n + pred.astype(np.int64).ravel(), minlength=n * n).reshape(n, n)


def scores_from_confusion(conf: np.ndarray) -> dict:
    """Pixel accuracy, IoU per class (pooled), mean IoU over the part classes 1..9."""
    tp = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return {"pixel_accuracy": round(float(tp.sum() / max(conf.sum(), 1)), 4),
            "part_miou": round(float(np.nanmean(iou[1:])), 4),
            "iou": {name: (None if np.isnan(v) else round(float(v), 4)) for name, v in zip(CLASSES, iou)}}


def part_world(config: JudgeTrainConfig):
    """The ``PartWorldConfig`` of a part-world judge (None for the default birds)."""
    if config.world != "parts":
        return None
    from diffparts.corpus.synth_world import PartWorldConfig

    return PartWorldConfig(closeup_share=config.closeup_share, scene_share=0.05)


def evaluate_judge(judge: PartJudge, images: np.ndarray, labels: np.ndarray, seed: int = 1,
                   vae_images: np.ndarray | None = None, closeups: np.ndarray | None = None) -> dict:
    """Held-out figures: on the renders; on the VAE's reconstructions (if given); with one seeded
    occluder per image (accuracy on the occluder's pixels = read as "no part", and on the rest);
    on the close-ups among them (``closeups``: bool per image), the share whose most-read part
    is the true one (``judge.score.shown_parts``)."""
    from diffparts.judge.score import shown_parts

    pred_all = judge.labels(images)
    out = {"renders": scores_from_confusion(confusion(pred_all, labels))}
    if closeups is not None and np.any(closeups):
        sel = np.asarray(closeups, bool)
        right = shown_parts(pred_all[sel]) == shown_parts(labels[sel])
        out["closeups"] = {"n": int(sel.sum()), "part_shown_right": round(float(right.mean()), 4)}
    if vae_images is not None:
        out["vae_reconstructions"] = scores_from_confusion(confusion(judge.labels(vae_images), labels))
    pred, occ_labels, share = _read_occluded(judge, images, labels, seed, OCCLUDER_FILLS)
    out["occluded"] = {**scores_from_confusion(confusion(pred, occ_labels)), "occluder_read_as_no_part": share}
    out["occluder_read_as_no_part_by_fill"] = {fill: occluder_read_as_no_part(judge, images, labels, fill, seed)
                                               for fill in JUDGE_FILLS}
    return out


def occluder_read_as_no_part(judge: PartJudge, images: np.ndarray, labels: np.ndarray, fill: str,
                             seed: int = 1) -> float | None:
    """The share of occluder pixels over the bird that ``judge`` reads as "no part", one seeded
    occluder of ``fill`` per image (None when no occluder covers a bird pixel)."""
    return _read_occluded(judge, images, labels, seed, (fill,))[2]


def _read_occluded(judge: PartJudge, images: np.ndarray, labels: np.ndarray, seed: int, fills: tuple[str, ...]):
    """(the judge's labels of the images each with one seeded occluder of ``fills``, their true
    labels with the occluder as 0, the share of occluder pixels over the bird read as "no part"
    or None); an image's occluder patch comes from the next image."""
    rng = np.random.default_rng(seed)
    occluded, occ_labels, _ = zip(*[occlude_for_training(rng, img, lab, images[(i + 1) % len(images)],
                                                      labels[(i + 1) % len(images)], fills)
                                 for i, (img, lab) in enumerate(zip(images, labels))])
    pred, occ_labels = judge.labels(np.stack(occluded)), np.stack(occ_labels)
    hidden = (occ_labels == 0) & (labels > 0)
    return pred, occ_labels, round(float((pred[hidden] == 0).mean()), 4) if hidden.any() else None


def train_judge(out_dir: str | Path, config: JudgeTrainConfig = JudgeTrainConfig(),
                log: Callable[[str], None] = print) -> dict:
    """Train, evaluate on held-out renders, save ``judge.safetensors`` + ``judge.json`` in ``out_dir``."""
    from diffparts.train.renders import render_birds

    t0, cpu0 = time.monotonic(), time.process_time()
    torch.set_num_threads(config.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    size = config.arch.size
    world = part_world(config)
    images, labels, _ = render_birds(config.n_images, config.corpus_seed, size, log, world=world)
    v_images, v_labels, v_captions = render_birds(config.n_val, config.val_seed, size, log, world=world)
    log("VAE reconstructions of the training and held-out birds")
    recon = vae_roundtrip(images, config.vae_model)
    v_recon = vae_roundtrip(v_images, config.vae_model)
    freq = np.bincount(labels.ravel(), minlength=len(CLASSES)).astype(float) + 1.0
    weights = torch.tensor((freq.sum() / freq) ** 0.5, dtype=torch.float32)
    weights = weights / weights.mean()

    if config.init_from is not None:
        net = PartJudge.load(config.init_from).net.train()
        log(f"continuing from {config.init_from}")
    else:
        net = JudgeNet(config.arch)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(s / max(config.steps, 1), 1.0)))))
    deadline = None if config.budget_s is None else time.monotonic() + config.budget_s
    history, window, step = [], [], 0
    t_train = time.monotonic()
    for step in range(config.steps):
        if deadline is not None and time.monotonic() > deadline:
            log(f"budget reached after {step} steps")
            break
        idx = rng.integers(len(images), size=config.batch_size)
        xs, ys, occ = [], [], []
        for i in idx:
            img = recon[i] if rng.random() < config.vae_fraction else images[i]
            lab, hidden = labels[i], np.zeros(labels[i].shape, bool)
            if rng.random() < config.occluder_fraction:
                j = int(rng.integers(len(images)))
                img, lab, hidden = occlude_for_training(rng, img, lab, images[j], labels[j], config.occluder_fills)
            if rng.random() < 0.5:
                img, lab, hidden = img[:, ::-1], lab[:, ::-1], hidden[:, ::-1]
            xs.append(img)
            ys.append(lab)
            occ.append(hidden)
        x = torch.from_numpy(np.ascontiguousarray(np.stack(xs))).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        y = torch.from_numpy(np.ascontiguousarray(np.stack(ys))).long()
        w = weights[y]                                                       # image y x
        if config.occluder_weight is not None:
            w = torch.where(torch.from_numpy(np.ascontiguousarray(np.stack(occ))), config.occluder_weight, w)
        loss = (torch.nn.functional.cross_entropy(net(x), y, reduction="none") * w).sum() / w.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        window.append(loss.item())
        if (step + 1) % config.log_every == 0:
            history.append((step + 1, round(float(np.mean(window)), 5)))
            log(f"step {step + 1}: loss {history[-1][1]:.4f} ({(time.monotonic() - t_train) / (step + 1):.2f} s/step)")
            window = []
    else:
        step = config.steps
    net.eval()
    judge = PartJudge(net)
    held_out = evaluate_judge(judge, v_images, v_labels, seed=config.seed + 1, vae_images=v_recon,
                              closeups=np.array([c.startswith("a close-up") for c in v_captions]))
    out_dir = Path(out_dir)
    record = {"config": {**asdict(config), "arch": asdict(config.arch)}, "steps": step,
              "seconds": round(time.monotonic() - t0, 1), "cpu_seconds": round(time.process_time() - cpu0, 1),
              "train_seconds": round(time.monotonic() - t_train, 1), "n_train": len(images), "n_val": len(v_images),
              "parameters": sum(p.numel() for p in net.parameters()), "classes": list(CLASSES),
              "class_weights": [round(float(w), 4) for w in weights], "history": history,
              "held_out": held_out["renders"], "held_out_all": held_out}
    save_judge(net, out_dir / "judge.safetensors", {"steps": step, "corpus_seed": config.corpus_seed})
    (out_dir / "judge.json").write_text(json.dumps(record, indent=1) + "\n")
    log(f"saved {out_dir}: held-out pixel accuracy {held_out['renders']['pixel_accuracy']}, "
        f"part mIoU {held_out['renders']['part_miou']}")
    return record


def quick_judge_config(**overrides) -> JudgeTrainConfig:
    return replace(QUICK_JUDGE, **overrides)


def judge_card(out_dir: str | Path, command: str) -> str:
    """The judge's card (README.md text) from ``judge.json``."""
    out_dir = Path(out_dir)
    r = json.loads((out_dir / "judge.json").read_text())
    cfg, ho = r["config"], r["held_out_all"]
    size = (out_dir / "judge.safetensors").stat().st_size / 2**20
    parts_world = cfg.get("world", "birds") == "parts"
    fills = tuple(cfg.get("occluder_fills") or OCCLUDER_FILLS)
    leaves = "object" in fills
    lines = [
        "# " + ("diffparts-part-judge" + ("-parts" if parts_world else "") if not leaves else out_dir.name),
        "",
        "An independent part reader for assessment only: a small supervised per-pixel segmenter of the nine",
        "synthetic part types (+ \"no part\": background or occluder), trained on renders of",
        "`diffparts.corpus.generate_birds` with their true part masks. It scores what a completion painted",
        "into a hidden region and what images generated from a prompt show (docs/occlusion.md, docs/embeddings.md).",
        "Nothing in the pipeline reads it. Load it with `diffparts.judge.PartJudge.load()`.",
        *(["", "This one is trained on the part world (docs/corpus.md \"The part world\"): "
           f"{cfg['closeup_share']:.0%} of its images are close-ups of one part, 5 % scenes without a bird, so it "
           "also reads a zoomed part (the close-up prompts of docs/embeddings.md's claim table). Load it with "
           "`PartJudge.load(PARTS_JUDGE)`."] if parts_world else []),
        *(["", "This one is also trained with leaves and branches over the birds (the occlusion benchmark's "
           "`object` fill, `occlusion.occluders.object_texture`) labelled \"no part\", so a leaf where a part was "
           "is not read as the part (docs/occlusion.md, \"Completion read by the judge\"). Load it with "
           "`PartJudge.load(LEAVES_JUDGE)`."] if leaves else []),
        "",
        "## How it was made",
        "",
        "```",
        command,
        "```",
        "",
        f"- Network: fully convolutional encoder-decoder, widths {cfg['arch']['widths']} at 64/32/16/8 px, "
        f"{r['parameters']:,} parameters, {size:.1f} MB (float32 safetensors), input 64 px.",
        f"- Data: {r['n_train']} {'part-world images' if cfg.get('world') == 'parts' else 'birds'} of corpus seed "
        f"{cfg['corpus_seed']}; held out: {r['n_val']} of corpus "
        f"seed {cfg['val_seed']} (never trained on); both disjoint from the evaluation (1234), validation (999), "
        "embedded-model (0) and inpainting held-out (4242) corpora.",
        f"- Augmentation: {cfg['vae_fraction']:.0%} of images replaced by the VAE's reconstruction "
        f"({cfg.get('vae_model') or 'the embedded checkpoint'}); "
        f"{cfg['occluder_fraction']:.0%} get an occluder (a part's shape, a box or strokes; "
        + ", ".join(FILL_WORDS[f] for f in fills) + ") labelled \"no part\"; horizontal flips.",
        f"- {r['steps']} steps at batch {cfg['batch_size']}, AdamW lr {cfg['lr']:g} cosine, cross-entropy with "
        f"1/sqrt(frequency) class weights, seed {cfg['seed']}; {r['seconds'] / 60:.1f} min wall, "
        f"**{r['cpu_seconds'] / 60:.1f} CPU minutes** ({cfg['threads']} torch thread; 2 cores shared with other jobs).",
        "",
        f"## Held-out accuracy ({r['n_val']} birds it never saw)",
        "",
        "| IoU per class | " + " | ".join(CLASSES) + " | part mIoU | pixel accuracy |",
        "| --- " * (len(CLASSES) + 3) + "|",
    ]
    for name, key in (("renders", "renders"), (f"the VAE's reconstructions ({cfg.get('vae_model') or 'embedded checkpoint'})", "vae_reconstructions"),
                      ("renders with an occluder (labelled no part)", "occluded")):
        if key in ho:
            s = ho[key]
            lines.append(f"| {name} | " + " | ".join("-" if s["iou"][c] is None else f"{s['iou'][c]:.3f}" for c in CLASSES)
                         + f" | **{s['part_miou']:.3f}** | {s['pixel_accuracy']:.3f} |")
    occ = ho.get("occluded", {}).get("occluder_read_as_no_part")
    if occ is not None:
        lines += ["", f"Occluder pixels over the bird read as \"no part\": {occ:.3f} (one seeded occluder per held-out bird)."]
    by_fill = ho.get("occluder_read_as_no_part_by_fill")
    if by_fill:
        lines += ["", "The same per fill (one seeded occluder of that fill per held-out bird; `object`: a leaf or a branch):",
                  "", "| " + " | ".join(by_fill) + " |", "| --- " * len(by_fill) + "|",
                  "| " + " | ".join("-" if v is None else f"{v:.3f}" for v in by_fill.values()) + " |"]
    close = ho.get("closeups")
    if close:
        lines += ["", f"Held-out close-ups whose most-read part is the true part: **{close['part_shown_right']:.3f}** "
                      f"({close['n']} close-ups)."]
    return "\n".join(lines) + "\n"
