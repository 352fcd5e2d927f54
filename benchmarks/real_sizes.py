"""Real sizes (issue 13, item 10): the five stages on an SD-1.5-shaped pipeline; prints one JSON object.

No real checkpoint can be downloaded here, but its shapes can be built: ``SD15_ARCH``
(``diffparts.model.build``: 512 px, VAE to 64 x 64 x 4, the 860 M-parameter UNet with
self-attention at 64 x 64 = 4096 queries, CLIP's 12-layer text encoder with 77 positions and
49,408 tokens) with seeded random weights, saved in float16 (2.1 GB; loaded in float32). On it,
a synthetic corpus of ``--n`` 512 px birds (one species: the first image is train, the second the
held-out test image the occlusion stage needs), then each stage as its own ``diffparts``
subprocess with the smallest honest settings:

1. ``extract``   every image, one per forward (``--batch-size 1``), attention + features
2. ``segment``   DiffSeg, automatic thresholds (the defaults)
3. ``parts``     K = ``--k`` categories, PCK on the one same-class pair
4. ``embed``     noise loss, one category (the largest in the train image), ``--embed-steps``
                 optimiser steps of batch 1, no pictures
5. ``occlude``   one case (a ground-truth part hidden), ``--occlude-steps`` inpainting steps at
                 guidance 7 (every variant: empty, class, caption, detected and hidden tokens)

Per stage: wall seconds, peak RSS of the stage's largest process (``os.wait4``'s
``ru_maxrss``) and of its whole process tree (psutil, sampled every 0.2 s: the Prefect
temporary server is a second process). Plus the sizes that came out (attention resolutions,
tokens, label sizes) and the stored bytes per image. Seconds include each command's start
(imports, the Prefect temporary server, loading the model); ``startup_s`` is one
``diffparts --help`` for scale.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/real_sizes.py --work /tmp/real-sizes --fresh   # 9-20 min on 2 cores

``tests/test_real_sizes.py`` (``make test-slow``) runs :func:`run_all` and checks the store.
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

import numpy as np

STAGES = ("extract", "segment", "parts", "embed", "occlude")
# sd15: SD 1.5's shapes. The tests' tiny model is no use here: its random attention is so flat
# that DiffSeg finds one segment per image and the parts stage has nothing to cluster.
ARCHS = ("sd15",)


def arch_config(arch: str):
    """The ``SDArchConfig`` named ``arch``."""
    from diffparts.model.build import SD15_ARCH

    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    return SD15_ARCH


def build_model(out: str | Path, arch: str = "sd15", seed: int = 0, disk_dtype: str = "float16") -> Path:
    """Build ``arch`` with seeded random weights and save it as a diffusers folder at ``out``.

    The tokenizer knows the synthetic captions' words; ``disk_dtype`` is the weights' dtype on
    disk (``load_pipeline`` casts them to the dtype asked for).
    """
    import tempfile

    import torch

    from diffparts.corpus import CAPTION_WORDS
    from diffparts.model.build import build_components, save_components

    dtype = getattr(torch, disk_dtype)
    with tempfile.TemporaryDirectory(prefix="diffparts-tok-") as tok:
        components = build_components(arch_config(arch), tokenizer_dir=tok, words=CAPTION_WORDS, seed=seed)
        for module in (components.vae, components.unet, components.text_encoder):
            module.to(dtype)
        return save_components(components, out)


def make_corpus(out: str | Path, n: int = 2, size: int = 512, seed: int = 0) -> Path:
    """``n`` synthetic birds of one species at ``size`` px: draws 0, 2, ... train, 1, 3, ... test."""
    from diffparts.corpus import SynthConfig, generate_birds

    return generate_birds(out, n=n, seed=seed, config=SynthConfig(image_size=size, n_classes=1))


def _tree_rss(proc) -> int:
    """Resident bytes of a psutil process and all its descendants (0 once it is gone)."""
    import psutil

    total = 0
    try:
        members = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_measured(cmd: list[str], log: str | Path, env: dict | None = None, cwd: str | Path | None = None) -> dict:
    """Run ``cmd`` with stdout and stderr to ``log``: its seconds, exit status and peak memory.

    ``peak_rss_mb``: the largest resident set of the child or any descendant it waited for
    (``ru_maxrss`` from ``os.wait4``: exact, kernel-kept). ``peak_tree_rss_mb``: the largest sum
    over the child's process tree seen by sampling every 0.2 s (a lower bound).
    ``load_1m``: the machine's 1-minute load average as it ended (the stage itself counts in it;
    above the core count, other work shared the cores and the seconds are inflated).
    """
    import psutil

    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        watched = psutil.Process(proc.pid)
        peak_tree = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_tree = max(peak_tree, _tree_rss(watched))
            time.sleep(0.2)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    return {
        "seconds": round(seconds, 1),
        "rc": proc.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # Linux: kilobytes
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # user + system CPU of the child and its waited-for children
        "peak_tree_rss_mb": round(peak_tree / 2**20),
        "load_1m": round(os.getloadavg()[0], 1),
    }


def last_json(text: str):
    """The last top-level JSON object printed in ``text`` (the stages print one at the end)."""
    decoder = json.JSONDecoder()
    found = None
    for i, char in enumerate(text):
        if char == "{" and (i == 0 or text[i - 1] == "\n"):
            try:
                found = decoder.raw_decode(text, i)[0]
            except json.JSONDecodeError:
                pass
    return found


def child_env(work: Path) -> dict:
    """The stages' environment: offline, no analytics, a Prefect home of their own in ``work``."""
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": env.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"),
    })
    env.pop("PREFECT_API_URL", None)  # each stage starts its own temporary server, as a user's would
    return env


