"""benchmarks/compare_detection.py: paired AUC differences of two eval_occlusion runs, refusing
runs of different cases by name (the stores' tables stubbed: the comparison is what is tested)."""

import numpy as np
import pytest


def _runs(tmp_path, names=("part-noise", "background-noise")):
    for side in ("a", "b"):
        for name in names:
            (tmp_path / side / name / "store.zarr").mkdir(parents=True)
    return tmp_path / "a", tmp_path / "b"


def test_paired_difference_per_run_and_false_alarms(tmp_path, monkeypatch, capsys):
    import benchmarks.compare_detection as cd

    rng = np.random.default_rng(0)
    y = np.zeros((32, 5), bool)
    y[np.arange(32), rng.integers(1, 5, 32)] = True
    base = rng.normal(size=(32, 5)) + y
    tables = {("a", "part-noise"): (["r"] * 32, base, y, {"detection": {"false_alarm_rate": 0.1}}),
              ("b", "part-noise"): (["r"] * 32, base + 0.5 * y, y, {"detection": {"false_alarm_rate": 0.2}}),
              ("a", "background-noise"): (["c"] * 32, base, np.zeros_like(y), {"detection": {"false_alarm_rate": 0.03}}),
              ("b", "background-noise"): (["c"] * 32, base, np.zeros_like(y), {"detection": {"false_alarm_rate": 0.06}})}
    monkeypatch.setattr(cd, "case_table", lambda store: tables[(store.parent.parent.name, store.parent.name)])
    a, b = _runs(tmp_path)
    rows = {r["run"]: r for r in cd.compare(a, b)}
    part = rows["part-noise"]
    assert part["hidden"] == 32 and part["auc_b"] > part["auc_a"]
    assert part["difference"] == pytest.approx(part["auc_b"] - part["auc_a"])
    assert 0 < part["interval"][0] < part["difference"] < part["interval"][1]
    assert "difference" not in rows["background-noise"] and rows["background-noise"]["false_alarms_b"] == 0.06
    assert cd.main([str(a), str(b), "--markdown"]) == 0
    err = capsys.readouterr().err
    assert "| part-noise | 32 (32) |" in err and "| background-noise | 32 (0) | - | - | - | 0.030 | 0.060 |" in err


def test_runs_of_other_cases_or_no_folder_are_refused(tmp_path, monkeypatch):
    import benchmarks.compare_detection as cd

    y = np.eye(4, 3, dtype=bool)
    s = np.zeros((4, 3))
    monkeypatch.setattr(cd, "case_table", lambda store: ([store.parent.parent.name] * 4, s, y, {"detection": {}}))
    a, b = _runs(tmp_path, ("part-grey",))
    with pytest.raises(SystemExit, match="different cases"):
        cd.compare(a, b)
    with pytest.raises(SystemExit, match="no such folder"):
        cd.main([str(a), str(tmp_path / "missing")])
    (tmp_path / "c").mkdir()
    with pytest.raises(SystemExit, match="no <how>-<fill>"):
        cd.compare(a, tmp_path / "c")
