"""The occlusion stage over a store: plan, cases, resume, a failing case, refusals, flow, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from diffparts.occlusion.cases import run_cases
from diffparts.occlusion.stage import (OcclusionConfig, occlusion_config, occlusion_grid,
                                       setup_occlusion, summarize_occlusion)
from diffparts.store import open_store

FAST = {"how": "category", "n_cases": 3, "fill": "grey", "completion": {"steps": 2},
        "detect": {"calibration_images": 3, "imagine": {"steps": 2, "seeds": [0]}, "repaint": {"steps": 2, "seeds": [0]}}}


def test_cases_run_resume_and_keep_the_outside(occlusion_store, monkeypatch):
    store, corpus, model = occlusion_store
    root = open_store(store, "r+")
    cfg = occlusion_config(FAST)
    setup = setup_occlusion(root, store, corpus, model, cfg)
    assert setup["cases"] == 3 and setup["todo"] == [0, 1, 2] and setup["losses"] == ["noise"]
    assert setup["variants"] == ["original", "occluded", "empty", "class", "noise:detected", "noise:true"]
    held = np.asarray(root["embeddings/held_out"][:])
    assert all(held[i] for i in root["occlusion/cases"][:])         # held-out images only
    out = run_cases(root, store, corpus, model, setup["todo"])
    assert out["done"] == [0, 1, 2] and not out["failed"]
    g = root["occlusion"]
    for k in range(3):
        images, mask = np.asarray(g["images"][k]), np.asarray(g["masks"][k])
        rec = json.loads(str(g["records"][k]))
        assert rec["hidden_pixels"] == mask.sum() > 0
        for j in range(1, images.shape[0]):                        # occluded and every completion
            assert np.array_equal(images[j][~mask], images[0][~mask])
        res = json.loads(str(g["results"][k]))
        assert res["prompts"]["noise:true"].startswith("a photo of a bird with <part-")
        assert set(res["measures"]) == set(setup["variants"])
    summary = summarize_occlusion(root)
    assert summary["cases"] == 3 and [r["variant"] for r in summary["table"]] == setup["variants"]
    assert summary["table"][0]["ssim"] == pytest.approx(1.0)       # the original against itself
    assert occlusion_grid(root).shape[1] == 6 * (g["images"].shape[2] * 2 + 2)
    again = setup_occlusion(root, store, corpus, model, cfg)
    assert again["todo"] == [] and again["reset"] is None          # finished cases are not redone
    other = setup_occlusion(root, store, corpus, model, occlusion_config({**FAST, "fill": "noise"}))
    assert other["reset"] and other["todo"] == [0, 1, 2]           # another fill: redone
    from diffparts.occlusion import detect
    from diffparts.occlusion.evidence import Calibrations

    monkeypatch.setitem(detect.KINDS, "appearance", ("appearance",))   # a release whose detector reads other kinds
    kinds = setup_occlusion(root, store, corpus, model, occlusion_config({**FAST, "fill": "noise"}))
    assert "detect_kinds" in kinds["reset"] and kinds["todo"] == [0, 1, 2]      # same settings, other kinds: redone
    assert Calibrations.from_json(root["occlusion"].attrs["calibration"]).names == ("appearance",)


def test_a_case_that_cannot_be_segmented_fails_alone(occlusion_store, monkeypatch):
    import diffparts.segment.hierarchy as hierarchy

    store, corpus, model = occlusion_store
    root = open_store(store, "r+")
    setup = setup_occlusion(root, store, corpus, model, occlusion_config(FAST))
    real, calls = hierarchy.segment_levels, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:                                        # case 0's detection
            raise ValueError("attention has no structure to segment")
        return real(*args, **kwargs)

    monkeypatch.setattr(hierarchy, "segment_levels", flaky)
    out = run_cases(root, store, corpus, model, setup["todo"])
    assert list(out["failed"]) == [0] and out["done"] == [1, 2]
    assert "no structure" in str(root["occlusion/failures"][0])
    assert root["occlusion/done"][:].tolist() == [False, True, True]
    monkeypatch.setattr(hierarchy, "segment_levels", real)
    retry = run_cases(root, store, corpus, model, setup_occlusion(root, store, corpus, model,
                                                                 occlusion_config(FAST))["todo"])
    assert retry["done"] == [0] and str(root["occlusion/failures"][0]) == ""


def test_setup_refusals(occlusion_store, tmp_path):
    from diffparts.parts.synthetic import make_part_store

    store, corpus, model = occlusion_store
    root = open_store(store, "r+")
    with pytest.raises(ValueError, match="needs ground-truth part masks"):
        setup_occlusion(root, store, corpus, model, OcclusionConfig(how="part"))
    with pytest.raises(ValueError, match="how='cover' needs ground-truth part masks"):
        setup_occlusion(root, store, corpus, model, OcclusionConfig(how="cover"))
    with pytest.raises(ValueError, match="how must be one of"):
        OcclusionConfig(how="leaf")
    with pytest.raises(ValueError, match=r"no part tokens for losses \['attention'\]"):
        setup_occlusion(root, store, corpus, model, occlusion_config({**FAST, "losses": ["attention"]}))
    with pytest.raises(ValueError, match="not part categories"):
        setup_occlusion(root, store, corpus, model, occlusion_config({**FAST, "hide": [5]}))
    with pytest.raises(ValueError, match="unknown fill 'blur'"):
        OcclusionConfig(fill="blur")
    with pytest.raises(ValueError, match="unknown detection method 'guess'"):
        occlusion_config({"detect": {"method": "guess"}})
    with pytest.raises(ValueError, match="unknown occlusion settings"):
        occlusion_config({"cases": 3})
    make_part_store(tmp_path / "bare.zarr", n_images=2)
    with pytest.raises(ValueError, match="parts stage is not done"):
        setup_occlusion(open_store(tmp_path / "bare.zarr", "r+"), str(tmp_path / "bare.zarr"), corpus, model,
                        OcclusionConfig(how="category"))


@pytest.mark.flow
def test_flow_runs_and_publishes(prefect_server, occlusion_store):
    from flows.occlusion import assess_occlusion

    store, corpus, model = occlusion_store
    result = assess_occlusion(store, model=model, corpus=corpus, n_cases=2, how="category",
                              config={"completion": {"steps": 2}, "detect": FAST["detect"]}, batch_size=1)
    assert result["ran"] == [0, 1] and not result["failed"] and Path(result["grid"]).is_file()
    assert result["summary"]["cases"] == 2
    again = assess_occlusion(store, model=model, corpus=corpus, n_cases=2, how="category",
                             config={"completion": {"steps": 2}, "detect": FAST["detect"]}, batch_size=1)
    assert again["ran"] == []


def test_cli_help_and_refusal(tmp_path, capsys):
    from diffparts.cli import main
    from diffparts.parts.synthetic import make_part_store

    with pytest.raises(SystemExit):
        main(["occlude", "--help"])
    text = capsys.readouterr().out
    for option in ("--store", "--model", "--cases", "--hide", "--fill", "--how", "--losses", "--threshold"):
        assert option in text
    make_part_store(tmp_path / "s.zarr", n_images=2)
    assert main(["occlusion", "--store", str(tmp_path / "s.zarr"), "--model", str(tmp_path)]) == 2
    assert "parts stage is not done" in capsys.readouterr().err
    assert main(["occlude", "--store", str(tmp_path / "s.zarr"), "--fill", "smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown fill 'smoke'" in err and len(err.splitlines()) == 1      # one line, naming it


def test_detection_only_background_control_and_calibration(occlusion_store):
    """The background control hides nothing (every case's true set is empty); detection only
    writes the two references; the set-up keeps the calibration of the training images."""
    from diffparts.occlusion.evidence import Calibrations

    store, corpus, model = occlusion_store
    root = open_store(store, "r+")
    cfg = occlusion_config({**FAST, "how": "background", "fill": "mix", "complete": False, "n_cases": 4})
    setup = setup_occlusion(root, store, corpus, model, cfg)
    assert setup["variants"] == ["original", "occluded"]
    cals = Calibrations.from_json(root["occlusion"].attrs["calibration"])
    assert cfg.detect.method == "appearance"                        # the default: no diffusion model in detection
    assert cals.names == cfg.detect.kinds == ("grain", "appearance") and cals.family_threshold is not None
    assert cals["appearance"].min_spread == 0.05                     # the floor survives the JSON
    assert cals["grain"].offset == cfg.detect.appearance.grain_offset == 1.0    # and grain's offset
    assert root["occlusion"].attrs["detect_kinds"] == ["grain", "appearance"]   # other kinds: the group is redone
    held = np.asarray(root["occlusion/held_out"][:])
    for _, cal in cals.kinds:                                        # calibrated on training images only
        assert cal.images and not any(held[i] for i in cal.images)
    out = run_cases(root, store, corpus, model, setup["todo"])
    assert not out["failed"]
    g = root["occlusion"]
    fills = set()
    for k in range(setup["cases"]):
        rec = json.loads(str(g["records"][k]))
        fills.add(rec["fill"])
        assert rec["categories"] == {} or max(rec["categories"].values()) < 0.5
        res = json.loads(str(g["results"][k]))
        assert res["truth"] == [] and res["measures"]["occluded"]["iou"] is None
    assert len(fills) > 1                                            # a mix of fills
    d = summarize_occlusion(root)["detection"]
    assert d["cases_with_hidden_category"] == 0 and d["roc_auc"] is None
    assert d["false_alarm_rate"] is not None and 0.0 <= d["false_alarm_rate"] <= 1.0


def test_combined_detector_calibrates_both_kinds_and_uses_the_family_threshold(occlusion_store):
    """``--detect combined``: the set-up calibrates img2img and repaint on the same training
    images, the cases' scores are the larger calibrated score, and the summary reports the
    calibration's family-wise threshold (a fixed ``threshold`` overrides it)."""
    from diffparts.occlusion.evidence import Calibrations

    store, corpus, model = occlusion_store
    root = open_store(store, "r+")
    cfg = occlusion_config({**FAST, "detect": {**FAST["detect"], "method": "combined"}, "complete": False,
                            "n_cases": 2})
    setup = setup_occlusion(root, store, corpus, model, cfg)
    cals = Calibrations.from_json(root["occlusion"].attrs["calibration"])
    assert cals.names == ("img2img", "repaint")
    assert cals["img2img"].images == cals["repaint"].images
    assert not run_cases(root, store, corpus, model, setup["todo"])["failed"]
    d = summarize_occlusion(root)["detection"]
    assert d["method"] == "combined" and d["threshold"] == pytest.approx(cals.family_threshold)
    fixed = occlusion_config({**FAST, "detect": {**FAST["detect"], "method": "combined", "threshold": 4}})
    assert fixed.detect.cutoff_for(cals) == 4.0


def test_cases_complete_with_an_inpainting_checkpoint(occlusion_store, tiny_pipeline, tmp_path):
    """``completion.inpaint_model``: the cases complete with a 9-channel checkpoint (the tokens go
    into its own text encoder), and the outside stays the input; no part masks, so no judge."""
    import shutil

    import torch

    from diffparts.occlusion.cases import _context
    from diffparts.train.inpaint import inflate_unet, save_inpaint_folder

    store, corpus, model = occlusion_store
    shutil.copytree(Path(store).parent, tmp_path / "copy")          # the store and its folders beside it
    copy = str(tmp_path / "copy" / Path(store).name)
    _, pipe = tiny_pipeline
    torch.manual_seed(0)
    inpaint = tmp_path / "inpaint"
    save_inpaint_folder(pipe, inflate_unet(pipe.unet), inpaint)
    root = open_store(copy, "r+")
    cfg = occlusion_config({**FAST, "n_cases": 2, "completion": {"steps": 2, "inpaint_model": str(inpaint)}})
    setup = setup_occlusion(root, copy, corpus, model, cfg)
    ctx = _context(root, copy, corpus, model, "cpu", "float32")
    assert ctx.inpaint_name == str(inpaint) and ctx.inpaint.unet.config.in_channels == 9 and ctx.judge is None
    out = run_cases(root, copy, corpus, model, setup["todo"])
    assert out["done"] == [0, 1] and not out["failed"]
    g = root["occlusion"]
    for k in range(2):
        images, mask = np.asarray(g["images"][k]), np.asarray(g["masks"][k])
        for j in range(1, images.shape[0]):
            assert np.array_equal(images[j][~mask], images[0][~mask])
        assert json.loads(str(g["results"][k]))["prompts"]["noise:true"].startswith("a photo of a bird with <part-")
    table = {r["variant"]: r for r in summarize_occlusion(root)["table"]}
    assert table["original"]["judge_iou"] is None                   # no ground truth: n/a


def test_judge_measures_see_the_part_in_the_original_not_under_noise(tmp_path):
    """The judge's columns: the hidden head is read in the original, far less under a noise fill."""
    from diffparts.corpus import SynthConfig, generate_birds, load_mask, load_rgb, open_corpus
    from diffparts.corpus.synth_species import PART_INDEX
    from diffparts.judge import PartJudge
    from diffparts.occlusion.cases import judge_measures
    from diffparts.occlusion.occluders import fill_region

    corpus = generate_birds(tmp_path / "birds", n=2, seed=11, config=SynthConfig(image_size=64))
    rec = next(iter(open_corpus(corpus)))
    image, truth = load_rgb(rec.path), load_mask(rec.part_mask_path).astype(np.int16)
    head = PART_INDEX["head"]
    mask = truth == head
    assert mask.sum() > 20
    noisy = fill_region(image, mask, "noise", np.random.default_rng(0))
    scores = judge_measures(PartJudge.load(), {"original": image, "occluded": noisy}, mask, truth, [head])
    assert scores["original"]["iou"] > 0.5
    assert scores["occluded"]["iou"] < scores["original"]["iou"] - 0.3


def test_cover_cases_hide_a_true_part_under_a_leaf_and_are_judged(occlusion_store, monkeypatch, tmp_path):
    """how='cover' end to end, the corpus given part masks: every case hides at least 90 % of its
    target part under a mask that is not the part's own, and the judge reads the references."""
    import dataclasses

    from PIL import Image

    import diffparts.occlusion.cases as cases_module
    import diffparts.occlusion.stage as stage_module
    from diffparts.occlusion.occluders import resize_labels

    store, corpus, model = occlusion_store
    original = stage_module._records
    folder = tmp_path / "part_segmentations"
    folder.mkdir()
    truth = np.zeros((32, 32), np.uint8)
    truth[6:18, 5:19], truth[15:27, 14:28] = 1, 4                     # every bird: a head and a breast

    def with_masks(root, corpus_):
        records, legend = original(root, corpus_)
        for name, rec in list(records.items()):
            path = folder / f"{Path(name).stem}.png"
            if not path.exists():
                Image.fromarray(truth).save(path)
            records[name] = dataclasses.replace(rec, part_mask_path=path)
        return records, legend

    monkeypatch.setattr(stage_module, "_records", with_masks)
    monkeypatch.setattr(cases_module, "_records", with_masks)
    root = open_store(store, "r+")
    cfg = occlusion_config({**FAST, "how": "cover", "n_cases": 2, "losses": [], "complete": False})
    setup = setup_occlusion(root, store, corpus, model, cfg)
    out = run_cases(root, store, corpus, model, setup["todo"])
    assert out["done"] == [0, 1] and not out["failed"]
    g = root["occlusion"]
    for k in range(2):
        mask, res = np.asarray(g["masks"][k]), json.loads(str(g["results"][k]))
        (target,) = res["target"]
        part = resize_labels(truth, mask.shape) == target
        assert (mask & part).sum() >= 0.9 * part.sum() and (mask & ~part).any()   # hidden, not traced
        assert res["measures"]["original"]["judge_iou"] is not None
        assert res["measures"]["occluded"]["judge_iou"] is not None
