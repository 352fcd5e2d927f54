"""Semantic names of segments from cross-attention (DiffSeg's labelling step)."""

from __future__ import annotations

import numpy as np
import pytest

from diffparts.segment.naming import name_segments, word_tokens

TOKENS = ["<|startoftext|>", "a</w>", "red</w>", "bird</w>", "with</w>", "wing</w>", "<|endoftext|>"]


def cross_for(labels: np.ndarray) -> np.ndarray:
    """(token, y, x): 'bird' attends to segment 0, 'wing' to segment 1, specials everywhere."""
    cross = np.full((len(TOKENS), *labels.shape), 0.01, dtype=np.float32)
    cross[0] = 0.9  # start token: large everywhere, must never win
    cross[3][labels == 0] = 0.5
    cross[5][labels == 1] = 0.5
    cross[2] = 0.05  # 'red': weak everywhere
    return cross


def test_word_tokens_drop_specials_and_stop_words():
    assert word_tokens(TOKENS) == [(2, "red"), (3, "bird"), (5, "wing")]


@pytest.mark.parametrize("voting", ["mean", "majority"])
def test_each_segment_takes_its_strongest_word(voting):
    labels = np.zeros((8, 8), dtype=int)
    labels[:, 5:] = 1
    index, names = name_segments(labels, cross_for(labels), TOKENS, voting=voting)
    assert names == ["bird", "wing"]
    assert index.tolist() == [3, 5]


def test_names_at_higher_resolution_than_attention():
    coarse = np.zeros((4, 4), dtype=int)
    coarse[:, 2:] = 1
    labels = np.kron(coarse, np.ones((4, 4), dtype=int))  # 16 x 16
    _, names = name_segments(labels, cross_for(coarse), TOKENS)
    assert names == ["bird", "wing"]


def test_empty_prompt_gives_no_names():
    labels = np.zeros((4, 4), dtype=int)
    index, names = name_segments(labels, np.ones((2, 4, 4), np.float32), ["<|startoftext|>", "<|endoftext|>"])
    assert index.tolist() == [-1] and names == [""]


def test_bad_inputs_refused():
    labels = np.zeros((4, 4), dtype=int)
    with pytest.raises(ValueError, match="voting"):
        name_segments(labels, cross_for(labels), TOKENS, voting="median")
    with pytest.raises(ValueError, match="tokens"):
        name_segments(labels, cross_for(labels)[:3], TOKENS)
    bad = cross_for(labels)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        name_segments(labels, bad, TOKENS)
