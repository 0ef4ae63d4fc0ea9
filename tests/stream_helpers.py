"""Helpers for mask-stream tests: ``segcam run`` publishing on an ephemeral loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

from segcam.publish import protocol
from segcam.publish.subscriber import MaskSubscriber


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(tmp_path: Path) -> Dict[str, str]:
    out = dict(os.environ)
    out.pop("DISPLAY", None)
    out.pop("WAYLAND_DISPLAY", None)
    out["SEGCAM_CACHE"] = str(tmp_path / "cache")
    out["PYTHONUNBUFFERED"] = "1"
    return out


def segcam_run(
    tmp_path: Path, model: Path, url: str, *sets: str, seconds: float = 30, size=(160, 120)
) -> subprocess.Popen:
    """``segcam run`` publishing on ``url``; ``sets`` are extra ``key=value`` overrides."""
    cmd = [sys.executable, "-m", "segcam", "run", "--input", "demo", "--seconds", str(seconds)]
    base = [
        f"model.path={model}",
        f"input.width={size[0]}",
        f"input.height={size[1]}",
        "thermal.enabled=false",
        "publish.enabled=true",
        f"publish.bind=['{url}']",
        *sets,
    ]
    for item in base:
        cmd += ["--set", item]
    cmd += ["--stats-json", str(tmp_path / f"run-{url.rsplit(':', 1)[1]}.json")]
    return subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> str:
    """Stop a ``segcam run`` (SIGTERM), check it exited cleanly; its stdout + stderr."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    return out + err


def run_stats(tmp_path: Path, url: str) -> Dict[str, Any]:
    return json.loads((tmp_path / f"run-{url.rsplit(':', 1)[1]}.json").read_text())


def wait_first(sub: MaskSubscriber, timeout: float = 90) -> protocol.Message:
    msg = sub.recv(timeout=timeout)
    assert msg is not None, "no message from segcam run"
    return msg
