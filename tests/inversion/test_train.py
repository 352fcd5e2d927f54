"""Training a part token on a tiny random pipeline: frozen weights, decreasing losses, resume,
diffusers' loader, precision."""

import dataclasses

import numpy as np
import pytest
import torch

from diffparts.inversion.saving import load_part_embeddings, save_embedding, write_index
from diffparts.inversion.tokens import TrainableTokens, add_part_tokens
from diffparts.inversion.train import InversionConfig, _step_loss, prompt_inputs, step_generator, token_positions
from diffparts.inversion.attention_loss import up_block_layers
from diffparts.inversion.train import _Batches, train_token, training_scheduler

FAST = InversionConfig(steps=4, batch_size=2, learning_rate=5e-2, initializer="bird", checkpoint_every=0)


def _snapshot(pipe):
    return {f"{name}.{k}": v.detach().clone() for name in ("unet", "vae", "text_encoder")
            for k, v in getattr(pipe, name).state_dict().items()}


@pytest.mark.parametrize("loss", ["noise", "attention", "combined"])
def test_only_the_new_rows_change(fresh_pipe, examples, loss):
    pipe = fresh_pipe()
    before = _snapshot(pipe)
    n_rows = pipe.text_encoder.get_input_embeddings().weight.shape[0]
    result = train_token(pipe, examples, "<part-1>", dataclasses.replace(FAST, loss=loss, num_vectors=2))
    after = _snapshot(pipe)
    weight = pipe.text_encoder.get_input_embeddings().weight
    key = "text_encoder." + next(n for n, p in pipe.text_encoder.named_parameters() if p is weight)
    assert set(before) == set(after)
    for name, value in before.items():
        if name != key:
            assert torch.equal(value, after[name]), name                 # bit-identical
    assert torch.equal(after[key][:n_rows], before[key])                 # every old row bit-identical
    assert torch.equal(after[key][n_rows:], result.vectors)              # the new rows = the learned vectors
    bird = pipe.tokenizer.encode("bird", add_special_tokens=False)[0]
    assert not torch.equal(result.vectors[0], before[key][bird])         # and they did learn
    assert result.vectors.dtype == torch.float32 and result.vectors.shape == (2, after[key].shape[1])


def _fixed_loss(pipe, examples, config, added):
    """The config's loss on one fixed draw, with the token rows now in the encoder."""
    trainable = TrainableTokens.from_encoder(pipe.text_encoder, added)
    ids = prompt_inputs(pipe.tokenizer, config.template.format(token=added.tokens[0]), added.multi)
    layers = up_block_layers(pipe.unet) if config.loss != "noise" else []
    torch_gen, np_gen = step_generator(999, 0, 0)
    latents, masks = _Batches(pipe, examples, dataclasses.replace(config, batch_size=6)).draw(torch_gen, np_gen)
    with torch.no_grad():
        return float(_step_loss(pipe, training_scheduler(pipe), config, ids, trainable, layers,
                                token_positions(ids, added.flat_ids), latents, masks, torch_gen))


@pytest.mark.parametrize("loss", ["noise", "attention"])
def test_the_loss_decreases(fresh_pipe, examples, loss):
    config = dataclasses.replace(FAST, loss=loss, steps=30, crops=False)
    start = fresh_pipe()
    added = add_part_tokens(start.tokenizer, start.text_encoder, ["<part-1>"], 1, "bird")
    initial = _fixed_loss(start, examples, config, added)
    pipe = fresh_pipe()
    result = train_token(pipe, examples, "<part-1>", config)
    added_after = dataclasses.replace(added, ids=((pipe.tokenizer.convert_tokens_to_ids("<part-1>"),),))
    final = _fixed_loss(pipe, examples, config, added_after)
    assert final < initial, (initial, final)


def test_resume_after_a_crash_ends_like_an_uninterrupted_run(fresh_pipe, examples, tmp_path):
    config = dataclasses.replace(FAST, steps=6, checkpoint_every=2, loss="combined")
    ckpt = tmp_path / "ckpt" / "part-1.safetensors"
    crashed = train_token(fresh_pipe(), examples, "<part-1>", config, checkpoint=ckpt, stop_after=5)
    assert crashed.steps == 5 and ckpt.is_file()                         # last checkpoint: step 4
    resumed = train_token(fresh_pipe(), examples, "<part-1>", config, checkpoint=ckpt)
    plain = train_token(fresh_pipe(), examples, "<part-1>", config)
    assert resumed.resumed_from == 4 and resumed.steps == 6
    assert torch.equal(resumed.vectors, plain.vectors)
    assert resumed.losses == plain.losses
    other = train_token(fresh_pipe(), examples, "<part-1>", dataclasses.replace(config, seed=1))
    assert not torch.equal(other.vectors, plain.vectors)
    with pytest.raises(ValueError, match="beyond the 3 steps"):
        train_token(fresh_pipe(), examples, "<part-1>", dataclasses.replace(config, steps=3), checkpoint=ckpt)
    with pytest.raises(ValueError, match="other training settings"):
        train_token(fresh_pipe(), examples, "<part-1>", dataclasses.replace(config, learning_rate=1.0),
                    checkpoint=ckpt)


def test_saved_files_load_through_diffusers_into_a_fresh_pipeline(fresh_pipe, examples, tmp_path):
    pipe = fresh_pipe()
    result = train_token(pipe, examples, "<part-1>", dataclasses.replace(FAST, num_vectors=2, steps=2))
    save_embedding(tmp_path / "part-1.safetensors", "<part-1>", result.vectors)
    write_index(tmp_path, [{"token": "<part-1>", "category": 1, "file": "part-1.safetensors"}])
    fresh = fresh_pipe()
    assert load_part_embeddings(fresh, tmp_path) == ["<part-1>"]
    ids = fresh.tokenizer.convert_tokens_to_ids(["<part-1>", "<part-1>_1"])
    assert torch.equal(fresh.text_encoder.get_input_embeddings().weight[ids].detach(), result.vectors)
    prompt = "a photo of a bird with <part-1>"
    a = fresh.encode_prompt(prompt, "cpu", 1, False)[0]
    b = pipe.encode_prompt(prompt, "cpu", 1, False)[0]                    # the training pipeline
    assert torch.equal(a, b)
    c = fresh.encode_prompt("a photo of a bird with bird", "cpu", 1, False)[0]
    assert not torch.equal(a, c)


def test_mixed_precision_keeps_the_rows_in_float32(fresh_pipe, examples):
    pipe = fresh_pipe().to(torch.bfloat16)
    result = train_token(pipe, examples, "<part-1>", dataclasses.replace(FAST, steps=2, loss="combined",
                                                                         gradient_accumulation=2))
    assert result.vectors.dtype == torch.float32 and torch.isfinite(result.vectors).all()
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))


def test_bad_input(fresh_pipe, examples):
    from diffparts.inversion.data import CategoryExamples

    empty = CategoryExamples(2, np.zeros(0, np.int64), examples.images[:0], examples.masks[:0])
    with pytest.raises(ValueError, match="no training images"):
        train_token(fresh_pipe(), empty, "<part-2>", FAST)
    with pytest.raises(ValueError, match="loss must be one of"):
        InversionConfig(loss="mse")
    with pytest.raises(ValueError, match="must contain"):
        InversionConfig(template="a bird")
