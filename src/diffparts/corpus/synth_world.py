"""The part world: synthetic birds whose captions name their parts (docs/corpus.md "The part world").

A world in which a part word is something a text-to-image model can learn: every whole bird is
captioned with all its visible parts ("a photo of a blue bird with a red head, a short yellow
beak and a striped blue wing"), some images are close-ups of one part ("a close-up of a hooked
grey bird beak"), some are scenes without a bird ("a photo of leaves and a branch"), and the
beak, tail and head come in shape variants (beak short/long/hooked, tail fan/fork, crest or
none) spread across species, so a part word carries shape as well as colour.

``PartWorldConfig`` holds the mixing shares; ``generate_birds(..., world=PartWorldConfig())``
(``corpus.synth``) writes the corpus in the CUB layout with one more class, ``NNN.No_bird``,
for the scenes, and ``image_kinds.txt`` (``<image_id> bird|closeup|scene <part or ->``), read
back by ``read_image_kinds``. A close-up is rendered, not upsampled: the same bird (same draws)
is drawn at the zoom that makes the crop around the part exactly ``image_size`` pixels, so its
part mask and keypoints are those of the zoomed bird, cropped. Determinism as the default birds:
image ``i`` depends only on (seed, i).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from diffparts.corpus.synth_caption import _closeup_caption, _scene_caption, _whole_caption
from diffparts.corpus.synth_render import SynthConfig, _render_background, _render_bird
from diffparts.corpus.synth_species import COLOURS, CUB_KEYPOINTS, PART_INDEX, PART_NAMES, _draw_shape, _jitter_colour

KINDS = ("bird", "closeup", "scene")


@dataclass(frozen=True)
class PartWorldConfig:
    closeup_share: float = 0.25        # share of images that are a close-up of one part
    scene_share: float = 0.08          # share of images without a bird (background only, empty masks)
    shape_swap_prob: float = 0.2       # a part's shape is a random variant instead of the species' own
    closeup_parts: tuple[str, ...] = ("head", "beak", "wing", "tail", "breast", "belly", "back", "legs")
    closeup_fill: float = 0.3          # crop side = sqrt(part pixels / fill): the part fills about this share
    closeup_min_side: float = 1 / 6    # smallest crop side / image side (caps the zoom at 6x)
    closeup_min_share: float = 0.12    # the part must cover this share of its crop and be its largest part
    min_part_pixels: int = 6           # a part with fewer pixels (at 128 px; scaled with the area) is not named
    plain_share: float = 0.0           # share of close-ups captioned by the part alone ("a close-up of a bird head")

    def __post_init__(self):
        for name in ("closeup_share", "scene_share", "shape_swap_prob", "closeup_min_share", "plain_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1]")
        if self.closeup_share + self.scene_share > 1.0:
            raise ValueError(f"closeup_share + scene_share = {self.closeup_share + self.scene_share} must be <= 1")
        unknown = [p for p in self.closeup_parts if p not in PART_INDEX]
        if unknown or not self.closeup_parts:
            raise ValueError(f"closeup_parts={self.closeup_parts!r}: need parts of {PART_NAMES}")
        if not 0.0 < self.closeup_fill <= 1.0 or not 0.0 < self.closeup_min_side <= 1.0:
            raise ValueError(f"closeup_fill={self.closeup_fill} and closeup_min_side={self.closeup_min_side} "
                             "must be in (0, 1]")


def scene_class_name(n_classes: int) -> str:
    """The class folder of the scenes without a bird, after the species: e.g. '017.No_bird'."""
    return f"{n_classes + 1:03d}.No_bird"


def plan_item(seed: int, i: int, world: PartWorldConfig) -> tuple[str, int, bool]:
    """Draw ``i``'s kind ('bird', 'closeup', 'scene'), preferred close-up part (an index into
    ``closeup_parts``) and whether a close-up's caption is plain (the part alone, probability
    ``plain_share``), from their own stream (seed, i, 1), so the writer knows the class first.
    The plain draw comes last: a world with another ``plain_share`` has the same images."""
    rng = np.random.default_rng((seed, i, 1))
    u = rng.random()
    pref = int(rng.integers(len(world.closeup_parts)))
    plain = bool(rng.random() < world.plain_share)
    if u < world.scene_share:
        return "scene", pref, False
    if u < world.scene_share + world.closeup_share:
        return "closeup", pref, plain
    return "bird", pref, False


def _visible_parts(part_mask, world) -> list[str]:
    """Mask legend names of the parts with at least ``min_part_pixels`` (scaled to the image area)."""
    need = max(1, round(world.min_part_pixels * part_mask.size / 128**2))
    counts = np.bincount(part_mask.ravel(), minlength=len(PART_NAMES) + 1)
    return [name for k, name in enumerate(PART_NAMES, start=1) if counts[k] >= need]


def _crop_for(part_mask, part, world):
    """The square crop (x0, y0, side), float pixels, around ``part``, or None if the part does not
    dominate it (absent, or under ``closeup_min_share`` of the crop, or not its largest part).

    The side is sqrt(part pixels / closeup_fill) (at least ``closeup_min_side``), so a long part
    (a long beak, a wing) may leave the crop at its ends, as in a close-up photograph. Centres
    tried: the part's box centre, then that point moved away from the other parts (a short beak
    or the legs, seen with less of the body).
    """
    size = part_mask.shape[0]
    index = PART_INDEX[part]
    ys, xs = np.nonzero(part_mask == index)
    if xs.size == 0:
        return None
    side = float(np.clip(np.sqrt(xs.size / world.closeup_fill), world.closeup_min_side * size, size))
    cx, cy = (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2
    oys, oxs = np.nonzero((part_mask > 0) & (part_mask != index))
    centres = [(cx, cy)]
    if oxs.size:
        away = np.array([xs.mean() - oxs.mean(), ys.mean() - oys.mean()])
        away /= max(float(np.hypot(*away)), 1e-6)
        centres.append((cx + 0.3 * side * away[0], cy + 0.3 * side * away[1]))
    for cx, cy in centres:
        x0 = float(np.clip(cx - side / 2, 0, size - side))
        y0 = float(np.clip(cy - side / 2, 0, size - side))
        window = part_mask[int(y0):int(np.ceil(y0 + side)), int(x0):int(np.ceil(x0 + side))]
        counts = np.bincount(window.ravel(), minlength=len(PART_NAMES) + 1)
        counts[0] = 0
        if counts.argmax() == index and counts[index] >= world.closeup_min_share * window.size:
            return x0, y0, side
    return None


def _render_closeup(rng, class_index, cfg, world, pref, shape, plain=False):
    """A close-up of one part, or None when no close-up part dominates a crop (see ``_crop_for``).

    Returns (rgb, part mask, keypoints, caption, part). The bird is drawn twice from the same
    state: at ``image_size`` to find the crop, then at the zoom that makes the crop
    ``image_size`` pixels wide.
    """
    size = cfg.image_size
    cfg = replace(cfg, crop_prob=0.0)          # close-ups of birds inside the frame
    state = rng.bit_generator.state
    _, small_mask, _, _ = _render_bird(rng, class_index, cfg, shape)
    parts = world.closeup_parts
    for k in range(len(parts)):                # the preferred part first, then the next ones
        part = parts[(pref + k) % len(parts)]
        crop = _crop_for(small_mask, part, world)
        if crop is not None:
            break
    else:
        return None
    x0, y0, side = crop
    big = int(round(size * size / side))
    zoom = big / size
    if zoom >= 2:   # a zoomed render has pixels to spare: one sample per pixel is enough
        cfg = replace(cfg, supersample=1)
    ox = int(np.clip(round((x0 + side / 2) * zoom - size / 2), 0, big - size))
    oy = int(np.clip(round((y0 + side / 2) * zoom - size / 2), 0, big - size))
    rng.bit_generator.state = state
    info: dict = {}
    img, mask, kp, _ = _render_bird(rng, class_index, replace(cfg, image_size=big), shape, info)
    img = np.ascontiguousarray(img[oy:oy + size, ox:ox + size])
    mask = np.ascontiguousarray(mask[oy:oy + size, ox:ox + size])
    kp = kp.copy()
    kp[:, 0] -= ox
    kp[:, 1] -= oy
    inside = (kp[:, 2] > 0) & (kp[:, 0] >= 0) & (kp[:, 0] < size) & (kp[:, 1] >= 0) & (kp[:, 1] < size)
    xi = np.clip(kp[:, 0].astype(int), 0, size - 1)
    yi = np.clip(kp[:, 1].astype(int), 0, size - 1)
    inside &= mask[yi, xi] > 0
    kp[~inside] = 0.0
    caption = _closeup_caption(part, info["names"], info["patterns"], shape, plain)
    return img, mask, kp, caption, part


def _render_scene(rng, cfg):
    """A background without a bird: (rgb, empty part mask, zero keypoints, caption)."""
    size = cfg.image_size
    colour_names = list(COLOURS)
    bird_rgb = [_jitter_colour(rng, colour_names[rng.integers(len(colour_names))], cfg.colour_jitter)
                for _ in range(4)]
    s = rng.uniform(*cfg.scale_range) * size
    feet = [(rng.uniform(0.3, 0.7) * size, rng.uniform(0.5, 0.75) * size)]   # where a branch would pass
    info: dict = {}
    bg = _render_background(rng, size, bird_rgb, cfg, feet, s, info)      # y x rgb
    bg += rng.normal(0.0, cfg.pixel_noise, bg.shape).astype(np.float32)
    img = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    return (img, np.zeros((size, size), np.uint8), np.zeros((len(CUB_KEYPOINTS), 3), np.float32),
            _scene_caption(info["background"]))


def render_item(rng, class_index: int, kind: str, pref: int, cfg: SynthConfig, world: PartWorldConfig,
                plain: bool = False):
    """One image of the part world: (rgb (y, x, 3) uint8, part mask (y, x) uint8, keypoints (15, 3),
    caption, kind, part or None). A close-up that finds no dominant part becomes a whole bird.
    ``plain``: a close-up's caption names the part alone ("a close-up of a bird head")."""
    if kind == "scene":
        return (*_render_scene(rng, cfg), "scene", None)
    shape = _draw_shape(rng, class_index, world.shape_swap_prob)
    if kind == "closeup":
        state = rng.bit_generator.state
        out = _render_closeup(rng, class_index, cfg, world, pref, shape, plain)
        if out is not None:
            return (*out[:4], "closeup", out[4])
        rng.bit_generator.state = state
    info: dict = {}
    img, mask, kp, _ = _render_bird(rng, class_index, cfg, shape, info)
    caption = _whole_caption(rng, info["names"], info["patterns"], shape, _visible_parts(mask, world))
    return img, mask, kp, caption, "bird", None


def read_image_kinds(root) -> dict[int, tuple[str, str | None]]:
    """``image_kinds.txt`` of a part-world corpus: image id -> (kind, close-up part or None).

    ValueError names the file and line of a malformed row; FileNotFoundError when the corpus has
    no such file (a default synthetic or a real corpus: every image is a whole bird there).
    """
    path = Path(root) / "image_kinds.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (not a part-world corpus)")
    kinds: dict[int, tuple[str, str | None]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 3 or not fields[0].isdigit() or fields[1] not in KINDS:
            raise ValueError(f"{path}: line {lineno}: expected '<image_id> bird|closeup|scene <part or ->', got {line!r}")
        part = None if fields[2] == "-" else fields[2]
        if (fields[1] == "closeup") != (part is not None) or (part is not None and part not in PART_INDEX):
            raise ValueError(f"{path}: line {lineno}: a close-up names one part of {PART_NAMES}, other kinds '-': {line!r}")
        kinds[int(fields[0])] = (fields[1], part)
    return kinds
