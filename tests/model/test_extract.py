"""extract_attention on the tiny random pipeline: shapes, normalisation, batching, options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from diffparts.model.extract import AttentionResult, CaptureConfig, extract_attention, native_image_size


def images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)  # image y x 3


def test_result_shapes_and_normalisation(tiny_pipeline):
    _, pipe = tiny_pipeline
    result = extract_attention(pipe, images(2), CaptureConfig(prompt="a red bird"))
    assert isinstance(result, AttentionResult)
    assert result.resolution == 16 and result.image_size == 32 == native_image_size(pipe)
    assert result.self_attn.dtype == np.float32 and result.self_attn.shape == (2, 16, 16, 16, 16)
    n_tokens = pipe.tokenizer.model_max_length
    assert result.cross_attn.dtype == np.float32 and result.cross_attn.shape == (2, n_tokens, 16, 16)
    assert result.tokens[:4] == ["<|startoftext|>", "a</w>", "red</w>", "bird</w>"] and len(result.tokens) == n_tokens
    np.testing.assert_allclose(result.self_attn.sum((-1, -2)), 1.0, atol=1e-5)  # every key map
    np.testing.assert_allclose(result.cross_attn.sum(1), 1.0, atol=1e-5)  # tokens at every query


def test_batch_of_two_equals_two_batches_of_one(tiny_pipeline):
    _, pipe = tiny_pipeline
    batch = images(2, seed=1)
    both = extract_attention(pipe, batch)
    for i in range(2):
        one = extract_attention(pipe, batch[i : i + 1])
        np.testing.assert_allclose(one.self_attn[0], both.self_attn[i], atol=1e-5)
        np.testing.assert_allclose(one.cross_attn[0], both.cross_attn[i], atol=1e-5)


def test_images_are_resized_and_options_apply(tiny_pipeline):
    _, pipe = tiny_pipeline
    big = images(1, size=48, seed=2)
    clean = extract_attention(pipe, big)
    assert clean.image_size == 32 and clean.self_attn.shape == (1, 16, 16, 16, 16)
    noised = CaptureConfig(noise=True, seed=3)
    a, b = extract_attention(pipe, big, noised), extract_attention(pipe, big, noised)
    np.testing.assert_array_equal(a.self_attn, b.self_attn)  # seeded noise
    assert not np.allclose(a.self_attn, clean.self_attn, atol=1e-4)
    uniform = extract_attention(pipe, big, CaptureConfig(resolution_weights="uniform"))
    assert not np.allclose(uniform.self_attn, clean.self_attn, atol=1e-4)
    only_cross = extract_attention(pipe, big, CaptureConfig(self_attn=False))
    assert only_cross.self_attn is None
    np.testing.assert_allclose(only_cross.cross_attn, clean.cross_attn, atol=1e-6)
    at_64 = extract_attention(pipe, big, CaptureConfig(image_size=64, self_attn=False))
    assert at_64.image_size == 64 and at_64.resolution == 32


def test_bad_inputs_raise_value_errors(tiny_pipeline):
    _, pipe = tiny_pipeline
    with pytest.raises(ValueError, match="uint8"):
        extract_attention(pipe, images(1).astype(np.float32))
    with pytest.raises(ValueError, match=r"\(image, y, x, 3\)"):
        extract_attention(pipe, images(1)[0])
    with pytest.raises(ValueError, match="timestep 5000"):
        extract_attention(pipe, images(1), CaptureConfig(timestep=5000))
    with pytest.raises(ValueError, match="image_size 33"):
        extract_attention(pipe, images(1), CaptureConfig(image_size=33))
    with pytest.raises(ValueError, match="'bogus'"):
        CaptureConfig(resolution_weights="bogus")
    with pytest.raises(dataclasses.FrozenInstanceError):
        CaptureConfig().timestep = 1
