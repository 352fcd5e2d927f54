"""Extract throughput: images per second of the extract flow on this CPU (docs/design.md §7 "Performance").

Runs ``flows.extract.extract_attention`` on synthetic birds into a fresh store for each task
runner: the thread pool (1 and 2 threads) and a local Dask cluster (1 and 2 single-thread
workers). The model is the embedded checkpoint (data/models/diffparts-toy-birds) when it exists,
else a tiny random Stable Diffusion model built here. A temporary Prefect server is started once.

Figures per runner: images/s over the whole flow (describe, hash, set-up, probe, fan-out,
artifacts), over the fan-out alone (the batches' sub-flow, Dask cluster start and the workers'
imports and model loading included), and per second of batch-task time (steady state, one
worker), and the stored bytes per image.

Usage: .venv/bin/python benchmarks/bench_extract_throughput.py [--images 24] [--batch-size 4] [--model DIR]
(prints one JSON object; needs ~2-5 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

RUNNERS = {
    "threads-1": {"max_workers": 1},
    "threads-2": {"max_workers": 2},
    "dask-1": {"dask_workers": 1},
    "dask-2": {"dask_workers": 2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--model", default=None,
                        help="diffusers folder (default: the embedded checkpoint if present, else a tiny random model)")
    parser.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated subset of " + ",".join(RUNNERS))
    args = parser.parse_args()

    from prefect.settings import get_current_settings
    from prefect.testing.utilities import prefect_test_harness

    from diffparts.corpus import SynthConfig, generate_birds
    from diffparts.model.load import DEFAULT_MODEL
    from flows.extract import extract_attention

    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    if args.model:
        model, model_name = Path(args.model), f"{args.model}"
    elif (DEFAULT_MODEL / "model_index.json").exists():
        model, model_name = DEFAULT_MODEL, "embedded toy checkpoint"
    else:
        from diffparts.model.build import build_components, save_components

        model, model_name = work / "tiny-model", "tiny random model (32 px, R=16)"
        save_components(build_components(words=["bird"], seed=0), model)
    from diffparts.model.extract import native_image_size
    from diffparts.model.load import load_pipeline

    pipe = load_pipeline(model)
    size = native_image_size(pipe)
    arch = {"latent_side": int(pipe.unet.config.sample_size), "unet_parameters": int(sum(p.numel() for p in pipe.unet.parameters()))}
    del pipe
    corpus = generate_birds(work / "birds", n=args.images, seed=7, config=SynthConfig(image_size=max(size, 32)))

    results = {}
    with prefect_test_harness(server_startup_timeout=180):
        # Dask workers are other processes: give them the test server's address.
        os.environ["PREFECT_API_URL"] = str(get_current_settings().api.url)
        for name in args.runners.split(","):
            store = work / f"{name}.zarr"
            start = time.perf_counter()
            summary = extract_attention(
                str(corpus), str(model), str(store), batch_size=args.batch_size, **RUNNERS[name]
            )
            total = time.perf_counter() - start
            fan_out = _fan_out_seconds(summary)
            results[name] = {
                "images": summary["written"],
                "failed": summary["failed"],
                "seconds_total": round(total, 2),
                "images_per_s_total": round(summary["written"] / total, 3),
                "seconds_fan_out": round(fan_out, 2) if fan_out else None,
                "images_per_s_fan_out": round(summary["written"] / fan_out, 3) if fan_out else None,
                # steady state: images per second of batch-task time (per worker)
                "images_per_s_in_tasks": round(summary["written"] / summary["task_seconds"], 3),
                "stored_bytes_per_image": int(summary["stored_bytes"] / max(summary["written"], 1)),
            }
    print(json.dumps({
        "benchmark": "extract_throughput",
        "model": model_name,
        "image_size": size,
        **arch,
        "images": args.images,
        "batch_size": args.batch_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.1f}",
        "results": results,
    }))


def _fan_out_seconds(summary: dict) -> float | None:
    """Seconds of the latest 'extract-batches' sub-flow run (from the Prefect API)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["extract-batches"])),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    if not runs or runs[0].total_run_time is None:
        return None
    return runs[0].total_run_time.total_seconds()


if __name__ == "__main__":
    main()
