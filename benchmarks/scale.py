"""Scale benchmark: the five stages on N synthetic birds, as a user runs them; one JSON object.

For each N it renders N synthetic birds (``diffparts corpus synth``), starts a real
``prefect server start`` on loopback with a fresh SQLite database, optionally a real
``dask scheduler`` and two ``dask worker`` processes, and then runs, as a user would:

1. ``diffparts run --corpus C --store S`` (the five stages; ``--embed-steps`` and
   ``--occlusion-cases`` small by default, since those stages do a fixed amount of work per
   category or case whatever N is, and the question here is what grows with N);
2. the same command again, with nothing to do (every stage should skip, reading markers);
3. with ``--grow G``: the same command on a corpus of N + G birds (the first N identical), so
   only G images are new: extract and segment do G images, parts and what depends on it redo.

Recorded per run and stage: wall seconds and images per second (per-image stages), the peak
RSS of every process (the CLI, its children, the Prefect server, each Dask process), the
store's bytes per group, the number of Prefect task runs and flow runs, the API database's size
and the largest artifact. Growth against N is in ``docs/scale.md``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --n 1000 [--n 4000 ...] [--dask] [--grow 100]
        [--work out/scale] [--embed-steps 20] [--occlusion-cases 8] [--seed 4242] [-- EXTRA RUN ARGS]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Seconds to wait for the API server or the Dask scheduler to answer.
START_TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, api_url: str | None) -> dict:
    """This process's environment with a PREFECT_HOME of our own (and the API URL, once up)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


class PeakRSS:
    """Polls the RSS of a set of process trees; ``peaks()``: {label: peak bytes} per process."""

    def __init__(self, every_s: float = 0.5):
        self.every_s = every_s
        self.roots: dict[str, int] = {}
        self._peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def watch(self, label: str, pid: int) -> None:
        self.roots[label] = pid

    def start(self) -> "PeakRSS":
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(10)
        return dict(self._peak)

    def reset(self) -> dict[str, int]:
        peaks, self._peak = dict(self._peak), {}
        return peaks

    def _run(self) -> None:
        while not self._stop.is_set():
            for label, pid in list(self.roots.items()):
                try:
                    root = psutil.Process(pid)
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                for i, p in enumerate(procs):
                    try:
                        rss = p.memory_info().rss
                        name = label if i == 0 else f"{label}/{p.name()}[{p.pid}]"
                    except psutil.Error:
                        continue
                    self._peak[name] = max(self._peak.get(name, 0), rss)
            self._stop.wait(self.every_s)


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _wait_until(what: str, ready, process: subprocess.Popen, log: Path) -> float:
    start = time.monotonic()
    while not ready():
        if process.poll() is not None:
            raise SystemExit(f"{what} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() - start > START_TIMEOUT:
            raise SystemExit(f"{what} not ready after {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return round(time.monotonic() - start, 1)


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    """``prefect server start`` on a free loopback port; returns the process and the API URL."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**_env(home, None), "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port)}
    log = home / "server.log"
    process = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, log)

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/api/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    _wait_until("prefect server", healthy, process, log)
    return process, f"{url}/api"


def start_dask(work: Path, env: dict, workers: int = 2) -> tuple[list[subprocess.Popen], str]:
    """A real ``dask scheduler`` and ``workers`` ``dask worker`` processes (1 thread each)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                        "--no-dashboard"], env, work / "scheduler.log")

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    _wait_until("dask scheduler", listening, scheduler, work / "scheduler.log")
    procs = [scheduler]
    for i in range(workers):
        procs.append(_start([str(BIN / "dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
                             "--no-dashboard", "--name", f"w{i}"], env, work / f"worker-{i}.log"))
    from distributed import Client

    with Client(address, timeout=START_TIMEOUT) as client:
        client.wait_for_workers(workers, timeout=START_TIMEOUT)
    return procs, address


def render(corpus: Path, n: int, seed: int, env: dict) -> float:
    """``diffparts corpus synth`` (skipped when the folder already holds n images)."""
    images = corpus / "images.txt"
    if images.exists() and len(images.read_text().splitlines()) == n:
        return 0.0
    if corpus.exists():
        shutil.rmtree(corpus)
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "diffparts"), "corpus", "synth", "--out", str(corpus), "--n", str(n),
                           "--seed", str(seed)], env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"corpus synth failed:\n{done.stderr[-3000:]}")
    return round(time.perf_counter() - start, 1)


