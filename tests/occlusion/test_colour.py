"""The colour detector: a region's pixels against its category's colours on birds like this one.

Constructed cases where the answer is known: 16 x 16 birds of a few species, head (category 1)
at the top left, breast (2), body (3) and tail (4), sky elsewhere. Species A: red head, brown
body; C: a leaf-green head (so a leaf over A's head is a plausible head of C: the other parts,
never the head's own pixels, choose the neighbours); G: a grey head.
"""

import numpy as np
import pytest

from diffparts.occlusion import split
from diffparts.occlusion.calibrate import image_evidence
from diffparts.occlusion.colour import (ColourConfig, ColourReference, colour_evidence, colour_reference,
                                        image_colours, to_lab)
from diffparts.occlusion.detect import DetectConfig, rank_evidence
from diffparts.occlusion.evidence import Calibrations, calibrate, family_threshold, leave_one_out_maxima
from diffparts.occlusion.occluders import GREY

SKY = (150, 190, 220)
SPECIES = {          # head, breast, body, tail
    "A": ((196, 32, 38), (230, 220, 200), (122, 78, 44), (60, 40, 30)),
    "B": ((40, 60, 200), (240, 240, 240), (230, 200, 40), (30, 30, 90)),
    "C": ((60, 140, 50), (200, 180, 90), (110, 110, 40), (150, 120, 60)),
    "G": ((128, 128, 128), (230, 220, 200), (122, 78, 44), (60, 40, 30)),
}
LEAF = (64, 136, 54)
K1 = 5


def _bird(species: str, jitter: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((16, 16), np.int16)
    labels[2:6, 2:6] = 1
    labels[6:10, 4:8] = 2
    labels[6:14, 8:12] = 3
    labels[10:14, 4:8] = 3
    labels[12:15, 12:15] = 4
    image = np.empty((16, 16, 3), np.int32)
    image[:] = SKY
    for k, colour in enumerate(SPECIES[species], start=1):
        image[labels == k] = colour
    image[8:14:2, 8:12] -= 20                                  # feather bars
    rng = np.random.default_rng(jitter)
    image += rng.integers(-8, 9, 3)                            # this bird's own shade
    image += rng.integers(-3, 4, image.shape)                  # pixel noise
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _reference(species=("A", "B", "C"), per=4, config=ColourConfig()) -> tuple[ColourReference, list]:
    birds = [_bird(s, 10 * j + n) for j, s in enumerate(species) for n in range(per)]
    cols = [image_colours(img, lab, K1, config) for img, lab in birds]
    ref = ColourReference(np.arange(len(birds)), np.stack([c[0] for c in cols]), np.stack([c[1] for c in cols]),
                          config)
    return ref, birds


def _calibrations(ref: ColourReference, birds: list) -> Calibrations:
    rows, pixels = [], []
    for i, (img, lab) in enumerate(birds):
        values, dmap = colour_evidence(img, lab, K1, ref, exclude=i)
        rows.append(values)
        pixels.append(dmap[lab > 0])
    cal = calibrate(rows, np.concatenate(pixels), 0.95, range(len(birds)))
    return Calibrations((("colour", cal),), family_threshold(leave_one_out_maxima([np.asarray(rows)]), 0.1), 0.1)


CONFIG = DetectConfig(method="colour")


def test_to_lab_known_colours():
    lab = to_lab(np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], np.uint8))[0]
    assert np.allclose(lab[0], (100, 0, 0), atol=0.1) and np.allclose(lab[1], 0, atol=0.1)
    assert np.allclose(lab[2], (53.24, 80.09, 67.20), atol=0.1)


