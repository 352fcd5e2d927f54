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
