"""What the desktop/browser/GStreamer system tests share: real tools, real environments.

* ``system_opencv_venv``: a venv made the way docs/jetson.md says (``--system-site-packages``
  over the distribution's Python), in which segcam runs on the distribution's
  ``python3-opencv`` (GUI windows and GStreamer, like JetPack's build);
* ``xserver``: a real X server (Xvfb) with a real window manager (openbox), as on a desktop;
* ``Segcam``: a ``segcam run`` subprocess whose log lines are collected as they come.

Each piece skips with the Debian package that provides it when it is missing; ``.ci/run``
installs them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")  # the distribution's Python (JetPack's on a Jetson)
SYSTEM_DIST_PACKAGES = "/usr/lib/python3/dist-packages"


def decoded_frames(video: Path) -> List[Any]:
    """Every frame OpenCV decodes from ``video`` (an empty list if it does not open)."""
    import cv2

    cap = cv2.VideoCapture(str(video))
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out


def require_tools(tools: Dict[str, str]) -> None:
    """Skip unless every executable is on PATH; ``tools`` maps name -> Debian package."""
    missing = [f"{n} (apt-get install {pkg})" for n, pkg in tools.items() if not shutil.which(n)]
    if missing:
        pytest.skip("needs " + ", ".join(missing))


def _system_cv2() -> Optional[str]:
    """The distribution's cv2 build information, or None when python3-opencv is absent."""
    if not SYSTEM_PYTHON.exists():
        return None
    probe = subprocess.run(
        [str(SYSTEM_PYTHON), "-c", "import cv2; print(cv2.getBuildInformation())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return probe.stdout if probe.returncode == 0 else None


@pytest.fixture(scope="session")
def system_cv2_build() -> str:
    """The build information of the distribution's python3-opencv (skip without it)."""
    info = _system_cv2()
    if info is None:
        pytest.skip("needs the distribution's OpenCV: apt-get install python3-opencv")
    return info


@pytest.fixture(scope="session")
def system_opencv_venv(system_cv2_build: str) -> Path:
    """A venv over /usr/bin/python3 with --system-site-packages and segcam installed in it.

    Made as docs/jetson.md instructs (``pip install -e ".[system-opencv]"`` is that page's
    command for a distribution OpenCV on x86). Kept under .cache/ between runs, one per
    setup.py version, so a rerun does not reinstall; segcam is an editable install, so the
    code under test is always the checkout's.
    """
    key = hashlib.sha256((REPO / "setup.py").read_bytes()).hexdigest()[:12]
    venv = Path(os.environ.get("SEGCAM_SYSTEM_VENV", REPO / ".cache" / f"system-opencv-{key}"))
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run(
            [str(SYSTEM_PYTHON), "-m", "venv", "--system-site-packages", str(venv)],
            check=True,
            timeout=120,
        )
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", f"{REPO}[system-opencv]"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if pip.returncode != 0:
            pytest.fail(f"pip install into the system-site venv failed:\n{pip.stderr[-3000:]}")
        (venv / ".installed").write_text("ok\n")
    return venv


# ------------------------------------------------------------------------------ X server


class XServer:
    """An Xvfb display with openbox managing its windows."""

    def __init__(self, display: str, width: int, height: int) -> None:
        self.display = display
        self.width = width
        self.height = height

    def env(self) -> Dict[str, str]:
        """The environment for a client of this display."""
        env = dict(os.environ)
        env.pop("WAYLAND_DISPLAY", None)
        env["DISPLAY"] = self.display
        return env

    def run(self, *cmd: str, timeout: float = 20) -> str:
        """Run an X client (xdotool, import) against this display; its stdout."""
        out = subprocess.run(
            list(cmd), env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if out.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
        return out.stdout

    def screenshot(self, path: Path) -> Path:
        """The whole screen as a PNG (ImageMagick's import)."""
        self.run("import", "-window", "root", str(path))
        return path

    def find_window(self, title: str, timeout: float = 60) -> str:
        """The id of the visible window titled ``title`` once it is mapped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--name", f"^{title}$"],
                env=self.env(),
                capture_output=True,
                text=True,
            ).stdout.split()
            if found:
                return found[0]
            time.sleep(0.2)
        raise AssertionError(f"no window titled {title!r} appeared within {timeout:.0f} s")

    def geometry(self, window: str) -> Dict[str, int]:
        """X, Y (on the screen, inside the frame the window manager drew), WIDTH, HEIGHT.

        From xwininfo: xdotool's getwindowgeometry adds the frame's offset twice under a
        reparenting window manager.
        """
        out = self.run("xwininfo", "-id", window)
        fields = {
            "Absolute upper-left X": "X",
            "Absolute upper-left Y": "Y",
            "Width": "WIDTH",
            "Height": "HEIGHT",
        }
        geo: Dict[str, int] = {}
        for line in out.splitlines():
            name, _, value = line.strip().partition(":")
            if name in fields:
                geo[fields[name]] = int(value)
        return geo


@pytest.fixture
def xserver(tmp_path: Path) -> Iterator[XServer]:
    """A fresh Xvfb (1280x720) with openbox; both stopped after the test."""
    require_tools({"Xvfb": "xvfb", "openbox": "openbox", "xdotool": "xdotool"})
    require_tools({"xprop": "x11-utils", "xwininfo": "x11-utils"})
    require_tools({"import": "imagemagick"})
    width, height = 1280, 720
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{width}x{height}x24"]
        + ["-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "xvfb.log", "w"),  # noqa: SIM115 - closed with the process
    )
    os.close(write_fd)
    procs: List[subprocess.Popen] = [xvfb]
    try:
        with os.fdopen(read_fd) as f:
            number = f.readline().strip()  # written once the server accepts clients
        if not number:
            pytest.fail(f"Xvfb did not start: {(tmp_path / 'xvfb.log').read_text()}")
        server = XServer(f":{number}", width, height)
        wm = subprocess.Popen(
            ["openbox"],
            env=server.env(),
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "openbox.log", "w"),  # noqa: SIM115
        )
        procs.append(wm)
        _wait_for_wm(server)
        yield server
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_wm(server: XServer, timeout: float = 20) -> None:
    """Wait until the window manager announces itself (_NET_SUPPORTING_WM_CHECK)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["xprop", "-root", "_NET_SUPPORTING_WM_CHECK"],
            env=server.env(),
            capture_output=True,
            text=True,
        ).stdout
        if "window id" in out:
            return
        time.sleep(0.1)
    raise AssertionError("openbox did not start on the Xvfb display")


# ------------------------------------------------------------------------------ segcam


class Segcam:
    """``segcam ARGS`` as a subprocess; stderr lines are collected by a thread."""

    def __init__(
        self, python: Path, args: List[str], cwd: Path, env: Optional[Dict[str, str]] = None
    ) -> None:
        env = dict(env if env is not None else os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [str(python), "-m", "segcam", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def text(self) -> str:
        """Everything logged so far."""
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, marker: str, timeout: float = 120) -> None:
        """Wait until a log line contains ``marker`` (fails with the log otherwise)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(marker in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no {marker!r} in segcam's log:\n" + self.text())
                self._cond.wait(min(left, 0.5))

    def wait(self, timeout: float) -> int:
        """The exit code, once segcam ended within ``timeout`` (fails otherwise)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log = self.text()
            raise AssertionError(f"segcam still running after {timeout} s:\n{log}") from None
        self._reader.join(5)
        return rc

    def stop(self) -> None:
        """Kill segcam if it still runs (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Segcam:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
