"""KL thresholds chosen from the data (issue 5 item 4)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from diffparts.segment.diffseg import DiffSeg
from diffparts.segment.thresholds import (
    PRESETS,
    ThresholdRule,
    choose_thresholds,
    level_thresholds,
    sample_kl_distances,
    threshold_from_distances,
)
from diffparts.segment.synthetic import make_region_attention


def test_default_rule():
    assert (ThresholdRule().rule, ThresholdRule().quantile) == ("quantile", 0.2)


def test_presets_keep_reference_values():
    assert PRESETS["sd"] == (1.1, 1.1, 1.1)
    assert PRESETS["cityscapes"] == (0.9, 0.9, 0.9)


def test_quantile_rule_on_known_distances():
    distances = np.arange(1, 101, dtype=np.float64)  # 1..100
    assert threshold_from_distances(distances, "quantile", 0.5) == pytest.approx(50.5)
    assert level_thresholds(distances, [0.1, 0.5]) == pytest.approx((10.9, 50.5))


def test_otsu_rule_splits_two_modes():
    rng = np.random.default_rng(0)
    near = np.exp(rng.normal(np.log(0.01), 0.3, 5000))  # same-region distances
    far = np.exp(rng.normal(np.log(2.0), 0.3, 5000))  # other-region distances
    t = threshold_from_distances(np.concatenate([near, far]), "otsu")
    assert 0.03 < t < 0.7


def test_bad_rules_refused():
    with pytest.raises(ValueError, match="rule"):
        threshold_from_distances(np.ones(3), "median")
    with pytest.raises(ValueError, match="quantile"):
        threshold_from_distances(np.ones(3), "quantile", 1.5)
    with pytest.raises(ValueError, match="identical"):
        threshold_from_distances(np.zeros(3))
    with pytest.raises(ValueError, match="non-decreasing"):
        level_thresholds(np.ones(3), [0.5, 0.1])
    with pytest.raises(ValueError, match="no images"):
        sample_kl_distances([])


def test_sampling_bounds_memory(four_regions):
    attn, _ = four_regions
    distances, n = sample_kl_distances([attn, attn], max_per_image=100)
    assert n == 2 and distances.shape == (200,)
    assert (distances > 0).all()


def diffuse_attention():
    """A small model's attention: low sharpness, so every KL distance is small."""
    labels = np.zeros((16, 16), dtype=int)
    labels[:, 8:] = 1
    labels[8:, :] += 2
    return make_region_attention(labels, sharpness=3.0, locality=0.5, seed=0), labels


def test_fixed_reference_threshold_merges_diffuse_maps_but_the_rule_does_not():
    attn, labels = diffuse_attention()
    assert len(np.unique(DiffSeg(kl_thresholds=PRESETS["sd"]).fit(attn).labels_)) == 1
    choice = choose_thresholds([attn], ThresholdRule(rule="otsu"))
    assert choice.thresholds[0] < 1.1
    labels_rule = DiffSeg(kl_thresholds=choice.thresholds).fit(attn).labels_
    assert adjusted_rand_score(labels.ravel(), labels_rule.ravel()) > 0.8


def test_choice_is_json_ready_and_levels_increase(four_regions):
    attn, _ = four_regions
    choice = choose_thresholds([attn], ThresholdRule(quantile=0.05, rounds=2, level_multipliers=(1, 2, 4, 7)))
    assert len(choice.thresholds) == 2 and choice.thresholds[0] == choice.thresholds[1]
    assert list(choice.level_thresholds) == sorted(choice.level_thresholds)
    assert choice.level_thresholds[0] == choice.thresholds[0]
    stats = json.loads(json.dumps(choice.as_dict()))["statistics"]
    assert stats["n_images"] == 1 and stats["rule"] == "quantile"
    assert stats["percentiles"]["p5"] == pytest.approx(choice.thresholds[0])
    assert stats["level_quantiles"] == pytest.approx([0.05, 0.1, 0.2, 0.35], abs=1e-3)
    assert len(set(choice.level_thresholds)) == 4


def test_otsu_levels_still_coarsen(four_regions):
    choice = choose_thresholds([four_regions[0]], ThresholdRule(rule="otsu"))
    assert choice.level_thresholds[0] == choice.thresholds[0]
    assert choice.level_thresholds[-1] > choice.level_thresholds[0]
