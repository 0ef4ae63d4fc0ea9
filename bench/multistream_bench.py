"""Several cameras: one process with batched inference vs one call per frame vs N processes.

For 1, 2 and 4 live streams (the demo scene paced at --fps, --size each, so each stream
behaves like a camera) it runs, for --seconds each:

* ``batched``: one ``segcam run`` with N ``--input``s, frames of the streams batched into
  one inference call (``streams.batch_max`` = N);
* ``per-frame``: the same process with ``streams.batch_max=1`` (one call per frame, one
  shared session);
* ``processes``: N separate ``segcam run`` processes of one input each.

and reports aggregate fps (sum over streams of frames out per second), per-stream
glass-to-glass p50/p95 (the worst stream's), CPU per frame (CPU seconds of every process
involved / frames out) and peak total RSS (the sum over the processes, sampled every
0.2 s). It is a measurement, not a test: run it where you care, note the machine's load
(it prints ``uptime``'s), and compare the modes of one run with each other.

    python bench/multistream_bench.py --seconds 12 --json out.json
    python bench/multistream_bench.py --device gpu      # GPU stages where a GPU is usable
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

MODES = ("batched", "per-frame", "processes")


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class _RssSampler:
    """Peak of the summed RSS of some processes, sampled in a thread."""

    def __init__(self, pids: List[int]) -> None:
        self.pids = pids
        self.peak_kib = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_kib = max(self.peak_kib, sum(_rss_kib(p) for p in self.pids))

    def stop(self) -> int:
        self._stop.set()
        self._t.join(2)
        return self.peak_kib


def _command(args: argparse.Namespace, inputs: int, batch_max: int, stats: Path) -> List[str]:
    w, h = args.size.split("x")
    cmd = [sys.executable, "-m", "segcam", "run"]
    for _ in range(inputs):
        cmd += ["--input", "demo"]
    sets = [
        f"input.width={w}",
        f"input.height={h}",
        f"input.fps={args.fps}",
        "input.realtime=true",
        "pipeline.status_interval_s=0",
        "thermal.enabled=false",
        f"inference.device={args.device}",
        f"inference.threads={args.threads}",
        f"streams.batch_max={batch_max}",
        f"streams.batch_wait_ms={args.wait_ms}",
    ]
    if args.model_path:
        sets.append(f"model.path={args.model_path}")
    for s in sets:
        cmd += ["--set", s]
    return cmd + ["--seconds", str(args.seconds), "--stats-json", str(stats)]


def _streams_of(stats: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per-stream snapshots of a stats file (a one-input run is its own only stream)."""
    streams = stats.get("streams")
    return list(streams.values()) if isinstance(streams, dict) and streams else [stats]


def run_mode(args: argparse.Namespace, n: int, mode: str, work: Path) -> Dict[str, Any]:
    """One configuration: returns the figures of the table."""
    procs: List[Tuple[subprocess.Popen, Path]] = []
    if mode == "processes":
        for i in range(n):
            stats = work / f"p{n}-{i}.json"
            cmd = _command(args, 1, 1, stats)
            procs.append(
                (
                    subprocess.Popen(
                        cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                    ),
                    stats,
                )
            )
    else:
        stats = work / f"{mode}-{n}.json"
        cmd = _command(args, n, n if mode == "batched" else 1, stats)
        procs.append(
            (
                subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
                stats,
            )
        )
    sampler = _RssSampler([p.pid for p, _ in procs])
    cpu_s = 0.0
    errors = []
    for p, _ in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        cpu_s += usage.ru_utime + usage.ru_stime
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        if p.returncode != 0:
            errors.append(err[-800:])
    peak = sampler.stop()
    if errors:
        raise SystemExit(f"{mode} x{n} failed:\n" + "\n".join(errors))
    streams: List[Dict[str, Any]] = []
    inference: Optional[Dict[str, Any]] = None
    for _, path in procs:
        data = json.loads(path.read_text())
        streams += _streams_of(data)
        inference = data.get("inference", inference)
    frames = sum(s["frames_out"] for s in streams)
    fps = sum(s["average_fps"] for s in streams)
    p50 = max(s["glass_to_glass_ms"]["p50"] or 0 for s in streams)
    p95 = max(s["glass_to_glass_ms"]["p95"] or 0 for s in streams)
    return {
        "streams": n,
        "mode": mode,
        "aggregate_fps": round(fps, 2),
        "per_stream_fps_min": round(min(s["average_fps"] for s in streams), 2),
        "g2g_p50_ms": round(p50, 1),
        "g2g_p95_ms": round(p95, 1),
        "cpu_ms_per_frame": round(cpu_s / frames * 1e3, 2) if frames else None,
        "rss_mib": round(peak / 1024, 1),
        "frames_per_call": (inference or {}).get("frames_per_call", 1.0),
        "device": streams[0].get("device", "?"),
    }


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--streams", default="1,2,4", help="stream counts (default 1,2,4)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--device", default="cpu", choices=("cpu", "gpu", "auto"))
    ap.add_argument("--threads", type=int, default=0, help="inference.threads (0 = ORT default)")
    ap.add_argument("--wait-ms", type=float, default=4.0, help="streams.batch_wait_ms")
    ap.add_argument("--model-path", default="", help="ONNX file (default: the cached model)")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    args = ap.parse_args(argv)
    rows = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {os.cpu_count()} cores, load {load:.2f} at start; {args.size} @ {args.fps:g} fps"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for n in (int(x) for x in args.streams.split(",")):
            for mode in args.modes.split(","):
                if n == 1 and mode != MODES[0]:
                    continue  # one stream: the three modes are the same process
                row = run_mode(args, n, mode, work)
                rows.append(row)
                print(
                    f"{n} x {mode:<10} {row['aggregate_fps']:7.1f} fps (min stream "
                    f"{row['per_stream_fps_min']:.1f})  g2g p50/p95 {row['g2g_p50_ms']:.0f}/"
                    f"{row['g2g_p95_ms']:.0f} ms  CPU {row['cpu_ms_per_frame']} ms/frame  "
                    f"RSS {row['rss_mib']:.0f} MiB  frames/call {row['frames_per_call']}  "
                    f"[{row['device']}]",
                    flush=True,
                )
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load {load_end:.2f} at the end")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": rows, "load": [load, load_end]}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
