"""The synthetic birds' vocabulary and species priors (docs/design.md §4 "The embedded default").

Holds the part names (part-mask values), CUB's 15 keypoint names, the named colours, the 16
species priors (colours per part, patterns) and the per-image appearance draw (colour swaps
between neighbouring parts, extra patterns, colour jitter) that ``synth_render`` paints and
``synth_caption`` describes.
"""

from __future__ import annotations

import numpy as np

# Part-mask values 1..9 (0 = background); the legend written to part_segmentations/parts.txt.
PART_NAMES: tuple[str, ...] = (
    "head", "beak", "eye", "breast", "belly", "back", "wing", "tail", "legs",
)
PART_INDEX = {name: i + 1 for i, name in enumerate(PART_NAMES)}

# CUB-200-2011's 15 keypoints, in CUB's parts/parts.txt order (ids 1..15).
CUB_KEYPOINTS: tuple[str, ...] = (
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
    "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat",
)

# Named colours (caption words) and their RGB prototypes.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (196, 32, 38),
    "orange": (232, 122, 32),
    "yellow": (236, 204, 44),
    "green": (58, 146, 62),
    "blue": (44, 92, 196),
    "purple": (120, 56, 150),
    "pink": (228, 130, 160),
    "brown": (122, 78, 44),
    "black": (30, 30, 34),
    "white": (236, 236, 230),
    "grey": (134, 136, 138),
}

PATTERNS = ("stripes", "spots", "gradient", "cap")

# Species priors: name, then the colour of head back wing tail breast belly beak legs eye(ring),
# then patterns as "part=pattern/colour". Colours of neighbouring parts are often shared on
# purpose (real birds), so colour alone does not separate parts.
_SPECIES: tuple[tuple[str, str, str], ...] = (
    ("Crimson_finch", "red red brown brown red white grey pink black", "wing=stripes/white"),
    ("Azure_warbler", "blue blue blue black white white black grey black", "wing=stripes/black"),
    ("Golden_tanager", "yellow yellow black black yellow yellow grey grey black",
     "belly=gradient/orange"),
    ("Spotted_thrush", "brown brown brown brown white white yellow pink black",
     "breast=spots/brown belly=spots/brown"),
    ("Scarlet_robin", "black black black black red white black black black", "wing=stripes/white"),
    ("Ivory_gull", "white grey grey white white white yellow black black", "wing=gradient/black"),
    ("Slate_jay", "blue grey blue blue grey white black black black",
     "wing=stripes/black tail=stripes/black"),
    ("Amber_oriole", "black orange black black orange orange grey grey black", "wing=stripes/white"),
    ("Rosy_bunting", "pink pink brown brown pink white grey pink black", "belly=gradient/pink"),
    ("Sooty_crow", "black black black black black black grey black white", ""),
    ("Jade_parakeet", "green green green blue green yellow orange grey black",
     "tail=gradient/blue"),
    ("Copper_wren", "brown brown brown brown orange white grey pink black",
     "back=stripes/black wing=stripes/black tail=stripes/black"),
    ("Violet_sunbird", "purple purple green purple purple yellow black black black",
     "head=cap/green"),
    ("Ashy_sparrow", "grey brown brown brown grey white orange pink black",
     "head=cap/brown back=stripes/black wing=stripes/white"),
    ("Saffron_canary", "yellow yellow yellow yellow yellow yellow pink pink black", ""),
    ("Cobalt_kingfisher", "blue blue blue blue orange orange black red black",
     "wing=spots/white head=cap/black"),
)
_SPECIES_PARTS = ("head", "back", "wing", "tail", "breast", "belly", "beak", "legs", "eye")
# Neighbours a part's colour may be copied from (per-image variation).
_NEIGHBOURS = {
    "head": ("back", "breast"), "back": ("head", "wing"), "wing": ("back", "tail"),
    "tail": ("wing", "back"), "breast": ("belly", "head"), "belly": ("breast", "back"),
    "beak": ("legs", "head"), "legs": ("beak", "belly"), "eye": ("head",),
}


def _jitter_colour(rng, name, sigma):
    base = np.array(COLOURS[name], dtype=np.float32)
    bright = rng.uniform(0.85, 1.15)
    return np.clip(base * bright + rng.normal(0.0, sigma, 3), 0, 255).astype(np.float32)


def _species_prior(class_index):
    name, colours, patterns = _SPECIES[class_index]
    colour = dict(zip(_SPECIES_PARTS, colours.split()))
    pattern = {}
    for item in patterns.split():
        part, spec = item.split("=")
        kind, second = spec.split("/")
        pattern[part] = (kind, second)
    return name, colour, pattern


def _draw_appearance(rng, class_index, cfg):
    """Per-image colour names, RGB values and patterns for each part."""
    _, colour, pattern = _species_prior(class_index)
    names = dict(colour)
    # 1. Swap a few colours with a neighbour's (or a random one), as between related species.
    for part in _SPECIES_PARTS:
        if part != "eye" and rng.random() < cfg.colour_swap_prob:
            if rng.random() < 0.6:
                names[part] = colour[_NEIGHBOURS[part][rng.integers(len(_NEIGHBOURS[part]))]]
            else:
                names[part] = list(COLOURS)[rng.integers(len(COLOURS))]
    # 2. Patterns: the species' own, plus sometimes a random one on a plain part.
    patt = dict(pattern)
    for part in ("back", "wing", "tail", "breast", "belly", "head"):
        if part not in patt and rng.random() < cfg.extra_pattern_prob:
            kinds = ("stripes", "spots", "gradient") + (("cap",) if part == "head" else ())
            kind = kinds[rng.integers(len(kinds))]
            second = list(COLOURS)[rng.integers(len(COLOURS))]
            patt[part] = (kind, second)
    # 3. RGB with jitter; shared names get related but not identical values.
    rgb = {part: _jitter_colour(rng, names[part], cfg.colour_jitter) for part in _SPECIES_PARTS}
    second = {part: _jitter_colour(rng, s, cfg.colour_jitter) for part, (_, s) in patt.items()}
    return names, rgb, patt, second
