"""``diffparts corpus synth`` and ``diffparts corpus info`` through diffparts.cli.main."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from diffparts.cli import main


def test_help_everywhere(capsys):
    for argv in (["corpus", "--help"], ["corpus", "synth", "--help"], ["corpus", "info", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert "usage: diffparts corpus" in capsys.readouterr().out


def test_synth_then_info(tmp_path, capsys):
    out = tmp_path / "birds"
    assert main(["corpus", "synth", "--out", str(out), "--n", "4", "--seed", "1", "--size", "32",
                 "--classes", "2"]) == 0
    assert "wrote 4 synthetic birds" in capsys.readouterr().out
    assert len((out / "images.txt").read_text().splitlines()) == 4
    # one unusable image shows up in info's skipped list with its reason
    bad = out / "images" / "001.Crimson_finch" / "Crimson_finch_0002.png"
    bad.write_bytes(b"broken")
    assert main(["corpus", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "images: 4  usable: 3  skipped: 1" in text
    assert "split: train 2, test 2" in text
    assert "001.Crimson_finch: 2" in text
    assert "part legend: 0 background, 1 head, 2 beak" in text
    assert "image size: height 32..32, width 32..32 px" in text
    assert "skipped 001.Crimson_finch/Crimson_finch_0002.png: not an image" in text
    assert main(["corpus", "info", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layout"] == "cub" and summary["usable"] == 3
    assert summary["keypoints"][0] == "back"


def test_info_on_plain_folder(tmp_path, capsys):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "b.png")
    assert main(["corpus", "info", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "(folder layout)" in text and "images: 2  usable: 1  skipped: 1" in text
    assert "skipped b.png: too small: 8x8 < 16 px" in text


def test_errors_return_2(tmp_path, capsys):
    assert main(["corpus", "info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["corpus", "synth", "--out", str(tmp_path), "--n", "0"]) == 2
    assert "n=0" in capsys.readouterr().err
