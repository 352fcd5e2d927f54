"""The toy-checkpoint trainer: quick runs are deterministic and save a loadable SD folder; the
committed checkpoint loads and yields attention of the expected shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffparts.train.toy import QUICK_CONFIG, ToyTrainConfig, quick_config, train_toy


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    from diffparts.corpus import SynthConfig, generate_birds

    root = tmp_path_factory.mktemp("birds")
    generate_birds(root, 6, seed=0, config=SynthConfig(image_size=64))
    return root


@pytest.fixture(scope="module")
def quick_run(birds, tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "model"
    return train_toy(birds, out, QUICK_CONFIG, log=lambda msg: None)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unet_batch_size"):
        ToyTrainConfig(unet_batch_size=0)
    with pytest.raises(ValueError, match="caption_dropout"):
        ToyTrainConfig(caption_dropout=1.5)


def test_quick_training_is_deterministic_for_a_seed(birds, quick_run, tmp_path):
    again = train_toy(birds, tmp_path / "again", QUICK_CONFIG, log=lambda msg: None)
    assert quick_run.history == again.history
    assert quick_run.unet_val_loss == again.unet_val_loss
    assert quick_run.unet_steps == again.unet_steps == QUICK_CONFIG.unet_steps
    assert np.isfinite(quick_run.unet_loss) and np.isfinite(quick_run.vae_psnr_db)


def test_quick_training_saves_a_complete_loadable_folder(quick_run):
    from diffusers import StableDiffusionPipeline

    path = quick_run.path
    for sub in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        assert (path / sub).is_dir(), sub
    assert not list(path.rglob("*.bin")), "weights must be safetensors only"
    record = json.loads((path / "training.json").read_text())
    assert record["final"] and record["unet_steps"] == QUICK_CONFIG.unet_steps
    pipe = StableDiffusionPipeline.from_pretrained(path, use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    # the VAE's scaling factor was set from the latents, not left at the builder's 1.0
    assert pipe.vae.config.scaling_factor == pytest.approx(quick_run.scaling_factor)
    assert pipe.vae.config.scaling_factor != 1.0
    out = pipe("a red bird", num_inference_steps=2, output_type="np", height=32, width=32)
    assert out.images.shape == (1, 32, 32, 3)


def test_quick_checkpoint_attention_has_expected_shapes(quick_run):
    from diffparts.model.extract import extract_attention
    from diffparts.model.load import load_pipeline

    pipe = load_pipeline(quick_run.path)
    images = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    result = extract_attention(pipe, images)
    side = pipe.unet.config.sample_size  # the largest attention resolution: the first block's
    assert result.resolution == side
    assert result.self_attn.shape == (1, side, side, side, side)
    np.testing.assert_allclose(result.self_attn.sum(axis=(-2, -1)), 1.0, atol=1e-4)
    assert result.cross_attn.shape == (1, pipe.tokenizer.model_max_length, side, side)


def test_quick_config_overrides():
    assert quick_config(seed=3).seed == 3 and quick_config().unet_steps == QUICK_CONFIG.unet_steps


def test_committed_checkpoint_loads_and_captures_attention():
    from diffparts.model.load import DEFAULT_MODEL, load_pipeline

    if not (DEFAULT_MODEL / "model_index.json").is_file():
        pytest.skip(f"the toy checkpoint is not committed yet ({DEFAULT_MODEL} has no model_index.json)")
    from diffparts.model.extract import extract_attention

    size_mb = sum(p.stat().st_size for p in DEFAULT_MODEL.rglob("*") if p.is_file()) / 2**20
    assert size_mb < 20, f"checkpoint folder is {size_mb:.1f} MB"
    assert not list(DEFAULT_MODEL.rglob("*.bin")), "weights must be safetensors only"
    assert (DEFAULT_MODEL / "README.md").is_file(), "the model card is missing"
    pipe = load_pipeline(DEFAULT_MODEL)
    side = pipe.unet.config.sample_size
    images = np.full((1, 64, 64, 3), 128, dtype=np.uint8)
    result = extract_attention(pipe, images)
    assert result.resolution == side == 16
    assert result.image_size == 64
    assert result.self_attn.shape == (1, side, side, side, side)
    np.testing.assert_allclose(result.self_attn.sum(axis=(-2, -1)), 1.0, atol=1e-4)
    assert result.cross_attn.shape == (1, pipe.tokenizer.model_max_length, side, side)


def test_saved_tokenizer_folder_has_vocab_files_that_load_alike(quick_run):
    import shutil

    from transformers import CLIPTokenizer

    folder = quick_run.path / "tokenizer"
    assert (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    classic = folder.parent / "tokenizer-classic"
    shutil.copytree(folder, classic)
    (classic / "tokenizer.json").unlink()  # only vocab.json + merges.txt (+ config) left
    fast, slow = CLIPTokenizer.from_pretrained(folder), CLIPTokenizer.from_pretrained(classic)
    for caption in ("a red bird with a yellow crown on a branch", "", "grey wing"):
        assert fast(caption).input_ids == slow(caption).input_ids
    assert len(slow) == len(fast) > 256


def test_min_snr_weights_cap_clean_timesteps_only():
    from diffusers import DDPMScheduler

    from diffparts.train.toy import min_snr_weights

    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    t = torch.tensor([0, 50, 300, 999])
    w = min_snr_weights(sched, t, gamma=5.0)
    alpha_bar = sched.alphas_cumprod[t].double()
    snr = alpha_bar / (1 - alpha_bar)
    assert torch.all(w[snr <= 5] == 1.0)  # noisy timesteps keep the plain loss
    np.testing.assert_allclose(w[snr > 5].numpy(), (5.0 / snr[snr > 5]).numpy(), rtol=1e-6)
    assert w[0] < 0.01 and w[0] < w[1] < w[2]


def test_continuing_a_run_keeps_vae_and_tokenizer_and_records_lineage(birds, quick_run, tmp_path):
    from diffparts.model.load import load_pipeline

    cont = train_toy(birds, tmp_path / "cont", quick_config(init_from=str(quick_run.path), snr_gamma=5.0),
                     log=lambda msg: None)
    assert cont.vae_steps == 0 and cont.unet_steps == QUICK_CONFIG.unet_steps
    assert cont.previous["unet_steps"] == quick_run.unet_steps and cont.scaling_factor == pytest.approx(quick_run.scaling_factor)
    before, after = load_pipeline(quick_run.path), load_pipeline(cont.path)
    for a, b in zip(before.vae.parameters(), after.vae.parameters()):
        assert torch.equal(a, b)  # the VAE is kept
    changed = any(not torch.equal(a, b) for a, b in zip(before.unet.parameters(), after.unet.parameters()))
    assert changed  # the UNet trained on
    assert before.tokenizer("a red bird").input_ids == after.tokenizer("a red bird").input_ids
    record = json.loads((cont.path / "training.json").read_text())
    assert record["previous"]["config"]["init_from"] is None and record["config"]["snr_gamma"] == 5.0
    # where the continued components were loaded from is not saved with them
    for sub in ("unet", "vae"):
        assert "_name_or_path" not in json.loads((cont.path / sub / "config.json").read_text())
    assert "local_files_only" not in json.loads((cont.path / "tokenizer" / "tokenizer_config.json").read_text())


def test_continuing_refuses_another_seed_or_the_same_folder(birds, quick_run, tmp_path):
    with pytest.raises(ValueError, match="seed"):
        train_toy(birds, tmp_path / "x", quick_config(init_from=str(quick_run.path), seed=5), log=lambda m: None)
    with pytest.raises(ValueError, match="init_from folder"):
        train_toy(birds, quick_run.path, quick_config(init_from=str(quick_run.path)), log=lambda m: None)
    with pytest.raises(ValueError, match="training.json"):
        train_toy(birds, tmp_path / "y", quick_config(init_from=str(tmp_path)), log=lambda m: None)