def diffparts_command() -> list[str]:
    """The ``diffparts`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("diffparts")
    if script.is_file():
        return [str(script)]
    found = shutil.which("diffparts")
    if found is None:
        raise FileNotFoundError("the diffparts command is not installed (pip install -e .)")
    return [found]


def train_category(store: str | Path) -> int:
    """The part category with the most pixels in the training images (the one ``embed`` learns).

    The same split and pixel counts as the embeddings stage (``held_out_split``,
    ``category_pixels``), read before that stage has written its split.
    """
    from diffparts.corpus import open_corpus
    from diffparts.inversion.data import category_pixels, corpus_path, held_out_split
    from diffparts.store import open_store

    root = open_store(store)
    names = [str(n) for n in root["images/name"][:]]
    held, _ = held_out_split(names, open_corpus(corpus_path(root)))
    pixels = category_pixels(root)[~held].sum(0)  # part
    pixels[0] = 0  # background is no part
    if pixels.max() == 0:
        raise ValueError(f"no part category in the training images of {store}")
    return int(pixels.argmax())


def stage_command(stage: str, work: Path, model: Path, corpus: Path, store: Path, settings: dict) -> list[str]:
    """The ``diffparts`` command line of one stage (see the module docstring for the settings)."""
    base = diffparts_command()
    if stage == "extract":
        return [*base, "extract", "--corpus", str(corpus), "--model", str(model), "--store", str(store),
                "--batch-size", "1", "--max-workers", "1", "--json"]
    if stage == "segment":
        return [*base, "segment", "--store", str(store), "--workers", "1"]
    if stage == "parts":
        return [*base, "parts", "--store", str(store), "--k", str(settings["k"]), "--out", str(work / "parts")]
    if stage == "embed":
        return [*base, "embed", "--store", str(store), "--steps", str(settings["embed_steps"]),
                "--categories", str(settings["category"]), "--batch-size", "1", "--max-workers", "1",
                "--no-pictures"]
    if stage == "occlude":
        return [*base, "occlude", "--store", str(store), "--cases", "1", "--steps", str(settings["occlude_steps"]),
                "--batch-size", "1", "--max-workers", "1"]
    raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def describe_sizes(store: str | Path, model: Path) -> dict:
    """What came out: attention resolutions and tokens, label sizes, bytes on disk per image."""
    from diffparts.store import open_store

    root = open_store(store)
    images = int(root["images/name"].shape[0])
    attn = root["attention"]
    groups = {name: _bytes_under(Path(store) / name) for name in sorted(os.listdir(store))
              if (Path(store) / name).is_dir()}
    return {
        "images": images,
        "image_size": int(attn.attrs["image_size"]),
        "self_attention": list(attn["self"].shape[1:]),   # qy qx ky kx
        "self_attention_tokens": int(np.prod(attn["self"].shape[1:3])),  # queries = keys
        "cross_attention": list(attn["cross"].shape[1:]),  # token qy qx
        "features": {name: list(root["features"][name].shape[1:]) for name in root["features"].array_keys()
                     if name.startswith("up_")},
        "segment_labels": list(root["segments/labels"].shape[1:]),
        "part_labels": list(root["parts/labels"].shape[1:]),
        "store_bytes_per_image": {name: size // images for name, size in groups.items()},
        "store_bytes_per_image_total": sum(groups.values()) // images,
        "embedding_files_bytes": _bytes_under(Path(f"{store}.embeddings")),
        "model_bytes_on_disk": _bytes_under(model),
    }


def count_model(arch: str = "sd15") -> dict:
    """Matmul and convolution GFLOPs of one call of each model part, and the attention layers.

    Counted with ``torch.utils.flop_counter`` on the meta device (no weights, no compute): one
    image at the native size, the tokenizer's full length. ``unet_forward`` runs under
    :class:`AttentionCapture`, as extraction does (the same FLOPs as diffusers' processor);
    ``unet_train_step``: forward and backward to the prompt embedding with the UNet frozen, as
    the embeddings stage trains (only the token rows learn). ``attention_layers``: layers per
    query-grid side, ``{"self" | "cross": {side: layers}}``.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from diffparts.model.build import build_components
    from diffparts.model.capture import AttentionCapture

    config = arch_config(arch)

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return round(counter.get_total_flops() / 1e9, 1)

    with torch.device("meta"):
        parts = build_components(config, seed=0)
        image = torch.randn(1, 3, config.sample_size, config.sample_size)           # image channel y x
        ids = torch.zeros(1, config.max_length, dtype=torch.long)                   # image token
        side = parts.unet.config.sample_size
        latent = torch.randn(1, config.latent_channels, side, side)                 # image channel y x
        prompt = torch.randn(1, config.max_length, config.cross_attention_dim)      # image token channel
        t = torch.tensor([300])
        parts.unet.requires_grad_(False)
        with torch.no_grad():
            gflops = {
                "vae_encode": count(lambda: parts.vae.encode(image).latent_dist.mean),
                "vae_decode": count(lambda: parts.vae.decode(latent).sample),
                "text_encoder": count(lambda: parts.text_encoder(ids)[0]),
            }
            with AttentionCapture(parts.unet) as capture:
                gflops["unet_forward"] = count(lambda: parts.unet(latent, t, encoder_hidden_states=prompt))
        grad_prompt = prompt.clone().requires_grad_(True)
        gflops["unet_train_step"] = count(
            lambda: parts.unet(latent, t, encoder_hidden_states=grad_prompt).sample.float().pow(2).mean().backward())
    layers = {kind: {str(r): n for r, n in counts.items()} for kind, counts in capture.layer_counts.items()}
    return {"gflops": gflops, "attention_layers": layers}


#: The published GPU figure the estimates are scaled to (not measured here): SD 1.5 at 512 px,
#: 50 steps with classifier-free guidance (a UNet forward of batch 2 per step), float16,
#: out-of-the-box diffusers with torch 2.1 SDPA on an A100 80 GB SXM.
GPU_REFERENCE = {"gpu": "A100 80GB SXM", "unet_batch2_steps_per_s": 31.19,
                 "setting": "SD 1.5, 512 px, float16, diffusers + torch 2.1 SDPA, guidance (batch 2)",
                 "source": "https://github.com/fal-ai/stable-diffusion-benchmarks"}


def stage_gflops(gflops: dict, inpaint_variants: int, assigned_variants: int, steps: int) -> dict:
    """Model GFLOPs per unit of work of each model stage, from :func:`count_model`'s ``gflops``.

    extract: per image (VAE encode, one UNet forward, the prompt). embed: per optimiser step of
    one image (latents are encoded once, before training). occlude: per case with ``steps``
    inpainting steps: the occluded image is segmented for the detection, then every variant
    (original, occluded, the completions) again to be assigned (VAE encode and one UNet forward
    each); every completion encodes the image and the masked image, runs ``steps`` guided steps
    (batch 2), two prompts and one decode.
    """
    g = gflops
    look = g["vae_encode"] + g["unet_forward"] + g["text_encoder"]
    complete = 2 * g["vae_encode"] + steps * 2 * g["unet_forward"] + 2 * g["text_encoder"] + g["vae_decode"]
    return {
        "extract_per_image": round(look, 1),
        "embed_per_step": round(g["unet_train_step"] + 2 * g["text_encoder"], 1),  # text forward + backward
        "occlude_per_case": round((1 + assigned_variants) * look + inpaint_variants * complete, 1),
    }


def gpu_estimate(report: dict) -> dict:
    """Per-unit GPU seconds, derived: model FLOPs over the sustained rate of :data:`GPU_REFERENCE`.

    The rate is the reference's UNet FLOPs per second (2 forwards of our counted UNet per
    step); the measured CPU rate of the extract stage checks the FLOP model against the other
    stages here. Compute only: start-up, model loading and the CPU-bound stages (segment,
    parts) do not shrink on a GPU.
    """
    g = report["gflops"]
    occ = report["stages"]["occlude"]["output"] or {}
    variants = list(occ.get("variants") or [])
    inpainted = len([v for v in variants if v not in ("original", "occluded")])
    steps = report["settings"]["occlude_steps"]
    rate = 2 * g["unet_forward"] * GPU_REFERENCE["unet_batch2_steps_per_s"]  # GFLOP/s
    here = stage_gflops(g, inpainted, len(variants), steps)
    default = stage_gflops(g, inpainted, len(variants), 25)  # CompletionConfig.steps
    extract = report["stages"]["extract"]["output"] or {}
    written, busy = extract.get("written", 0), extract.get("task_seconds", 0.0)
    cpu_rate = here["extract_per_image"] / (busy / written) if written and busy else None  # GFLOP/s here
    return {
        "reference": GPU_REFERENCE,
        "sustained_gflops_per_s": round(rate),
        "gflops": {**here, "occlude_per_case_25_steps": default["occlude_per_case"]},
        "gpu_s": {
            "extract_per_image": round(here["extract_per_image"] / rate, 3),
            "embed_per_step": round(here["embed_per_step"] / rate, 3),
            "embed_per_category_300_steps": round(300 * here["embed_per_step"] / rate, 1),
            "occlude_per_case": round(here["occlude_per_case"] / rate, 2),
            "occlude_per_case_25_steps": round(default["occlude_per_case"] / rate, 2),
        },
        "cpu_here": None if cpu_rate is None else {  # None when extract had nothing to do (a re-run)
            "sustained_gflops_per_s": round(cpu_rate, 1),  # extract's batch tasks
            "embed_per_step_predicted_s": round(here["embed_per_step"] / cpu_rate, 1),
            "occlude_per_case_predicted_s": round(here["occlude_per_case"] / cpu_rate, 1),
        },
    }


def run_all(work: str | Path, arch: str = "sd15", n: int = 2, k: int = 4, embed_steps: int = 2,
            occlude_steps: int = 2, seed: int = 0, stages: tuple[str, ...] = STAGES) -> dict:
    """Build the model and the corpus in ``work``, run ``stages`` one subprocess each; the report.

    Stops at the first stage that fails (its ``rc`` and the tail of its log are in the report).
    A stage whose folder already holds results skips its finished images, as the CLI does.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    env = child_env(work)
    model, corpus, store = work / "model", work / "corpus", work / "store.zarr"
    report: dict = {"benchmark": "real_sizes", "arch": arch, "n_images": n, "cpu_count": os.cpu_count(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "stages": {}}

    # 1. The model, built in a child so this process never holds its weights.
    if not (model / "model_index.json").is_file():
        cmd = [sys.executable, __file__, "build-model", "--out", str(model), "--arch", arch, "--seed", str(seed)]
        report["build_model"] = run_measured(cmd, work / "logs" / "build-model.log", env)
        if report["build_model"]["rc"]:
            report["build_model"]["log_tail"] = (work / "logs" / "build-model.log").read_text()[-3000:]
            return report
    # 2. The corpus.
    if not (corpus / "images.txt").is_file():
        make_corpus(corpus, n=n, size=arch_config(arch).sample_size, seed=seed)
    # 3. The start-up every stage pays (imports of the CLI), once for scale.
    report["startup_s"] = run_measured([*diffparts_command(), "--help"], work / "logs" / "help.log", env)["seconds"]

    # 4. The stages, each a fresh process.
    settings = {"k": k, "embed_steps": embed_steps, "occlude_steps": occlude_steps}
    for stage in stages:
        if stage == "embed":
            settings["category"] = train_category(store)
        cmd = stage_command(stage, work, model, corpus, store, settings)
        log = work / "logs" / f"{stage}.log"
        result = run_measured(cmd, log, env)
        result["command"] = " ".join(cmd[1:])
        text = log.read_text()
        result["output"] = last_json(text)
        report["stages"][stage] = result
        if result["rc"]:
            result["log_tail"] = text[-3000:]
            return report
    report["settings"] = settings
    report["sizes"] = describe_sizes(store, model)
    report.update(count_model(arch))
    if stages == STAGES:
        report["gpu_estimate"] = gpu_estimate(report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    build = sub.add_parser("build-model", help="only build and save the model (what run_all runs in a child)")
    build.add_argument("--out", required=True)
    build.add_argument("--arch", default="sd15", choices=ARCHS)
    build.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="runs/real-sizes", help="folder of the model, corpus, store and logs")
    parser.add_argument("--arch", default="sd15", choices=ARCHS, help="model shapes (sd15: SD 1.5's)")
    parser.add_argument("--n", type=int, default=2, help="images (the first is train, the second held out)")
    parser.add_argument("--k", type=int, default=4, help="part categories of the parts stage")
    parser.add_argument("--embed-steps", type=int, default=2, help="optimiser steps of the embed stage")
    parser.add_argument("--occlude-steps", type=int, default=2, help="inpainting steps of the occlude stage")
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    args = parser.parse_args(argv)
    if args.command == "build-model":
        print(build_model(args.out, args.arch, args.seed))
        return 0
    if args.fresh and Path(args.work).exists():
        shutil.rmtree(args.work)
    report = run_all(args.work, args.arch, args.n, args.k, args.embed_steps, args.occlude_steps)
    print(json.dumps(report, default=str))
    return 1 if any(s["rc"] for s in report["stages"].values()) or report.get("build_model", {}).get("rc") else 0


if __name__ == "__main__":
    raise SystemExit(main())
