"""The whole pipeline as dependent stages: extract -> segment -> parts (DESIGN.md section 5).

Each stage is its own flow (a subflow here), so a stage can also be run, scheduled and
re-run on its own; each skips the images whose completion marker is set, so running the
pipeline again on a grown corpus only does the new work.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_run_logger

from flows.extract import extract_attention
from flows.parts import discover_parts
from flows.segment import segment_dataset


@flow(name="bird-parts")
def bird_parts(
    corpus: str,
    store: str,
    model: str | None = None,
    method: str = "diffseg",
    k: int | None = None,
    batch_size: int = 8,
    extract_batch_size: int = 4,
    max_workers: int = 2,
    dask_address: str | None = None,
    dask_workers: int | None = None,
    evaluate: bool = True,
) -> dict:
    """Attention, segments and part categories of every image of ``corpus`` in ``store``.

    corpus: CUB-layout folder or a folder of images. model: hub id, diffusers folder or None
    for the embedded checkpoint. method: "diffseg" or "ncut". k: part categories (None: chosen
    by the clusterer's criterion). batch_size: images per segment task; extract_batch_size:
    images per UNet forward, part of the store's identity, so the default equals the extract
    flow's (the nightly ``extract`` and ``bird-parts`` deployments share one store).
    Returns each stage's summary and seconds.
    """
    logger = get_run_logger()
    fan_out = {"max_workers": max_workers, "dask_address": dask_address, "dask_workers": dask_workers}
    seconds: dict[str, float] = {}

    # 1. Extract (DESIGN 5.1): one task per batch of images.
    start = time.perf_counter()
    extracted = extract_attention(corpus, model=model, store=store, batch_size=extract_batch_size, **fan_out)
    seconds["extract"] = time.perf_counter() - start

    # 2. Segment (DESIGN 5.2-5.4), reading the attention the first stage wrote.
    start = time.perf_counter()
    segmented = segment_dataset(store, method=method, corpus=corpus, batch_size=batch_size, **fan_out)
    seconds["segment"] = time.perf_counter() - start

    # 3. Parts across the dataset (DESIGN 5.5).
    start = time.perf_counter()
    parts = discover_parts(store, k=k, corpus=corpus, evaluate=evaluate)
    seconds["parts"] = time.perf_counter() - start

    logger.info("bird-parts done in %.1f s: %s", sum(seconds.values()), seconds)
    return {"extract": extracted, "segment": segmented, "parts": parts,
            "seconds": {key: round(value, 2) for key, value in seconds.items()}}


if __name__ == "__main__":
    import sys

    from diffparts.corpus import generate_birds

    work = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/pipeline")
    corpus_dir = work / "corpus"
    if not (corpus_dir / "images.txt").exists():
        generate_birds(corpus_dir, n=16, seed=0)
    print(bird_parts(str(corpus_dir), str(work / "store.zarr")))
