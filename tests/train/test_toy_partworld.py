"""``train-toy --world parts``: the part world's words are whole tokens of the trained tokenizer,
and its captions fit the text encoder (docs/corpus.md "The part world")."""

from __future__ import annotations

import json


from diffparts.cli import main
from diffparts.corpus.synth_caption import PART_WORLD_WORDS


def test_train_toy_world_parts_quick(tmp_path, capsys):
    out = tmp_path / "model"
    corpus = tmp_path / "world"
    assert main(["train-toy", "--quick", "--world", "parts", "--out", str(out), "--corpus", str(corpus),
                 "--n-images", "8", "--threads", "1"]) == 0
    assert "generating 8 part-world images" in capsys.readouterr().out
    assert (corpus / "image_kinds.txt").is_file()
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["vocabulary"] == "parts"
    assert record["config"]["arch"]["max_length"] == 77

    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    assert tok.model_max_length == 77
    for word in PART_WORLD_WORDS:          # every part-world word, seen in the captions or not
        assert len(tok.tokenize(word)) == 1, word
    longest = max((corpus / "captions.txt").read_text().splitlines(), key=len).split(None, 1)[1]
    assert len(tok(longest).input_ids) <= 77


def test_train_toy_refuses_a_part_world_as_birds(tmp_path, capsys):
    corpus = tmp_path / "world"
    assert main(["corpus", "synth", "--out", str(corpus), "--n", "3", "--size", "32", "--world", "parts"]) == 0
    assert main(["train-toy", "--quick", "--out", str(tmp_path / "m"), "--corpus", str(corpus)]) == 2
    assert "--world parts" in capsys.readouterr().err