def run_pipeline(args: list[str], env: dict, rss: PeakRSS, log: Path) -> dict:
    """``diffparts run ARGS --json`` with its process tree watched; the run's records."""
    start = time.perf_counter()
    process = subprocess.Popen([str(BIN / "diffparts"), "run", *args, "--json"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True)
    rss.watch("diffparts run", process.pid)
    out, _ = process.communicate()
    wall = round(time.perf_counter() - start, 1)
    rss.roots.pop("diffparts run", None)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode or not lines:
        raise SystemExit(f"diffparts run failed ({process.returncode}); see {log}:\n{out[-2000:]}")
    result = json.loads(lines[-1])
    return {"wall_s": wall, "stages": result["stages"]}


def stage_rows(records: list[dict], n_images: int) -> dict:
    """Per stage: status, seconds, images per second for the per-image stages, the stage's line."""
    rows = {}
    for r in records:
        row = {"status": r["status"], "seconds": r["seconds"], "message": r["message"]}
        if r.get("peak_rss_bytes"):                     # the CLI process's peak so far, after the stage
            row["peak_rss_after_bytes"] = r["peak_rss_bytes"]
        if r["name"] in ("extract", "segment") and r["status"] == "done" and r["seconds"] > 0:
            row["images_per_s"] = round(n_images / r["seconds"], 2)
            row["s_per_image"] = round(r["seconds"] / n_images, 4)
        rows[r["name"]] = row
    return rows


def store_bytes(store: Path) -> dict:
    """Bytes on disk per top-level group of the store, and beside it (pictures, tokens, reports)."""
    out: dict[str, int] = {}
    for path in sorted(store.parent.glob(store.name + "*")):
        if path.is_dir():
            for child in sorted(path.iterdir()) if path == store else [path]:
                size = sum(f.stat().st_size for f in child.rglob("*") if f.is_file()) if child.is_dir() \
                    else child.stat().st_size
                out[child.name if path == store else path.name] = size
    out["total"] = sum(out.values())
    return out


def api_figures(api: str, home: Path) -> dict:
    """Task runs, flow runs, the database's bytes and the largest artifact, from the API."""
    import httpx

    counts = {kind: httpx.post(f"{api}/{kind}/count", json={}, timeout=60).json()
              for kind in ("task_runs", "flow_runs", "artifacts")}
    largest, key, offset = 0, None, 0
    while True:
        page = httpx.post(f"{api}/artifacts/filter", json={"limit": 200, "offset": offset}, timeout=60).json()
        for a in page:
            size = len(json.dumps(a.get("data")))
            if size > largest:
                largest, key = size, a.get("key")
        if len(page) < 200:
            break
        offset += 200
    db = sum(p.stat().st_size for p in home.glob("*.db*"))
    return {**counts, "database_bytes": db, "largest_artifact_bytes": largest, "largest_artifact_key": key}


def measure(n: int, args, extra: list[str]) -> dict:
    """One N: render, serve, run, re-run, grow; the figures."""
    work = (args.work / f"n{n}{'-dask' if args.dask else ''}").resolve()
    home = work / "prefect"
    if home.exists():
        shutil.rmtree(home)                                 # a fresh API database per N
    home.mkdir(parents=True)
    store = work / "store.zarr"
    for old in work.glob("store.zarr*"):
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    corpus = work / "corpus"
    out: dict = {"n": n, "dask": args.dask, "render_s": render(corpus, n, args.seed, _env(home, None))}
    rss = PeakRSS().start()
    server, api = start_server(home)
    rss.watch("prefect server", server.pid)
    env = _env(home, api)
    dask_procs: list[subprocess.Popen] = []
    try:
        run_args = ["--corpus", str(corpus), "--store", str(store), "--embed-steps", str(args.embed_steps),
                    "--occlusion-cases", str(args.occlusion_cases), *extra]
        if args.dask:
            dask_procs, address = start_dask(work, env)
            for i, p in enumerate(dask_procs):
                rss.watch("dask scheduler" if i == 0 else f"dask worker {i}", p.pid)
            run_args += ["--dask-address", address]
        rss.reset()
        first = run_pipeline(run_args, env, rss, work / "run-1.log")
        out["first"] = {"wall_s": first["wall_s"], "stages": stage_rows(first["stages"], n),
                        "peak_rss_bytes": rss.reset(), "store_bytes": store_bytes(store), "api": api_figures(api, home)}
        print(f"n={n}: first run {first['wall_s']} s", file=sys.stderr)
        again = run_pipeline(run_args, env, rss, work / "run-2.log")
        out["again"] = {"wall_s": again["wall_s"], "stages": stage_rows(again["stages"], n),
                        "peak_rss_bytes": rss.reset()}
        print(f"n={n}: nothing to do {again['wall_s']} s", file=sys.stderr)
        if args.grow:
            grown = work / "corpus-grown"
            out["grow_render_s"] = render(grown, n + args.grow, args.seed, env)
            grow_args = ["--corpus", str(grown), *run_args[2:]]
            third = run_pipeline(grow_args, env, rss, work / "run-3.log")
            out["grown"] = {"new_images": args.grow, "wall_s": third["wall_s"],
                            "stages": stage_rows(third["stages"], args.grow), "peak_rss_bytes": rss.reset(),
                            "api": api_figures(api, home)}
            print(f"n={n}: +{args.grow} images {third['wall_s']} s", file=sys.stderr)
    finally:
        for p in reversed(dask_procs):
            _stop(p)
        _stop(server)
        rss.stop()
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="synthetic birds (repeat for several N)")
    parser.add_argument("--seed", type=int, default=4242, help="corpus seed")
    parser.add_argument("--dask", action="store_true", help="a real dask scheduler and two dask workers")
    parser.add_argument("--grow", type=int, default=0, help="then G more birds: only their work is done")
    parser.add_argument("--embed-steps", type=int, default=20, help="per token (fixed cost per category, not per image)")
    parser.add_argument("--occlusion-cases", type=int, default=8, help="held-out cases (fixed cost, not per image)")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "scale", help="corpora, stores, logs (git-ignored)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    sizes = args.n or [1000]
    if any(n < 4 for n in sizes):
        parser.error(f"--n {min(sizes)}: need at least 4 birds")
    results = [measure(n, args, extra) for n in sizes]
    report = {"benchmark": "scale", "cpus": os.cpu_count(), "embed_steps": args.embed_steps,
              "occlusion_cases": args.occlusion_cases, "extra_run_args": extra, "runs": results}
    if len(results) > 1:
        base = results[0]
        report["growth_vs_first_n"] = {
            str(r["n"]): {
                "n_ratio": round(r["n"] / base["n"], 2),
                **{f"{s}_s_per_image_ratio": round(r["first"]["stages"][s]["s_per_image"]
                                                   / base["first"]["stages"][s]["s_per_image"], 2)
                   for s in ("extract", "segment") if "s_per_image" in r["first"]["stages"].get(s, {})
                   and "s_per_image" in base["first"]["stages"].get(s, {})},
                "peak_rss_ratio": {p: round(v / base["first"]["peak_rss_bytes"][p], 2)
                                   for p, v in r["first"]["peak_rss_bytes"].items()
                                   if base["first"]["peak_rss_bytes"].get(p)},
            } for r in results[1:]}
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
