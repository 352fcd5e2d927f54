"""What ``diffparts run`` checks before it starts and what it prints at the end (issue 21)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffparts.logs import terminal_progress
from diffparts.pipeline import check_run_inputs, check_stage, select_stages, summary_lines


def test_run_inputs_are_checked_before_anything_is_written(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="store .*file is a file, not a Zarr store"):
        check_run_inputs(tmp_path / "corpus", tmp_path / "file", synthetic_birds=4)
    with pytest.raises(FileNotFoundError, match="--synthetic-birds N"):
        check_run_inputs(tmp_path / "corpus", tmp_path / "s.zarr")
    with pytest.raises(ValueError, match="--synthetic-birds must be >= 1"):
        check_run_inputs(tmp_path / "corpus", tmp_path / "s.zarr", synthetic_birds=-1)
    check_run_inputs(tmp_path / "corpus", tmp_path / "s.zarr", synthetic_birds=4)   # will be rendered: fine
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        check_run_inputs(tmp_path / "empty", tmp_path / "s.zarr")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_run_inputs(tmp_path / "file", tmp_path / "s.zarr")
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "empty" / "a.png")
    check_run_inputs(tmp_path / "empty", tmp_path / "s.zarr")
    with pytest.raises(FileNotFoundError, match="no diffparts store"):
        check_run_inputs(tmp_path / "empty", tmp_path / "s.zarr", stages=["parts", "embeddings"])
    check_run_inputs("nowhere", "s3://bucket/s.zarr", stages=["parts"])              # a URL: not checked here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file"]          # nothing written


def test_commands_names_are_stage_names():
    assert check_stage("embed") == "embeddings" and check_stage("occlude") == "occlusion"
    assert select_stages("embed", "occlude") == ["embeddings", "occlusion"]
    with pytest.raises(ValueError, match="the stages are extract, segment"):
        check_stage("embedding")


def test_summary_table_has_a_line_per_stage():
    stages = [{"name": "extract", "status": "done", "seconds": 6.5, "summary": {"images": 4, "stored_bytes": 2e6}},
              {"name": "parts", "status": "done", "seconds": 7.1,
               "summary": {"clusters": {"k": 8}, "scores": {"nmi": 0.58, "pck@0.1": 0.84}}},
              {"name": "occlusion", "status": "not run", "seconds": 0.0, "summary": {},
               "message": "outside --from-stage/--to-stage"}]
    lines = summary_lines({"stages": stages, "seconds": 13.6, "report": "/r.html"}, "title")
    assert lines[1] == "== title ==" and lines[-1] == "report  /r.html"
    assert any(line.startswith("extract    done") and "images 4, MB added 2.0" in line for line in lines)
    assert any("K 8, nmi 0.580, pck@0.1 0.840" in line for line in lines)
    assert any(line.startswith("occlusion  not run") and "outside --from-stage" in line for line in lines)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_terminal_progress_bar_only_on_a_terminal():
    assert not terminal_progress("embeddings", 1, 4, stream=io.StringIO())
    tty = _Terminal()
    assert terminal_progress("embeddings", 1, 4, stream=tty, width=8)
    assert tty.getvalue().endswith("embeddings [##......] 1/4")
    terminal_progress("embeddings", 4, 4, stream=tty)
    assert tty.getvalue().endswith("\r\x1b[K")                 # cleared for the stage's line


def test_summary_shows_a_report_below_the_working_directory_as_typed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "runs" / "demo" / "r.html"
    lines = summary_lines({"stages": [], "seconds": 0.0, "report": str(inside)})
    assert lines[-1] == f"report  {Path('runs') / 'demo' / 'r.html'}"
