"""What the judge says about a completed region or a generated image (docs/design.md §8 "Measures").

Part ids are the synthetic corpus' part-mask values (``PART_NAMES``, 1..9), which are the
judge's ``CLASSES`` indices. Arrays in, numbers out:

- :func:`region_scores`: for a completed image's judge labels, the true part map and the hidden
  region, ``iou`` (the hidden part's type read by the judge vs its true mask, whole image),
  ``iou_hidden`` (the same inside the hidden region only, where the variants differ),
  ``hidden_accuracy`` (judge label = true label over the hidden pixels, background included) and
  ``part_recall`` (share of the part's hidden pixels read as the part).
- :func:`score_completion`: the judge run on an image, then :func:`region_scores` per hidden part.
- :func:`part_presence_by_judge`: for images generated from a prompt, how often the judge finds a
  part type and what share of the bird it covers (the embeddings stage's "generates the part").

Where the corpus has no part masks (a real corpus), no judge applies: :func:`judge_applies` is
False and the measures are reported as n/a (None), never guessed.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def judge_applies(truth) -> bool:
    """Whether judge measures can be taken: true part maps of the synthetic kind exist."""
    return truth is not None


def _nan_to_none(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


def region_scores(labels: np.ndarray, hidden: np.ndarray, truth: np.ndarray, part: int) -> dict:
    """Judge scores of one hidden part (see the module docstring); NaN-free (None when undefined).

    labels, truth (y, x) integer maps of the same size; hidden (y, x) bool; part in 1..9.
    """
    labels, truth, hidden = np.asarray(labels), np.asarray(truth), np.asarray(hidden, bool)
    if labels.shape != truth.shape or hidden.shape != truth.shape:
        raise ValueError(f"labels {labels.shape}, hidden {hidden.shape} and truth {truth.shape} must have one size")
    if int(part) < 1:
        raise ValueError(f"part must be a part id >= 1 (0 is background), got {part}")
    pred, true = labels == part, truth == part

    def iou(a, b):
        union = np.logical_or(a, b).sum()
        return float(np.logical_and(a, b).sum() / union) if union else float("nan")

    under = true & hidden
    return {
        "iou": _nan_to_none(iou(pred, true)),
        "iou_hidden": _nan_to_none(iou(pred & hidden, under)),
        "hidden_accuracy": _nan_to_none(float((labels[hidden] == truth[hidden]).mean()) if hidden.any() else np.nan),
        "part_recall": _nan_to_none(float(pred[under].mean()) if under.any() else np.nan),
    }


def score_completion(judge, image: np.ndarray, hidden: np.ndarray, truth: np.ndarray,
                     parts: Iterable[int]) -> dict:
    """The judge's reading of ``image`` (y, x, 3) uint8 scored for each hidden part.

    Returns {"parts": {part: region_scores}, and the mean of each score over the parts}. The
    judge reads the image at its own side; labels come back at the image's size.
    """
    labels = judge.labels(np.asarray(image))
    per = {int(p): region_scores(labels, hidden, truth, int(p)) for p in parts}
    out: dict = {"parts": per}
    for key in ("iou", "iou_hidden", "hidden_accuracy", "part_recall"):
        vals = [v[key] for v in per.values() if v[key] is not None]
        out[key] = round(float(np.mean(vals)), 6) if vals else None
    return out


def part_presence_by_judge(judge, images: np.ndarray, part: int | None, min_pixels: int = 4) -> tuple:
    """(share of images where the judge reads >= ``min_pixels`` of ``part``, mean share of each
    image's bird pixels read as ``part``); (None, None) when ``part`` is None (no judge applies)."""
    if part is None or not len(images):
        return None, None
    labels = judge.labels(np.asarray(images))                        # image y x
    hits = [float((m == part).sum() >= min_pixels) for m in labels]
    shares = [float((m == part).sum() / max(int((m > 0).sum()), 1)) for m in labels]
    return float(np.mean(hits)), float(np.mean(shares))


def shown_parts(labels: np.ndarray) -> np.ndarray:
    """(image,) the part type each (image, y, x) label map shows most: the part label (1..9) with
    the most pixels, 0 where no pixel is a part. What a close-up "shows" (docs/embeddings.md)."""
    labels = np.asarray(labels)
    counts = np.stack([(labels == p).reshape(len(labels), -1).sum(1) for p in range(int(max(labels.max(), 0)) + 1)], 1)
    counts[:, 0] = 0                                                  # background is not a part
    return np.where(counts.max(1) > 0, counts.argmax(1), 0)


def part_shown_share(judge, images: np.ndarray, part: int | None) -> float | None:
    """Share of ``images`` whose most-read part (by the judge) is ``part``; None without a part."""
    if part is None or not len(images):
        return None
    return float(np.mean(shown_parts(judge.labels(np.asarray(images))) == int(part)))


def mean_scores(rows: Sequence[dict], keys: Sequence[str] = ("iou", "iou_hidden", "hidden_accuracy", "part_recall")) -> dict:
    """Mean of each score over rows (None where no row has it)."""
    out = {}
    for key in keys:
        vals = [r[key] for r in rows if r.get(key) is not None]
        out[key] = round(float(np.mean(vals)), 6) if vals else None
    return out
