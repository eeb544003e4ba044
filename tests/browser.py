"""Headless Chromium driven over the DevTools protocol (CDP), for the viewer's browser test.

Only the standard library, ``websockets`` (a viser dependency) and imageio are used: the page is opened in a fresh
profile, and screenshots are taken until a condition holds (the viewer streams its render after the page loads).
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # WebGL without a GPU: software rendering must be allowed explicitly in recent Chromium.
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
)


def find_chromium() -> Optional[str]:
    """Path of a Chromium/Chrome binary, or None."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


class Browser:
    """A headless Chromium with one page, controlled over CDP. Use as a context manager."""

    def __init__(self, binary: str, width: int = 1280, height: int = 800):
        self.profile = Path(tempfile.mkdtemp(prefix="gmnerf-chromium-"))
        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        self._ids = itertools.count(1)
        port = self._debug_port()
        pages = []
        for _ in range(50):
            pages = [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
                     if t.get("type") == "page"]
            if pages:
                break
            time.sleep(0.1)
        from websockets.sync.client import connect

        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)

    def _debug_port(self, timeout: float = 20.0) -> int:
        path = self.profile / "DevToolsActivePort"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if path.is_file() and path.read_text().strip():
                return int(path.read_text().split()[0])
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self.process.returncode}")
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def send(self, method: str, **params: Any) -> dict:
        """Sends a CDP command and returns its result (events in between are skipped)."""
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def open(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Page.navigate", url=url)

    def screenshot(self, retry_for: float = 10.0) -> np.ndarray:
        """(H, W, 3) uint8 screenshot of the page (retried while a navigation is still committing)."""
        import imageio.v2 as imageio

        deadline = time.time() + retry_for
        while True:
            try:
                data = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
                return np.asarray(imageio.imread(data))[..., :3]
            except RuntimeError:  # "Not attached to an active page" right after Page.navigate
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def text(self) -> str:
        """The page's visible text (``document.body.innerText``)."""
        result = self.send("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                           returnByValue=True)
        return str(result.get("result", {}).get("value", ""))

    def wait_for(self, condition: Callable[["Browser"], bool], timeout: float, interval: float = 1.0) -> bool:
        """Polls ``condition(browser)`` until it holds or ``timeout`` seconds pass; returns its last value."""
        deadline = time.time() + timeout
        while True:
            if condition(self):
                return True
            if time.time() > deadline:
                return False
            time.sleep(interval)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
