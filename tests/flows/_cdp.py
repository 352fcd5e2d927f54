"""A small headless-Chromium driver over the Chrome DevTools Protocol (no new dependency:
``websockets`` comes with Prefect). Used by the dashboard test and
``benchmarks/dashboard_screenshot.py``.

    with Browser() as browser:
        browser.navigate("http://127.0.0.1:4200/artifacts/artifact/<id>")
        images = browser.wait_for("...js returning a value or null...", timeout=60)
        png = browser.screenshot()
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = os.environ.get("DIFFPARTS_CHROMIUM", "/usr/bin/chromium")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--remote-debugging-port=0"]


def chromium_available() -> bool:
    return Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)


class Browser:
    """One headless Chromium with a fresh profile; one page driven through CDP."""

    def __init__(self, width: int = 1400, height: int = 1100, start_timeout: float = 60.0):
        self.width, self.height, self.start_timeout = width, height, start_timeout
        self._ids = itertools.count(1)

    def __enter__(self) -> "Browser":
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="diffparts-chromium-")
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={self.width},{self.height}",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"{CHROMIUM} did not start (exit {self.process.returncode})")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        # the page target (not the browser endpoint in DevToolsActivePort): /json/list
        import httpx

        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=30)
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.ws.close()
        finally:
            self._stop()

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        """Send one CDP command and return its result (events in between are dropped)."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression on the page (promises awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, poll: float = 0.5):
        """Poll ``expression`` until it gives a truthy value; return it (None on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(poll)
        return None

    def screenshot(self, full_page: bool = True) -> bytes:
        """PNG bytes of the page (the whole scrollable page when ``full_page``)."""
        params: dict = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": max(self.width, size["width"]),
                              "height": min(size["height"], 6000), "scale": 1}
            params["captureBeyondViewport"] = True
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])


#: JavaScript: every <img> of the page with a data: source, as {src prefix, naturalWidth, complete}.
IMAGES_JS = """Array.from(document.images).filter(i => i.src.startsWith('data:')).map(i => ({
    src: i.src.slice(0, 40), naturalWidth: i.naturalWidth, complete: i.complete}))"""
#: JavaScript: the data-URI images that have loaded (truthy once at least one has).
LOADED_JS = f"(() => {{ const a = {IMAGES_JS}.filter(i => i.complete && i.naturalWidth > 0); " \
            "return a.length ? a : null; })()"
