"""Which images the occlusion stage occludes, and which teach the detector what is normal.

The cases come from held-out images only; the detector's expectations (typical sizes) and its
calibration (each category's evidence on complete images) come from the others. The split is
the embeddings stage's (``embeddings/held_out``) where it holds out a labelled image, else the
corpus's own test split, else (a small corpus whose split keeps every image for training) a
seeded share of the labelled images; with fewer than 2 labelled images nothing can be held out
and the stage is skipped (:class:`NothingToOcclude`). The flags are written as
``occlusion/held_out`` (image,) bool with the rule in its attributes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

STAGE = "occlusion"


class NothingToOcclude(ValueError):
    """The store has no held-out labelled image, even after holding out a share: the stage is skipped."""


def held_out_images(root, records: dict, names: Sequence[str], seed: int = 0,
                    fraction: float = 0.5) -> tuple[np.ndarray, str]:
    """(image,) bool held-out flags and the rule: ``embeddings/held_out`` when it holds out a
    labelled image; else the corpus's own test split (``inversion.data.held_out_split``); when
    that holds out no labelled image either (a small synthetic corpus: one bird per species, all
    in training), a seeded ``fraction`` of the labelled images, as the embeddings stage does for
    a folder (at least one, and at least one left for the calibration). All False when fewer
    than 2 images are labelled."""
    from diffparts.inversion.data import held_out_split
    from diffparts.store import done_mask

    done = done_mask(root, "parts")
    n = len(done)
    if "embeddings/held_out" in root:
        held = np.zeros(n, bool)
        stored = np.asarray(root["embeddings/held_out"][:], bool)[:n]
        held[: len(stored)] = stored
        if (held & done).any():
            return held, "embeddings/held_out"
    held, rule = held_out_split(list(names), list(records.values()), seed=seed)
    held = np.asarray(held, bool)[:n]
    if (held & done).any():
        return held, rule
    labelled = np.flatnonzero(done)
    held = np.zeros(n, bool)
    if len(labelled) < 2:
        return held, f"{rule}; fewer than 2 labelled images, none can be held out"
    take = min(len(labelled) - 1, max(1, int(round(fraction * len(labelled)))))
    held[np.random.default_rng(seed).permutation(labelled)[:take]] = True
    return held, (f"seeded: {take} of {len(labelled)} labelled images held out (seed {seed}); "
                  f"the corpus's split holds out none")


def write_held_out_flags(root, held: np.ndarray, rule: str) -> None:
    """``occlusion/held_out`` (image,) bool and its rule: the images the cases come from; the
    detector's expectations and calibration read only the others."""
    from diffparts.store import create_stage_array

    group = root.require_group(STAGE)
    arr = create_stage_array(group, "held_out", (len(held),), bool, ("image",), fill_value=False)
    arr[:] = np.asarray(held, bool)
    arr.attrs["rule"] = rule


def training_images(root) -> np.ndarray:
    """Indices of the labelled images that are not held out (``occlusion/held_out``, else
    ``embeddings/held_out``, else every labelled image)."""
    from diffparts.store import done_mask

    done = done_mask(root, "parts")
    for key in (f"{STAGE}/held_out", "embeddings/held_out"):
        if key in root:
            held = np.zeros(len(done), bool)
            stored = np.asarray(root[key][:], bool)[: len(done)]
            held[: len(stored)] = stored
            return np.flatnonzero(done & ~held)
    return np.flatnonzero(done)
