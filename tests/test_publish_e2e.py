"""End to end: ``segcam run`` in a subprocess publishes to real subscribers on loopback.

The stalled-subscriber test measures the pipeline's fps with and without a subscriber
that never reads and prints the numbers (speed is reported, not asserted); it asserts
only that drops were counted and the pipeline kept producing frames.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
import zmq

from segcam.publish.subscriber import MaskSubscriber

SMALL = ["--set", "input.width=320", "--set", "input.height=240"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env["SEGCAM_CACHE"] = str(tmp_path / "cache")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(tmp_path: Path, selfie_onnx: Path, *args: str, seconds: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "segcam", "run", "--set", f"model.path={selfie_onnx}", *SMALL]
    cmd += ["--set", "thermal.enabled=false", "--input", "demo", "--seconds", str(seconds)]
    cmd += list(args)
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, timeout: float = 120) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    return err


def test_run_publishes_masks_frames_and_telemetry(selfie_onnx: Path, tmp_path: Path) -> None:
    url = f"tcp://127.0.0.1:{_free_port()}"
    stats_file = tmp_path / "stats.json"
    proc = _run(
        tmp_path, selfie_onnx,
        "--set", "publish.enabled=true", "--set", f"publish.bind=['{url}']",
        "--set", "publish.frame_topic=true", "--set", "publish.telemetry_interval_s=0.5",
        "--stats-json", str(stats_file),
        seconds=60,
    )  # fmt: skip
    got: Dict[str, List[Any]] = {"mask": [], "frame": [], "telemetry": []}
    try:
        with MaskSubscriber(url, ["mask", "frame", "telemetry"], timeout=90) as sub:
            for msg in sub:
                got[msg.topic].append(msg)
                if len(got["mask"]) >= 8 and got["frame"] and len(got["telemetry"]) >= 2:
                    break
            errors = sub.stats["decode_errors"]
    finally:
        proc.terminate()
    err = _finish(proc)
    assert len(got["mask"]) >= 8, err
    assert errors == 0
    for msg in got["mask"]:
        h = msg.header
        assert (h["width"], h["height"]) == (320, 240)
        assert (h["encoding"], h["values"], h["version"]) == ("rle", "binary", 1)
        assert h["model"] and 0 < h["threshold"] < 1
        assert h["capture_ts_ns"] <= h["publish_ts_ns"] <= msg.recv_ts_ns
        assert msg.data.shape == (240, 320) and set(np.unique(msg.data)) <= {0, 1}
    # The demo scene has a person in it: a real mask, not an empty one.
    assert 0.02 < float(np.mean([m.data.mean() for m in got["mask"]])) < 0.9
    ids = [m.header["frame_id"] for m in got["mask"]]
    assert ids == sorted(ids)
    assert got["frame"][0].data.shape == (240, 320, 3)
    status = got["telemetry"][-1].data
    assert status["backend"] and "stages" in status and "fps" in status
    assert status["publisher"]["sent_mask"] > 0
    final = json.loads(stats_file.read_text())
    assert final["sinks"]["publish"]["sent_mask"] >= len(got["mask"])


def _fps_run(tmp_path: Path, selfie_onnx: Path, name: str, *args: str, seconds: float):
    stats_file = tmp_path / f"{name}.json"
    proc = _run(tmp_path, selfie_onnx, "--stats-json", str(stats_file), *args, seconds=seconds)
    return proc, stats_file


@pytest.mark.slow
def test_stalled_subscriber_does_not_slow_the_pipeline(selfie_onnx: Path, tmp_path: Path) -> None:
    """fps of a 30 fps camera-like pipeline while publishing with no subscriber vs with a
    stalled one (lossy and nodrop modes); numbers printed and left in stall-report.txt."""
    seconds, stall_s = 8.0, 5.0
    # A camera-like source (demo paced at 30 fps, frames dropped when late) and big
    # messages (raw probabilities + JPEG frames) so a stalled reader's buffers fill fast.
    paced = ["--set", "input.realtime=true", "--set", "input.fps=30"]
    big = paced + ["--set", "publish.encoding=raw", "--set", "publish.values=probability",
           "--set", "publish.frame_topic=true", "--set", "publish.sndhwm=2"]  # fmt: skip
    results: Dict[str, Dict[str, Any]] = {}
    ctx = zmq.Context()
    try:
        on = ["--set", "publish.enabled=true"] + big
        runs = [
            ("publishing-no-subscriber", on, False),
            ("stalled-lossy", on, True),
            ("stalled-nodrop", on + ["--set", "publish.nodrop=true"], True),
        ]
        for name, extra, stall in runs:
            url = f"tcp://127.0.0.1:{_free_port()}"
            stalled: Optional[zmq.Socket] = None
            if extra:
                extra = extra + ["--set", f"publish.bind=['{url}']"]
            if stall:
                stalled = ctx.socket(zmq.SUB)  # connects, subscribes, never reads
                stalled.setsockopt(zmq.RCVHWM, 2)
                stalled.setsockopt(zmq.LINGER, 0)
                stalled.setsockopt(zmq.SUBSCRIBE, b"")
                stalled.connect(url)
            proc, stats_file = _fps_run(tmp_path, selfie_onnx, name, *extra, seconds=seconds)
            gaps = None
            if stalled is not None:
                # poll() peeks without reading: wait for the stream, stay stalled, then
                # read while the publisher still runs, so its drops show as seq gaps.
                deadline = time.monotonic() + 120
                while not stalled.poll(200) and time.monotonic() < deadline:
                    pass
                time.sleep(stall_s)
                gaps = _gaps_in_backlog(stalled)
                stalled.close(0)
            _finish(proc)
            st = json.loads(stats_file.read_text())
            results[name] = {
                "average_fps": st["average_fps"],
                "frames_out": st["frames_out"],
                "publish": st["sinks"].get("publish"),
                "stalled_subscriber_seq_gaps": gaps,
            }
    finally:
        ctx.term()
    base = results["publishing-no-subscriber"]["average_fps"]
    lines = [f"load: {os.getloadavg()}"]
    for name, r in results.items():
        change = 100.0 * (r["average_fps"] - base) / base if base else float("nan")
        pub = r["publish"] or {}
        lines.append(
            f"{name}: {r['average_fps']:.2f} fps ({change:+.1f}% vs publishing-no-subscriber), "
            f"frames {r['frames_out']}, sent {pub.get('sent_mask')}, "
            f"dropped_hwm {pub.get('dropped_hwm')}, dropped_busy {pub.get('dropped_busy')}, "
            f"subscriber seq gaps {r['stalled_subscriber_seq_gaps']}"
        )
    print("\n".join(lines))
    (tmp_path / "stall-report.txt").write_text("\n".join(lines))
    for name in ("stalled-lossy", "stalled-nodrop"):
        assert results[name]["frames_out"] > 0
    assert results["stalled-nodrop"]["publish"]["dropped_hwm"] > 0
    assert results["stalled-lossy"]["stalled_subscriber_seq_gaps"] > 0


def _gaps_in_backlog(sock: zmq.Socket) -> int:
    """Read what a stalled subscriber had queued; count the mask seq numbers it missed."""
    seqs: List[int] = []
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if not sock.poll(1500):
            break
        frames = sock.recv_multipart()
        if frames[0] == b"mask":
            seqs.append(json.loads(frames[1])["seq"])
    if len(seqs) < 2:
        return 0
    return int(sum(b - a - 1 for a, b in zip(seqs, seqs[1:]) if b > a + 1))
