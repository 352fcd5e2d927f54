"""benchmarks/detect_ceiling.py: its pooled pixel AUC, the judge's p(background) at the images' own
size, the table, and refusals (a folder without runs; a run of another detector)."""

import json

import numpy as np
import pytest


def test_pixel_auc_pools_the_cases():
    from benchmarks.detect_ceiling import pixel_auc

    assert pixel_auc([np.array([0.9, 0.8]), np.array([0.7])], [np.array([0.1]), np.array([0.2, 0.3])]) == 1.0
    assert pixel_auc([np.array([0.1])], [np.array([0.9])]) == 0.0
    # pooled, not per case: case 2's hidden pixel ranks below case 1's visible one
    assert pixel_auc([np.array([0.9]), np.array([0.4])], [np.array([0.5]), np.array([0.1])]) == 0.75


def test_judge_background_is_the_background_class_at_the_image_size():
    import torch

    from benchmarks.detect_ceiling import judge_background
    from diffparts.judge.model import PartJudge

    judge = PartJudge.load()
    side = judge.net.arch.size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, side, side, 3), dtype=np.uint8)
    p = judge_background(judge, images)
    assert np.allclose(p, torch.softmax(judge.logits(images), 1)[:, 0].numpy())    # class 0 is background
    small = judge_background(judge, images[:, ::2, ::2])                             # another size: resized back
    assert small.shape == (2, side // 2, side // 2) and 0.0 <= small.min() and small.max() <= 1.0


def test_markdown_and_refusals(tmp_path):
    import zarr

    from benchmarks.detect_ceiling import markdown, run_ceiling

    row = {"fill": "patch", "cases": 3, "detector": 0.7, "true_place": 0.8, "true_place_hidden_only": 0.75,
           "true_place_others_only": 0.72, "pixel_classifier": 0.78, "pixel_judge": 0.6}
    assert "| patch | 3 | 0.700 | 0.800 | 0.750 | 0.720 | 0.780 | 0.600 |" in markdown([row])
    assert "| cover / patch | 3 | 0.700 |" in markdown([{**row, "how": "cover"}])
    store = tmp_path / "part-grey" / "store.zarr"
    g = zarr.open_group(str(store), mode="w").create_group("occlusion")
    g.attrs["config"] = json.loads(json.dumps({"fill": "grey", "detect": {"method": "area"}}))
    with pytest.raises(SystemExit, match="appearance"):
        run_ceiling(store, None)


def test_main_refuses_a_folder_without_runs(tmp_path, monkeypatch):
    import benchmarks.detect_ceiling as dc

    monkeypatch.setattr("sys.argv", ["detect_ceiling.py", str(tmp_path)])
    with pytest.raises(SystemExit, match="no part-<fill> or cover-<fill> store.zarr run"):
        dc.main()


def test_a_corpus_without_part_masks_is_refused_by_name(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import zarr

    import diffparts.occlusion.stage as stage
    import diffparts.store as store_module
    from benchmarks.detect_ceiling import run_ceiling

    store = tmp_path / "part-noise" / "store.zarr"
    root = zarr.open_group(str(store), mode="w")
    root.create_group("attention").attrs["image_size"] = 64
    g = root.create_group("occlusion")
    g.attrs["config"] = {"fill": "noise", "detect": {"method": "appearance"}}
    g.create_array("done", data=np.array([True, True]))
    g.create_array("cases", data=np.array([0, 1]))
    records = {"birds/a.png": SimpleNamespace(path=tmp_path / "a.png", part_mask_path=tmp_path / "a-mask.png"),
               "own/b.png": SimpleNamespace(path=tmp_path / "b.png", part_mask_path=None)}
    monkeypatch.setattr(stage, "_records", lambda root, corpus: (records, {}))
    monkeypatch.setattr(store_module, "image_table", lambda root: [{"name": "birds/a.png"}, {"name": "own/b.png"}])
    with pytest.raises(SystemExit, match="no part mask.*'own/b.png'.*part masks"):
        run_ceiling(store, None)
