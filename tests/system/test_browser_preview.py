"""http:// preview in a real browser: Debian's Chromium, headless, driven over DevTools.

segcam serves a still photo's composite; Chromium renders the page (the MJPEG stream in an
<img> and the status panel fed by /status.json). Several tabs watch at once, and a closed
tab is no longer counted by the server.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List

import cv2
import numpy as np
import pytest
from cdp import Browser, chromium_path
from system_env import Segcam

pytestmark = pytest.mark.system

WIDTH = 512  # the photo's width: the page shows it 1:1 in a viewport this wide
HEIGHT = 600


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Headless Chromium with a fresh profile."""
    if chromium_path() is None:
        pytest.skip("needs Chromium: apt-get install chromium")
    b = Browser(tmp_path / "profile", tmp_path / "chromium.log")
    try:
        b.call("Browser.getVersion")
        yield b
    finally:
        b.close()


@pytest.fixture
def preview(tmp_path: Path, selfie_onnx: Path, portrait_bgr: np.ndarray) -> Iterator[str]:
    """``segcam run`` serving the composite of a still photo; the base URL."""
    still = tmp_path / "portrait.png"
    cv2.imwrite(str(still), portrait_bgr)
    args = [
        "run",
        "--set", f"model.path={selfie_onnx}",
        "--input", str(still),
        "--set", "input.loop=true",
        "--output", "http://127.0.0.1:0",
    ]  # fmt: skip
    env = {"SEGCAM_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    with Segcam(Path(sys.executable), args, tmp_path, env) as run:
        run.wait_for("web preview on http://", 120)
        port = re.search(r"web preview on http://127\.0\.0\.1:(\d+)/", run.text())
        assert port, run.text()
        run.wait_for("pipeline running", 120)
        yield f"http://127.0.0.1:{port.group(1)}"
        run.proc.terminate()
        assert run.wait(15) == 0, run.text()
        assert "Traceback" not in run.text(), run.text()


def _status(base: str) -> Dict[str, Any]:
    with urllib.request.urlopen(base + "/status.json", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return json.loads(resp.read())


def _snapshot(base: str) -> np.ndarray:
    with urllib.request.urlopen(base + "/snapshot.jpg", timeout=10) as resp:
        data = resp.read()
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _wait_viewers(base: str, count: int, timeout: float = 10) -> float:
    """Seconds until the server counts ``count`` streaming viewers (fails otherwise)."""
    t0 = time.monotonic()
    seen = None
    while time.monotonic() - t0 < timeout:
        seen = _status(base)["viewers"]
        if seen == count:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"server counts {seen} viewers, expected {count} after {timeout} s")


PANEL = "document.getElementById('status').innerText"
FRAME_NO = "(document.getElementById('frames').textContent.match(/\\d+/) || [0])[0] | 0"
PLAYING = "document.getElementById('live').naturalWidth"  # a stream never "completes"


def test_page_shows_the_live_composite_and_its_status(browser, preview, portrait_bgr, tmp_path):
    tab = browser.open_tab(preview + "/", WIDTH, HEIGHT)
    assert tab.wait_for(PLAYING) == WIDTH
    first = tab.wait_for(FRAME_NO)
    panel = tab.evaluate(PANEL)
    time.sleep(2.5)
    later = tab.evaluate(FRAME_NO)
    shot = cv2.imread(str(tab.screenshot(tmp_path / "page.png")))
    snap = _snapshot(preview)
    status = _status(preview)

    # the panel polls /status.json: it shows the runner's figures and keeps moving
    assert later > first, (first, later)
    assert re.search(r"\blive\b", panel) and " fps" in panel, panel
    assert "drops " in panel and "governor normal" in panel, panel
    assert "1 viewer" in panel, panel
    assert status["viewers"] == 1 and status["fps"] > 0 and status["governor"] == "normal"

    # the stream is drawn 1:1 at the top of the page: it is the composite, not a blank
    h, w = portrait_bgr.shape[:2]
    top = tab.evaluate("document.getElementById('status').getBoundingClientRect().top")
    assert top >= h, f"the status panel covers the picture (top {top})"
    seen = shot[:h, :w].astype(np.int16)
    assert seen.std() > 30, "the page shows a blank picture"
    diff = float(np.abs(seen - snap.astype(np.int16)).mean())
    raw = float(np.abs(seen - portrait_bgr.astype(np.int16)).mean())
    assert diff < 4.0, f"page vs /snapshot.jpg: mean difference {diff:.2f}"
    assert raw > 2 * diff, f"page vs the raw input {raw:.2f}: not the composite?"
    tab.close()
    _wait_viewers(preview, 0)


def test_several_viewers_and_a_closed_tab_is_cleaned_up(browser, preview, tmp_path):
    tabs = [browser.open_tab(preview + "/", WIDTH, HEIGHT) for _ in range(3)]
    for tab in tabs:
        assert tab.wait_for(PLAYING) == WIDTH
    _wait_viewers(preview, 3)
    for tab in tabs:
        tab.wait_for(f"/3 viewers/.test({PANEL})")

    # every tab keeps receiving frames while the others watch
    before: List[int] = [tab.wait_for(FRAME_NO) for tab in tabs]
    time.sleep(2.0)
    for i, tab in enumerate(tabs):
        shot = cv2.imread(str(tab.screenshot(tmp_path / f"tab{i}.png")))
        assert shot[:WIDTH, :WIDTH].std() > 30, f"tab {i} shows a blank picture"
        assert tab.evaluate(FRAME_NO) > before[i]

    tabs[0].close()
    tabs[1].close()
    left_after = _wait_viewers(preview, 1)
    tabs[2].wait_for(f"/1 viewer\\b/.test({PANEL})")
    tabs[2].close()
    _wait_viewers(preview, 0)
    assert left_after < 5, f"closed tabs were counted for {left_after:.1f} s"
