"""diffparts.pipeline: which stages a run does, and forcing one (no Prefect)."""

import numpy as np
import pytest

from diffparts.pipeline import STAGES, force_stage, select_stages, side_dir, stages_from
from diffparts.store import done_mask, open_store


def test_select_stages_slices_in_order():
    assert select_stages() == list(STAGES)
    assert select_stages("segment", "embeddings") == ["segment", "parts", "embeddings"]
    assert select_stages(to_stage="extract") == ["extract"]
    assert select_stages(from_stage="occlusion") == ["occlusion"]
    with pytest.raises(ValueError, match="--from-stage parts comes after --to-stage segment"):
        select_stages("parts", "segment")
    with pytest.raises(ValueError, match="unknown --to-stage 'part'.*extract, segment, parts"):
        select_stages(to_stage="part")
    assert stages_from("embeddings") == ["embeddings", "occlusion"]


def test_side_dir_is_beside_local_stores_only(tmp_path):
    assert side_dir(tmp_path / "s.zarr", "embeddings") == tmp_path / "s.zarr.embeddings"
    assert side_dir(f"file://{tmp_path}/s.zarr/", "parts") == tmp_path / "s.zarr.parts"
    assert side_dir("s3://bucket/s.zarr", "parts") is None
    assert side_dir(tmp_path / "s.zarr", "extract") is None
    assert side_dir(tmp_path / "s.zarr", "segment") == tmp_path / "s.zarr.segments"   # its picture


def test_force_clears_the_stage_and_everything_after_it(parts_store, tmp_path):
    store, _ = parts_store
    root = open_store(store, "r+")
    root.require_group("embeddings").create_array("x", shape=(2,), dtype="int8")
    pictures = side_dir(store, "parts")
    pictures.mkdir()
    (pictures / "overlays.png").write_bytes(b"png")
    outside = tmp_path / "keep.txt"
    outside.write_text("not the stage's")
    before_attention = done_mask(root, "attention").copy() if "attention/done" in root else None

    cleared = force_stage(store, "segment")
    root = open_store(store)
    assert "segments/done" in cleared and "parts/" in cleared and "embeddings/" in cleared
    assert not done_mask(root, "segments").any()
    assert "parts" not in root and "embeddings" not in root
    assert "segments/labels" in root                       # arrays stay: the flow overwrites them
    assert not pictures.exists() and outside.read_text() == "not the stage's"
    if before_attention is not None:                        # the forced stage's input is untouched
        assert np.array_equal(done_mask(root, "attention"), before_attention)


def test_force_on_a_missing_store_clears_nothing(tmp_path):
    assert force_stage(tmp_path / "none.zarr", "extract") == []


def test_absolute_paths_for_workers(tmp_path, monkeypatch):
    from diffparts.pipeline import absolute

    monkeypatch.chdir(tmp_path)
    assert absolute("rel.zarr") == str(tmp_path / "rel.zarr")
    assert absolute("s3://bucket/x.zarr") == "s3://bucket/x.zarr"
    assert absolute("org/some-model", must_exist=True) == "org/some-model"   # a hub id stays
    (tmp_path / "model").mkdir()
    assert absolute("model", must_exist=True) == str(tmp_path / "model")
    assert absolute(None) is None


def test_headline_measures_put_quality_first():
    from diffparts.pipeline import headline_measures

    parts = {"clusters": {"k": 8}, "scores": {"nmi": 0.5, "ari": 0.3, "pck@0.1": 0.7}}
    assert headline_measures("parts", parts) == [("K", 8), ("nmi", 0.5), ("pck@0.1", 0.7)]
    occlusion = {"cases": 4, "summary": {"detection": {"roc_auc": 0.6, "false_alarm_rate": 0.1},
                                         "table": [{"variant": "occluded", "iou": 0.4, "judge_iou": 0.35},
                                                   {"variant": "class", "iou": 0.3, "judge_iou": 0.5},
                                                   {"variant": "empty", "iou": 0.2, "judge_iou": 0.45}]}}
    assert headline_measures("occlusion", occlusion) == [("cases", 4), ("detection AUC", 0.6), ("false alarms", 0.1),
                                                         ("judge IoU occluded", 0.35), ("judge IoU class", 0.5)]
    occlusion["summary"]["detection"]["roc_auc_interval"] = [0.41, 0.787]
    assert headline_measures("occlusion", occlusion)[1:4] == [("detection AUC", 0.6), ("its 95 % interval", "0.41-0.79"),
                                                              ("false alarms", 0.1)]
    assert headline_measures("embeddings", {"summary": [{"final_loss": 0.1}, {"final_loss": 0.3}]})[1][1] == \
        pytest.approx(0.2)
    assert headline_measures("segment", {"done": 3}) == []     # no ground truth: no quality figure


def test_reports_go_beside_a_local_store_only(tmp_path):
    assert side_dir(tmp_path / "s.zarr", "reports") == tmp_path / "s.zarr.reports"
    assert side_dir("s3://bucket/s.zarr", "reports") is None     # the flow writes to diffparts-reports/


def test_stage_status_says_skipped_when_nothing_was_done():
    from diffparts.pipeline import stage_status

    assert stage_status("extract", {"written": 0, "skipped": 8, "failed": 0, "images": 8})[0] == "skipped"
    assert stage_status("extract", {"written": 0, "skipped": 7, "failed": 1, "images": 8})[0] == "done"
    assert stage_status("parts", {"clusters": {"k": 8}, "images": 8, "skipped": True}) == \
        ("skipped", "K = 8 categories over 8 images")
    assert stage_status("occlusion", {"ran": [], "failed": {}, "cases": 4})[0] == "skipped"
