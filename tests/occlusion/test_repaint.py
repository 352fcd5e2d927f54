"""The repaint detector: each category's region repainted from its context, never from its own pixels.

Constructed cases where the answer is known: a 16 x 16 bird, head (category 1, red, with a
dark eye and stripes) at the top left, body (category 2, brown) below, sky elsewhere. The "repaintings"
are what a model that knows birds paints into each masked region from the rest of the image:
the complete bird there (small seeded differences). Every bird, training or test, carries
a little pixel noise, as rendered and resized images do; a fill is flat. The position-based assignment labels an
occluder at the head's place as the head, as the real assigner does.
"""

import numpy as np
import pytest

from diffparts.occlusion.detect import DetectConfig, rank_evidence
from diffparts.occlusion.evidence import (Calibrations, calibrate, calibrated_scores, family_threshold,
                                          leave_one_out_maxima)
from diffparts.occlusion.occluders import GREY
from diffparts.occlusion.repaint import (RepaintConfig, appearance, region_masks, repaint, repaint_disagreement,
                                         repaint_evidence)

RED, BROWN, SKY, EYE = (196, 32, 38), (122, 78, 44), (150, 190, 220), (20, 20, 20)
LEAF = (60, 140, 50)


def _bird(jitter: int = 0) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((16, 16), np.int16)
    labels[2:6, 2:6] = 1                                     # head
    labels[6:14, 4:12] = 2                                   # body
    image = np.empty((16, 16, 3), np.uint8)
    image[:] = SKY
    image[labels == 1] = RED
    image[2:6:2, 2:6] = (150, 20, 30)                        # head stripes
    image[3, 3] = EYE
    image[labels == 2] = BROWN
    image[8:14:2, 4:12] = (100, 60, 30)                      # feather bars
    if jitter:
        image = np.clip(image.astype(int) + np.random.default_rng(jitter).integers(-3, 4, image.shape), 0, 255)
    return image.astype(np.uint8), labels


def _repainted(image: np.ndarray, masks: np.ndarray, seed: int) -> np.ndarray:
    """(category, seed, y, x, 3): each mask filled with the complete bird (what context says is
    there), two seeds with small differences, the input outside."""
    truth, _ = _bird()
    rng = np.random.default_rng(seed)
    out = []
    for m in masks:
        row = []
        for _ in range(2):
            painted = np.clip(truth.astype(int) + rng.integers(-6, 7, truth.shape), 0, 255).astype(np.uint8)
            row.append(np.where(m[..., None], painted, image))
        out.append(row)
    return np.asarray(out, np.uint8)


