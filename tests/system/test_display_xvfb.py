"""display:// in a real window: Xvfb + openbox, segcam on the distribution's GUI OpenCV.

The window is photographed from the X server and compared with the composite segcam
recorded at the same time (the input is a still photo, so every composite is the same);
q and Esc end the run cleanly; fullscreen covers the screen, letterboxed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest
from system_env import Segcam, XServer, decoded_frames

pytestmark = pytest.mark.system

TITLE = "segcam"


@pytest.fixture
def still(tmp_path: Path, portrait_bgr: np.ndarray) -> Path:
    """A photo of a person as a looping still input (512x512)."""
    path = tmp_path / "portrait.png"
    cv2.imwrite(str(path), portrait_bgr)
    return path


def _args(selfie_onnx: Path, still: Path, video: Path, *extra: str) -> List[str]:
    return [
        "run",
        "--set", f"model.path={selfie_onnx}",
        "--input", str(still),
        "--set", "input.loop=true",
        "--output", "display://0",
        "--output", f"file://{video}",
        "--set", "output.codec=MJPG",  # near-lossless frames to compare against
        "--set", f"output.display.title={TITLE}",
        *extra,
    ]  # fmt: skip


def _last_frame(video: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    last = None
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        last, count = frame, count + 1
    cap.release()
    assert last is not None, f"{video} holds no frame"
    return last


def _mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


def _env(xserver: XServer, tmp_path: Path) -> dict:
    env = xserver.env()
    env["SEGCAM_CACHE"] = str(tmp_path / "cache")
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # Qt warns on stderr without one
    return env


def _press(xserver: XServer, window: str, key: str) -> None:
    """Focus the window and type ``key`` through XTEST, like a keyboard would."""
    xserver.run("xdotool", "windowactivate", "--sync", window)
    xserver.run("xdotool", "key", key)


@pytest.mark.parametrize("key", ["q", "Escape"])
def test_window_shows_the_composite_and_quit_key_ends_the_run(
    system_opencv_venv, xserver, selfie_onnx, still, portrait_bgr, tmp_path, key
):
    video = tmp_path / "out.avi"
    args = _args(selfie_onnx, still, video)
    python = system_opencv_venv / "bin" / "python"
    with Segcam(python, args, tmp_path, _env(xserver, tmp_path)) as run:
        window = xserver.find_window(TITLE)
        run.wait_for("fps ", 120)  # the first status line: frames are flowing
        time.sleep(1.0)
        shot = cv2.imread(str(xserver.screenshot(tmp_path / "screen.png")))
        geo = xserver.geometry(window)
        h, w = portrait_bgr.shape[:2]
        # the window opens at the frame's size (1:1), not the toolkit's default
        assert (geo["WIDTH"], geo["HEIGHT"]) == (w, h), geo
        # the window manager places the window; compare the part that is on screen
        x0, y0 = geo["X"], geo["Y"]
        vis_w, vis_h = min(w, xserver.width - x0), min(h, xserver.height - y0)
        assert vis_w > w // 2 and vis_h > h // 2, geo
        seen = shot[y0 : y0 + vis_h, x0 : x0 + vis_w]
        cv2.imwrite(str(tmp_path / "window.png"), seen)

        _press(xserver, window, key)
        t0 = time.monotonic()
        rc = run.wait(15)
        took = time.monotonic() - t0
    log = run.text()
    assert rc == 0, log
    assert "quit key pressed" in log and "stopped: quit key" in log, log
    assert "Traceback" not in log, log
    assert took < 5, f"{key}: the run took {took:.1f} s to end"

    composite = _last_frame(video)  # the recording was finalised: it plays to the end
    assert composite.shape == portrait_bgr.shape
    shown = _mean_diff(seen, composite[:vis_h, :vis_w])
    raw = _mean_diff(seen, portrait_bgr[:vis_h, :vis_w])
    # what the window shows is segcam's composite (the background replaced), not the input
    assert shown < 3.0, f"window vs composite: mean difference {shown:.2f}"
    assert raw > 2 * shown, f"window vs raw input {raw:.2f}, vs composite {shown:.2f}"


def test_fullscreen_window_covers_the_screen_letterboxed(
    system_opencv_venv, xserver, selfie_onnx, still, portrait_bgr, tmp_path
):
    video = tmp_path / "out.avi"
    args = _args(selfie_onnx, still, video, "--set", "output.display.fullscreen=true")
    python = system_opencv_venv / "bin" / "python"
    with Segcam(python, args, tmp_path, _env(xserver, tmp_path)) as run:
        window = xserver.find_window(TITLE)
        run.wait_for("fps ", 120)
        time.sleep(1.0)
        shot = cv2.imread(str(xserver.screenshot(tmp_path / "screen.png")))
        geo = xserver.geometry(window)
        state = xserver.run("xprop", "-id", window, "_NET_WM_STATE")
        _press(xserver, window, "Escape")
        rc = run.wait(15)
    assert rc == 0, run.text()
    assert "_NET_WM_STATE_FULLSCREEN" in state, state
    screen = (0, 0, xserver.width, xserver.height)
    assert (geo["X"], geo["Y"], geo["WIDTH"], geo["HEIGHT"]) == screen

    # the picture keeps its aspect ratio: scaled to the screen's height, centred
    h, w = portrait_bgr.shape[:2]
    scale = min(xserver.width / w, xserver.height / h)
    sw, sh = round(w * scale), round(h * scale)
    x0, y0 = (xserver.width - sw) // 2, (xserver.height - sh) // 2
    seen = shot[y0 : y0 + sh, x0 : x0 + sw]
    cv2.imwrite(str(tmp_path / "window.png"), seen)
    expected = cv2.resize(_last_frame(video), (sw, sh), interpolation=cv2.INTER_LINEAR)
    inner = (slice(4, -4), slice(4, -4))  # edge rows differ by the toolkit's rounding
    diff = _mean_diff(seen[inner], expected[inner])
    assert diff < 6.0, f"fullscreen picture vs composite: mean difference {diff:.2f}"


def test_closing_the_window_ends_the_run(
    system_opencv_venv, xserver, selfie_onnx, still, portrait_bgr, tmp_path
):
    """The window manager's close (Alt+F4, the title bar's X) stops segcam like q does;
    the window must not come back with the next frame."""
    video = tmp_path / "out.avi"
    args = _args(selfie_onnx, still, video)
    python = system_opencv_venv / "bin" / "python"
    with Segcam(python, args, tmp_path, _env(xserver, tmp_path)) as run:
        window = xserver.find_window(TITLE)
        run.wait_for("fps ", 120)
        _press(xserver, window, "alt+F4")  # openbox: close (WM_DELETE_WINDOW)
        rc = run.wait(15)
    log = run.text()
    assert rc == 0, log
    assert "window closed" in log and "stopped: window closed" in log, log
    assert len(decoded_frames(video)) > 0, "the recording does not play"
