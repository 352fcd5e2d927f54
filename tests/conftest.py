"""Shared fixtures. Flow tests use the one session-scoped Prefect server below."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect server for the whole session (starting one takes 15-30 s).

    Flow tests take this fixture; unit tests of task logic call ``task.fn`` and need none.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """A tiny random Stable Diffusion pipeline saved to disk: (path, pipeline)."""
    from diffparts.model.build import build_components, save_components
    from diffusers import StableDiffusionPipeline

    path = tmp_path_factory.mktemp("tiny-sd") / "model"
    save_components(build_components(words=["red", "blue", "wing", "beak"], seed=0), path)
    pipe = StableDiffusionPipeline.from_pretrained(path, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return path, pipe


@pytest.fixture()
def fresh_pipe(tiny_pipeline):
    """A function returning a NEW tiny pipeline (own tokenizer and weights) from the saved folder."""
    from diffusers import StableDiffusionPipeline

    path, _ = tiny_pipeline

    def make():
        pipe = StableDiffusionPipeline.from_pretrained(path, use_safetensors=True, safety_checker=None,
                                                       feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    return make


@pytest.fixture()
def parts_store(tmp_path):
    """(store path, corpus folder): 8 images with segments and parts (K = 2) and a folder corpus."""
    import numpy as np
    from PIL import Image

    from diffparts.parts.dataset import build_descriptors, cluster_parts, image_infos, paint_part_labels
    from diffparts.parts.cluster import ClusterConfig
    from diffparts.parts.synthetic import make_part_store
    from diffparts.store import open_store

    store = tmp_path / "store.zarr"
    make_part_store(store, n_images=8, seed=3)
    corpus = tmp_path / "corpus"
    rng = np.random.default_rng(1)
    root = open_store(store, "r+")
    for row in root["images/name"][:]:
        path = corpus / str(row)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
    # the segment stage's settings, as assign_image re-segments a new image with them
    root["segments"].attrs["settings"] = {"method": "diffseg", "level_thresholds": [0.5], "rounds": 3,
                                          "anchors_per_side": 8, "out_shape": [16, 16], "eps": 1e-10}
    build_descriptors(root, image_infos(root, None))
    cluster_parts(root, ClusterConfig(n_clusters=2, random_state=0))
    paint_part_labels(root)
    return str(store), str(corpus)