def _evidence(image: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    cats, masks = region_masks(labels, 3, 16, dilate=1)
    maps = repaint_disagreement(image, _repainted(image, masks, seed))
    return repaint_evidence(maps, cats, labels, 3)


def _calibrations() -> Calibrations:
    rows, pixels = [], []
    for i in range(1, 11):                                   # ten complete training birds
        image, labels = _bird(jitter=i)
        values, pixel = _evidence(image, labels, 100 + i)
        rows.append(values)
        pixels.append(pixel[labels > 0])
    cal = calibrate(rows, np.concatenate(pixels), 0.95, range(10))
    return Calibrations((("repaint", cal),), family_threshold(leave_one_out_maxima([np.asarray(rows)]), 0.1), 0.1)


CONFIG = DetectConfig(method="repaint")


def test_a_grey_region_where_the_head_was_is_not_counted_as_the_head():
    image, labels = _bird(jitter=20)
    occluded = image.copy()
    occluded[labels == 1] = GREY                             # the head hidden by a flat grey box...
    assigned = labels.copy()                                 # ...which position still labels "head"
    cal = _calibrations()
    det = rank_evidence(assigned, {"repaint": _evidence(occluded, assigned, 7)}, cal, CONFIG)
    assert det.missing == (1,) and det.ranking[0] == 1
    assert det.scores[1] >= CONFIG.cutoff_for(cal) > det.scores[2]
    assert (det.labels[labels == 1] == -1).mean() > 0.9      # the head's pixels match nothing
    assert det.occlusion_map[labels == 2].mean() < 0.1 and not det.occlusion_map[labels == 0].any()


def test_a_leaf_over_the_head_is_not_the_head_either():
    image, labels = _bird(jitter=21)
    occluded = image.copy()
    occluded[labels == 1] = LEAF
    occluded[2:6, 4] = (30, 90, 30)                          # its midrib
    det = rank_evidence(labels, {"repaint": _evidence(occluded, labels, 11)}, _calibrations(), CONFIG)
    assert det.missing == (1,)


def test_an_occluder_on_the_background_raises_no_alarm():
    image, labels = _bird(jitter=22)
    occluded = image.copy()
    occluded[0:4, 10:15] = GREY                              # on the sky only: nothing is hidden
    occluded[12:16, 0:3] = np.random.default_rng(1).integers(0, 256, (4, 3, 3))
    cal = _calibrations()
    det = rank_evidence(labels, {"repaint": _evidence(occluded, labels, 8)}, cal, CONFIG)
    assert det.missing == ()
    assert not det.occlusion_map[labels == 0].any()          # background is an outcome of its own
    complete = rank_evidence(labels, {"repaint": _evidence(image, labels, 9)}, cal, CONFIG)
    assert complete.missing == ()


def test_the_family_threshold_holds_the_false_alarms_on_training_images():
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(200, 5))
    rows[:, 0] = np.nan                                      # background
    maxima = leave_one_out_maxima([rows])
    t = family_threshold(maxima, 0.1)
    assert 0.08 <= float((maxima >= t).mean()) <= 0.12
    # the maximum of 4 categories lies above the single category's 90 % point
    cal = calibrate(rows, np.ones(3), 0.5)
    single = np.quantile([calibrated_scores(r, cal)[1] for r in rows], 0.9)
    assert t > single
    with pytest.raises(ValueError, match="family_alpha"):
        family_threshold(maxima, 1.5)


def test_combined_scores_take_the_larger_calibrated_score_and_json_round_trips():
    cal = _calibrations()
    both = Calibrations((("img2img", cal["repaint"]), ("repaint", cal["repaint"])), 2.5, 0.1)
    back = Calibrations.from_json(both.to_json())
    assert back == both
    image, labels = _bird()
    ev = _evidence(image, labels, 3)
    quiet = (np.array([np.nan, -5.0, -5.0], np.float32), ev[1])
    loud = (np.array([np.nan, 99.0, -5.0], np.float32), ev[1])
    det = rank_evidence(labels, {"img2img": loud, "repaint": quiet}, back, DetectConfig(method="combined"))
    assert det.missing == (1,) and det.scores[1] > 10 and det.scores[2] < 0


def test_region_masks_grow_and_skip_small_regions():
    labels = np.zeros((8, 8), np.int16)
    labels[2:4, 2:4] = 1
    labels[7, 7] = 2                                         # one pixel: no region
    cats, masks = region_masks(labels, 3, 16, dilate=1, min_pixels=4)
    assert cats == [1] and masks.shape == (1, 16, 16)
    assert masks[0].sum() == (4 * 2) ** 2                    # 2x2 grown to 4x4 cells, x2 in size
    assert appearance(np.zeros((2, 2, 3), np.uint8)).shape == (2, 2, 5)


def test_repaint_with_a_pipeline_keeps_the_outside_and_is_seeded(tiny_pipeline):
    from diffparts.occlusion.complete import inpaint_pipeline

    _, pipe = tiny_pipeline
    blend = inpaint_pipeline(pipe)                           # latent blending: never sees the masked pixels
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    labels = np.zeros((size // 2, size // 2), np.int16)
    labels[2:6, 2:6], labels[8:12, 3:9] = 1, 2
    cats, masks = region_masks(labels, 3, size)
    cfg = RepaintConfig(steps=2, seeds=(0, 1))
    out = repaint(blend, image, masks, cfg, seed=5)
    assert out.shape == (2, 2, size, size, 3)
    for j in range(2):
        assert np.array_equal(out[j][:, ~masks[j]], np.broadcast_to(image[~masks[j]], out[j][:, ~masks[j]].shape))
    assert np.array_equal(repaint(blend, image, masks, cfg, seed=5), out)
    with pytest.raises(ValueError, match="masks"):
        repaint(blend, image, masks[:, :4], cfg)
    with pytest.raises(ValueError, match="repaint needs"):
        RepaintConfig(seeds=())
