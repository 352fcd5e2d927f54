"""``diffparts failures``, the failure lines after a run, and one-line errors (issue 12, items 7, 14)."""

from __future__ import annotations

import io
import logging
import sys

from diffparts.cli import _without_bad_input_tracebacks, main
from diffparts.cli.failures import report_failures
from diffparts.store import build_manifest, prepare_store, open_store, record_failure


def failed_store(path, n=25):
    images = [{"image_id": k + 1, "name": f"img_{k:02d}.png", "sha256": ""} for k in range(n)]
    prepare_store(str(path), images, build_manifest("m", "sha256:0", {}), stages=("attention", "segments"))
    root = open_store(str(path), "r+")
    for k in range(n - 1):
        record_failure(root, "attention", k + 1, f"img_{k:02d}.png", f"load: outside the corpus {k}", index=k)
    record_failure(root, "segments", n, f"img_{n - 1:02d}.png", "segment: RuntimeError: ARPACK", index=n - 1)
    return str(path)


def test_failures_command_lists_all_and_filters_by_stage(tmp_path, capsys):
    store = failed_store(tmp_path / "s.zarr")
    assert main(["failures", "--store", store]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 25 and "25 failures" in out.err
    assert "attention: img_03.png (image 4): load: outside the corpus 3" in out.out
    assert main(["failures", "--store", store, "--stage", "segments"]) == 0
    assert capsys.readouterr().out == "segments: img_24.png (image 25): segment: RuntimeError: ARPACK\n"


def test_a_run_prints_the_first_20_then_a_count_and_the_command(tmp_path):
    store = failed_store(tmp_path / "s.zarr")
    out = io.StringIO()
    assert report_failures(store, ("attention",), file=out) == 24
    lines = out.getvalue().splitlines()
    assert len(lines) == 21 and lines[0] == "failed attention: img_00.png (image 1): load: outside the corpus 0"
    assert lines[-1] == f"... and 4 more: diffparts failures --store {store} --stage attention"


def test_bad_input_is_one_line_and_the_traceback_needs_debug(tmp_path, capsys):
    missing = str(tmp_path / "nope.zarr")
    assert main(["failures", "--store", missing]) == 2
    err = capsys.readouterr().err
    assert err == f"diffparts failures: error: no diffparts store at {missing}\n"
    assert main(["--debug", "failures", "--store", missing]) == 2
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_prefect_log_records_of_bad_input_lose_their_traceback():
    make = _without_bad_input_tracebacks(logging.getLogRecordFactory())
    for error, kept in ((ValueError("bad box"), False), (OSError("disk"), True)):
        try:
            raise error
        except Exception:
            info = sys.exc_info()
        record = make("prefect.task_runs", logging.ERROR, __file__, 1, "failed", (), info)
        assert (record.exc_info is not None) is kept
        other = make("mylib", logging.ERROR, __file__, 1, "failed", (), info)
        assert other.exc_info is not None
