"""The segment stage's picture (issue 21): a grid of images, each with its segments tinted and
their boundaries drawn, so the stage shows what it did on the dashboard and in the report.

Segment ids are per image (segment 3 of one image has nothing to do with segment 3 of
another: the parts stage makes ids that agree across images), so colours only tell
neighbouring segments apart; the white boundaries carry the shape.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from diffparts.parts.gallery import overlay, resize_map


def segment_tile(image: np.ndarray, labels: np.ndarray, cell: int = 160) -> Image.Image:
    """One (cell x cell) tile: ``image`` (y, x, 3) uint8 with each segment of ``labels`` (y, x),
    ids >= 0, tinted and its boundaries in white."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.min() < 0:
        raise ValueError(f"labels must be a (y, x) map of segment ids >= 0, got shape {labels.shape}")
    img = np.asarray(Image.fromarray(np.asarray(image)).resize((cell, cell), Image.Resampling.BILINEAR))
    lab = resize_map(labels, (cell, cell)) + 1            # every segment tinted (0 = untinted)
    out = overlay(img, lab, int(lab.max()) + 1, alpha=0.45)
    edge = np.zeros(lab.shape, bool)
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    out[edge] = 255
    return Image.fromarray(out)


def segment_grid(images: Sequence[np.ndarray], label_maps: Sequence[np.ndarray], columns: int = 4,
                 cell: int = 160) -> Image.Image:
    """A grid of :func:`segment_tile` (``columns`` per row)."""
    if len(images) != len(label_maps) or not images:
        raise ValueError(f"need as many images as label maps (>= 1), got {len(images)} and {len(label_maps)}")
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
    for i, (img, lab) in enumerate(zip(images, label_maps)):
        sheet.paste(segment_tile(img, lab, cell), ((i % columns) * cell, (i // columns) * cell))
    return sheet
