"""``segcam run``, ``segcam demo`` and ``segcam bench`` as real subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

import pytest
from pipeline_helpers import count_video_frames

SMALL = ["--set", "input.width=320", "--set", "input.height=180"]  # 16:9 like the demo


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env["SEGCAM_CACHE"] = str(tmp_path / "cache")  # never touch the user's cache
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _segcam(*args: str) -> List[str]:
    return [sys.executable, "-m", "segcam", *args]


def _model(selfie_onnx: Path) -> List[str]:
    return ["--set", f"model.path={selfie_onnx}"]


class _Lines:
    """Collects a subprocess's stderr lines in a thread; waits for a marker."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: List[str] = []
        self._cond = threading.Condition()
        self._t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._t.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def text(self) -> str:
        self._t.join(5)
        return "".join(self.lines)


def _spawn(cmd: List[str], tmp_path: Path) -> Tuple[subprocess.Popen, _Lines]:
    """Start ``segcam`` in ``tmp_path`` with pipes, and a reader of its output lines."""
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, _Lines(proc)


def _sigterm_after_frames(
    cmd: List[str], tmp_path: Path, stats: Path, marker: str, sig: int = signal.SIGTERM
):
    proc, lines = _spawn(cmd, tmp_path)
    try:
        assert lines.wait_for(marker, 120), lines.text()
        time.sleep(1.5)  # let frames flow into the recording
        t0 = time.monotonic()
        proc.send_signal(sig)
        # Not communicate(): it would read stderr too, racing the line collector.
        proc.wait(timeout=30)
        elapsed = time.monotonic() - t0
        out = proc.stdout.read()  # the summary: small, fits the pipe
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, elapsed, out, lines.text(), json.loads(stats.read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_run_within_2s_and_the_recording_is_complete(selfie_onnx, tmp_path, sig):
    video = tmp_path / "rec.mp4"
    stats = tmp_path / "stats.json"
    cmd = _segcam(
        "run",
        *_model(selfie_onnx),
        *SMALL,
        "--input",
        "demo",
        "--output",
        f"file://{video}",
        "--stats-json",
        str(stats),
    )
    code, elapsed, out, err, st = _sigterm_after_frames(
        cmd, tmp_path, stats, "pipeline running", sig
    )
    name = signal.Signals(sig).name
    # SIGTERM is systemd's clean stop (0); SIGINT is Ctrl-C, 130 as shells expect.
    assert code == (130 if sig == signal.SIGINT else 0), err
    assert st["exit_code"] == code
    assert elapsed < 2.0, f"took {elapsed:.2f}s to stop\n{err}"
    assert "Traceback" not in err
    assert name in err and "glass-to-glass" in out  # summary printed
    written = st["sinks"][f"file:{video}"]["written"]
    assert written > 0 and st["stop_reason"] == name
    assert count_video_frames(video) == (written, written)


def test_sigterm_stops_demo_and_it_leaves_video_and_sheet(selfie_onnx, tmp_path) -> None:
    out_dir = tmp_path / "demo-out"
    stats = tmp_path / "demo.json"
    cmd = _segcam(
        "demo",
        *_model(selfie_onnx),
        *SMALL,
        "--seconds",
        "60",
        "--output-dir",
        str(out_dir),
        "--stats-json",
        str(stats),
    )
    code, elapsed, out, err, st = _sigterm_after_frames(cmd, tmp_path, stats, "pipeline running")
    assert code == 0, err
    assert elapsed < 2.0, f"took {elapsed:.2f}s to stop\n{err}"
    video = out_dir / "segcam-demo.mp4"
    written = st["sinks"][f"file:{video}"]["written"]
    assert count_video_frames(video) == (written, written)
    assert (out_dir / "segcam-demo-sheet.png").is_file()
    assert "no window" in err  # headless: files only, said so


def test_demo_runs_headless_for_its_seconds(selfie_onnx, tmp_path) -> None:
    out_dir = tmp_path / "d"
    proc = subprocess.run(
        _segcam(
            "demo", *_model(selfie_onnx), *SMALL, "--seconds", "3", "--output-dir", str(out_dir)
        ),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "contact sheet:" in proc.stdout and "glass-to-glass" in proc.stdout
    frames = int(proc.stdout.split("segcam-demo.mp4 (")[1].split(" frames")[0])
    assert frames > 0
    assert count_video_frames(out_dir / "segcam-demo.mp4") == (frames, frames)
    import cv2

    sheet = cv2.imread(str(out_dir / "segcam-demo-sheet.png"))
    assert sheet is not None and sheet.shape[1] == 3 * 480
    # The demo scores its own masks against the scene's true silhouette.
    iou_line = [line for line in proc.stdout.splitlines() if "true silhouette" in line][0]
    low, high = (float(v) for v in iou_line.split("IoU ")[1].split(" ")[0].split("-"))
    # The demo is live: on a loaded machine it drops frames, and which frames get sampled
    # depends on speed; one sampled frame scored 0.53 in CI at this small size (0.78-0.98
    # usually). Every frame processed in order is held to 0.85 by test_pipeline_runner.py.
    assert low >= 0.45 and high >= 0.9, iou_line


def test_run_file_input_to_file_output_keeps_every_frame(selfie_onnx, tmp_path) -> None:
    from pipeline_helpers import write_demo_video

    src = write_demo_video(tmp_path / "in.mp4", 15)
    out = tmp_path / "out.mp4"
    proc = subprocess.run(
        _segcam("run", *_model(selfie_onnx), "--input", str(src), "--output", f"file://{out}"),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert count_video_frames(out) == (15, 15)


BAD_INPUTS = [
    (["--input", "foo://bar"], 5, "unknown input scheme"),
    (["--input", "/nonexistent/clip.mp4"], 5, "does not exist"),
    (["--input", "/dev/video9"], 5, "/dev/video9"),
    (["--output", "display://0"], 6, "display://0 cannot open a window"),
    (["--output", "file:///proc/segcam/out.mp4"], 6, "cannot write"),
    (["--output", "rtp://1.2.3.4:5000"], 6, "unknown output"),
    (["--set", "pipeline.queue_depth=0"], 2, "pipeline.queue_depth"),
]


@pytest.mark.parametrize("args, code, message", BAD_INPUTS)
def test_bad_input_is_a_clear_message_and_exit_code(tmp_path, args, code, message) -> None:
    proc = subprocess.run(
        _segcam("run", "--set", f"model.path={tmp_path / 'unused.onnx'}", *args),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr
    assert "segcam: error:" in proc.stderr and "segcam: hint:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_model_file_is_a_clear_error(tmp_path) -> None:
    proc = subprocess.run(
        _segcam("run", "--set", f"model.path={tmp_path / 'nope.onnx'}", "--frames", "1"),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3 and "nope.onnx does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_json_has_both_modes(selfie_onnx, tmp_path) -> None:
    proc = subprocess.run(
        _segcam(
            "bench",
            *_model(selfie_onnx),
            "--frames",
            "6",
            "--warmup",
            "2",
            "--resolution",
            "320x240",
            "--json",
        ),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["sequential_fps"] > 0 and result["pipelined_fps"] > 0
    assert result["resolution"] == "320x240"
    for name in ("capture", "preprocess", "infer", "composite"):
        assert result["stages"][name]["p50_ms"] > 0
        assert result["stages"][name]["p95_ms"] >= result["stages"][name]["p50_ms"]
    assert set(result["glass_to_glass_ms"]) >= {"p50", "p95"}


def test_bench_rejects_a_bad_resolution(tmp_path) -> None:
    proc = subprocess.run(
        _segcam("bench", "--resolution", "big"),
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "WIDTHxHEIGHT" in proc.stderr


def test_input_lost_for_good_mid_run_exits_with_its_error(selfie_onnx, tmp_path) -> None:
    """An image folder that disappears mid-run and never comes back (real files)."""
    import shutil

    import cv2

    from segcam.demo_scene import DemoScene

    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), DemoScene(160, 90, 30.0).render(0)[0])
    cmd = _segcam(
        "run",
        *_model(selfie_onnx),
        "--input",
        str(folder),
        "--set",
        "input.loop=true",
        "--set",
        "input.reconnect.initial_s=0.05",
        "--set",
        "input.reconnect.max_attempts=2",
    )
    proc, lines = _spawn(cmd, tmp_path)
    try:
        assert lines.wait_for("pipeline running", 120), lines.text()
        shutil.rmtree(folder)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = lines.text()
    assert proc.returncode == 5, err
    assert "segcam: error: input" in err and "not back after 2 attempts" in err
    assert "Traceback" not in err


def test_sigterm_ends_run_while_a_reload_hangs(selfie_onnx, tmp_path) -> None:
    """SIGHUP re-reads the config on a thread; if that read hangs (the file is now a FIFO
    with no writer: a real blocked read, like a config on a dead network mount), SIGTERM
    must still end ``segcam run``. A non-daemon reload thread kept the process alive."""
    config = tmp_path / "segcam.yaml"
    config.write_text("input:\n  uri: demo\n")
    cmd = _segcam("run", "--config", str(config), *_model(selfie_onnx), *SMALL, "--output", "none")
    proc, lines = _spawn(cmd, tmp_path)
    try:
        assert lines.wait_for("pipeline running", 120), lines.text()
        config.unlink()
        os.mkfifo(str(config))
        proc.send_signal(signal.SIGHUP)
        assert lines.wait_for("re-reading", 30), lines.text()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        fd = os.open(str(config), os.O_RDWR | os.O_NONBLOCK)  # no reader is left blocked
        os.close(fd)
    assert code == 0, lines.text()
