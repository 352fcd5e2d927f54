"""The claim's table (docs/embeddings.md "The claim's table"): its measures on constructed cases,
and the benchmark script end to end on the embedded checkpoint with a few part-world birds."""

import json
from pathlib import Path

import pytest

from diffparts.inversion.claim import ClaimConfig, means, name_rank, with_relative

REPO = Path(__file__).resolve().parents[2]


def test_name_rank_puts_the_word_a_token_copies_first(fresh_pipe):
    from diffparts.inversion.tokens import add_part_tokens

    pipe = fresh_pipe()
    add_part_tokens(pipe.tokenizer, pipe.text_encoder, ["<part-1>"], 1, "beak")   # the token = the word "beak"
    same = ClaimConfig(name_word="a photo of {word}", part_words=("head", "wing", "beak", "red"))
    rank, sims = name_rank(pipe, "<part-1>", "beak", same)
    assert rank == 1 and sims["beak"] == pytest.approx(1.0, abs=1e-5)
    assert sims["head"] < 0.9999                          # the end-of-text state differs with the word
    rank_wing, _ = name_rank(pipe, "<part-1>", "wing", same)
    assert rank_wing > 1
    with pytest.raises(ValueError, match="'tail' is not one of the part words"):
        name_rank(pipe, "<part-1>", "tail", same)


def test_relative_columns_and_the_recovered_share():
    rows = [{"kind": "class", "category": 1, "mse": 0.50}, {"kind": "word", "category": 1, "mse": 0.40},
            {"kind": "noise", "category": 1, "mse": 0.45}, {"kind": "attention", "category": 1, "mse": 0.52},
            {"kind": "class", "category": 2, "mse": 0.30}, {"kind": "word", "category": 2, "mse": 0.31},
            {"kind": "noise", "category": 2, "mse": 0.30}, {"kind": "attention", "category": 2, "mse": 0.29}]
    rel = with_relative(rows)
    noise1 = next(r for r in rel if r["kind"] == "noise" and r["category"] == 1)
    assert noise1["recovered"] == pytest.approx(0.5) and noise1["mse_vs_class_pct"] == pytest.approx(-10.0)
    assert next(r for r in rel if r["kind"] == "noise" and r["category"] == 2)["recovered"] is None  # word loses
    m = {x["kind"]: x for x in means(rel)}
    # from the mean MSEs: class 0.40, word 0.355, noise 0.375, attention 0.405
    assert m["noise"]["recovered"] == pytest.approx(0.025 / 0.045, abs=1e-3)
    assert m["attention"]["recovered"] == pytest.approx(-0.005 / 0.045, abs=1e-3)
    assert m["class"]["recovered"] is None and m["noise"]["name_rank"] is None


def test_claim_config_refuses_prompts_without_their_slot():
    with pytest.raises(ValueError, match="closeup_token"):
        ClaimConfig(closeup_token="a close-up")
    with pytest.raises(ValueError, match="name_word"):
        ClaimConfig(name_word="a photo of a thing")


@pytest.mark.flow
def test_claim_table_script_runs_on_the_embedded_checkpoint(prefect_server, tmp_path):
    from benchmarks.claim_table import main, markdown
    from diffparts.corpus.synth_species import PART_NAMES

    judge = REPO / "data" / "models" / "diffparts-part-judge" / "judge.safetensors"
    out = main(["--work", str(tmp_path / "w"), "--model", str(REPO / "data" / "models" / "diffparts-toy-birds"),
                "--n", "8", "--seed", "3", "--size", "64", "--k", "2", "--losses", "noise", "--steps", "2",
                "--batch-size", "2", "--n-generate", "1", "--generate-steps", "2", "--n-context", "1",
                "--max-images", "2", "--timesteps", "300", "--inpaint-model", "blend", "--judge", str(judge),
                "--out", str(tmp_path / "claim.json")])
    assert json.loads((tmp_path / "claim.json").read_text())["categories"] == out["categories"]
    cats = out["categories"]
    assert cats and {r["kind"] for r in out["rows"]} == {"class", "word", "initializer", "noise"}
    for c in cats:
        kinds = {r["kind"]: r for r in out["rows"] if r["category"] == c}
        assert kinds["word"]["part"] in PART_NAMES                  # the part world's birds have part masks
        assert 1 <= kinds["noise"]["name_rank"] <= len(PART_NAMES)
        assert 0.0 <= kinds["class"]["closeup_shows_part"] <= 1.0
        assert kinds["noise"]["context_iou"] is None or 0.0 <= kinds["noise"]["context_iou"] <= 1.0
        assert 0.0 <= kinds["noise"]["attention_iou"] <= 1.0 and kinds["noise"]["mse"] > 0
        assert "attention_iou" not in kinds["class"]                 # the class prompt has no token to localise
    table = markdown(out)
    assert "rank of true word (of 9)" in table and "| noise |" in table


def test_part_word_closeups_script_reads_every_word(tiny_pipeline):
    from benchmarks.part_word_closeups import main
    from diffparts.corpus.synth_species import PART_NAMES

    judge = REPO / "data" / "models" / "diffparts-part-judge" / "judge.safetensors"
    out = main(["--model", str(tiny_pipeline[0]), "--judge", str(judge), "--n-generate", "1", "--steps", "2"])
    assert list(out["words"]) == [*PART_NAMES, "(class)"]
    assert all(0.0 <= v["right"] <= 1.0 for w, v in out["words"].items() if w != "(class)")
    assert out["words"]["(class)"]["right"] is None
    assert all(abs(sum(v["shown"].values()) - 1.0) < 1e-3 for v in out["words"].values())


def test_minmax_threshold_finds_the_preferred_place_of_a_flat_map():
    import torch

    from diffparts.inversion.evaluate import threshold_maps

    maps = torch.full((1, 4, 4), 0.012)
    maps[0, :2, :2] = 0.015                                          # prefers the top-left, barely
    assert threshold_maps(maps, 0.5).all()                           # raw: the whole image
    assert threshold_maps(maps, 0.5, minmax=True)[0].sum() == 4      # rescaled: the preferred cells
