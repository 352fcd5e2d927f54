"""The part judge: its accuracy on renders it never saw (committed weights), its scores, its training."""

import json

import numpy as np
import pytest

from diffparts.judge import CLASSES, DEFAULT_JUDGE, PartJudge, region_scores, score_completion
from diffparts.judge.score import part_presence_by_judge

needs_weights = pytest.mark.skipif(not DEFAULT_JUDGE.is_file(), reason="the committed judge is not there")

# Corpus seed of the fresh renders: neither the judge's training (5151) nor held-out (5252) birds.
FRESH_SEED = 8181


def test_classes_are_the_synthetic_part_ids():
    from diffparts.corpus import PART_NAMES

    assert CLASSES == ("background", *PART_NAMES)


def test_region_scores_on_a_constructed_case():
    truth = np.zeros((8, 8), np.int16)
    truth[:4, :4] = 1                                  # the head, 16 px
    truth[4:, :] = 4                                   # breast
    hidden = np.zeros((8, 8), bool)
    hidden[:4, :4] = True                              # the head is hidden
    labels = truth.copy()
    labels[:2, :4] = 0                                 # the judge reads half the head as no part
    s = region_scores(labels, hidden, truth, 1)
    assert s["iou"] == 0.5 and s["iou_hidden"] == 0.5 and s["hidden_accuracy"] == 0.5 and s["part_recall"] == 0.5
    grey = np.where(hidden, 0, truth)                  # an occluder read as no part
    assert region_scores(grey, hidden, truth, 1) == {"iou": 0.0, "iou_hidden": 0.0, "hidden_accuracy": 0.0,
                                                     "part_recall": 0.0}
    with pytest.raises(ValueError, match="one size"):
        region_scores(labels[:4], hidden, truth, 1)
    assert region_scores(truth, np.zeros((8, 8), bool), truth, 1)["hidden_accuracy"] is None


@needs_weights
def test_judge_reads_renders_it_never_saw():
    from diffparts.judge.train import confusion, scores_from_confusion
    from diffparts.train.renders import render_birds

    judge = PartJudge.load()
    images, truth, _ = render_birds(8, FRESH_SEED, 64)
    labels = judge.labels(images)
    assert labels.shape == truth.shape and labels.dtype == np.uint8
    scores = scores_from_confusion(confusion(labels, truth))
    assert scores["pixel_accuracy"] >= 0.85, scores
    assert scores["part_miou"] >= 0.5, scores
    # at twice the side the labels come back at the image's size
    big = np.repeat(np.repeat(images[:2], 2, 1), 2, 2)
    assert judge.labels(big).shape == (2, 128, 128)


@needs_weights
def test_a_grey_region_where_the_head_was_is_not_read_as_head():
    from diffparts.occlusion.occluders import GREY
    from diffparts.train.renders import render_birds

    judge = PartJudge.load()
    images, truth, _ = render_birds(8, FRESH_SEED + 1, 64)
    heads = [i for i in range(len(images)) if (truth[i] == 1).sum() >= 30]
    assert heads
    original, greyed = [], []
    for i in heads:
        hidden = truth[i] == 1
        occluded = images[i].copy()
        occluded[hidden] = GREY
        original.append(score_completion(judge, images[i], hidden, truth[i], [1])["part_recall"])
        greyed.append(score_completion(judge, occluded, hidden, truth[i], [1])["part_recall"])
    # A grey head-shaped region at the head's place is ambiguous (several species have grey heads):
    # the judge reads it as a head far less often than the painted head, not never.
    assert np.mean(original) >= 0.75 and np.mean(greyed) <= np.mean(original) - 0.25, (original, greyed)
    noisy = []
    for i in heads:                                                 # a noise fill is not a head
        hidden = truth[i] == 1
        occluded = images[i].copy()
        occluded[hidden] = np.random.default_rng(i).integers(0, 256, (int(hidden.sum()), 3), dtype=np.uint8)
        noisy.append(score_completion(judge, occluded, hidden, truth[i], [1])["part_recall"])
    assert np.mean(noisy) <= 0.5, noisy
    hit, share = part_presence_by_judge(judge, images, 1)
    assert hit >= 0.7 and 0 < share < 0.5
    assert part_presence_by_judge(judge, images, None) == (None, None)


def test_train_judge_quick_saves_a_loadable_judge(tmp_path):
    from diffparts.judge.train import quick_judge_config, train_judge

    record = train_judge(tmp_path / "judge", quick_judge_config(), log=lambda _m: None)
    saved = json.loads((tmp_path / "judge" / "judge.json").read_text())
    assert saved["steps"] == record["steps"] == 2 and "part_miou" in saved["held_out"]
    judge = PartJudge.load(tmp_path / "judge" / "judge.safetensors")
    assert judge.labels(np.zeros((2, 64, 64, 3), np.uint8)).shape == (2, 64, 64)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        PartJudge.load(tmp_path / "nowhere.safetensors")


