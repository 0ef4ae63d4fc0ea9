"""``segcam run`` file -> file, this tree against another (a benchmark, not a test).

Writes a demo clip once (``--frames`` frames at ``--size``), then runs
``segcam run --input CLIP --output file://OUT.mp4`` with each tree's own defaults (every
frame processed: a file input is lossless), alternating the trees ``--rounds`` times. Per
run: fps from ``--stats-json`` and the child's CPU time per frame (user + system, every
thread), and its peak RSS. With ``--baseline DIR`` (e.g. ``git worktree add /tmp/base
74c3cdc``) the other tree is imported as ``segcam`` through a symlink, as
``bench/composite_bench.py`` does.

    python bench/file_to_file_bench.py [--baseline /tmp/base] [--frames 300] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent.parent


def _write_clip(path: Path, frames: int, w: int, h: int) -> None:
    sys.path.insert(0, str(HERE / "bench"))
    import cv2

    from segcam.demo_scene import DemoScene

    scene = DemoScene(w, h, 30.0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    for i in range(frames):
        writer.write(scene.render(i)[0])
    writer.release()


def _shim(tree: Path) -> Path:
    shim = Path(tempfile.mkdtemp(prefix="segcam-f2f-"))
    (shim / "segcam").symlink_to(tree / "app")
    return shim


def _run(tree: Optional[Path], clip: Path, out_dir: Path, model: str) -> Dict[str, float]:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    if tree is not None:
        env["PYTHONPATH"] = str(_shim(tree))
    stats = out_dir / "stats.json"
    cmd = [sys.executable, "-m", "segcam", "run", "--input", str(clip)]
    cmd += ["--output", f"file://{out_dir / 'out.mp4'}", "--stats-json", str(stats)]
    cmd += ["--set", f"model.path={model}", "--set", "pipeline.status_interval_s=0"]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=out_dir)
        _pid, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time and peak RSS
        proc.returncode = status  # wait4's encoding: 0 is a clean exit
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"segcam run failed ({tree or 'this tree'}):\n{err.read()[-3000:]}")
    st = json.loads(stats.read_text())
    frames = int(st["frames_completed"])
    return {
        "fps": float(st.get("average_fps") or frames / wall),
        "fps_process": frames / wall,
        "cpu_ms_per_frame": (usage.ru_utime + usage.ru_stime) * 1e3 / frames,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,
        "frames": frames,
    }


def main() -> None:
    """Run both trees alternately and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline", type=Path, help="another checkout to compare with")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--size", default="1920x1080", metavar="WxH")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--model", help="ONNX model (default: the cached default model)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    from segcam.config import load_config, model_cache_dir
    from segcam.models.registry import ensure_model

    model = args.model or str(ensure_model("mediapipe-selfie", model_cache_dir(load_config())))
    work = Path(tempfile.mkdtemp(prefix="segcam-f2f-"))
    clip = work / "clip.mp4"
    _write_clip(clip, args.frames, w, h)
    trees = [("this tree", None)] + ([("baseline", args.baseline)] if args.baseline else [])
    results: Dict[str, List[Dict[str, float]]] = {name: [] for name, _ in trees}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, tree in trees:
            out = work / name.replace(" ", "-")
            out.mkdir(exist_ok=True)
            results[name].append(_run(tree, clip, out, model))
    print(
        f"file_to_file_bench: {os.cpu_count()} cpus, load {load:.2f} -> {os.getloadavg()[0]:.2f},"
        f" {args.frames} frames {w}x{h}, {args.rounds} rounds (median)"
    )
    print(f"{'tree':12} {'fps':>7} {'fps (process)':>14} {'CPU ms/frame':>13} {'peak RSS MiB':>13}")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{name:12} {med['fps']:7.1f} {med['fps_process']:14.1f}"
            f" {med['cpu_ms_per_frame']:13.1f} {med['peak_rss_mib']:13.0f}"
        )


if __name__ == "__main__":
    main()
