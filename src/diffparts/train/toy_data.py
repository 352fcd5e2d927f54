"""The toy trainer's data: corpus images and captions as tensors, flips, token ids.

``load_corpus_images`` reads a synthetic-bird corpus at the model's size, ``to_tensor`` scales it
to [-1, 1], ``_flip`` is the random left-right augmentation of both phases and ``_text_ids`` the
caption tokenisation (as the SD pipeline's ``encode_prompt``). Used by ``train.toy``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

def load_corpus_images(root: str | Path, size: int) -> tuple[np.ndarray, list[str]]:
    """The images of a synthetic-bird corpus at ``size`` px and their captions.

    Returns (image, y, x, 3) uint8 resized with PIL's box filter (an exact 2x average for the
    128 px renders) and one caption per image, in the corpus' image-id order.
    """
    from PIL import Image

    from diffparts.corpus import open_corpus

    records = list(open_corpus(root))
    if not records:
        raise ValueError(f"corpus {str(root)!r} has no images")
    images, captions = [], []
    for rec in records:
        with Image.open(rec.path) as img:
            img = img.convert("RGB")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BOX)
            images.append(np.asarray(img))
        captions.append(rec.caption or "")
    return np.stack(images), captions


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(image, y, x, 3) uint8 -> (image, 3, y, x) float32 in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip a random half of the batch left-right (the last axis is x)."""
    mask = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def _text_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    """(image, token) ids, padded and truncated as the SD pipeline's encode_prompt does."""
    return tokenizer(
        captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids
