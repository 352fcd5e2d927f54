"""Prefect task: the corpus a run starts from (rendered synthetic birds on a fresh clone)."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.retry import NO_RETRIES


@task(**NO_RETRIES, cache_policy=NO_CACHE)  # half-rendered, the folder exists: a retry would take it as given
def ensure_corpus(corpus: str, synthetic_birds: int | None = None, seed: int = 0) -> dict:
    """``corpus`` as given when it exists; else, with ``synthetic_birds`` = N, N synthetic birds
    rendered there (what the deployments' defaults do on a fresh clone); else FileNotFoundError."""
    from diffparts.corpus import SynthConfig, generate_birds

    path = Path(corpus)
    if path.exists():
        return {"corpus": str(path), "rendered": 0}
    if not synthetic_birds:
        raise FileNotFoundError(f"corpus {corpus} does not exist: give a CUB-layout folder or a folder of images, "
                                "or add --synthetic-birds N to render N synthetic birds there (deployments: "
                                "synthetic_birds)")
    if int(synthetic_birds) < 1:
        raise ValueError(f"synthetic_birds must be >= 1, got {synthetic_birds}")
    # at least 3 birds per species, so each species has held-out birds (test split) for the
    # embeddings and occlusion stages: 48 birds = 16 species (the default), 16 birds = 5
    # rendered beside it and renamed when complete: a run killed while rendering leaves no
    # half-made corpus that the next run would take as the corpus
    n = int(synthetic_birds)
    partial = path.with_name(f"{path.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    generate_birds(partial, n=n, seed=int(seed), config=SynthConfig(n_classes=max(1, min(16, n // 3))))
    partial.rename(path)
    return {"corpus": str(path), "rendered": int(synthetic_birds)}
