"""``segcam subscribe`` and ``segcam keys`` as real subprocesses against a real publisher."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from segcam.config import load_config
from segcam.pipeline.types import FrameResult
from segcam.publish.sink import MaskPublisherSink


def _segcam(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    return subprocess.run(
        [sys.executable, "-m", "segcam", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def live_publisher():
    """A real publisher sink fed with a moving square mask every 20 ms."""
    cfg = load_config(
        None,
        [
            "publish.enabled=true",
            "publish.bind=['tcp://127.0.0.1:*']",
            "publish.frame_topic=true",
            "publish.telemetry_interval_s=0.3",
        ],
    )

    class Status:
        """Stand-in for runner.status (the sink only calls status())."""

        def status(self):
            return {"fps": 50.0, "backend": "test"}

    sink = MaskPublisherSink(cfg)
    sink.attach(Status())
    sink.start()
    stop = threading.Event()

    def feed() -> None:
        i = 0
        while not stop.is_set():
            mask = np.zeros((60, 80), np.float32)
            mask[10:50, i % 40 : i % 40 + 30] = 0.9
            frame = np.full((60, 80, 3), 128, np.uint8)
            sink.submit(FrameResult(i, time.time_ns(), time.monotonic_ns(), frame, mask))
            i += 1
            time.sleep(0.02)

    t = threading.Thread(target=feed, daemon=True)
    t.start()
    yield sink.endpoints[0]
    stop.set()
    t.join(2)
    sink.stop()


def test_subscribe_json_count(live_publisher: str, tmp_path: Path) -> None:
    save = tmp_path / "saved"
    r = _segcam(
        "subscribe", live_publisher, "--topic", "all", "--count", "5", "--json",
        "--timeout", "30", "--save", str(save),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]  # every line is JSON
    masks = [x for x in records if x.get("topic") == "mask"]
    assert len(masks) == 5
    for rec in masks:
        assert rec["header"]["encoding"] == "rle" and rec["bytes"] > 0
        assert 0 <= rec["publish_ms"] < 30000 and rec["capture_ms"] >= rec["publish_ms"]
        assert 0.1 < rec["foreground"] < 0.4
    assert records[-1]["summary"]["received"]["mask"] >= 5 and "Traceback" not in r.stderr
    pngs = sorted(save.glob("mask_*.png"))
    assert len(pngs) >= 5
    img = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (60, 80) and set(np.unique(img)) <= {0, 255}
    assert list(save.glob("frame_*.jpg"))


def test_subscribe_status_lines_and_show_without_display(live_publisher: str) -> None:
    r = _segcam(
        "subscribe", live_publisher, "--count", "40", "--interval", "0.3", "--show",
        "--timeout", "30",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "--show ignored: no display" in r.stderr
    lines = [x for x in r.stdout.splitlines() if "publish->recv" in x]
    assert lines and "MB/s" in lines[-1] and "decode errors 0" in lines[-1]
    assert r.stdout.splitlines()[-1].startswith("summary {")


def test_subscribe_timeout_exits_nonzero_with_a_hint() -> None:
    r = _segcam("subscribe", "tcp://127.0.0.1:9", "--timeout", "1", "--interval", "0")
    assert r.returncode == 9
    assert "no message from tcp://127.0.0.1:9 for 1 s" in r.stderr
    assert "hint:" in r.stderr and "Traceback" not in r.stderr


def test_keys_generate(tmp_path: Path) -> None:
    r = _segcam("keys", "generate", "--dir", str(tmp_path / "k"), "--name", "viewer")
    assert r.returncode == 0, r.stderr
    secret = tmp_path / "k" / "viewer.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "authorized_keys_dir" in r.stdout
    again = _segcam("keys", "generate", "--dir", str(tmp_path / "k"), "--name", "viewer")
    assert again.returncode != 0 and "--force" in again.stderr
    lines: List[str] = (tmp_path / "k" / "viewer.key").read_text().splitlines()
    assert any("public-key" in x for x in lines)
