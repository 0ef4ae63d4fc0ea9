"""Helpers of the recording tests: ffprobe, segcam subprocesses that log to a file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest

PROGRESS = re.compile(r"progress: (\d+) frames written to (\S+)")


def need_ffprobe() -> str:
    """Path of Debian's ffprobe (``apt-get install ffmpeg``; .ci/run installs it)."""
    tool = shutil.which("ffprobe")
    if tool is None:
        pytest.skip("ffprobe not installed (apt-get install ffmpeg)")
    return tool


def need_pyav() -> None:
    """Skip unless PyAV (the `record` extra) is importable."""
    pytest.importorskip("av", reason="PyAV not installed (pip install 'segcam[record]')")


def probe_frames(path: Path) -> int:
    """Frames ffprobe decodes in ``path``; fails the test if ffprobe cannot open it."""
    done = subprocess.run(
        [
            need_ffprobe(),
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames,codec_name",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"ffprobe cannot open {path}: {done.stderr}"
    streams = json.loads(done.stdout).get("streams") or []
    assert streams, f"ffprobe finds no video stream in {path}: {done.stderr}"
    return int(streams[0].get("nb_read_frames") or 0)


def probe_codec(path: Path) -> str:
    """Codec name of the first video stream (h264, vp9, ...)."""
    done = subprocess.run(
        [
            need_ffprobe(),
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "default=nw=1:nk=1",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def env_for(tmp_path: Path) -> dict:
    """Environment of a segcam subprocess: no display, its own cache, unbuffered."""
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env["SEGCAM_CACHE"] = str(tmp_path / "cache")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Run:
    """``segcam ... run`` in a subprocess whose stderr goes to a file."""

    def __init__(self, args: List[str], workdir: Path, name: str = "run") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"{name}.log"
        self._fh = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "segcam", "--log-level", "debug", "run", *args],
            cwd=workdir,
            env=env_for(workdir),
            stdout=subprocess.DEVNULL,
            stderr=self._fh,
        )

    def text(self) -> str:
        """Everything logged so far."""
        return self.log.read_text(errors="replace")

    def wait_for(self, marker: str, timeout: float = 120.0) -> bool:
        """Wait until ``marker`` is logged (False on timeout or exit)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.text():
                return True
            if self.proc.poll() is not None:
                return marker in self.text()
            time.sleep(0.05)
        return False

    def reported(self, path: Optional[Path] = None) -> int:
        """Frames the recorder last reported written (to ``path``), 0 if none yet."""
        last = 0
        for m in PROGRESS.finditer(self.text()):
            if path is None or m.group(2) == str(path):
                last = int(m.group(1))
        return last

    def finish(self, timeout: float = 60.0) -> int:
        """Wait for the exit (kill after ``timeout``); the exit code."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._fh.close()
        return self.proc.returncode
