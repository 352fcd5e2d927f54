"""Placeholder tokens, multi-vector names and the hook that injects the trainable rows."""

import pytest
import torch

from diffparts.inversion.tokens import (TrainableTokens, add_part_tokens, expand_prompt, freeze, part_token,
                                        vector_names)


def test_names():
    assert part_token(3) == "<part-3>"
    assert vector_names("<part-3>", 3) == ["<part-3>", "<part-3>_1", "<part-3>_2"]
    assert expand_prompt("a bird with <part-3>", {"<part-3>": 2}) == "a bird with <part-3> <part-3>_1"
    assert expand_prompt("a bird with <part-3>", {"<part-3>": 1}) == "a bird with <part-3>"
    with pytest.raises(ValueError, match="background"):
        part_token(0)


def test_add_tokens_initialises_from_word_and_refuses_clashes(fresh_pipe):
    pipe = fresh_pipe()
    tok, te = pipe.tokenizer, pipe.text_encoder
    before = te.get_input_embeddings().weight.detach().clone()
    added = add_part_tokens(tok, te, ["<part-1>", "<part-2>"], num_vectors=2, initializer="bird")
    weight = te.get_input_embeddings().weight.detach()
    assert weight.shape[0] == before.shape[0] + 4
    assert torch.equal(weight[: before.shape[0]], before)              # old rows untouched
    bird = tok.encode("bird", add_special_tokens=False)[0]
    for row in added.flat_ids:
        assert torch.equal(weight[row], before[bird])
    assert tok.tokenize("<part-2>_1") == ["<part-2>_1"]
    with pytest.raises(ValueError, match="already exist"):
        add_part_tokens(tok, te, ["<part-2>"], num_vectors=1)
    with pytest.raises(ValueError, match="single token"):
        add_part_tokens(tok, te, ["<part-9>"], initializer="blue wing")


def test_hook_replaces_only_the_new_ids_and_is_differentiable(fresh_pipe):
    pipe = fresh_pipe()
    te = pipe.text_encoder
    added = add_part_tokens(pipe.tokenizer, te, ["<part-1>"])
    freeze(te)
    trainable = TrainableTokens.from_encoder(te, added)
    with torch.no_grad():
        trainable.vectors.add_(1.0)
    ids = torch.tensor([[added.initializer_id, added.flat_ids[0], added.initializer_id]])
    emb = te.get_input_embeddings()
    with trainable.installed(te):
        out = emb(ids)
    plain = emb(ids)
    assert torch.equal(out[0, 0], plain[0, 0]) and torch.equal(out[0, 2], plain[0, 2])
    assert torch.allclose(out[0, 1], trainable.vectors[0, 0])
    out.sum().backward()
    assert trainable.vectors.grad is not None and emb.weight.grad is None
    assert torch.equal(emb(ids), plain)                                 # hook removed on exit
