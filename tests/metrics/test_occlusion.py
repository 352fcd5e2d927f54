"""Occlusion measures on constructed inputs, against hand-computed values."""

import math

import numpy as np
import pytest

from diffparts.metrics.occlusion import (category_of_part, detection_scores, hidden_categories, interval_text,
                                         masked_psnr, masked_ssim, mean_difference, restoration_scores, roc_auc,
                                         roc_auc_difference, roc_auc_interval, ssim_window)


def test_detection_precision_recall_f1_by_hand():
    # case 1: predicted {1, 2}, hidden {1}; case 2: predicted {}, hidden {3}; case 3: {4} / {4, 5}
    d = detection_scores([{1, 2}, set(), {4}], [{1}, {3}, {4, 5}])
    assert (d.tp, d.fp, d.fn) == (2, 1, 2)
    assert d.precision == pytest.approx(2 / 3) and d.recall == pytest.approx(0.5)
    assert d.f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    empty = detection_scores([set()], [set()])
    assert math.isnan(empty.precision) and math.isnan(empty.recall) and math.isnan(empty.f1)
    with pytest.raises(ValueError, match="2 predictions for 1 cases"):
        detection_scores([set(), set()], [set()])


def test_hidden_categories_threshold():
    assert hidden_categories({1: 0.5, 2: 0.49, 0: 1.0}, 0.5) == {1}
    with pytest.raises(ValueError):
        hidden_categories({}, 0.0)


def test_roc_auc_by_hand():
    # positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) = 3/4
    assert roc_auc([0.9, 0.5, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)           # a tie counts one half
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_roc_auc_interval_brackets_the_auc_and_narrows_with_more_cases():
    rng = np.random.default_rng(0)

    def cases(n):                        # one hidden category of 4 per case, its score shifted up by 1
        y = np.zeros((n, 4), bool)
        y[np.arange(n), rng.integers(0, 4, n)] = True
        return rng.normal(size=(n, 4)) + y, y

    s, y = cases(32)
    lo, hi = roc_auc_interval(s, y)
    assert lo < roc_auc(s, y) < hi and 0.05 < hi - lo < 0.4
    assert roc_auc_interval(s, y) == (lo, hi)                     # seeded
    s2, y2 = cases(512)
    lo2, hi2 = roc_auc_interval(s2, y2)
    assert hi2 - lo2 < (hi - lo) / 2                              # about 1 / sqrt(16) as wide
    perfect = np.where(y, 1.0, 0.0)
    assert roc_auc_interval(perfect, y) == (1.0, 1.0)
    assert all(math.isnan(v) for v in roc_auc_interval(np.zeros((3, 2)), np.zeros((3, 2), bool)))
    assert interval_text([0.5974, 0.92]) == "0.60-0.92"
    assert interval_text(None) is interval_text([None, None]) is interval_text([float("nan")] * 2) is None
    with pytest.raises(ValueError, match="level"):
        roc_auc_interval(s, y, level=1.5)
    with pytest.raises(ValueError, match="shape"):
        roc_auc_interval(s[:, 0], y[:, 0])


def test_paired_difference_sees_what_separate_intervals_cannot():
    rng = np.random.default_rng(1)
    n = 48
    y = np.zeros((n, 4), bool)
    y[np.arange(n), rng.integers(0, 4, n)] = True
    shared = rng.normal(size=(n, 4)) + y                     # what both detectors see
    a = shared + 0.5 * rng.normal(size=(n, 4))
    b = shared + 0.5 * rng.normal(size=(n, 4)) + 0.4 * y     # b: the same plus a little more signal
    diff, lo, hi = roc_auc_difference(a, b, y)
    assert diff == pytest.approx(roc_auc(b, y) - roc_auc(a, y))
    assert 0 < lo < diff < hi                                # the paired interval excludes 0 ...
    a_lo, a_hi = roc_auc_interval(a, y)
    b_lo, b_hi = roc_auc_interval(b, y)
    assert b_lo < a_hi                                       # ... where the separate intervals overlap
    d0, lo0, hi0 = roc_auc_difference(a, a, y)
    assert d0 == lo0 == hi0 == 0.0                           # a detector against itself
    with pytest.raises(ValueError, match="scores"):
        roc_auc_difference(a[:, :3], b, y)


def test_mean_difference_is_paired_and_skips_missing_cases():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.0, 1.0, 40)                        # cases differ a lot ...
    b = a + 0.05 + 0.01 * rng.normal(size=40)            # ... b adds a little to each
    diff, lo, hi, n = mean_difference(a, b)
    assert n == 40 and diff == pytest.approx(np.mean(b - a))
    assert 0.04 < lo < diff < hi < 0.06                  # paired: the case-to-case spread cancels
    assert mean_difference(a, a)[:3] == (0.0, 0.0, 0.0)
    a2, b2 = list(a[:3]) + [None], [a[0] + 1, float("nan"), a[2] + 3, 0.5]
    d2, _, _, n2 = mean_difference(a2, b2)               # cases 1 and 3 lack a value: left out
    assert n2 == 2 and d2 == pytest.approx(2.0)
    assert mean_difference([None], [1.0])[3] == 0 and np.isnan(mean_difference([None], [1.0])[0])
    with pytest.raises(ValueError, match="same length"):
        mean_difference(a, b[:-1])


