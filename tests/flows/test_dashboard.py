"""The dashboard (issue 13 item 3): a real ``prefect server start``, the five stage flows run
against it, their artifacts read back through the REST API, and an artifact page rendered in
headless Chromium (``-m browser`` marks that one; skipped where no browser is installed).

Also the artifact helpers of ``flows/artifacts.py`` (no server needed).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffparts.report import decode_data_uri

REPO = Path(__file__).resolve().parents[2]
STAGES = ("extract", "segment", "parts", "embeddings", "occlusion")
#: Each stage's artifacts: (progress, table, markdown) keys.
KEYS = {
    "extract": ("extract-progress", "extract-summary", "extract-report"),
    "segment": ("segment-progress", "segment-summary", "segment-report"),
    "parts": ("parts-progress", "parts-prevalence", "parts-pictures"),
    "embeddings": ("embeddings-progress", "embeddings-losses", "embeddings-pictures"),
    "occlusion": ("occlusion-progress", "occlusion-table", "occlusion-grid"),
}
#: Stage markdowns that must carry at least one picture.
WITH_PICTURES = ("segment-report", "parts-pictures", "embeddings-pictures", "occlusion-grid")
SERVER_START_TIMEOUT = 180.0


# --- helpers without a server ------------------------------------------------------------------

def _noise_png(path: Path, side: int, seed: int = 0) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def test_markdown_with_pictures_stays_under_the_budget(tmp_path):
    from flows.artifacts import markdown_with_pictures

    pictures = [{"title": f"pic [{i}] <part-{i}>", "path": str(_noise_png(tmp_path / f"{i}.png", 400, i))}
                for i in range(5)]
    pictures.append({"title": "gone", "path": str(tmp_path / "missing.png")})
    text = markdown_with_pictures(["# title", "", "some text"], pictures, max_bytes=400_000)
    assert len(text) <= 400_000
    uris = [line[line.rindex("](") + 2:-1] for line in text.splitlines() if line.startswith("![")]
    assert len(uris) == 5
    for uri in uris:
        assert Image.open(__import__("io").BytesIO(decode_data_uri(uri))).format == "PNG"
    assert "_gone: picture not found" in text and "file://" not in text
    assert "<part-" not in text and "&lt;part-0&gt;" in text       # no raw tag for the UI to drop


def test_markdown_leaves_out_what_cannot_fit(tmp_path):
    from flows.artifacts import markdown_with_pictures

    pictures = [{"title": str(i), "path": str(_noise_png(tmp_path / f"{i}.png", 200, i))} for i in range(3)]
    text = markdown_with_pictures("x" * 9_000, pictures, max_bytes=10_000)
    assert len(text) <= 10_000 and "left out to keep this artifact under 10000 bytes" in text


def test_stage_report_and_run_summary(tmp_path):
    from flows.artifacts import check_key, run_summary_markdown, stage_report

    report = stage_report({"nmi": np.float32(0.25), "k": np.int64(3), "levels": (1, 0.123456), "nested": {"a": 1},
                           "bad": float("nan")}, {"t": [{"a": np.float64(1.5)}]},
                          [{"title": "p", "path": tmp_path / "p.png"}, {"title": "none", "path": None}])
    assert json.loads(json.dumps(report)) == report               # JSON-plain for the run record
    assert report["measures"] == [{"measure": "nmi", "value": 0.25}, {"measure": "k", "value": 3},
                                  {"measure": "levels", "value": "1 0.1235"}, {"measure": "bad", "value": None}]
    assert report["pictures"] == [{"title": "p", "path": str(tmp_path / "p.png")}]
    run = {"title": "bird-parts | x", "stages": [{"name": "parts", "status": "done", "seconds": 2.0, "message": "",
                                                  "report": report}]}
    text = run_summary_markdown(run, str(tmp_path / "r" / "report.html"))
    assert (tmp_path / "r" / "report.html").resolve().as_uri() in text and f"`{tmp_path / 'r' / 'report.html'}`" in text
    assert "| parts | nmi | 0.25 |" in text and "| parts | k | 3 |" in text     # one measure per row
    with pytest.raises(ValueError, match="lowercase"):
        check_key("Parts_Pictures")


# --- a real server -------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "PREFECT_LOGGING_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``prefect server start`` on loopback (SQLite under a temporary PREFECT_HOME): its URL."""
    import httpx

    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(home / "server.log", "wb")
    # the UI asks the API at PREFECT_UI_API_URL, by default built from these two, not from --port
    env = {**_server_env(home), "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
    process = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start",
                                "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    start = time.monotonic()
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"prefect server exited {process.returncode}:\n{(home / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > SERVER_START_TIMEOUT:
                pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT} s:\n"
                            f"{(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        print(f"prefect server healthy after {time.monotonic() - start:.1f} s", file=sys.stderr)
        yield {"url": url, "home": home}
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)      # the server's own process group (start_new_session)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        log.close()


