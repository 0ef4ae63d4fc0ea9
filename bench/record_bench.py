"""Benchmark of the recorders (a benchmark, not a test: it reports, asserts nothing).

Two parts:

1. encode: for 1280x720 and 1920x1080 demo-scene composites (a person walking over a
   scrolling landscape, blurred background: what segcam records), every recorder available
   here writes ``--frames`` frames through :class:`segcam.recording.recorder.SegmentRecorder`
   exactly as the file sink does. Reported per frame: wall time of ``write`` (the sink
   thread's time), CPU time of the whole process (encoder threads included), and the bytes
   a minute of video takes. Today's recorder, OpenCV's mp4v, is the reference.
2. run: ``segcam run`` file -> file at 1080p (a demo clip written first), the default
   recorder against ``--set output.codec=mp4v --set output.record.recorder=opencv`` (the
   old behaviour) and against no output, alternating, ``--pairs`` times; fps from
   ``--stats-json`` (``average_fps``).

    python bench/record_bench.py [--frames 90] [--pairs 2] [--model MODEL.onnx] [--json out.json]
        [--skip-run | --skip-encode]

The machine's load (``uptime``) is printed with the figures: on a shared machine they are
noisy, so compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from segcam.config import RecordConfig
from segcam.demo_scene import DemoScene
from segcam.recording import gstreamer, pyav
from segcam.recording.recorder import SegmentRecorder

SIZES = [(1280, 720), (1920, 1080)]
FPS = 30.0

# (label, path suffix, output.codec, settings overrides)
CASES: List[Tuple[str, str, str, Dict[str, Any]]] = [
    ("opencv mp4v (before)", ".mp4", "mp4v", {"recorder": "opencv"}),
    ("pyav h264 ultrafast 1t (default)", ".mp4", "auto", {"recorder": "pyav"}),
    ("pyav h264 ultrafast 2t", ".mp4", "auto", {"recorder": "pyav", "threads": 2}),
    ("pyav h264 veryfast 1t", ".mp4", "auto", {"recorder": "pyav", "preset": "veryfast"}),
    ("pyav vp8 realtime 1t (.webm)", ".webm", "vp8", {"recorder": "pyav"}),
    ("pyav vp9 realtime 1t (.webm)", ".webm", "vp9", {"recorder": "pyav"}),
    ("gstreamer nvv4l2h264enc", ".mp4", "auto", {"recorder": "gstreamer"}),
]


def composites(size: Tuple[int, int], n: int) -> List[np.ndarray]:
    """``n`` demo frames with a blurred background, as the compositor would give them."""
    scene = DemoScene(size[0], size[1], FPS)
    out = []
    for i in range(n):
        frame, truth = scene.render(i)
        bg = cv2.blur(frame, (45, 45))
        m = (truth > 0)[..., None]
        out.append(np.where(m, frame, bg).astype(np.uint8))
    return out


def available(settings: Dict[str, Any]) -> Optional[str]:
    """None if the case can run here, else why not."""
    rec = settings.get("recorder")
    if rec == "gstreamer":
        ok, why = gstreamer.available()
        return None if ok else why
    if rec == "pyav":
        ok, why = pyav.available()
        return None if ok else why
    return None


def encode_case(frames: List[np.ndarray], suffix: str, codec: str, over: Dict[str, Any]):
    """Wall ms/frame of write(), process CPU ms/frame, bytes per minute of video."""
    with tempfile.TemporaryDirectory(prefix="segcam-rec-bench-") as tmp:
        path = Path(tmp) / f"bench{suffix}"
        settings = RecordConfig(min_free_mib=0.0, **over)
        rec = SegmentRecorder(path, codec, settings, fps=FPS)
        rec.lossless = True
        h, w = frames[0].shape[:2]
        rec.start((w, h), FPS)
        rec.write(frames[0], None, 0)  # warm-up: encoder start-up is not per-frame cost
        walls = []
        cpu0 = time.process_time()
        for f in frames[1:]:
            t0 = time.perf_counter()
            rec.write(f, None, 0)
            walls.append(time.perf_counter() - t0)
        rec.close()  # drains the encoder: part of the cost
        cpu = time.process_time() - cpu0
        size = path.stat().st_size
    n = len(frames)
    return {
        "write_ms_p50": round(float(np.median(walls)) * 1e3, 2),
        "write_ms_mean": round(float(np.mean(walls)) * 1e3, 2),
        "cpu_ms_per_frame": round(cpu / (n - 1) * 1e3, 2),
        "mb_per_minute": round(size / (n / FPS) * 60 / 1e6, 2),
    }


def write_clip(path: Path, size: Tuple[int, int], n: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, size)
    scene = DemoScene(size[0], size[1], FPS)
    for i in range(n):
        writer.write(scene.render(i)[0])
    writer.release()


def run_fps(clip: Path, out: Optional[Path], extra: List[str], model: Optional[str]) -> float:
    with tempfile.TemporaryDirectory(prefix="segcam-rec-run-") as tmp:
        stats = Path(tmp) / "stats.json"
        cmd = [sys.executable, "-m", "segcam", "run", "--input", str(clip)]
        cmd += ["--output", f"file://{out}" if out is not None else "none"]
        cmd += ["--stats-json", str(stats), "--set", "thermal.enabled=false", *extra]
        if model:
            cmd += ["--set", f"model.path={model}"]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"segcam run failed ({done.returncode}): {done.stderr[-2000:]}")
        return float(json.loads(stats.read_text())["average_fps"])


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=90, help="frames per encode case")
    ap.add_argument("--pairs", type=int, default=2, help="alternating segcam run rounds")
    ap.add_argument("--run-frames", type=int, default=120, help="frames of the 1080p clip")
    ap.add_argument("--model", help="ONNX model path (default: the cached default model)")
    ap.add_argument("--skip-run", action="store_true", help="only the encode part")
    ap.add_argument("--skip-encode", action="store_true", help="only the segcam run part")
    ap.add_argument("--json", help="write the figures as JSON")
    args = ap.parse_args(argv)
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load[0]:.2f}")
    report: Dict[str, Any] = {"load_before": load, "encode": [], "run": {}}
    for size in [] if args.skip_encode else SIZES:
        frames = composites(size, args.frames)
        print(f"\n{size[0]}x{size[1]}, {args.frames} frames at {FPS:g} fps")
        print(f"{'recorder':<34}{'write p50':>10}{'mean':>8}{'cpu/frame':>11}{'MB/min':>9}")
        for label, suffix, codec, over in CASES:
            why = available(over)
            if why is not None:
                print(f"{label:<34}  not available here: {why}")
                continue
            res = encode_case(frames, suffix, codec, over)
            res.update({"case": label, "size": f"{size[0]}x{size[1]}"})
            report["encode"].append(res)
            print(
                f"{label:<34}{res['write_ms_p50']:>8.2f}ms{res['write_ms_mean']:>6.2f}ms"
                f"{res['cpu_ms_per_frame']:>9.2f}ms{res['mb_per_minute']:>9.2f}"
            )
    if not args.skip_run:
        with tempfile.TemporaryDirectory(prefix="segcam-rec-clip-") as tmp:
            clip = Path(tmp) / "clip1080.mp4"
            write_clip(clip, (1920, 1080), args.run_frames)
            out = Path(tmp) / "out.mp4"
            modes = {
                "none": (None, []),
                "before: opencv mp4v": (
                    out,
                    ["--set", "output.codec=mp4v", "--set", "output.record.recorder=opencv"],
                ),
                "after: default recorder": (out, []),
            }
            fps: Dict[str, List[float]] = {k: [] for k in modes}
            for _ in range(args.pairs):
                for name, (target, extra) in modes.items():
                    fps[name].append(round(run_fps(clip, target, extra, args.model), 2))
            print(f"\nsegcam run file -> file, 1080p, {args.run_frames} frames, average fps")
            for name, vals in fps.items():
                print(f"{name:<28}{' '.join(f'{v:6.2f}' for v in vals)}  mean {np.mean(vals):.2f}")
            before, after = (
                np.mean(fps["before: opencv mp4v"]),
                np.mean(fps["after: default recorder"]),
            )
            print(f"after / before: {after / before:.3f}")
            report["run"] = {"fps": fps, "after_over_before": round(float(after / before), 3)}
    report["load_after"] = os.getloadavg()
    print(f"load after: {report['load_after'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
