"""benchmarks/detect_rules.py: its rules on constructed maps whose answer is known (regions less
their border, a shrunk tail looked for, the statistics, the image's median taken off), the rules'
names and arguments refused by name, the library restored after a rule, the table, and the
refusals of a folder it cannot read."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from diffparts.occlusion.layout import layout_prior
from tests.occlusion.test_layout import K1, _map   # body, head and tail on a 40 x 40 map


def test_rules_are_parsed_with_their_defaults_and_refused_by_name():
    from benchmarks.detect_rules import parse_rule

    assert parse_rule("default") == ("default", (), "")
    assert parse_rule("shrunk:0.3") == ("shrunk", (0.3, 0.9, 0.05), "")
    assert parse_rule("erode:2+median") == ("erode", (2.0,), "median")
    with pytest.raises(SystemExit, match="unknown rule 'erosion'"):
        parse_rule("erosion")
    with pytest.raises(SystemExit, match="'quantile:high'.*numbers"):
        parse_rule("quantile:high")
    with pytest.raises(SystemExit, match="at most 1 argument"):
        parse_rule("top:0.5,2")
    with pytest.raises(SystemExit, match=r"suffix '\+mean'"):
        parse_rule("default+mean")


def test_erode_takes_each_regions_border_and_keeps_a_region_it_would_empty():
    from benchmarks.detect_rules import erode_regions

    m = np.zeros((12, 12), np.int16)
    m[1:6, 1:6] = 1                                         # 5 x 5: keeps its 3 x 3 inside
    m[1:6, 6:11] = 2                                        # touching 1: each loses its own border only
    m[8:10, 8:10] = 3                                       # 2 x 2: erosion would leave nothing, kept whole
    out = erode_regions(m, K1, 1)
    assert (out == 1).sum() == 9 and (out == 2).sum() == 9 and (out[2:5, 2:5] == 1).all()
    assert ((out == -1) == ((m > 0) & (m != 3) & (out != m))).all() and (out == -1).sum() == 32
    assert (out == 3).sum() == 4 and np.array_equal(out[m == 0], m[m == 0])
    assert (erode_regions(m, K1, 2, min_pixels=1) == 1).sum() == 1 and (erode_regions(m, K1, 2) == 1).sum() == 25


def test_a_shrunk_tail_is_looked_for_at_its_place_and_a_whole_bird_is_left_alone():
    from benchmarks.detect_rules import relocated

    rng = np.random.default_rng(0)
    prior = layout_prior([_map(*rng.integers(-2, 3, 2)) for _ in range(12)], K1)
    reference = SimpleNamespace(config=SimpleNamespace(lost_background=0.9, lost_share=0.05), layout=prior,
                                n_categories=K1)
    whole = _map()
    shrunk = whole.copy()
    tail = whole == 3
    shrunk[tail & (np.arange(40)[None, :] >= 34)] = 0        # most of the tail assigned to the background
    assert 4 <= (shrunk == 3).sum() < 0.5 * tail.sum()      # not lost: the stage's rule leaves it alone
    p_background = np.where(tail, 0.3, 0.99)
    out = relocated("shrunk", (0.5, 0.9, 0.05), shrunk, p_background, reference)
    assert (out[tail] == 3).mean() > 0.8 and np.array_equal(out[~tail], shrunk[~tail])
    assert np.array_equal(relocated("shrunk", (0.5, 0.9, 0.05), whole, np.full(whole.shape, 0.3), reference), whole)
    # an object pixel assigned where its category never lies goes to the one that does
    stray = whole.copy()
    stray[22, 36] = 2                                       # a head pixel in the tail's place
    fixed = relocated("implausible", (0.05, 100.0), stray, np.full(whole.shape, 0.3), reference)
    assert fixed[22, 36] == 3 and np.array_equal(np.delete(fixed.ravel(), 22 * 40 + 36),
                                                 np.delete(stray.ravel(), 22 * 40 + 36))
    with pytest.raises(ValueError, match="not a region rule"):
        relocated("pbg", (), whole, p_background, reference)


def test_the_statistics_and_the_images_median():
    from benchmarks.detect_rules import less_median, summarised

    labels = np.array([[1, 1, 1, 1], [2, 2, 2, 2], [0, 0, 3, 3]])
    surprise = np.array([[1.0, 2.0, 3.0, 10.0], [0.5] * 4, [9.0, 9.0, 1.0, 1.0]])
    p_background = np.array([[0.1, 0.2, 0.3, 0.4], [0.5] * 4, [0.9] * 4])
    q = summarised("quantile", (0.5,), surprise, p_background, labels, K1)
    assert np.isnan(q[0]) and q[1] == pytest.approx(2.5) and q[2] == 0.5 and np.isnan(q[3])   # 2 pixels < 4
    assert summarised("top", (0.25,), surprise, p_background, labels, K1)[1] == 10.0
    assert summarised("pbg", (), surprise, p_background, labels, K1)[1] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="not a statistic rule"):
        summarised("erode", (1,), surprise, p_background, labels, K1)
    scores = np.array([0.0, 1.0, 2.0, 10.0])
    m = np.array([[1] * 4, [2] * 4, [3] * 4])
    assert np.allclose(less_median(scores, m), [0.0, 1.0 - 6.0, 2.0 - 5.5, 10.0 - 1.5])
    m[2] = 0                                               # 3 has no region: it counts for nobody
    assert np.allclose(less_median(scores, m), [0.0, 1.0 - 2.0, 2.0 - 1.0, 10.0 - 1.5])


def test_a_rule_replaces_the_librarys_evidence_only_inside_its_block():
    import diffparts.occlusion.appearance as appearance
    from benchmarks.detect_rules import rule_in_place

    regions, evidence = appearance.appearance_regions, appearance.appearance_evidence
    with rule_in_place("erode", (1,)):
        assert appearance.appearance_regions is not regions and appearance.appearance_evidence is evidence
    with rule_in_place("top", (0.5,)):
        assert appearance.appearance_evidence is not evidence
    with rule_in_place("true", ()):
        assert appearance.appearance_regions is regions
    assert appearance.appearance_regions is regions and appearance.appearance_evidence is evidence


def test_markdown_shows_differences_and_false_alarms():
    from benchmarks.detect_rules import markdown

    rows = [{"rule": "default", "mean_auc": 0.8,
             "runs": {"part-grey": {"auc": 0.8}, "background-grey": {"false_alarms": 0.0625}}},
            {"rule": "erode:1+median", "mean_auc": 0.81,
             "runs": {"part-grey": {"auc": 0.81, "difference": [0.01, -0.002, 0.03]},
                      "background-grey": {"false_alarms": None}}}]
    text = markdown(rows)
    assert "| rule | ROC AUC part-grey | mean | false alarms background-grey |" in text
    assert "| `default` | 0.800 | 0.800 | 6.2 % |" in text
    assert "| `erode:1+median` | 0.810 (+0.010, -0.002 to +0.030) | 0.810 | - |" in text


def test_folders_it_cannot_read_are_refused(tmp_path):
    import zarr

    from benchmarks.detect_rules import read_runs

    with pytest.raises(SystemExit, match="no <how>-<fill>/store.zarr run"):
        read_runs(tmp_path)
    g = zarr.open_group(str(tmp_path / "part-grey" / "store.zarr"), mode="w").create_group("occlusion")
    g.attrs["config"] = json.loads(json.dumps({"fill": "grey", "detect": {"method": "area"}}))
    with pytest.raises(SystemExit, match="detector 'area'.*appearance"):
        read_runs(tmp_path)
    g.attrs["config"] = {"fill": "grey", "detect": {"method": "appearance"}}
    g.attrs["calibration"] = "one"
    other = zarr.open_group(str(tmp_path / "part-noise" / "store.zarr"), mode="w").create_group("occlusion")
    other.attrs.update({"config": {"fill": "noise", "detect": {"method": "appearance"}}, "calibration": "two"})
    with pytest.raises(SystemExit, match="part-noise.*calibrated differently"):
        read_runs(tmp_path)


def test_placement_counts_where_the_occluded_pixels_of_a_hidden_category_went():
    from benchmarks.detect_rules import placement

    truth_map = np.zeros((1, 4, 4), np.int16)
    truth_map[0, :2] = 1                                    # category 1: the top two rows
    truth_map[0, 2:] = 2
    plain = truth_map.copy()
    plain[0, 0, :2] = 0                                     # two of its pixels called background ...
    plain[0, 1, 0] = 2                                      # ... one given to category 2
    masks = np.zeros((1, 4, 4), bool)
    masks[0, :2] = True                                     # the occluder: exactly category 1
    masks[0, 2, 0] = True                                   # and one pixel of 2, which is not hidden
    hidden = np.array([[False, True, False]])
    assert placement(plain, truth_map, masks, hidden) == {"own": 0.625, "background": 0.25, "other": 0.125}
    assert placement(plain, truth_map, masks, np.zeros((1, 3), bool)) is None


def test_the_stages_rule_gives_a_detect_only_runs_scores_back(occlusion_store, tmp_path):
    """End to end on the test store: the stage runs detection-only cases hiding whole categories;
    scored again, the default rule gives the stored scores back to the last digit (the harness
    calibrates and scores as the stage does), and another rule is scored on the same cases."""
    from benchmarks.detect_rules import markdown, score_rules
    from diffparts.occlusion.cases import run_cases
    from diffparts.occlusion.stage import occlusion_config, setup_occlusion
    from diffparts.store import open_store

    store, corpus, model = occlusion_store
    root = open_store(store, "r+")
    cfg = occlusion_config({"how": "category", "fill": "noise", "complete": False, "n_cases": 4,
                            "detect": {"calibration_images": 3, "appearance": {"steps": 20, "folds": 2}}})
    setup = setup_occlusion(root, store, corpus, model, cfg)
    assert not run_cases(root, store, corpus, model, setup["todo"])["failed"]
    (tmp_path / "category-noise").mkdir()
    (tmp_path / "category-noise" / "store.zarr").symlink_to(store, target_is_directory=True)
    rows = score_rules(tmp_path, ["erode:1", "top:0.5+median"], corpus=str(corpus))
    assert [r["rule"] for r in rows] == ["default", "erode:1", "top:0.5+median"]
    run = rows[0]["runs"]["category-noise"]
    assert run["cases"] == 4 and run["reproduced"] < 1e-5
    assert run["placement"] is not None and sum(run["placement"].values()) == pytest.approx(1.0, abs=1e-3)
    assert "difference" in rows[1]["runs"]["category-noise"] and "`erode:1`" in markdown(rows)
