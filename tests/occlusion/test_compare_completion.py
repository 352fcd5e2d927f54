"""benchmarks/compare_completion.py: the judge's per-case measures of completion variants, paired
against the occluded input within a run and between two runs of the same cases, refusing runs
of different cases by name (the stores' tables stubbed: the comparison is what is tested)."""

import numpy as np
import pytest


def _runs(tmp_path, sides=("a", "b"), names=("part-noise", "part-grey")):
    for side in sides:
        for name in names:
            (tmp_path / side / name / "store.zarr").mkdir(parents=True)
    return [tmp_path / s for s in sides]


def _table(rng, n, lift):
    occluded = rng.uniform(0.1, 0.5, n)
    return {"original": {"judge_iou": list(occluded + 0.3)},
            "occluded": {"judge_iou": list(occluded)},
            "class": {"judge_iou": list(occluded + lift + 0.01 * rng.normal(size=n))},
            "empty": {"judge_iou": list(occluded + 0.05 * rng.normal(size=n))}}


def test_variants_against_the_occluded_input_per_run_and_pooled(tmp_path, monkeypatch, capsys):
    import benchmarks.compare_completion as cc

    rng = np.random.default_rng(0)
    tables = {name: _table(rng, 24, 0.1) for name in ("part-noise", "part-grey")}
    tables["part-grey"]["empty"]["judge_iou"][0] = None                     # a case the judge could not read
    monkeypatch.setattr(cc, "case_measures", lambda store: (["r"] * 24, {
        v: {m: t.get(m, [None] * 24) for m in cc.MEASURES} for v, t in tables[store.parent.name].items()}))
    (a,) = _runs(tmp_path, ("a",))
    rows = {(r["run"], r["variant"]): r for r in cc.against_variant(a, "occluded", "judge_iou")}
    cls = rows[("part-noise", "class")]
    assert 0.09 < cls["interval"][0] < cls["difference"] < cls["interval"][1] < 0.11
    assert rows[("part-grey", "empty")]["cases"] == 23
    assert rows[("all", "class")]["cases"] == 24 and rows[("all", "empty")]["cases"] == 24   # per case, over fills
    both = [(x + y) / 2 for x, y in zip(tables["part-noise"]["class"]["judge_iou"], tables["part-grey"]["class"]["judge_iou"])]
    assert rows[("all", "class")]["b"] == pytest.approx(np.mean(both))
    lo, hi = rows[("all", "empty")]["interval"]
    assert lo < 0 < hi                                                      # nothing painted back: no difference
    assert ("part-noise", "occluded") not in rows
    with pytest.raises(SystemExit, match="no variant 'blend'"):
        cc.against_variant(a, "blend", "judge_iou")
    assert cc.main([str(a), "--markdown"]) == 0
    assert "| all | class | 24 |" in capsys.readouterr().err
    monkeypatch.setattr(cc, "case_measures", lambda store: ([store.parent.name] * 24, {
        v: {m: t.get(m, [None] * 24) for m in cc.MEASURES} for v, t in tables[store.parent.name].items()}))
    assert not [r for r in cc.against_variant(a, "occluded", "judge_iou") if r["run"] == "all"]   # other cases: none


def test_two_runs_of_the_same_cases_and_refusals(tmp_path, monkeypatch):
    import benchmarks.compare_completion as cc

    rng = np.random.default_rng(1)
    ta = _table(rng, 20, 0.0)
    tb = {v: {"judge_iou": list(np.asarray(t["judge_iou"]) + (0.05 if v == "class" else 0.0))} for v, t in ta.items()}
    records = {"a": ["r"] * 20, "b": ["r"] * 20}
    monkeypatch.setattr(cc, "case_measures", lambda store: (records[store.parent.parent.name], {
        v: {m: t.get(m, [None] * 20) for m in cc.MEASURES} for v, t in (ta if store.parent.parent.name == "a" else tb).items()}))
    a, b = _runs(tmp_path, names=("part-noise",))
    rows = {(r["run"], r["variant"]): r for r in cc.between_runs(a, b, "judge_iou")}
    assert rows[("part-noise", "class")]["difference"] == pytest.approx(0.05)
    assert rows[("part-noise", "occluded")]["difference"] == pytest.approx(0.0)
    records["b"] = ["other"] * 20
    with pytest.raises(SystemExit, match="different cases"):
        cc.between_runs(a, b, "judge_iou")
    with pytest.raises(SystemExit, match="no such folder"):
        cc.main([str(a), str(tmp_path / "missing")])
    (tmp_path / "c").mkdir()
    with pytest.raises(SystemExit, match="no store.zarr"):
        cc.runs_of(tmp_path / "c")


