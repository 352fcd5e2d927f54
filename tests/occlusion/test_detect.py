"""Missing-part detection: a constructed case where the answer is known."""

import numpy as np
import pytest

from diffparts.occlusion.detect import DetectConfig, dataset_expectation, missing_scores, rank_missing


def _dataset():
    """Ten 8 x 8 maps: category 1 (16 px) and 2 (8 px) in every image, 3 (4 px) in two of ten."""
    maps = np.zeros((10, 8, 8), np.int16)
    maps[:, 0:4, 0:4] = 1
    maps[:, 4:6, 0:4] = 2
    maps[:2, 6:8, 6:8] = 3
    return maps


def test_expectation_counts_prevalence_and_typical_size():
    exp = dataset_expectation(_dataset())
    assert exp.prevalence.tolist() == pytest.approx([0.0, 1.0, 1.0, 0.2])
    assert exp.typical.tolist() == [0.0, 16.0, 8.0, 4.0]


def test_detection_finds_the_hidden_category():
    exp = dataset_expectation(_dataset())
    occluded = _dataset()[5].copy()
    occluded[0:4, 0:4] = 0                                       # category 1 hidden (now background)
    det = rank_missing(occluded, exp, DetectConfig(threshold=0.5))
    assert det.scores.tolist() == pytest.approx([0.0, 1.0, 0.0, 0.2])   # 3 rarely seen: low score
    assert det.missing == (1,) and det.ranking[0] == 1 and det.top(2) == (1,)
    assert det.occlusion_map is None

    half = _dataset()[5].copy()
    half[0:2, 0:4] = 0                                           # half of category 1 left
    assert missing_scores(half, exp)[1] == pytest.approx(0.5)
    complete = rank_missing(_dataset()[0], exp, DetectConfig(threshold=0.5))
    assert complete.missing == () and complete.top(1) == (complete.ranking[0],)


def test_detection_refuses_unknown_categories():
    exp = dataset_expectation(_dataset())
    bad = np.full((8, 8), 9, np.int16)
    with pytest.raises(ValueError, match="category 9"):
        missing_scores(bad, exp)
    with pytest.raises(ValueError, match="\\(image, y, x\\)"):
        dataset_expectation(np.zeros((8, 8), np.int16))


def test_unknown_pixels_are_no_evidence_and_make_the_occlusion_map():
    from diffparts.occlusion.detect import rank_with_unknown

    exp = dataset_expectation(_dataset())
    labels = _dataset()[5].copy()                                # the occluder keeps category 1's label...
    dist = np.full(labels.shape, 1.0, np.float32)
    dist[labels == 0] = 0.0
    dist[0:4, 0:4] = 50.0                                        # ...but is far from every centre
    plain = rank_missing(labels, exp, DetectConfig(threshold=0.5))
    assert plain.missing == () and plain.occlusion_map is None   # nearest centre: 1 looks present
    det = rank_with_unknown(labels, dist, exp, 10.0, DetectConfig(threshold=0.5))
    assert det.missing == (1,) and det.scores[1] == pytest.approx(1.0)
    assert det.occlusion_map.tolist() == (dist > 10.0).tolist()   # exactly the occluder's pixels
    assert (det.labels[0:4, 0:4] == -1).all() and (det.labels[4:6, 0:4] == 2).all()
    none = rank_with_unknown(labels, dist, exp, None, DetectConfig(threshold=0.5))
    assert none.missing == () and none.occlusion_map is None


def test_calibration_images_default_to_many_without_a_model_and_are_checked():
    from diffparts.occlusion.detect import MODEL_CALIBRATION, MODEL_FREE_CALIBRATION

    assert DetectConfig(method="appearance").calibration_count == MODEL_FREE_CALIBRATION == 256
    assert DetectConfig(method="colour").calibration_count == MODEL_FREE_CALIBRATION
    assert DetectConfig(method="repaint").calibration_count == MODEL_CALIBRATION == 32
    assert DetectConfig(method="combined").calibration_count == MODEL_CALIBRATION
    assert DetectConfig(method="repaint", calibration_images=5).calibration_count == 5
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="calibration_images"):
            DetectConfig(calibration_images=bad)
