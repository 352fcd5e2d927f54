"""Completion leaves every pixel outside the hidden region equal to the input; latent cells."""

import numpy as np
import pytest

from diffparts.occlusion.complete import (CompletionConfig, complete, encode_prompts, inpaint_pipeline,
                                          latent_cell_mask, token_prompt)


def test_latent_cell_mask_dilates_to_whole_cells():
    mask = np.zeros((8, 8), bool)
    mask[1, 5] = True
    cells = latent_cell_mask(mask, 4)
    assert cells[:4, 4:].all() and cells.sum() == 16
    with pytest.raises(ValueError, match="multiple of the latent factor"):
        latent_cell_mask(np.zeros((6, 6), bool), 4)


def test_token_prompt():
    assert token_prompt([3, 5]) == "a photo of a bird with <part-3> and <part-5>"
    with pytest.raises(ValueError):
        token_prompt([])


def test_completion_keeps_the_outside_exactly(tiny_pipeline):
    _, pipe = tiny_pipeline
    inpaint = inpaint_pipeline(pipe)
    rng = np.random.default_rng(0)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), bool)
    mask[3:9, 5:13] = True                                     # not aligned to latent cells
    cfg = CompletionConfig(steps=2)
    out = complete(inpaint, image, mask, "red wing", seed=1, config=cfg)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert np.array_equal(out[~mask], image[~mask])            # bit for bit outside
    assert (out[mask] != image[mask]).any()                    # something was generated inside
    again = complete(inpaint, image, mask, encode_prompts(pipe, ["red wing"])[0], seed=1, config=cfg)
    assert np.array_equal(again, out)                          # same seed, same prompt via embeddings

    big = rng.integers(0, 256, (size + 8, size + 8, 3), dtype=np.uint8)   # not the model size
    bmask = np.zeros(big.shape[:2], bool)
    bmask[10:20, 10:20] = True
    bout = complete(inpaint, big, bmask, "", seed=0, config=cfg)
    assert np.array_equal(bout[~bmask], big[~bmask])
    with pytest.raises(ValueError, match="differ in size"):
        complete(inpaint, image, bmask, "", seed=0, config=cfg)