def test_another_judge_reads_the_stored_images_again(tmp_path, monkeypatch):
    """--judge: the judge's two measures come from the stored variant images read by that judge,
    scored inside the stored hidden mask against the corpus's part mask; the rest as stored."""
    import json
    from types import SimpleNamespace

    import zarr
    from PIL import Image

    import benchmarks.compare_completion as cc
    import diffparts.occlusion.stage as stage
    import diffparts.store as store_module

    truth = np.zeros((8, 8), np.uint8)
    truth[2:6, 2:6] = 3                                                   # part 3 (the eye's id), hidden below
    Image.fromarray(truth).save(tmp_path / "a-mask.png")
    store = tmp_path / "w" / "part-object" / "store.zarr"
    g = zarr.open_group(str(store), mode="w").create_group("occlusion")
    g.attrs["variants"] = ["occluded", "class"]
    images = np.zeros((2, 2, 8, 8, 3), np.uint8)
    images[:, 1] = 255                                                    # "class" paints something, "occluded" not
    g.create_array("images", data=images)
    mask = np.zeros((2, 8, 8), bool)
    mask[:, 2:6, 2:4] = True
    g.create_array("masks", data=mask)
    g.create_array("done", data=np.array([True, True]))
    stored = {"occluded": {"judge_iou": 0.5, "psnr": 9.0}, "class": {"judge_iou": 0.5, "psnr": 12.0}}
    results = g.create_array("results", shape=(2,), dtype=str)
    results[:] = np.array([json.dumps({"image": i, "target": [3], "measures": stored}) for i in (0, 1)], dtype=object)
    records = {"a.png": SimpleNamespace(part_mask_path=tmp_path / "a-mask.png"),
               "own.png": SimpleNamespace(part_mask_path=None)}
    monkeypatch.setattr(stage, "_records", lambda root, corpus: (records, {}))
    monkeypatch.setattr(store_module, "image_table", lambda root: [{"name": "a.png"}, {"name": "own.png"}])

    class Judge:                                                         # reads the part wherever something is painted
        def labels(self, image):
            return np.where(np.asarray(image).mean(-1) > 128, 3, 0).astype(np.uint8)

    _, as_stored = cc.case_measures(store)
    assert as_stored["class"]["judge_iou"] == [0.5, 0.5]
    _, table = cc.case_measures(store, Judge())
    assert table["class"]["judge_iou"][0] == pytest.approx(16 / 64)      # the whole image read as the part
    assert table["class"]["judge_hidden_accuracy"][0] == 1.0
    assert table["occluded"]["judge_iou"][0] == 0.0 and table["occluded"]["judge_hidden_accuracy"][0] == 0.0
    assert table["class"]["judge_iou"][1] is None                         # no part mask: no judge measure
    assert table["class"]["psnr"] == [12.0, 12.0]                         # the other measures as stored
    rows = {r["variant"]: r for r in cc.against_variant(tmp_path / "w", "occluded", "judge_iou", Judge())}
    assert rows["class"]["difference"] == pytest.approx(0.25) and rows["class"]["cases"] == 1


