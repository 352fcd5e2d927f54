"""First use on one's own data (issue 21): bad input is one line naming the value and what to
do, exit status 2, no retry, no traceback (``--debug`` shows it), and nothing left behind;
``--from-stage embed``; defaults said once in ``--help``; Prefect's console log only with
``--verbose``. None of these start a Prefect server (the input is refused first)."""

from __future__ import annotations

import logging
import os

import pytest

from diffparts.cli import build_parser, main


def _listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_error_line(err: str, command: str = "run") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"diffparts {command}: error: ") and "Traceback" not in err
    return lines[0]


def test_a_file_as_the_store(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not a store")
    before = _listing(tmp_path)
    assert main(["run", "--corpus", "runs/birds", "--store", "notes.txt", "--synthetic-birds", "8"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "store notes.txt is a file, not a Zarr store" in line and "give a new path" in line
    assert _listing(tmp_path) == before                       # no corpus rendered, no notes.txt.reports/


def test_an_empty_corpus_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    before = _listing(tmp_path)
    assert main(["run", "--corpus", "empty", "--store", "empty.zarr"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "corpus empty holds no images" in line and "has no attention" not in line
    assert _listing(tmp_path) == before                       # no store, no report
    assert main(["corpus", "info", "empty"]) == 1
    assert "holds no usable image" in capsys.readouterr().err


def test_a_missing_corpus_names_the_option(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--corpus", "nowhere", "--store", "s.zarr"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--synthetic-birds N" in line and "synthetic_birds=N" not in line
    assert main(["run", "--corpus", "nowhere", "--store", "s.zarr", "--from-stage", "embed"]) == 2
    assert "no diffparts store at s.zarr" in _one_error_line(capsys.readouterr().err)
    assert _listing(tmp_path) == []


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["--debug", "run", "--corpus", "nowhere", "--store", "s.zarr"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("diffparts run: error: corpus nowhere")


def test_debug_and_verbose_after_the_command():
    args = build_parser().parse_args(["run", "--corpus", "c", "--store", "s", "--verbose", "--debug"])
    assert args.verbose and args.debug
    args = build_parser().parse_args(["--verbose", "run", "--corpus", "c", "--store", "s"])
    assert args.verbose and not args.debug


def test_a_stopped_server(tmp_path, capsys, monkeypatch):
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as s:                                # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{port}/api"
    with temporary_settings({PREFECT_API_URL: url}):
        assert main(["run", "--corpus", "runs/birds", "--store", "s.zarr", "--synthetic-birds", "4"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"the Prefect server at {url} (PREFECT_API_URL) does not answer" in line
    assert "prefect server start" in line and "prefect config unset PREFECT_API_URL" in line
    assert _listing(tmp_path) == []


def test_stage_names_of_the_commands_are_accepted():
    args = build_parser().parse_args(["run", "--corpus", "c", "--store", "s", "--from-stage", "embed",
                                      "--to-stage", "occlude", "--force", "embed"])
    assert (args.from_stage, args.to_stage, args.force) == ("embeddings", "occlusion", "embeddings")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--corpus", "c", "--store", "s", "--from-stage", "nope"])


@pytest.mark.parametrize("command", ["run", "extract", "segment", "parts", "embed", "occlude", "serve"])
def test_help_says_each_default_once(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "(default: False)" not in text
    for option in text.split(" --")[1:]:
        assert option.count("(default") <= 1, option


def test_prefect_console_log_only_with_verbose():
    from prefect.logging.handlers import PrefectConsoleHandler

    from flows.runtime import prefect_console

    handler = PrefectConsoleHandler()
    logger = logging.getLogger("prefect.test-quiet")
    logger.addHandler(handler)
    try:
        with prefect_console(verbose=True):
            assert handler.level == logging.NOTSET
        with prefect_console(verbose=False):
            assert handler.level > logging.CRITICAL                     # nothing printed
            assert logging.getLevelName(os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"]) == logging.CRITICAL
        assert handler.level == logging.NOTSET                          # restored
    finally:
        logger.removeHandler(handler)
