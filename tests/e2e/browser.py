"""Headless Chromium driven over the Chrome DevTools Protocol, for checks of the Prefect UI.

Chromium starts with a fresh profile, its background network features off, and its debugging
port on 127.0.0.1. The tests load only pages of the local Prefect server. Every wait polls the
page for the text it expects, up to a deadline, so a slow UI makes a test slower, not flaky.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import requests
from websockets.sync.client import ClientConnection, connect

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,900",
    "--remote-debugging-address=127.0.0.1",
]
ALLOWED_PREFIX = "http://127.0.0.1:4200/"
START_TIMEOUT_SECONDS = 30
COMMAND_TIMEOUT_SECONDS = 30


class BrowserError(AssertionError):
    """The browser failed to start, or a page did not show what a test expected in time."""


class Browser:
    """One headless Chromium with one page, on the given debugging port."""

    def __init__(self, port: int) -> None:
        executable = shutil.which("chromium")
        if executable is None:
            raise BrowserError("chromium not found: install the Debian package with scripts/install.sh")
        self.port = port
        self.profile = Path(tempfile.mkdtemp(prefix="meta-flows-chromium-"))
        command = [executable, *CHROMIUM_FLAGS, f"--remote-debugging-port={port}", f"--user-data-dir={self.profile}"]
        self.process = subprocess.Popen([*command, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ids = itertools.count(1)
        try:
            self.socket: ClientConnection = connect(self._page_socket_url(), max_size=64 * 1024 * 1024)
        except BaseException:
            self._stop_process()
            raise

    def _page_socket_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with code {self.process.returncode} on start")
            try:
                targets = requests.get(f"http://127.0.0.1:{self.port}/json/list", timeout=2).json()
            except (requests.RequestException, ValueError):
                targets = []
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            time.sleep(0.2)
        raise BrowserError(f"chromium's debugging port {self.port} did not open within {START_TIMEOUT_SECONDS} s")

    def command(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result, skipping the events in between."""
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + COMMAND_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            reply = json.loads(self.socket.recv(timeout=COMMAND_TIMEOUT_SECONDS))
            if reply.get("id") != message_id:
                continue
            if "error" in reply:
                raise BrowserError(f"{method} failed: {reply['error']}")
            return dict(reply.get("result") or {})
        raise BrowserError(f"{method} got no reply within {COMMAND_TIMEOUT_SECONDS} s")

    def open(self, url: str) -> None:
        """Load `url`, which must be a page of the local Prefect server."""
        if not url.startswith(ALLOWED_PREFIX):
            raise BrowserError(f"refusing to load {url}: the tests load only {ALLOWED_PREFIX} pages")
        self.command("Page.navigate", url=url)

    def text(self) -> str:
        """Return the visible text of the page."""
        result = self.command(
            "Runtime.evaluate", expression="document.body ? document.body.innerText : ''", returnByValue=True
        )
        return str(result.get("result", {}).get("value") or "")

    def wait_for_text(self, *expected: str, timeout: float = 60) -> str:
        """Poll the page until its text contains every string of `expected`; return the text."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(item in text for item in expected):
                return text
            time.sleep(0.25)
        missing = [item for item in expected if item not in text]
        raise BrowserError(f"page did not show {missing} within {timeout} s; it showed:\n{text[:2000]}")

    def click_text(self, label: str, timeout: float = 60) -> None:
        """Click the first button, tab (the Prefect UI's `.p-tab`) or link whose text is exactly `label`."""
        script = (
            "(() => { const target = [...document.querySelectorAll('button, [role=tab], .p-tab, a')]"
            f".find(element => element.innerText.trim() === {json.dumps(label)});"
            " if (target) { target.click(); return true; } return false; })()"
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.command("Runtime.evaluate", expression=script, returnByValue=True)
            if result.get("result", {}).get("value") is True:
                return
            time.sleep(0.25)
        raise BrowserError(f"no button, tab or link {label!r} appeared within {timeout} s")

    def scroll_to_text(self, text: str) -> None:
        """Scroll the first heading that starts with `text` to the top of the window."""
        script = (
            "[...document.querySelectorAll('h1, h2, h3')]"
            f".find(element => element.innerText.trim().startsWith({json.dumps(text)}))?.scrollIntoView()"
        )
        self.command("Runtime.evaluate", expression=script)

    def screenshot(self, path: Path) -> None:
        """Save the page as a PNG at `path`."""
        data = self.command("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            self._stop_process()

    def _stop_process(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
