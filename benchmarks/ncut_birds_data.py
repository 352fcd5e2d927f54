"""Attention, features and part masks of synthetic birds for ``bench_ncut.py birds`` (cached as .npz).

One file per (seed, n, size): the embedded checkpoint's aggregated self-attention (image, qy,
qx, ky, kx) with the library's default capture (``CaptureConfig()``, the extract stage's
default), the default up-block features (``FeatureConfig()``: DIFT's block adapted to the model,
same forward), the outputs of the attention blocks (``Transformer2DModel``) at the attention
resolution, captured by forward hooks in the same forward (DiffCut's feature source: the output
of a self-attention block), the RGB images and the part masks. Extracting once and reusing the
file keeps repeated settings sweeps off the 2 shared cores.

    .venv/bin/python benchmarks/ncut_birds_data.py --seed 999 --n 40 --out runs/ncut-birds-999.npz
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def attention_block_names(unet, side: int) -> list[str]:
    """Names of the UNet's attention blocks whose output has the attention resolution ``side``."""
    import torch

    names, shapes, handles = [], {}, []
    for name, module in unet.named_modules():
        if type(module).__name__ == "Transformer2DModel":
            names.append(name)
            handles.append(module.register_forward_hook(
                lambda m, i, o, name=name: shapes.__setitem__(name, (o[0] if isinstance(o, tuple) else o.sample).shape)))
    sample = unet.config.sample_size
    try:
        with torch.inference_mode():
            unet(torch.zeros(1, unet.config.in_channels, sample, sample), torch.tensor([1]),
                 encoder_hidden_states=torch.zeros(1, 1, unet.config.cross_attention_dim))
    finally:
        for h in handles:
            h.remove()
    return [n for n in names if shapes[n][-1] == side]


def prepare(seed: int, n: int, size: int, out: Path, batch: int = 8) -> Path:
    import torch

    from diffparts.corpus import CubDataset, SynthConfig, generate_birds, load_mask, load_rgb
    from diffparts.model.extract import CaptureConfig, extract_attention
    from diffparts.model.features import FeatureConfig
    from diffparts.model.load import load_pipeline

    pipe = load_pipeline()
    side = int(pipe.unet.config.sample_size)
    blocks = attention_block_names(pipe.unet, side)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_birds(Path(tmp) / "birds", n=n, seed=seed, config=SynthConfig(image_size=size))
        records = sorted(CubDataset(root).records, key=lambda r: r.name)[:n]
        images = np.stack([load_rgb(r.path) for r in records])  # image y x 3
        masks = np.stack([load_mask(r.part_mask_path) for r in records])  # image y x
    attn, up, blk = [], [], {b: [] for b in blocks}
    start = time.perf_counter()
    for i in range(0, n, batch):
        outs, handles = {}, []
        for name, module in pipe.unet.named_modules():
            if name in blocks:
                handles.append(module.register_forward_hook(
                    lambda m, inp, o, name=name: outs.__setitem__(
                        name, (o[0] if isinstance(o, tuple) else o.sample).detach().float().cpu().numpy())))
        try:
            res = extract_attention(pipe, images[i:i + batch], CaptureConfig(), features=FeatureConfig())
        finally:
            for h in handles:
                h.remove()
        attn.append(res.self_attn)
        up.append(next(iter(res.features.values())))
        for b in blocks:
            blk[b].append(outs[b])
        print(f"extracted {min(i + batch, n)}/{n} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, attn=np.concatenate(attn).astype(np.float32), up=np.concatenate(up).astype(np.float32),
             images=images, masks=masks, seed=seed, block_names=np.array(blocks),
             **{f"block_{k}": np.concatenate(blk[b]).astype(np.float32) for k, b in enumerate(blocks)})
    return out


def load(path: Path) -> dict:
    """The cached arrays: attn (image qy qx ky kx), up / block_k (image channel y x), images, masks."""
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    print(prepare(args.seed, args.n, args.size, Path(args.out)))


if __name__ == "__main__":
    main()
