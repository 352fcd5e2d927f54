"""What a learned part token does, as one picture per category (issue 10 item 4).

Top row: pairs of a held-out image of the category with its discovered mask tinted in the
category's colour, and the token's cross-attention on it as a heat map. Bottom row: images generated from the token's
prompt with fixed seeds. Drawn with PIL; small enough to embed in a dashboard artifact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from diffparts.parts.gallery import palette


def heat(map_: np.ndarray) -> np.ndarray:
    """(y, x) float -> (y, x, 3) uint8, black -> red -> yellow -> white, from its minimum to its
    maximum (a diffuse map still shows where it peaks)."""
    lo, hi = float(map_.min()), float(map_.max())
    v = np.clip((map_ - lo) / max(hi - lo, 1e-12), 0, 1)
    return (np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], -1) * 255
            ).astype(np.uint8)


def tint(image: np.ndarray, mask: np.ndarray, category: int, n_categories: int, alpha: float = 0.5) -> np.ndarray:
    colour = palette(max(n_categories, category + 1))[category].astype(np.float32)
    out = np.where(mask[..., None] > 0.5, (1 - alpha) * image + alpha * colour, 0.6 * image)
    return np.clip(out, 0, 255).astype(np.uint8)


def token_picture(images: np.ndarray, masks: np.ndarray, maps: np.ndarray, generated: np.ndarray,
                  category: int, n_categories: int, tile: int = 96) -> np.ndarray:
    """(y, x, 3) uint8 grid: [image+mask | attention] pairs above, generated images below.

    As many generated images as pairs are drawn at twice the tile's side, so the two rows are
    equally wide (no empty area beside the generated images, issue 21)."""
    def fit(a, side=tile):
        return np.asarray(Image.fromarray(a).resize((side, side), Image.Resampling.NEAREST))

    top = [np.concatenate([fit(tint(img, m, category, n_categories)), fit(heat(a))], 1)
           for img, m, a in zip(images, masks, maps)]
    big = 2 * tile if top and len(generated) <= len(top) else tile
    bottom = [fit(g, big) for g in generated]
    width = max(len(top) * 2 * tile, len(bottom) * big)
    rows = []
    for row, side in ((top, tile), (bottom, big)):
        strip = np.concatenate(row, 1) if row else np.zeros((side, 0, 3), np.uint8)
        pad = np.full((side, width - strip.shape[1], 3), 255, np.uint8)
        rows.append(np.concatenate([strip, pad], 1))
    return np.concatenate([rows[0], np.full((4, width, 3), 255, np.uint8), rows[1]], 0)


def save_png(picture: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(picture).save(path, optimize=True)
    return path
