"""The README's Quickstart (a), run as written (issue 21): its commands are read from the
README's code block and run by bash in a fresh folder, one after the other.

Only two things are replaced: the number of synthetic birds (48 -> 6, the commands' time is
mostly the tokens, whatever the number) and ``MY_IMAGES`` (a placeholder: the rendered birds'
image folder). ``source .venv/bin/activate`` finds a ``.venv/bin/activate`` that puts a
``diffparts`` of this interpreter on PATH, as ``make demo``'s does. Slow (minutes; far more on
a loaded machine): the embedded checkpoint trains 8 tokens twice (the first run and
--force parts) and draws their pictures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quickstart_commands() -> list[str]:
    """The lines of the code block under '## Quickstart (a)' in README.md, comments dropped."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quickstart (a)"):]
    block = section[section.index("```bash") + len("```bash"):section.index("```", section.index("```bash") + 7)]
    lines = [re.sub(r"\s+#.*$", "", line).strip() for line in block.strip().splitlines()]
    return [line for line in lines if line]


def test_the_quickstart_block_is_what_this_test_runs():
    commands = quickstart_commands()
    assert commands[0] == "source .venv/bin/activate"
    runs = [c for c in commands if c.startswith("diffparts run")]
    assert len(runs) == 4 and "--synthetic-birds 48" in runs[0] and "MY_IMAGES" in runs[3]


@pytest.mark.slow
def test_quickstart_a_as_written(tmp_path):
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    shim = bin_dir / "diffparts"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m diffparts.cli \"$@\"\n")
    shim.chmod(0o755)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    commands = [c.replace("--synthetic-birds 48", "--synthetic-birds 6").replace("MY_IMAGES", "runs/birds/images")
                for c in quickstart_commands()]
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL")}
    env.update({"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")]),
                "PREFECT_HOME": str(tmp_path / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    script = "set -e\n" + "\n".join(f"echo '>>> {c}'\n{c}" for c in commands) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=3600)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    runs = out.split(">>> diffparts run")[1:]
    assert len(runs) == 4
    first, again, forced, folder = runs
    for stage in ("extract", "segment", "parts", "embeddings", "occlusion"):
        assert re.search(rf"^{stage}\s+done\s", first, re.M), first
        assert re.search(rf"^{stage}\s+skipped\s", again, re.M), again
    assert "force parts: redoing parts, embeddings, occlusion" in forced
    assert re.search(r"^embeddings\s+done\s", forced, re.M) and re.search(r"^segment\s+skipped\s", forced, re.M)
    assert re.search(r"^parts\s+done\s", folder, re.M) and re.search(r"^occlusion\s+not run\s", folder, re.M)
    # quiet: the stage lines and the summary, no Prefect log line, no traceback
    assert not re.search(r"\| (INFO|WARNING|ERROR)\s+\|", out + done.stderr) and "Traceback" not in done.stderr
    assert out.count("== diffparts run") == 4
    assert (tmp_path / "runs" / "birds.zarr").is_dir() and (tmp_path / "my.zarr").is_dir()
