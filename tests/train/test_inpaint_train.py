"""The toy inpainting checkpoint's trainer: a quick run saves a loadable 9-channel pipeline."""

import json
import re

import numpy as np
import pytest

from diffparts.train.renders import MASK_KINDS, downsample_labels, random_mask


def test_random_masks_of_every_kind():
    rng = np.random.default_rng(0)
    parts = np.zeros((32, 32), np.uint8)
    parts[8:20, 8:24] = 4
    parts[4:8, 20:26] = 1
    for kind in MASK_KINDS:
        mask, got = random_mask(rng, parts, kind)
        assert mask.shape == parts.shape and mask.dtype == bool and mask.any() and got == kind
    mask, _ = random_mask(rng, parts, "part")
    assert (parts[mask] > 0).mean() > 0.5                      # a part (dilated by at most 2 px)
    with pytest.raises(ValueError, match="blob"):
        random_mask(rng, parts, "blob")


def test_downsample_labels_takes_the_majority():
    labels = np.zeros((1, 4, 4), np.uint8)
    labels[0, :2, :2] = [[3, 3], [3, 0]]
    out = downsample_labels(labels, 2)
    assert out.shape == (1, 2, 2) and out[0, 0, 0] == 3 and out[0, 1, 1] == 0


def test_quick_inpaint_training_saves_an_inpainting_pipeline(tiny_pipeline, tmp_path):
    from diffparts.occlusion.complete import load_inpaint_pipeline
    from diffparts.train.inpaint import quick_inpaint_config, train_inpaint

    path, pipe = tiny_pipeline
    record = train_inpaint(path, tmp_path / "inp", quick_inpaint_config(), log=lambda _m: None)
    saved = json.loads((tmp_path / "inp" / "training.json").read_text())
    assert saved["steps"] == 2 and saved["held_out_loss_4ch_start"] == record["held_out_loss_4ch_start"]
    # zero-initialised extra channels: the inflated start computes exactly the 4-channel model
    assert saved["held_out_loss_inflated_start"]["all"] == pytest.approx(saved["held_out_loss_4ch_start"]["all"], rel=1e-5)
    inpaint = load_inpaint_pipeline(tmp_path / "inp")
    assert inpaint.unet.config.in_channels == 9
    assert inpaint.tokenizer.get_vocab() == pipe.tokenizer.get_vocab()    # tokens of the base load into it
    with pytest.raises(ValueError, match="4-channel"):
        train_inpaint(tmp_path / "inp", tmp_path / "again", quick_inpaint_config(), log=lambda _m: None)


def test_cli_train_inpaint_quick_writes_the_card(tiny_pipeline, tmp_path, capsys):
    from diffparts.cli import main

    path, _ = tiny_pipeline
    assert main(["train-inpaint", "--model", str(path), "--out", str(tmp_path / "i"), "--quick"]) == 0
    card = (tmp_path / "i" / "README.md").read_text()
    assert "diffparts train-inpaint --model" in card and "4-channel start" in card
    out = capsys.readouterr().out
    assert re.search(r"noise-prediction loss inside the mask \d+\.\d{4} \(start \d+\.\d{4}\)", out)
    assert "{" not in out and "np." not in out                       # figures, not dict or numpy reprs
    assert main(["train-inpaint", "--model", str(tmp_path / "i"), "--out", str(tmp_path / "x"), "--quick"]) == 2
    assert "4-channel" in capsys.readouterr().err                 # one line naming the problem


def test_loss_text_gives_four_decimals_and_the_start():
    from diffparts.train.inpaint import loss_text

    assert loss_text({"masked": 0.15382, "all": 0.04316}) == "inside the mask 0.1538, whole latent 0.0432"
    assert loss_text({"masked": 0.15, "all": 0.04}, {"masked": 0.16053, "all": 0.111}) == (
        "inside the mask 0.1500 (start 0.1605), whole latent 0.0400 (start 0.1110)")


def test_held_out_loss_builds_no_graph():
    """The held-out loss is read mid-training from a UNet that requires grad: no autograd graph."""
    from types import SimpleNamespace

    import torch
    from diffusers import DDPMScheduler

    from diffparts.train.inpaint import held_out_loss

    seen = []
    weight = torch.nn.Parameter(torch.ones(()))

    class Unet:
        config = SimpleNamespace(in_channels=9)

        def __call__(self, x, t, encoder_hidden_states):
            seen.append(torch.is_grad_enabled())
            return SimpleNamespace(sample=x[:, :4] * weight)

    data = SimpleNamespace(val_latents=torch.zeros(2, 4, 4, 4), val_noise=torch.ones(2, 4, 4, 4),
                           val_t=torch.tensor([10, 20]), val_mask=torch.ones(2, 1, 4, 4),
                           val_masked=torch.zeros(2, 4, 4, 4), val_ids=torch.zeros(2, 3, dtype=torch.long))
    loss = held_out_loss(Unet(), lambda ids: (torch.zeros(2, 3, 8),), DDPMScheduler(num_train_timesteps=100), data)
    assert seen == [False]
    assert set(loss) == {"all", "masked"} and all(isinstance(v, float) for v in loss.values())
