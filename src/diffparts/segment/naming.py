"""Semantic names of segments from cross-attention (DiffSeg's labelling step; issue 5 item 5).

With a caption (the synthetic birds) or a class name (CUB) in the prompt, every prompt word has
a cross-attention map ``cross[token, qy, qx]``. As in the reference (google/diffseg
``get_semantics``): the word maps are upsampled bilinearly to the label map's size and each is
divided by its L2 norm over the pixels (so a word that attends everywhere does not win
everywhere); then each segment takes

- ``voting="mean"`` (default): the word with the highest mean normalised map inside it;
- ``voting="majority"``: the word that is the per-pixel argmax most often inside it (the
  reference takes the median of the argmax indices, which depends on word order; the mode
  does not).

Special tokens (start/end of text, padding, empty) and punctuation never name a segment; with no
word tokens (the empty prompt, DiffSeg's default) every segment gets no name (-1, ""). Off by
default in the segment flow (``names=True`` turns it on).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from diffparts.segment.diffseg import resize_bilinear

__all__ = ["VOTINGS", "name_segments", "word_tokens"]

VOTINGS = ("mean", "majority")
_SPECIAL = {"<|startoftext|>", "<|endoftext|>", "<pad>", "<|pad|>", "!"}


def word_tokens(tokens: Sequence[str], stop_words: Sequence[str] = ("a", "an", "the", "of", "with", "and", "photo")) -> list[tuple[int, str]]:
    """(token index, word) of the tokens that can name a segment (CLIP's ``</w>`` suffix removed)."""
    stop = set(stop_words)
    out = []
    for index, token in enumerate(tokens):
        word = str(token).replace("</w>", "").strip().lower()
        if not word or token in _SPECIAL or word in _SPECIAL or not any(c.isalnum() for c in word):
            continue
        if word in stop:
            continue
        out.append((index, word))
    return out


def name_segments(
    labels: np.ndarray,
    cross_attn: np.ndarray,
    tokens: Sequence[str],
    voting: str = "mean",
    stop_words: Sequence[str] = ("a", "an", "the", "of", "with", "and", "photo"),
) -> tuple[np.ndarray, list[str]]:
    """Name every segment of ``labels`` (y, x), 0..K-1, from ``cross_attn`` (token, qy, qx).

    Returns (token index per segment (segment,) int32, -1 when no word token exists; the words,
    "" for none).
    """
    labels = np.asarray(labels)
    cross_attn = np.asarray(cross_attn, dtype=np.float32)
    if voting not in VOTINGS:
        raise ValueError(f"voting must be one of {VOTINGS}, got {voting!r}")
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"labels must be (y, x) non-negative integers, got {labels.dtype} {labels.shape}")
    if cross_attn.ndim != 3 or cross_attn.shape[0] != len(tokens):
        raise ValueError(f"cross_attn must be (token, qy, qx) with {len(tokens)} tokens, got {cross_attn.shape}")
    if not np.isfinite(cross_attn).all():
        raise ValueError("cross_attn contains non-finite values")
    n_segments = int(labels.max()) + 1
    words = word_tokens(tokens, stop_words)
    if not words:
        return np.full(n_segments, -1, dtype=np.int32), [""] * n_segments

    # 1. Word maps at label resolution, each normalised by its L2 norm over pixels (reference)
    index = np.array([i for i, _ in words])
    maps = resize_bilinear(cross_attn[index], labels.shape).reshape(len(index), -1)  # token (y x)
    maps /= np.linalg.norm(maps, axis=1, keepdims=True) + 1e-12
    flat = labels.ravel()

    # 2. Vote inside each segment
    if voting == "mean":
        sums = np.zeros((n_segments, len(index)))
        np.add.at(sums, flat, maps.T)  # segment token
        choice = sums.argmax(1)  # mean and sum have the same argmax per segment
    else:
        winner = maps.argmax(0)  # (y x) token position
        counts = np.zeros((n_segments, len(index)), dtype=np.int64)
        np.add.at(counts, (flat, winner), 1)
        choice = counts.argmax(1)
    present = np.bincount(flat, minlength=n_segments) > 0
    token_index = np.where(present, index[choice], -1).astype(np.int32)
    names = [words[c][1] if ok else "" for c, ok in zip(choice, present)]
    return token_index, names
