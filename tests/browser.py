"""A headless Chromium driven over the DevTools protocol on a pipe: no extra packages.

`--remote-debugging-pipe` makes Chromium read CDP commands from fd 3 and write replies
and events to fd 4, each message a JSON object ended by a NUL byte. That is all this
needs: open a page, collect console messages, exceptions and network requests while it
loads, evaluate JavaScript, take screenshots.

    with Chromium() as browser:
        page = browser.open(Path("report.html"), ready="window.__retland && window.__retland.done")
        page.console_errors, page.requests, page.evaluate("document.title"), page.screenshot(path)
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--remote-debugging-pipe",
]
# The report is laid out for a 1280 px wide window (a laptop screen).
WIDTH, HEIGHT = 1280, 1000


def find_chromium() -> str | None:
    """$RETLAND_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH."""
    if os.environ.get("RETLAND_CHROMIUM"):
        return os.environ["RETLAND_CHROMIUM"]
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class CDPError(RuntimeError):
    pass


class Chromium:
    def __init__(self, executable: str | None = None, timeout: float = 60.0, width: int = WIDTH,
                 height: int = HEIGHT):
        self.width, self.height = width, height
        self.executable = executable or find_chromium()
        if not self.executable:
            raise CDPError("no chromium found (install Debian's `chromium` or set RETLAND_CHROMIUM)")
        self.timeout = timeout
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []

    def __enter__(self) -> "Chromium":
        self._profile = tempfile.TemporaryDirectory(prefix="retland-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # CDP wants the pipe ends at fds 3 and 4. Move them above 10 first, so dup2 can
        # neither clobber one with the other nor leave one close-on-exec.
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)

        def wire_fds():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--window-size={self.width},{self.height}",
             f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_fds, close_fds=False,
        )
        for fd in (to_child_r, from_child_w, high_r, high_w):
            os.close(fd)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001  (closing a browser that already went away)
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._profile.cleanup()

    # -- the protocol ---------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict | None:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([self._from_child], [], [], left)
            if not ready:
                return None
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                raise CDPError(f"chromium closed the DevTools pipe (exit {self.proc.poll()}): {err[-2000:]}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read_message(deadline)
            if reply is None:
                raise CDPError(f"no reply to {method} within {timeout or self.timeout} s")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def pump(self, seconds: float) -> None:
        """Collect events for a while."""
        deadline = time.monotonic() + seconds
        while (msg := self._read_message(deadline)) is not None:
            self.events.append(msg)

    def open(self, path: Path, ready: str, timeout: float | None = None) -> "Page":
        """Load a local file in a fresh tab and wait until the JS expression `ready` is true."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable", session=session)
        # the viewport exactly width x height, whatever the headless window's frame takes
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False}, session=session)
        page = Page(self, session, Path(path).resolve().as_uri())
        self.send("Page.navigate", {"url": page.url}, session=session)
        deadline = time.monotonic() + (timeout or self.timeout)
        while not page.evaluate(f"Boolean({ready})"):
            if time.monotonic() > deadline:
                raise CDPError(f"page not ready ({ready}) after {timeout or self.timeout} s; "
                               f"console errors so far: {page.console_errors}")
            self.pump(0.2)
        self.pump(0.3)  # late console messages
        return page


class Page:
    def __init__(self, browser: Chromium, session: str, url: str):
        self.browser, self.session, self.url = browser, session, url

    def _events(self, method: str) -> list[dict]:
        return [e["params"] for e in self.browser.events if e.get("sessionId") == self.session and e.get("method") == method]

    def evaluate(self, expression: str):
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in result:
            raise CDPError(f"{expression[:80]}…: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 10.0) -> bool:
        """Pump events until the JS expression is true; False if it is not within `timeout` s."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({expression})"):
            if time.monotonic() > deadline:
                return False
            self.browser.pump(0.1)
        return True

    @property
    def console_errors(self) -> list[str]:
        """console.error/assert calls, uncaught exceptions, and browser log errors."""
        out = []
        for p in self._events("Runtime.consoleAPICalled"):
            if p["type"] in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        for p in self._events("Runtime.exceptionThrown"):
            d = p["exceptionDetails"]
            out.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
        for p in self._events("Log.entryAdded"):
            if p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return out

    @property
    def requests(self) -> list[str]:
        """URLs of every request the page made (the page itself included)."""
        return [p["request"]["url"] for p in self._events("Network.requestWillBeSent")]

    def screenshot(self, path: Path, selector: str | None = None) -> Path:
        """PNG of the page, or of the first element matching `selector`."""
        params = {"format": "png", "captureBeyondViewport": True}
        if selector:
            box = self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                " return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height}; })()")
            params["clip"] = {**box, "scale": 1}
        data = self.browser.send("Page.captureScreenshot", params, session=self.session)["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)
