"""A screenshot of an artifact page of the Prefect dashboard, rendered in headless Chromium
(issue 13 item 3; the picture in docs/dashboard.md). Prints one JSON object.

Needs a running server that holds the artifact (``prefect server start``, then a run against
it, e.g. ``diffparts run``) and Debian's Chromium (``/usr/bin/chromium``). It opens
``<url>/artifacts/artifact/<id>`` of the newest artifact with ``--key``, waits until its
data-URI pictures have loaded, and saves the page as PNG:

    .venv/bin/python benchmarks/dashboard_screenshot.py --url http://127.0.0.1:4200 \\
        --key parts-pictures --out docs/images/dashboard-artifact.png

With ``--flow-run NAME`` it opens instead the page of the newest flow run of the flow ``NAME``
(e.g. ``bird-parts``, what ``diffparts run`` runs) and waits until the page shows the run's name
and its task runs. ``opened_s`` is how long the page took to show what was waited for
(docs/scale.md uses it on a big store's server).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4200", help="the server (UI and API)")
    parser.add_argument("--key", default="parts-pictures", help="artifact key (newest artifact with it)")
    parser.add_argument("--flow-run", default=None, metavar="FLOW",
                        help="the newest run of this flow's page instead of an artifact")
    parser.add_argument("--out", default="docs/images/dashboard-artifact.png", help="PNG to write")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--full-page", action="store_true", help="the whole page, not the first screen")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the pictures")
    parser.add_argument("--full-colour", action="store_true", help="keep every colour (default: a 256-colour "
                                                                   "palette, a third of the bytes)")
    args = parser.parse_args(argv)

    import httpx

    sys.path.insert(0, str(REPO))
    from tests.flows._cdp import LOADED_JS, Browser, chromium_available

    if not chromium_available():
        raise SystemExit("no Chromium at /usr/bin/chromium (apt install chromium) or $DIFFPARTS_CHROMIUM")
    url = args.url.rstrip("/")

    def newest(what: str, match: dict, sort: str, missing: str) -> dict:
        found = httpx.post(f"{url}/api/{what}/filter", timeout=30, json={**match, "sort": sort, "limit": 1}).json()
        if not found:
            raise SystemExit(f"{missing} on {url}")
        return found[0]

    if args.flow_run:
        run = newest("flow_runs", {"flows": {"name": {"any_": [args.flow_run]}}}, "START_TIME_DESC",
                     f"no run of the flow {args.flow_run!r}")
        page = f"{url}/runs/flow-run/{run['id']}"
        # the run's name is shown, and the page lists task runs (or says there are none)
        ready = (f"(() => {{ const t = document.body ? document.body.innerText : ''; "
                 f"return t.includes({json.dumps(run['name'])}) && /task run/i.test(t) ? [t.length] : null; }})()")
    else:
        artifact = newest("artifacts", {"artifacts": {"key": {"any_": [args.key]}}}, "CREATED_DESC",
                          f"no artifact with key {args.key!r}")
        page = f"{url}/artifacts/artifact/{artifact['id']}"
        ready = LOADED_JS
    start = time.perf_counter()
    with Browser(width=args.width, height=args.height) as browser:
        browser.navigate(page)
        loaded = browser.wait_for(ready, timeout=args.timeout)
        opened_s = time.perf_counter() - start
        time.sleep(1.0)                         # let the layout settle after the last picture
        png = browser.screenshot(full_page=args.full_page)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.full_colour:
        out.write_bytes(png)
    else:
        import io

        from PIL import Image

        picture = Image.open(io.BytesIO(png)).convert("RGB")
        picture.quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    shown = {"page_text_chars": loaded[0]} if args.flow_run and loaded else {
        "pictures_loaded": len(loaded or []), "natural_widths": [i["naturalWidth"] for i in loaded or []]}
    print(json.dumps({"page": page, **shown, "opened_s": round(opened_s, 1) if loaded else None, "out": str(out),
                      "bytes": out.stat().st_size, "seconds": round(time.perf_counter() - start, 1)}))
    return 0 if loaded else 1


if __name__ == "__main__":
    sys.exit(main())
