"""Completion with an inpainting checkpoint (9-channel UNet): outside pixels kept bit for bit,
tokens of another tokenizer refused by name, a model that is not an inpainting pipeline refused."""

import json

import numpy as np
import pytest
import torch

from diffparts.occlusion.complete import (CompletionConfig, complete, default_inpaint_model, inpaint_pipeline,
                                          load_inpaint_pipeline, load_tokens)
from diffparts.train.inpaint import inflate_unet, save_inpaint_folder


@pytest.fixture(scope="module")
def tiny_inpaint(tiny_pipeline, tmp_path_factory):
    """A 9-channel inpainting folder made from the tiny pipeline (same tokenizer), and its path."""
    _, pipe = tiny_pipeline
    torch.manual_seed(0)
    unet = inflate_unet(pipe.unet)
    with torch.no_grad():                     # non-zero extra channels, so the condition matters
        unet.conv_in.weight[:, 4:] = 0.1 * torch.randn_like(unet.conv_in.weight[:, 4:])
    path = tmp_path_factory.mktemp("inpaint") / "model"
    save_inpaint_folder(pipe, unet, path)
    return path


def _token_dir(tmp_path, width: int):
    from diffparts.inversion.saving import save_embedding, write_index

    directory = tmp_path / "noise"
    save_embedding(directory / "part-1.safetensors", "<part-1>", torch.randn(1, width))
    write_index(directory, [{"token": "<part-1>", "category": 1, "file": "part-1.safetensors"}])
    return directory


def test_inflated_unet_computes_the_four_channel_unet(tiny_pipeline):
    _, pipe = tiny_pipeline
    unet = inflate_unet(pipe.unet)
    assert unet.config.in_channels == 9
    x = torch.randn(1, 4, 16, 16)
    extra = torch.randn(1, 5, 16, 16)
    ctx = torch.randn(1, 16, pipe.text_encoder.config.hidden_size)
    with torch.no_grad():
        a = pipe.unet(x, 10, encoder_hidden_states=ctx).sample
        b = unet(torch.cat([x, extra], 1), 10, encoder_hidden_states=ctx).sample
    assert torch.allclose(a, b, atol=1e-5)


def test_inpainting_model_keeps_the_outside_exactly(tiny_pipeline, tiny_inpaint):
    _, pipe = tiny_pipeline
    inpaint = inpaint_pipeline(pipe, tiny_inpaint)
    assert inpaint.unet.config.in_channels == 9
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    mask[5:11, 3:17] = True                                    # not aligned to latent cells
    cfg = CompletionConfig(steps=2)
    out = complete(inpaint, image, mask, "red wing", seed=3, config=cfg)
    assert np.array_equal(out[~mask], image[~mask])            # bit for bit outside
    assert (out[mask] != image[mask]).any()
    assert np.array_equal(complete(inpaint, image, mask, "red wing", seed=3, config=cfg), out)
    blended = complete(inpaint_pipeline(pipe), image, mask, "red wing", seed=3, config=cfg)
    assert not np.array_equal(blended, out)                    # another model inside the mask


def test_tokens_load_into_the_inpainting_text_encoder(tiny_pipeline, tiny_inpaint, tmp_path):
    _, pipe = tiny_pipeline
    inpaint = load_inpaint_pipeline(tiny_inpaint)
    directory = _token_dir(tmp_path, pipe.text_encoder.config.hidden_size)
    assert load_tokens(inpaint, directory, tokenizer=pipe.tokenizer) == ["<part-1>"]
    assert "<part-1>" in inpaint.tokenizer.get_vocab()
    inpaint.unload_textual_inversion()


def test_tokens_of_another_tokenizer_are_refused_by_name(tiny_pipeline, tmp_path):
    from diffparts.model.build import build_components

    _, pipe = tiny_pipeline
    other = build_components(words=["green", "tail"], seed=1)              # another vocabulary
    torch.manual_seed(0)
    other_unet = inflate_unet(other.unet)
    folder = tmp_path / "other-inpaint"
    save_inpaint_folder(other.pipeline(), other_unet, folder)
    inpaint = load_inpaint_pipeline(folder)
    directory = _token_dir(tmp_path, pipe.text_encoder.config.hidden_size)
    with pytest.raises(ValueError, match="other-inpaint.*another tokenizer than my-base"):
        load_tokens(inpaint, directory, tokenizer=pipe.tokenizer, inpaint_name=str(folder), tokens_from="my-base")
    assert "<part-1>" not in inpaint.tokenizer.get_vocab()                 # nothing loaded


def test_a_model_that_is_not_an_inpainting_pipeline_is_refused(tiny_pipeline, tmp_path):
    path, _ = tiny_pipeline
    with pytest.raises(ValueError, match=r"inpaint model '.*model' is not an inpainting pipeline: its UNet takes 4"):
        load_inpaint_pipeline(path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_inpaint_pipeline(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model_index.json").write_text(json.dumps({"_class_name": "X"}))
    with pytest.raises(ValueError, match="junk"):
        load_inpaint_pipeline(tmp_path / "junk")


def test_default_inpaint_model_only_for_the_embedded_model(tiny_pipeline):
    path, _ = tiny_pipeline
    assert default_inpaint_model(path) is None
    default = default_inpaint_model(None)
    assert default is None or (default / "model_index.json").is_file()
