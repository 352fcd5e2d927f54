"""load_pipeline: local folders, the default checkpoint, and clear errors when weights are missing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import diffparts.model.load as load
from diffparts.model.load import load_pipeline


def test_loads_a_local_folder_with_explicit_dtype(tiny_pipeline):
    path, _ = tiny_pipeline
    pipe = load_pipeline(path, device="cpu", dtype=torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and pipe.unet.device.type == "cpu"
    assert pipe.safety_checker is None
    assert load_pipeline(str(path)).unet.dtype == torch.float32


def test_default_model_missing_says_how_to_train_it(monkeypatch, tmp_path):
    monkeypatch.setattr(load, "DEFAULT_MODEL", tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="diffparts train-toy"):
        load_pipeline()


def test_default_model_is_used_when_present(monkeypatch, tiny_pipeline):
    path, _ = tiny_pipeline
    monkeypatch.setattr(load, "DEFAULT_MODEL", path)
    assert load_pipeline().unet.config.sample_size == 16


def test_missing_folder_and_missing_index(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pipeline(str(tmp_path / "a" / "b" / "missing"))
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        load_pipeline(tmp_path)


def test_pickle_only_weights_are_refused(tiny_pipeline, tmp_path):
    path, _ = tiny_pipeline
    copy = tmp_path / "pickled"
    shutil.copytree(path, copy)
    for weights in (copy / "unet").glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ValueError, match=r"only pickle weights \['diffusion_pytorch_model.bin'\]"):
        load_pipeline(copy)
    (copy / "unet" / "diffusion_pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="unet/ has no weights"):
        load_pipeline(copy)


def test_unreachable_hub_id_names_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="'nobody-here/no-such-model'.*HF_HUB_OFFLINE"):
        load_pipeline("nobody-here/no-such-model")


def test_bad_arguments(tiny_pipeline):
    path, _ = tiny_pipeline
    with pytest.raises(ValueError, match="dtype"):
        load_pipeline(path, dtype="float16")
    with pytest.raises(ValueError, match="'nowhere'"):
        load_pipeline(path, device="nowhere")
    with pytest.raises(ValueError, match="model_index.json is not valid JSON"):
        bad = path.parent / "bad-index"
        bad.mkdir(exist_ok=True)
        (bad / "model_index.json").write_text("{")
        load_pipeline(bad)
    assert json.loads((path / "model_index.json").read_text())["unet"]
