"""Pictures of the part categories (docs/design.md §5.5 "Parts"): a crop gallery per category and
colour-consistent overlays for a grid of images, drawn with PIL and saved as PNG.

Colours are fixed per category id (``palette``), so category 3 is the same colour in every
overlay, gallery border and legend; category 0 (background) is drawn dark grey and is not
tinted in overlays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

# A qualitative palette (Tableau 20 order, bright colours first); category 0 is background.
_COLOURS = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (188, 189, 34), (23, 190, 207), (127, 127, 127),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229), (199, 199, 199),
], np.uint8)
BACKGROUND = (40, 40, 40)
#: Images are shrunk to this longer side when read for pictures (a huge image costs no more).
PICTURE_MAX_SIDE = 512


def palette(n_categories: int) -> np.ndarray:
    """(part, 3) uint8 colours: row 0 background, rows 1.. cycling the qualitative palette."""
    if n_categories < 1:
        raise ValueError(f"n_categories must be >= 1, got {n_categories}")
    rows = [BACKGROUND] + [tuple(_COLOURS[(c - 1) % len(_COLOURS)]) for c in range(1, n_categories)]
    return np.asarray(rows, np.uint8)


def resize_map(part_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (y, x) map to (width, height) = size."""
    part_map = np.asarray(part_map)
    h, w = part_map.shape
    ys = np.minimum((np.arange(size[1]) * h) // size[1], h - 1)
    xs = np.minimum((np.arange(size[0]) * w) // size[0], w - 1)
    return part_map[ys[:, None], xs[None, :]]


def overlay(image: np.ndarray, part_map: np.ndarray, n_categories: int, alpha: float = 0.55) -> np.ndarray:
    """(y, x, 3) uint8 image with foreground categories tinted by their colour."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (y, x, 3), got {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    lab = resize_map(part_map, (image.shape[1], image.shape[0]))
    if lab.max() >= n_categories:
        raise ValueError(f"part map holds category {lab.max()} but n_categories is {n_categories}")
    colours = palette(n_categories).astype(np.float32)[np.maximum(lab, 0)]   # y x 3
    tint = (lab > 0)[..., None]
    out = np.where(tint, (1 - alpha) * image.astype(np.float32) + alpha * colours, image * 0.6)
    return np.clip(out, 0, 255).astype(np.uint8)


def _legend(n_categories: int, width: int, prevalence: Sequence[float] | None) -> Image.Image:
    colours = palette(n_categories)
    per_row = max(1, width // 120)
    rows = (n_categories + per_row - 1) // per_row
    img = Image.new("RGB", (width, 18 * rows + 4), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for c in range(n_categories):
        x, y = 4 + (c % per_row) * 120, 2 + (c // per_row) * 18
        draw.rectangle([x, y + 2, x + 12, y + 14], fill=tuple(int(v) for v in colours[c]))
        name = "background" if c == 0 else f"part {c}"
        if prevalence is not None:
            name += f" {100 * prevalence[c]:.0f}%"
        draw.text((x + 16, y + 2), name, fill=(0, 0, 0))
    return img


def overlay_grid(images: Sequence[np.ndarray], part_maps: Sequence[np.ndarray], n_categories: int,
                 columns: int = 4, cell: int = 128, prevalence: Sequence[float] | None = None) -> Image.Image:
    """A grid of overlays (each resized to cell x cell) with a colour legend below."""
    if len(images) != len(part_maps) or not images:
        raise ValueError(f"need as many images as part maps (>= 1), got {len(images)} and {len(part_maps)}")
    columns = max(1, min(columns, len(images)))
    rows = (len(images) + columns - 1) // columns
    legend = _legend(n_categories, columns * cell, prevalence)
    sheet = Image.new("RGB", (columns * cell, rows * cell + legend.height), (255, 255, 255))
    for i, (img, lab) in enumerate(zip(images, part_maps)):
        tile = Image.fromarray(overlay(np.asarray(img), lab, n_categories)).resize((cell, cell), Image.Resampling.BILINEAR)
        sheet.paste(tile, ((i % columns) * cell, (i // columns) * cell))
    sheet.paste(legend, (0, rows * cell))
    return sheet


def category_crops(images: Sequence[np.ndarray], part_maps: Sequence[np.ndarray], category: int,
                   max_crops: int = 8, crop: int = 64, margin: float = 0.15) -> list[Image.Image]:
    """Crops of ``category`` from the images where it is largest (outside the part dimmed)."""
    areas = []
    for i, (img, lab) in enumerate(zip(images, part_maps)):
        mask = resize_map(lab, (img.shape[1], img.shape[0])) == category
        if mask.any():
            areas.append((int(mask.sum()), i))
    crops = []
    for _, i in sorted(areas, reverse=True)[:max_crops]:
        img = np.asarray(images[i])
        mask = resize_map(part_maps[i], (img.shape[1], img.shape[0])) == category
        ys, xs = np.nonzero(mask)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        box = [int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(cx + side / 2)), int(round(cy + side / 2))]
        shown = np.where(mask[..., None], img, (img * 0.35).astype(np.uint8))
        crops.append(Image.fromarray(shown).crop(box).resize((crop, crop), Image.Resampling.BILINEAR))
    return crops


def category_gallery(images: Sequence[np.ndarray], part_maps: Sequence[np.ndarray], category: int,
                     n_categories: int, max_crops: int = 8, crop: int = 64) -> Image.Image | None:
    """One row of crops of a category, framed in its colour; None if no image holds it."""
    crops = category_crops(images, part_maps, category, max_crops=max_crops, crop=crop)
    if not crops:
        return None
    colour = tuple(int(v) for v in palette(n_categories)[category])
    pad = 3
    row = Image.new("RGB", (len(crops) * (crop + pad) + pad, crop + 2 * pad + 14), colour)
    for j, c in enumerate(crops):
        row.paste(c, (pad + j * (crop + pad), pad + 14))
    ImageDraw.Draw(row).text((pad, 1), f"part {category}" if category else "background", fill=(255, 255, 255))
    return row


def save_pictures(out_dir: str | Path, images: Sequence[np.ndarray], part_maps: Sequence[np.ndarray],
                  n_categories: int, prevalence: Sequence[float] | None = None, grid_images: int = 16,
                  max_crops: int = 8) -> dict[str, list[Path]]:
    """Write ``overlays.png`` (first grid_images images) and ``gallery_part_<k>.png`` per
    foreground category, plus ``gallery.png`` (all category rows stacked). Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = overlay_grid(images[:grid_images], part_maps[:grid_images], n_categories, prevalence=prevalence)
    grid_path = out / "overlays.png"
    grid.save(grid_path)
    rows, paths = [], []
    for c in range(1, n_categories):
        row = category_gallery(images, part_maps, c, n_categories, max_crops=max_crops)
        if row is None:
            continue
        p = out / f"gallery_part_{c}.png"
        row.save(p)
        rows.append(row)
        paths.append(p)
    if rows:
        sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (255, 255, 255))
        y = 0
        for r in rows:
            sheet.paste(r, (0, y))
            y += r.height
        sheet.save(out / "gallery.png")
        paths.insert(0, out / "gallery.png")
    return {"overlays": [grid_path], "galleries": paths}


def save_store_pictures(root, infos, out_dir: str | Path, max_images: int = 64, grid_images: int = 16,
                        max_crops: int = 8) -> dict[str, list[Path]]:
    """Pictures for the first ``max_images`` labelled images of a store (``ImageInfo`` list).

    Images come from the corpus paths; an image without a path, or one that cannot be read
    now, is drawn as mid-grey.
    """
    from diffparts.corpus import ImageLoadError, load_rgb
    from diffparts.parts.dataset import STAGE, labelled_images, read_part_labels

    chosen = labelled_images(root, infos)[:max_images]
    if not chosen:
        raise ValueError("no image of the store has part labels yet")
    images, maps = [], []
    for info in chosen:
        lab = read_part_labels(root, info.index)
        img = np.full((lab.shape[0] * 4, lab.shape[1] * 4, 3), 128, np.uint8)
        if info.path is not None:
            try:
                img = load_rgb(info.path, min_size=1, max_side=PICTURE_MAX_SIDE)
            except ImageLoadError:
                pass
        images.append(img)
        maps.append(lab)
    group = root[STAGE]
    prevalence = np.asarray(group["prevalence"][:]) if "prevalence" in group else None
    return save_pictures(out_dir, images, maps, int(group.attrs["n_categories"]), prevalence=prevalence,
                         grid_images=grid_images, max_crops=max_crops)