def test_two_single_run_folders_are_paired(tmp_path, monkeypatch):
    """eval_occlusion.py with one (how, fill) writes <work>/store.zarr: such a run is named
    <how>-<fill> from its settings, so two such folders pair up, and with a folder of several runs."""
    import zarr

    import benchmarks.compare_completion as cc

    rng = np.random.default_rng(2)
    ta = _table(rng, 16, 0.0)
    tb = {v: {"judge_iou": list(np.asarray(t["judge_iou"]) + (0.1 if v == "class" else 0.0))} for v, t in ta.items()}
    for side in ("blend", "inpaint"):
        zarr.open_group(str(tmp_path / side / "store.zarr"), mode="w").create_group("occlusion").attrs["config"] = {
            "how": "part", "fill": "grey"}
    (tmp_path / "several" / "part-grey" / "store.zarr").mkdir(parents=True)
    (tmp_path / "several" / "part-noise" / "store.zarr").mkdir(parents=True)
    (tmp_path / "unnamed" / "store.zarr").mkdir(parents=True)                  # no settings: the folder's name
    assert cc.runs_of(tmp_path / "blend") == {"part-grey": tmp_path / "blend" / "store.zarr"}
    assert list(cc.runs_of(tmp_path / "unnamed")) == ["unnamed"]
    monkeypatch.setattr(cc, "case_measures", lambda store: (["r"] * 16, {
        v: {m: t.get(m, [None] * 16) for m in cc.MEASURES}
        for v, t in (ta if "blend" in store.parts or "several" in store.parts else tb).items()}))
    rows = {r["variant"]: r for r in cc.between_runs(tmp_path / "blend", tmp_path / "inpaint", "judge_iou")}
    assert rows["class"]["run"] == "part-grey" and rows["class"]["difference"] == pytest.approx(0.1)
    rows = cc.between_runs(tmp_path / "several", tmp_path / "inpaint", "judge_iou")
    assert {r["run"] for r in rows} == {"part-grey"}                           # only the run both hold


def test_gains_over_a_variant_compared_between_runs_paired_by_fill(tmp_path, monkeypatch):
    """--gain-over: each variant's lead over a prompt in B against its lead in A, per case;
    --by-fill pairs part-grey with cover-grey (the same cases, checked)."""
    import benchmarks.compare_completion as cc

    rng = np.random.default_rng(3)
    ta = _table(rng, 24, 0.0)                                     # class ~ occluded in A
    tb = {v: {"judge_iou": list(np.asarray(t["judge_iou"]) + {"class": 0.2, "empty": 0.05}.get(v, 0.0))}
          for v, t in ta.items()}                                 # B: class +0.2, empty +0.05 over A
    records = {"a": ["r"] * 24, "b": ["r"] * 24}
    tables = {"a": ta, "b": tb}
    monkeypatch.setattr(cc, "case_measures", lambda store: (records[store.parent.parent.name], {
        v: {m: t.get(m, [None] * 24) for m in cc.MEASURES} for v, t in tables[store.parent.parent.name].items()}))
    for side, name in (("a", "cover-grey"), ("b", "part-grey")):
        (tmp_path / side / name / "store.zarr").mkdir(parents=True)
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(SystemExit, match="no run in both"):
        cc.between_runs(a, b, "judge_iou")                        # by name: nothing pairs
    rows = {r["variant"]: r for r in cc.between_runs(a, b, "judge_iou", over="class", by_fill=True)}
    assert "class" not in rows and rows["empty"]["run"] == "cover-grey / part-grey"
    assert rows["empty"]["difference"] == pytest.approx(0.05 - 0.2)        # empty's lead over class shrank
    assert rows["occluded"]["difference"] == pytest.approx(-0.2)
    assert rows["empty"]["a"] == pytest.approx(np.mean(np.subtract(ta["empty"]["judge_iou"], ta["class"]["judge_iou"])))
    records["b"] = ["other"] * 24
    with pytest.raises(SystemExit, match="different cases"):
        cc.between_runs(a, b, "judge_iou", over="class", by_fill=True)
    records["b"] = ["r"] * 24
    with pytest.raises(SystemExit, match="no variant 'caption'"):
        cc.between_runs(a, b, "judge_iou", over="caption", by_fill=True)
    with pytest.raises(SystemExit, match="give a second one"):
        cc.main([str(a), "--gain-over", "class"])