#: The five stages on six synthetic birds with the embedded model, as one flow, then the run's
#: HTML report and summary artifact. Run in its own process so PREFECT_API_URL applies cleanly.
PIPELINE = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from prefect import flow
    from diffparts.corpus import SynthConfig, generate_birds
    from diffparts.report import write_report
    from flows.artifacts import publish_run_summary
    from flows.embeddings import train_part_embeddings
    from flows.extract import extract_attention
    from flows.occlusion import assess_occlusion
    from flows.parts import discover_parts
    from flows.segment import segment_dataset

    work = Path(sys.argv[1])

    @flow(name="dashboard-check")
    def run_all():
        corpus = str(generate_birds(work / "corpus", n=6, seed=0, config=SynthConfig(n_classes=2)))  # 2 held out
        store = str(work / "store.zarr")
        stages, times = {}, {}
        calls = {
            "extract": lambda: extract_attention(corpus, store=store, batch_size=3, max_workers=1),
            "segment": lambda: segment_dataset(store, corpus=corpus, max_workers=1),
            "parts": lambda: discover_parts(store, k=3, corpus=corpus, max_pairs=50),
            "embeddings": lambda: train_part_embeddings(store, steps=2, categories=[1], max_workers=1,
                                                        config={"batch_size": 1, "checkpoint_every": 0}),
            "occlusion": lambda: assess_occlusion(store, n_cases=1, batch_size=1, grid_cases=1),
        }
        for name, call in calls.items():
            start = time.perf_counter()
            stages[name] = call()
            times[name] = round(time.perf_counter() - start, 2)
        run = {"title": "dashboard check", "flow_run_id": None, "dashboard_url": None, "corpus": corpus,
               "store": store, "model": "embedded", "started": "", "seconds": sum(times.values()),
               "stages": [{"name": n, "status": "done", "seconds": times[n], "message": "", "summary": {},
                           "report": s["report"]} for n, s in stages.items()]}
        again = discover_parts(store, k=3, corpus=corpus, max_pairs=50)   # up to date: skipped
        report = write_report(work / "report.html", run)
        summary_id = publish_run_summary(run, str(report))
        return {"times": times, "report": str(report), "summary_id": str(summary_id),
                "parts_again_skipped": bool(again.get("skipped")),
                "reports": {n: s["report"] for n, s in stages.items()}}

    print("RESULT " + json.dumps(run_all()))
""")


def _artifacts(url: str, keys: list[str] | None = None) -> list[dict]:
    import httpx

    body: dict = {"sort": "CREATED_DESC", "limit": 200}
    if keys:
        body["artifacts"] = {"key": {"any_": keys}}
    reply = httpx.post(f"{url}/api/artifacts/filter", json=body, timeout=60)
    reply.raise_for_status()
    return reply.json()


@pytest.fixture(scope="module")
def pipeline_run(server, tmp_path_factory):
    """The five stages run once against the server: the script's result and wall seconds."""
    work = tmp_path_factory.mktemp("dashboard-run")
    env = {**_server_env(server["home"]), "PREFECT_API_URL": f"{server['url']}/api",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", PIPELINE, str(work)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    wall = time.monotonic() - start
    if done.returncode != 0:
        pytest.fail(f"pipeline failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    print(f"stages against the server in {wall:.1f} s: {result['times']}", file=sys.stderr)
    return {**result, "wall": wall, "work": work}


@pytest.mark.flow
def test_every_stage_publishes_progress_table_and_markdown(server, pipeline_run):
    found = {}
    for artifact in _artifacts(server["url"], [k for keys in KEYS.values() for k in keys] + ["run-summary"]):
        found.setdefault(artifact["key"], artifact)          # newest first
    for stage, (progress, table, markdown) in KEYS.items():
        assert found[progress]["type"] == "progress" and found[progress]["data"] == 100.0, stage
        assert found[table]["type"] == "table" and found[table]["flow_run_id"], stage
        assert found[markdown]["type"] == "markdown" and found[markdown]["flow_run_id"], stage
    # the newest parts artifacts are those of the skipped second run: still all there
    assert pipeline_run["parts_again_skipped"]
    assert "up to date, skipped" in found["parts-progress"]["description"]
    for key in WITH_PICTURES:
        text = found[key]["data"]
        assert "data:image/png;base64," in text, key
        assert "](file://" not in text and 'src="file://' not in text, key
        assert len(text) < 1_000_000, key                    # under Prefect's 1.5 MB event cap
    # the run summary links the self-contained HTML report
    summary = found["run-summary"]["data"]
    report = Path(pipeline_run["report"])
    assert report.resolve().as_uri() in summary and str(report) in summary
    html = report.read_text()
    assert html.count('<img src="data:image/png;base64,') >= 3 and "file://" not in html
    # every stage's report entry names pictures that exist
    for stage in ("segment", "parts", "embeddings", "occlusion"):
        pictures = pipeline_run["reports"][stage]["pictures"]
        assert pictures and all(Path(p["path"]).is_file() for p in pictures), stage


@pytest.mark.flow
@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="no /usr/bin/chromium (apt install chromium)")
def test_artifact_page_shows_the_pictures(server, pipeline_run, tmp_path):
    from tests.flows._cdp import LOADED_JS, Browser

    parts = _artifacts(server["url"], ["parts-pictures"])[0]
    with Browser() as browser:
        browser.navigate(f"{server['url']}/artifacts/artifact/{parts['id']}")
        loaded = browser.wait_for(LOADED_JS, timeout=90)
        (tmp_path / "page.png").write_bytes(browser.screenshot(full_page=False))
    assert loaded, "no data-URI picture loaded on the artifact page"
    assert all(img["src"].startswith("data:image/png;base64,") and img["naturalWidth"] > 0 for img in loaded)
