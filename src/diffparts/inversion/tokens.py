"""Placeholder tokens for part categories and the only embedding rows that learn (docs/design.md §5.6 "Part embeddings").

One token per part category, ``<part-k>`` (background, category 0, gets none). With
``num_vectors = n > 1`` a token is the multi-vector form diffusers' ``load_textual_inversion``
reads: the tokens ``<part-k>``, ``<part-k>_1``, ... ``<part-k>_{n-1}``, and a prompt that names
``<part-k>`` is expanded to all of them (:func:`expand_prompt`, the same rule as diffusers'
``maybe_convert_prompt``), so a saved embedding works in an unchanged prompt.

Only the new rows learn, by construction: the trainable vectors live in their own float32
``nn.Parameter`` (:class:`TrainableTokens`) and reach the text encoder through a forward hook
on its input-embedding layer that replaces the output at the new token ids. The embedding
matrix, and every weight of the text encoder, UNet and VAE, has ``requires_grad=False`` and is
never touched by the optimiser, so it stays bit-identical (no AdamW weight decay on the whole
matrix, which diffusers' example has to undo row by row after every step). Mixed precision:
the vectors stay float32 and are cast to the encoder's dtype inside the hook.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn


def part_token(category: int) -> str:
    """The placeholder token of part category ``category`` (1..K): ``<part-k>``."""
    if int(category) < 1:
        raise ValueError(f"part categories are 1..K (0 is background and gets no token), got {category}")
    return f"<part-{int(category)}>"


def vector_names(token: str, num_vectors: int) -> list[str]:
    """The tokenizer entries of a multi-vector token: ``tok, tok_1, ..., tok_{n-1}`` (diffusers)."""
    if num_vectors < 1:
        raise ValueError(f"num_vectors must be >= 1, got {num_vectors}")
    return [token] + [f"{token}_{i}" for i in range(1, num_vectors)]


def expand_prompt(prompt: str, tokens: dict[str, int]) -> str:
    """Replace each multi-vector ``tok`` in ``prompt`` by ``tok tok_1 ... tok_{n-1}``.

    ``tokens``: {token: num_vectors}. The same text diffusers' ``maybe_convert_prompt`` gives
    after ``load_textual_inversion``, so training and generation see identical ids.
    """
    for token, n in tokens.items():
        if n > 1 and token in prompt:
            prompt = prompt.replace(token, " ".join(vector_names(token, n)))
    return prompt


def initializer_id(tokenizer, word: str) -> int:
    """The id of ``word`` as ONE token of ``tokenizer``; ValueError naming it otherwise."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"initializer word {word!r} is {len(ids)} tokens {pieces} for this tokenizer; "
            "pass a word that is a single token (e.g. the class word 'bird')"
        )
    return int(ids[0])


@dataclass(frozen=True)
class AddedTokens:
    """Tokens added to a tokenizer and text encoder: names, ids, and their initial rows."""

    tokens: tuple[str, ...]            # one per part category, e.g. ("<part-1>", "<part-3>")
    ids: tuple[tuple[int, ...], ...]   # token -> its num_vectors tokenizer ids
    num_vectors: int
    initializer: str
    initializer_id: int

    @property
    def flat_ids(self) -> list[int]:
        return [i for row in self.ids for i in row]

    @property
    def multi(self) -> dict[str, int]:
        return {t: self.num_vectors for t in self.tokens}


def add_part_tokens(tokenizer, text_encoder, tokens: Sequence[str], num_vectors: int = 1,
                    initializer: str = "bird") -> AddedTokens:
    """Add ``tokens`` (each ``num_vectors`` entries) to the tokenizer and grow the embedding.

    Every new row starts as the initializer word's row. A token (or one of its ``_i`` entries)
    that the tokenizer already has raises ValueError naming it; nothing is added then.
    """
    if not tokens:
        raise ValueError("no tokens to add")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"duplicate tokens in {list(tokens)}")
    init = initializer_id(tokenizer, initializer)
    vocab = tokenizer.get_vocab()
    names = [vector_names(t, num_vectors) for t in tokens]
    clash = [n for row in names for n in row if n in vocab]
    if clash:
        raise ValueError(
            f"token(s) {clash} already exist in the tokenizer; a pipeline that has loaded these "
            "embeddings cannot train them again (load a fresh pipeline, or pick other names)"
        )
    flat = [n for row in names for n in row]
    added = tokenizer.add_tokens(flat)
    if added != len(flat):
        raise ValueError(f"the tokenizer added {added} of the {len(flat)} tokens {flat}")
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows set just below
    weight = text_encoder.get_input_embeddings().weight
    ids = tuple(tuple(int(i) for i in tokenizer.convert_tokens_to_ids(row)) for row in names)
    with torch.no_grad():
        for row in ids:
            weight[list(row)] = weight[init].clone()
    return AddedTokens(tuple(tokens), ids, int(num_vectors), initializer, init)


class TrainableTokens(nn.Module):
    """The learnable vectors of some added tokens, injected into a text encoder by a hook.

    ``vectors`` (token vector channel) float32 is the only parameter. Inside
    ``with trainable.installed(text_encoder):`` every occurrence of a token's ids in
    ``input_ids`` is embedded by its vector (differentiably), everything else by the frozen
    matrix.
    """

    def __init__(self, ids: Sequence[Sequence[int]], initial: torch.Tensor):
        super().__init__()
        self.ids = [list(map(int, row)) for row in ids]
        initial = torch.as_tensor(initial, dtype=torch.float32)
        if initial.ndim != 3 or initial.shape[:2] != (len(self.ids), len(self.ids[0])):
            raise ValueError(f"initial vectors must be (token, vector, channel) for ids {self.ids}, "
                             f"got shape {tuple(initial.shape)}")
        self.vectors = nn.Parameter(initial.clone())          # token vector channel, float32
        flat = torch.tensor([i for row in self.ids for i in row], dtype=torch.long)
        self.register_buffer("flat_ids", flat, persistent=False)

    @classmethod
    def from_encoder(cls, text_encoder, added: AddedTokens) -> "TrainableTokens":
        weight = text_encoder.get_input_embeddings().weight.detach()
        initial = torch.stack([weight[list(row)].float() for row in added.ids])  # token vector channel
        return cls(added.ids, initial.cpu()).to(weight.device)

    def _hook(self, module, inputs, output):
        input_ids = inputs[0]                                        # image token
        hit = input_ids[..., None] == self.flat_ids                  # image token new
        if not bool(hit.any()):
            return output
        rows = self.vectors.reshape(-1, self.vectors.shape[-1])      # new channel
        which = hit.float().argmax(-1)                               # image token: index into rows
        replaced = rows[which].to(output.dtype)                      # image token channel
        return torch.where(hit.any(-1, keepdim=True), replaced, output)

    @contextlib.contextmanager
    def installed(self, text_encoder) -> Iterator["TrainableTokens"]:
        handle = text_encoder.get_input_embeddings().register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()

    @torch.no_grad()
    def write_into(self, text_encoder) -> None:
        """Copy the vectors into the encoder's embedding rows (after training, for generation)."""
        weight = text_encoder.get_input_embeddings().weight
        for row_ids, vec in zip(self.ids, self.vectors):
            weight[row_ids] = vec.to(weight.dtype, copy=True).to(weight.device)


def freeze(*modules: nn.Module) -> None:
    """``requires_grad_(False)`` on every parameter of ``modules`` (UNet, VAE, text encoder)."""
    for module in modules:
        module.requires_grad_(False)
