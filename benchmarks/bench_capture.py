"""Capture overhead and peak memory (issue 4; docs/design.md §7 "Performance"). Prints one JSON object.

overhead = (UNet forward with AttentionCapture + DiffSeg aggregation) / plain UNet forward, same
model and batch, timed alternately (median over repeats). Models:

- ``tiny``: the tests' tiny random SD UNet (``SDArchConfig()``), batch of 2, latent 16 x 16; also
  ``overhead_installed_once``, with the processors installed once for many batches (the fixed
  cost of ``set_attn_processor`` is several ms, a large share of a tiny forward);
- ``sd`` (with ``--sd``): an SD-1.5-shaped ``UNet2DConditionModel()`` (defaults, random weights),
  one 512-px image (latent 64 x 64), 77 tokens of width 768. Its peak memory is measured in two
  fresh child processes (plain forward, capture forward), each sampling its RSS during the
  forward: ``peak_extra_mb`` is the peak above the RSS just before the forward.

    .venv/bin/python benchmarks/bench_capture.py            # tiny only (seconds)
    .venv/bin/python benchmarks/bench_capture.py --sd       # + SD-shaped (several minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

import torch

from diffparts.attention.aggregate import aggregate_cross_attention, aggregate_self_attention
from diffparts.model.capture import AttentionCapture


def build_unet(kind: str):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    if kind == "tiny":
        from diffparts.model.build import SDArchConfig, build_components

        unet = build_components(SDArchConfig(), seed=0).unet
        inputs = (torch.randn(2, 4, 16, 16), torch.tensor([300]), torch.randn(2, 16, 32))
    elif kind == "sd":
        unet = UNet2DConditionModel()  # SD-1.5 shape: 64x64x4 latent, 320..1280 channels, 8 heads
        size = unet.config.sample_size or 512 // 8  # defaults leave it None; SD-1.5: 512 px / VAE factor 8
        inputs = (torch.randn(1, 4, size, size), torch.tensor([300]), torch.randn(1, 77, unet.config.cross_attention_dim))
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    return unet.eval(), inputs


def plain_forward(unet, inputs):
    latents, t, embedding = inputs
    return unet(latents, t, encoder_hidden_states=embedding).sample


def capture_forward(unet, inputs):
    latents, t, embedding = inputs
    with AttentionCapture(unet) as capture:
        out = unet(latents, t, encoder_hidden_states=embedding).sample
    self_attn = aggregate_self_attention(capture.self_maps)
    cross_attn = aggregate_cross_attention(capture.cross_maps)
    return out, self_attn, cross_attn


def installed_forward(capture: AttentionCapture, unet, inputs):
    """Capture + aggregation with the processors installed once for many batches (reset per batch)."""
    latents, t, embedding = inputs
    capture.reset()
    unet(latents, t, encoder_hidden_states=embedding)
    aggregate_self_attention(capture.self_maps)
    aggregate_cross_attention(capture.cross_maps)


def time_overhead(kind: str, repeats: int, installed_once: bool = False) -> dict:
    unet, inputs = build_unet(kind)
    plain, capture, installed = [], [], []
    with torch.inference_mode():
        plain_forward(unet, inputs)  # warm-up (allocator, kernels)
        capture_forward(unet, inputs)
        for _ in range(repeats):  # alternate so that load from other processes hits both alike
            t0 = time.perf_counter()
            plain_forward(unet, inputs)
            t1 = time.perf_counter()
            _, self_attn, cross_attn = capture_forward(unet, inputs)
            t2 = time.perf_counter()
            plain.append(t1 - t0)
            capture.append(t2 - t1)
            if installed_once:
                with AttentionCapture(unet) as kept:
                    t3 = time.perf_counter()
                    installed_forward(kept, unet, inputs)
                    installed.append(time.perf_counter() - t3)
    result = {
        "batch": int(inputs[0].shape[0]),
        "latent": int(inputs[0].shape[-1]),
        "repeats": repeats,
        "plain_s": [round(x, 4) for x in plain],
        "capture_s": [round(x, 4) for x in capture],
        "plain_median_s": round(statistics.median(plain), 4),
        "capture_median_s": round(statistics.median(capture), 4),
        "overhead": round(statistics.median(capture) / statistics.median(plain), 3),
        "overhead_per_repeat": [round(c / p, 3) for p, c in zip(plain, capture)],
        **(
            {"overhead_installed_once": round(statistics.median(installed) / statistics.median(plain), 3)}
            if installed_once
            else {}
        ),
        "self_attn_shape": list(self_attn.shape),
        "cross_attn_shape": list(cross_attn.shape),
    }
    del unet
    gc.collect()
    return result


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def memory_child(kind: str, mode: str) -> dict:
    """One forward (plain or capture) in this fresh process, RSS sampled every 2 ms."""
    unet, inputs = build_unet(kind)
    gc.collect()
    before = rss_mb()
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with torch.inference_mode():
        if mode == "plain":
            plain_forward(unet, inputs)
        else:
            capture_forward(unet, inputs)
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    peak[0] = max(peak[0], rss_mb())
    return {
        "mode": mode,
        "seconds": round(seconds, 2),
        "rss_before_forward_mb": round(before, 1),
        "peak_rss_mb": round(peak[0], 1),
        "peak_extra_mb": round(peak[0] - before, 1),
        "ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_child(kind: str, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", kind, mode], capture_output=True, text=True, env=os.environ.copy()
    )
    if out.returncode:
        raise RuntimeError(f"memory child {kind} {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sd", action="store_true", help="also measure the SD-1.5-shaped UNet (minutes)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (tiny 5, SD 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of the SD-shaped model (default 3)")
    parser.add_argument("--tiny-repeats", type=int, default=None, help="timed repeats of the tiny model (default 30)")
    parser.add_argument("--memory-child", nargs=2, metavar=("KIND", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return 0

    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "tiny": time_overhead("tiny", args.tiny_repeats or (5 if args.quick else 30), installed_once=True),
    }
    if args.sd:
        report["sd_memory"] = {mode: run_child("sd", mode) for mode in ("plain", "capture")}
        report["sd"] = time_overhead("sd", args.repeats or (1 if args.quick else 3))
        report["target_overhead"] = 1.25
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