def test_cli_train_judge_quick_writes_weights_and_card(tmp_path):
    from diffparts.cli import main

    assert main(["train-judge", "--out", str(tmp_path / "j"), "--quick"]) == 0
    card = (tmp_path / "j" / "README.md").read_text()
    assert "diffparts train-judge --out" in card and "CPU minutes" in card and "part mIoU" in card


def test_embeddings_generates_measure_is_na_without_part_masks():
    from diffparts.inversion.evaluate import judge_for, judge_presence

    assert judge_for(False) is None
    images = np.zeros((2, 64, 64, 3), np.uint8)
    assert judge_presence(None, images, 3) == (None, None)
    assert judge_presence(judge_for(False), images, None) == (None, None)


@needs_weights
def test_embeddings_generates_measure_reads_images_with_the_judge():
    from diffparts.inversion.evaluate import judge_for, judge_presence
    from diffparts.train.renders import render_birds

    images, truth, _ = render_birds(4, FRESH_SEED + 2, 64)
    judge = judge_for(True)
    wing, share = judge_presence(judge, images, 7)                  # every bird shows a wing
    assert wing == 1.0 and share > 0.05
    flat = np.full((4, 64, 64, 3), 128, np.uint8)                   # a grey field shows (almost) no part
    assert (judge.labels(flat) == 0).mean() >= 0.9


def test_shown_parts_is_the_most_read_part_not_background():
    from diffparts.judge import shown_parts

    maps = np.zeros((3, 8, 8), np.int64)
    maps[0, :2] = 2                     # beak 16 px
    maps[0, 4:5] = 1                    # head 8 px; background (40 px) never counts
    maps[1, :, :3] = 7                  # wing only
    assert shown_parts(maps).tolist() == [2, 7, 0]          # no part at all: 0


def test_cli_train_judge_parts_world_reports_closeups(tmp_path):
    from diffparts.cli import main

    assert main(["train-judge", "--out", str(tmp_path / "j"), "--quick", "--world", "parts"]) == 0
    record = json.loads((tmp_path / "j" / "judge.json").read_text())
    assert record["config"]["world"] == "parts"
    card = (tmp_path / "j" / "README.md").read_text()
    assert card.startswith("# diffparts-part-judge-parts") and "--world parts" in card
    if "closeups" in record["held_out_all"]:              # the 4 held-out images may hold no close-up
        assert 0.0 <= record["held_out_all"]["closeups"]["part_shown_right"] <= 1.0
        assert "close-ups whose most-read part" in card
    with pytest.raises(ValueError, match="world must be"):
        from diffparts.judge.train import quick_judge_config
        quick_judge_config(world="trees")


def test_leaves_and_branches_as_occluders_of_a_judge(tmp_path):
    from diffparts.cli import main
    from diffparts.judge.train import JUDGE_FILLS, occlude_for_training, quick_judge_config

    rng = np.random.default_rng(0)
    labels = np.zeros((64, 64), np.int16)
    labels[16:48, 16:48] = 4
    image = np.full((64, 64, 3), 200, np.uint8)
    out, lab, mask = occlude_for_training(rng, image, labels, image, labels, ("object",))
    assert mask.any() and (lab[mask] == 0).all() and (lab[~mask] == labels[~mask]).all()
    painted = out[mask].astype(int)
    assert not (painted == 200).all(-1).any() and (out[~mask] == 200).all()   # a leaf or a branch, only there
    with pytest.raises(ValueError, match="occluder_fills.*object"):
        quick_judge_config(occluder_fills=("leaf",))
    assert main(["train-judge", "--out", str(tmp_path / "j"), "--quick", "--occluder-fills", "grey,object"]) == 0
    record = json.loads((tmp_path / "j" / "judge.json").read_text())
    assert record["config"]["occluder_fills"] == ["grey", "object"]
    assert set(record["held_out_all"]["occluder_read_as_no_part_by_fill"]) == set(JUDGE_FILLS)
    card = (tmp_path / "j" / "README.md").read_text()
    assert card.startswith("# j") and "--occluder-fills grey,object" in card and "LEAVES_JUDGE" in card
    assert "a leaf or a branch) labelled" in card


def test_judge_fills_compares_judges_per_fill(tmp_path, capsys):
    import benchmarks.judge_fills as jf
    from diffparts.judge import LEAVES_JUDGE
    from diffparts.judge.train import JUDGE_FILLS

    assert jf.main(["--n", "4", str(DEFAULT_JUDGE), str(LEAVES_JUDGE), "--markdown"]) == 0
    out = capsys.readouterr()
    rows = json.loads(out.out)["rows"]
    assert [r["judge"] for r in rows] == [str(DEFAULT_JUDGE), str(LEAVES_JUDGE)]
    assert all(r[f] is None or 0.0 <= r[f] <= 1.0 for r in rows for f in JUDGE_FILLS)
    assert "| `diffparts-part-judge-leaves` |" in out.err
    with pytest.raises(FileNotFoundError, match="nowhere"):
        jf.main([str(tmp_path / "nowhere.safetensors")])
