"""Detection by evidence of absence: constructed cases where the answer is known.

A 16 x 16 bird: head (category 1, red) at the top left, body (category 2, brown) below; the
rest is background (0). The "imagination" is what a model that knows birds would paint: the
complete bird. The position-based assignment labels an occluder at the head's place as the
head, as the real assigner does.
"""

import numpy as np
import pytest

from diffparts.occlusion.detect import DetectConfig, dataset_expectation, rank_evidence, rank_missing
from diffparts.occlusion.evidence import (Calibration, calibrate, calibrated_scores, category_disagreement,
                                          occlusion_map)
from diffparts.occlusion.imagine import ImagineConfig, disagreement
from diffparts.occlusion.occluders import GREY

RED, BROWN, SKY = (196, 32, 38), (122, 78, 44), (150, 190, 220)


def _bird(jitter: int = 0) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((16, 16), np.int16)
    labels[2:6, 2:6] = 1                                     # head
    labels[6:14, 4:12] = 2                                   # body
    image = np.empty((16, 16, 3), np.uint8)
    image[:] = SKY
    image[labels == 1] = RED
    image[labels == 2] = BROWN
    if jitter:
        image = np.clip(image.astype(int) + np.random.default_rng(jitter).integers(-3, 4, image.shape), 0, 255)
    return image.astype(np.uint8), labels


def _imagined(image: np.ndarray, seed: int) -> np.ndarray:
    """Two imaginations of the complete bird, close to the truth (small seeded differences)."""
    truth, _ = _bird()
    rng = np.random.default_rng(seed)
    return np.stack([np.clip(truth.astype(int) + rng.integers(-6, 7, truth.shape), 0, 255) for _ in range(2)]
                    ).astype(np.uint8)


def _calibration() -> Calibration:
    rows, pixels = [], []
    for i in range(1, 9):                                    # eight complete training birds
        image, labels = _bird(jitter=i)
        d = disagreement(image, _imagined(image, 100 + i))
        rows.append(category_disagreement(d, labels, 3))
        pixels.append(d[labels > 0])
    return calibrate(rows, np.concatenate(pixels), 0.95, range(8))


def test_a_grey_region_where_the_head_was_is_not_counted_as_the_head():
    image, labels = _bird()
    occluded = image.copy()
    occluded[labels == 1] = GREY                             # the head hidden by a grey box...
    assigned = labels.copy()                                 # ...which position still labels "head"
    cal = _calibration()

    # The area rule counts the grey box as the head: nothing is missing.
    maps = np.stack([_bird(jitter=i)[1] for i in range(1, 9)])
    assert rank_missing(assigned, dataset_expectation(maps), DetectConfig(method="area")).missing == ()

    det = rank_evidence(assigned, disagreement(occluded, _imagined(occluded, 7)), cal)
    assert det.missing == (1,) and det.ranking[0] == 1
    assert det.scores[1] >= DetectConfig().cutoff > det.scores[2]
    assert (det.labels[labels == 1] == -1).mean() > 0.9      # the head's pixels match nothing
    assert det.occlusion_map[labels == 2].mean() < 0.1 and not det.occlusion_map[labels == 0].any()


def test_an_occluder_on_the_background_raises_no_alarm():
    image, labels = _bird()
    occluded = image.copy()
    occluded[0:4, 10:15] = GREY                              # on the sky only: nothing is hidden
    occluded[12:16, 0:3] = np.random.default_rng(1).integers(0, 256, (4, 3, 3))
    det = rank_evidence(labels, disagreement(occluded, _imagined(occluded, 8)), _calibration())
    assert det.missing == ()
    assert not det.occlusion_map[labels == 0].any()          # background is an outcome of its own
    assert det.occlusion_map.mean() < 0.05
    complete = rank_evidence(labels, disagreement(image, _imagined(image, 9)), _calibration())
    assert complete.missing == ()


def test_scores_are_calibrated_per_category_and_stored_exactly():
    cal = Calibration(((), (0.0, 0.1, 0.2), (1.0, 1.0, 1.0)), 0.5, (3, 4))
    scores = calibrated_scores(np.array([np.nan, 0.3, 1.0]), cal)
    assert scores[0] == 0.0 and scores[1] == pytest.approx((0.3 - 0.1) / (1.4826 * 0.1))
    assert scores[2] == 0.0                                  # exactly typical for category 2
    assert calibrated_scores(np.array([np.nan, np.nan, 5.0]), cal)[1] == 0.0   # no region: no evidence
    assert Calibration.from_json(cal.to_json()) == cal
    with pytest.raises(ValueError, match="2 categories of evidence"):
        calibrated_scores(np.zeros(2), cal)
    labels = np.array([[0, 1], [1, 2]])
    assert occlusion_map(np.full((2, 2), 0.9), labels, cal).tolist() == [[False, True], [True, True]]
    shifted = Calibration(cal.values, 0.5, (3, 4), offset=1.0)              # a kind that counts only well above
    assert calibrated_scores(np.array([np.nan, 0.3, 1.0]), shifted).tolist() == pytest.approx([0.0, scores[1] - 1, -1.0])
    assert calibrated_scores(np.array([np.nan, np.nan, 5.0]), shifted)[1] == 0.0    # still no evidence
    assert Calibration.from_json(shifted.to_json()) == shifted
    assert Calibration.from_json({k: v for k, v in cal.to_dict().items() if k != "offset"}).offset == 0.0  # older JSON


def test_leave_one_out_maxima_take_each_kinds_offset():
    from diffparts.occlusion.evidence import leave_one_out_maxima

    rng = np.random.default_rng(0)
    a, g = rng.normal(size=(12, 4)), rng.normal(size=(12, 4))
    a[:, 0] = g[:, 0] = np.nan
    plain = leave_one_out_maxima([a, g])
    assert np.allclose(leave_one_out_maxima([a, g], offsets=[0.0, 0.0]), plain)
    shifted = leave_one_out_maxima([a, g], offsets=[0.0, 50.0])                # the second kind never wins
    assert np.allclose(shifted, leave_one_out_maxima([a]))


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="imagine strength"):
        ImagineConfig(strength=0.0)
    with pytest.raises(ValueError, match="unknown detection method 'pixels'"):
        DetectConfig(method="pixels")
    assert DetectConfig(imagine={"steps": 4, "seeds": [0]}).imagine == ImagineConfig(steps=4, seeds=(0,))
    with pytest.raises(ValueError, match="do not match the image"):
        disagreement(np.zeros((4, 4, 3), np.uint8), np.zeros((2, 3, 3, 3), np.uint8))
