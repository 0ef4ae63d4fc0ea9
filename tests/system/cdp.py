"""A small Chrome DevTools Protocol client over ``--remote-debugging-pipe``.

Chromium reads commands from fd 3 and writes replies and events to fd 4, each a JSON
object ending in a NUL byte; no port is opened, so parallel test runs cannot collide.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]


def chromium_path() -> Optional[str]:
    """Debian's chromium (or chromium-browser elsewhere), if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CDPError(RuntimeError):
    """A DevTools command returned an error."""


class Browser:
    """One headless Chromium; ``call`` sends a command and waits for its reply."""

    def __init__(self, profile: Path, log: Path) -> None:
        exe = chromium_path()
        assert exe, "chromium is not installed"
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # Above the child's dup2 targets (3, 4), so neither is overwritten before use; both
        # close on exec, and only the dup2 copies (inheritable) reach Chromium.
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def child_fds() -> None:
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            # close_fds would close 3 and 4 after preexec_fn; Python's own fds are not
            # inheritable (PEP 446), so nothing else leaks into the browser.
            close_fds=False,
            preexec_fn=child_fds,
        )
        os.close(high_r)
        os.close(high_w)
        self._out = os.fdopen(to_child_w, "wb", buffering=0)
        self._in = os.fdopen(from_child_r, "rb", buffering=0)
        self._next_id = 0
        self._replies: Dict[int, Dict[str, Any]] = {}
        self.events: List[Dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = self._in.read(65536)
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._cond:
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def call(
        self, method: str, params: Optional[Dict[str, Any]] = None, session: str = "",
        timeout: float = 30,
    ) -> Dict[str, Any]:  # fmt: skip
        """Send one command (to the browser, or to a page's ``session``); its result."""
        with self._cond:
            self._next_id += 1
            msg_id = self._next_id
        msg: Dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while msg_id not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or not self._reader.is_alive():
                    raise CDPError(f"{method}: no reply within {timeout:.0f} s")
                self._cond.wait(min(left, 0.5))
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise CDPError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open_tab(self, url: str, width: int, height: int) -> Tab:
        """A new tab of ``width`` x ``height`` CSS pixels showing ``url``."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        tab = Tab(self, target, session)
        tab.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        tab.call("Page.enable")
        tab.call("Page.navigate", {"url": url})
        return tab

    def close(self) -> None:
        """Quit Chromium (politely, then by force)."""
        try:
            self.call("Browser.close", timeout=5)
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self._out, self._in, self._log):
            try:
                f.close()
            except OSError:
                pass


class Tab:
    """One page of the browser, driven through its flat session."""

    def __init__(self, browser: Browser, target: str, session: str) -> None:
        self.browser = browser
        self.target = target
        self.session = session

    def call(self, method: str, params: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """A command to this page."""
        return self.browser.call(method, params, self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        out = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in out:
            raise CDPError(f"{expression}: {out['exceptionDetails']}")
        return out["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except CDPError as exc:  # the page is still loading (or about:blank)
                value = exc
            else:
                if value:
                    return value
            time.sleep(0.2)
        raise AssertionError(f"{expression} still {value!r} after {timeout:.0f} s")

    def screenshot(self, path: Path) -> Path:
        """The viewport as a PNG file."""
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Close the tab, as a viewer closing it would."""
        self.browser.call("Target.closeTarget", {"targetId": self.target})