def test_psnr_by_hand():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[0, 1] = True
    b[0, 0] = 10                                   # squared error 100 on 3 of the 6 masked values
    b[3, 3] = 255                                  # outside the mask: ignored
    assert masked_psnr(b, a, mask) == pytest.approx(10 * math.log10(255 ** 2 / 50))
    assert masked_psnr(a, a, mask) == math.inf
    with pytest.raises(ValueError, match="mask is empty"):
        masked_psnr(a, b, np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="boolean"):
        masked_psnr(a, b, mask.astype(int))


def test_ssim_inside_the_region():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:9] = True
    assert ssim_window(mask) == 3                   # a 4 x 5 box fits a 3 window
    assert ssim_window(np.ones((16, 16), bool)) == 7
    assert masked_ssim(a, a, mask) == pytest.approx(1.0)
    b = a.copy()
    b[mask] = 255 - b[mask]
    worse = masked_ssim(b, a, mask)
    assert worse < 0.5
    c = a.copy()
    c[12:, 12:] = 0                                 # a change far outside the region
    assert masked_ssim(c, a, mask) == pytest.approx(1.0)


def test_restoration_by_hand():
    labels = np.zeros((4, 4), np.int16)
    labels[0:2, 0:2] = 3                            # 4 px of category 3
    part = np.zeros((4, 4), bool)
    part[0:2, 0:3] = True                           # the true part: 6 px, 4 of them category 3
    hidden = part.copy()
    r = restoration_scores(labels, 3, part, hidden, min_pixels=4)
    assert r["iou"] == pytest.approx(4 / 6) and r["hidden_share"] == pytest.approx(4 / 6) and r["assigned"]
    r = restoration_scores(labels, 2, part, hidden)
    assert r["iou"] == 0 and r["hidden_share"] == 0 and not r["assigned"]
    assert category_of_part(labels, part) == 3
    assert category_of_part(np.zeros((4, 4), np.int16), part) == 0


def test_detection_columns_of_issue_18():
    import numpy as np
    import pytest

    from diffparts.metrics.occlusion import false_alarm_rate, hidden_greyish, roc_auc_per_category

    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.3]])
    hidden = np.array([[True, False], [False, True], [False, False]])
    assert roc_auc_per_category(scores, hidden) == [1.0, 1.0]
    assert np.isnan(roc_auc_per_category(scores, np.zeros((3, 2), bool))[0])
    assert false_alarm_rate([[1], [], [2], []], [[], [], [1], []]) == pytest.approx(1 / 3)   # 1 of 3 clean cases
    assert np.isnan(false_alarm_rate([[1]], [[1]]))
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2] = (130, 128, 126)                                   # grey-ish
    image[2:] = (200, 30, 40)                                     # red
    mask = np.zeros((4, 4), bool)
    mask[:2] = True
    assert hidden_greyish(image, mask) and not hidden_greyish(image, ~mask)
    with pytest.raises(ValueError, match="mask is empty"):
        hidden_greyish(image, np.zeros((4, 4), bool))
