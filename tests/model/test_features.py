"""UNet feature capture (diffparts.model.features) on the tiny random pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffparts.model.extract import CaptureConfig, extract_attention
from diffparts.model.features import (FeatureCapture, FeatureConfig, default_feature_blocks, resolve_blocks,
                                      up_block_sides)


def images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_default_block_is_dift_choice_adapted_to_the_layout(tiny_pipeline):
    _, pipe = tiny_pipeline
    sides = up_block_sides(pipe.unet)
    assert sides == [16, 16]                                  # latent 16, one downsampling, upsampled back
    assert default_feature_blocks(pipe.unet) == (0,)          # none at half the side: the first nearest
    with pytest.raises(ValueError, match=r"up_blocks \[5\] do not exist"):
        resolve_blocks(pipe.unet, [5])


def test_same_forward_features_equal_the_up_block_output(tiny_pipeline):
    _, pipe = tiny_pipeline
    x = images(2)
    result = extract_attention(pipe, x, CaptureConfig(), FeatureConfig(blocks=(0, 1)))
    assert result.self_attn.shape[0] == 2
    assert set(result.features) == {0, 1}
    assert result.features[0].shape == (2, pipe.unet.config.block_out_channels[-1], 16, 16)
    assert result.features[1].shape == (2, pipe.unet.config.block_out_channels[0], 16, 16)
    # hooks are removed: a second forward adds nothing, and a plain hook on the same block
    # sees the same tensor the capture stored
    assert not pipe.unet.up_blocks[0]._forward_hooks
    seen = {}
    handle = pipe.unet.up_blocks[1].register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    try:
        extract_attention(pipe, x, CaptureConfig(), None)
    finally:
        handle.remove()
    np.testing.assert_allclose(seen["out"].numpy(), result.features[1], atol=1e-5)


def test_noise_samples_are_seeded_and_averaged(tiny_pipeline):
    _, pipe = tiny_pipeline
    x = images(1, seed=3)
    cfg = FeatureConfig(timestep=261, noise_samples=3, seed=1, prompt="a red bird")
    a = extract_attention(pipe, x, CaptureConfig(), cfg).features[0]
    b = extract_attention(pipe, x, CaptureConfig(), cfg).features[0]
    np.testing.assert_array_equal(a, b)
    same = extract_attention(pipe, x, CaptureConfig(), FeatureConfig()).features[0]
    assert not np.allclose(a, same, atol=1e-4)
    # the average of 3 samples equals the mean of the hooked outputs of the 3 noised copies
    capture = FeatureCapture(pipe.unet, (0,))
    capture.repeats = 3
    latents = torch.zeros(3, 4, 16, 16)
    emb = torch.zeros(3, pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size)
    with torch.inference_mode(), capture:
        pipe.unet(latents, torch.tensor([10]), encoder_hidden_states=emb)
    assert capture.mean(0).shape[0] == 1 and capture.forwards == 1


def test_bad_feature_settings_raise():
    with pytest.raises(ValueError, match="noise_samples must be >= 0, got -1"):
        FeatureConfig(noise_samples=-1)
    with pytest.raises(ValueError, match="blocks"):
        FeatureConfig(blocks=())
    assert FeatureConfig().same_forward(300, "") and not FeatureConfig(noise_samples=2).same_forward(300, "")