def test_a_leaf_over_the_head_is_missing_though_some_species_has_a_green_head():
    ref, birds = _reference()
    cal = _calibrations(ref, birds)
    image, labels = _bird("A", 99)
    occluded = image.copy()
    occluded[labels == 1] = LEAF                               # where position says "head"
    det = rank_evidence(labels, {"colour": colour_evidence(occluded, labels, K1, ref)}, cal, CONFIG)
    assert det.missing == (1,)
    assert det.occlusion_map[labels == 1].mean() > 0.9 and det.occlusion_map[labels > 1].mean() < 0.1
    complete = rank_evidence(labels, {"colour": colour_evidence(image, labels, K1, ref)}, cal, CONFIG)
    assert complete.missing == ()
    # the same leaf on species C's head is its head
    c_image, c_labels = _bird("C", 98)
    c_occluded = c_image.copy()
    c_occluded[c_labels == 1] = LEAF
    assert rank_evidence(c_labels, {"colour": colour_evidence(c_occluded, c_labels, K1, ref)}, cal, CONFIG).missing == ()


def test_an_occluder_on_the_background_raises_no_alarm():
    ref, birds = _reference()
    cal = _calibrations(ref, birds)
    image, labels = _bird("B", 97)
    occluded = image.copy()
    occluded[0:2, 10:15] = GREY
    occluded[14:16, 0:3] = LEAF
    evidence, dmap = colour_evidence(occluded, labels, K1, ref)
    det = rank_evidence(labels, {"colour": (evidence, dmap)}, cal, CONFIG)
    assert det.missing == () and not dmap[labels == 0].any()


def test_a_grey_box_on_a_grey_headed_species_is_a_plausible_head():
    # the known limit (docs/occlusion.md): grey where a grey head belongs is no evidence
    ref, birds = _reference(("A", "B", "G"))
    cal = _calibrations(ref, birds)
    image, labels = _bird("G", 96)
    occluded = image.copy()
    occluded[labels == 1] = GREY
    det = rank_evidence(labels, {"colour": colour_evidence(occluded, labels, K1, ref)}, cal, CONFIG)
    assert det.missing == ()
    b_image, b_labels = _bird("B", 95)
    b_image[b_labels == 1] = GREY                              # but not where a blue head belongs
    assert rank_evidence(b_labels, {"colour": colour_evidence(b_image, b_labels, K1, ref)}, cal, CONFIG).missing == (1,)


def test_a_calibrated_image_is_not_its_own_neighbour():
    ref, birds = _reference(("A", "B", "C"), per=1)
    image, labels = birds[0]
    own, _ = colour_evidence(image, labels, K1, ref)
    left_out, _ = colour_evidence(image, labels, K1, ref, exclude=0)
    assert (own[1:] < 5.0).all() and (left_out[1:] > 10.0).all()      # only other species remain
    assert np.isnan(own[0])


def test_colour_reference_from_a_store(monkeypatch):
    birds = [_bird(s, n) for n, s in enumerate("ABCABC")]
    root = {"parts/labels": np.stack([lab for _, lab in birds]), "parts/prevalence": np.ones(K1, np.float32)}
    monkeypatch.setattr(split, "training_images", lambda r: np.array([0, 1, 2, 4]))  # 3, 5 held out
    ref = colour_reference(root, lambda i: birds[i][0], ColourConfig(images=3), seed=1)
    assert len(ref.images) == 3 and set(ref.images) <= {0, 1, 2, 4}
    assert ref.means.shape == (3, K1, 3) and ref.palettes.shape == (3, K1, 4, 3)
    assert np.isnan(ref.means[:, 0]).all() and np.isfinite(ref.means[:, 1:]).all()
    # the calibration's interface: the store index of the image calibrated is left out
    first = int(ref.images[0])
    values, dmap = image_evidence("colour", *birds[first], K1, {"colour": ref}, CONFIG, index=first)
    assert values.shape == (K1,) and dmap.shape == (16, 16)
    assert values[1] > colour_evidence(*birds[first], K1, ref)[0][1]      # itself left out
    with pytest.raises(ValueError, match="colour reference"):
        image_evidence("colour", *birds[0], K1, {}, CONFIG)
    with pytest.raises(ValueError, match="neighbours"):
        ColourConfig(neighbours=0)
