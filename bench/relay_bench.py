"""One device stream through ``segcam relay`` to 1, 10 and 50 subscribers.

Starts a real device (``segcam run``, demo input paced like a camera) and a real relay
(``segcam relay``) as subprocesses, then adds subscribers to the relay in phases. Per
phase it reports the device's fps (from its telemetry) and CPU, the relay's CPU (total
and per subscriber), and the latency the hop adds: the same message (stream, seq) is
received by a subscriber connected to the device directly and by the relay's
subscribers, in this one process, and the difference of the two arrival times is the
hop. Subscribers are bare SUB sockets that only parse the header, so their own cost
stays small next to what is measured.

    python bench/relay_bench.py [--counts 1,10,50] [--phase-s 8] [--size 640x480] [--out FILE]

Not a test: numbers depend on the machine and its load (say which when quoting them).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import zmq

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sub_socket(ctx: zmq.Context, url: str, topics: List[bytes]) -> zmq.Socket:
    s = ctx.socket(zmq.SUB)
    s.setsockopt(zmq.RCVHWM, 1000)
    s.setsockopt(zmq.LINGER, 0)
    for t in topics:
        s.setsockopt(zmq.SUBSCRIBE, t)
    s.connect(url)
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="1,10,50")
    ap.add_argument("--phase-s", type=float, default=8.0)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--model", default="", help="model.path (default: the configured model)")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args()
    counts = [int(x) for x in args.counts.split(",")]
    width, height = (int(v) for v in args.size.split("x"))
    dev_url = f"tcp://127.0.0.1:{free_port()}"
    relay_url = f"tcp://127.0.0.1:{free_port()}"
    total_s = 10 + (len(counts) + 1) * (args.phase_s + 2) + 10
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    sets = [
        "input.realtime=true", f"input.fps={args.fps}", f"input.width={width}",
        f"input.height={height}", "thermal.enabled=false", "publish.enabled=true",
        f"publish.bind=['{dev_url}']", "publish.stream_id=bench-device",
    ]  # fmt: skip
    if args.model:
        sets.append(f"model.path={args.model}")
    cmd = [sys.executable, "-m", "segcam", "run", "--input", "demo", "--seconds", str(total_s)]
    for item in sets:
        cmd += ["--set", item]
    device = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=open(work / "device.log", "w"))  # fmt: skip
    relay = subprocess.Popen(
        [sys.executable, "-m", "segcam", "relay", "--from", dev_url, "--bind", relay_url,
         "--status-interval", "0", "--sndhwm", "100"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / "relay.log", "w"),
    )  # fmt: skip
    ctx = zmq.Context()
    direct = sub_socket(ctx, dev_url, [b"mask", b"telemetry"])
    poller = zmq.Poller()
    poller.register(direct, zmq.POLLIN)
    relayed: List[zmq.Socket] = []
    results: List[Dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 120
        while not direct.poll(200):  # the device is up once a message arrives
            if time.monotonic() > deadline or device.poll() is not None:
                raise SystemExit("device did not start: see " + str(work / "device.log"))
        for n in [0] + counts:
            while len(relayed) < n:
                s = sub_socket(ctx, relay_url, [b"mask"])
                poller.register(s, zmq.POLLIN)
                relayed.append(s)
            results.append(phase(poller, direct, relayed, device.pid, relay.pid, args.phase_s, n))
            r = results[-1]
            print(
                f"{n:3d} subscribers: device {r['device_fps']:.1f} fps, "
                f"{r['device_cpu_pct']:.1f}% CPU | relay {r['relay_cpu_pct']:.1f}% CPU | "
                f"hop p50 {r['hop_ms_p50']} ms p95 {r['hop_ms_p95']} ms | "
                f"received {r['relayed_masks']} relayed masks",
                flush=True,
            )
    finally:
        for s in [direct] + relayed:
            s.close(0)
        ctx.term()
        for proc in (relay, device):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    base = results[0]["relay_cpu_pct"]
    for r in results[1:]:
        r["relay_cpu_pct_per_subscriber"] = round((r["relay_cpu_pct"] - base) / r["subscribers"], 3)
    summary = {"load": os.getloadavg(), "cpus": os.cpu_count(), "size": args.size,
               "phases": results}  # fmt: skip
    if args.out:  # before printing: a closed stdout must not lose the results
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


def phase(poller, direct, relayed, device_pid, relay_pid, seconds: float, n: int) -> Dict[str, Any]:
    """Read everything for ``seconds``; CPU, fps and hop latency of this phase."""
    settle = time.monotonic() + 1.5
    while time.monotonic() < settle:
        drain(poller, direct, relayed, {}, {}, [])
    arrivals_direct: Dict[int, int] = {}
    arrivals_relay: Dict[int, List[int]] = {}
    fps: List[float] = []
    d0, r0, t0 = cpu_s(device_pid), cpu_s(relay_pid), time.monotonic()
    while time.monotonic() - t0 < seconds:
        drain(poller, direct, relayed, arrivals_direct, arrivals_relay, fps)
    dt = time.monotonic() - t0
    d1, r1 = cpu_s(device_pid), cpu_s(relay_pid)
    hops = [
        (t - arrivals_direct[seq]) / 1e6
        for seq, ts in arrivals_relay.items()
        if seq in arrivals_direct
        for t in ts
    ]

    def pct(q: float) -> Any:
        return round(float(np.percentile(hops, q)), 3) if hops else None

    return {
        "subscribers": n,
        "device_fps": round(float(np.median(fps)), 2) if fps else 0.0,
        "device_cpu_pct": round(100 * (d1 - d0) / dt, 1),
        "relay_cpu_pct": round(100 * (r1 - r0) / dt, 1),
        "hop_ms_p50": pct(50),
        "hop_ms_p95": pct(95),
        "relayed_masks": sum(len(v) for v in arrivals_relay.values()),
        "direct_masks": len(arrivals_direct),
    }


def drain(poller, direct, relayed, arrivals_direct, arrivals_relay, fps) -> None:
    for sock, _ in poller.poll(100):
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            now = time.time_ns()
            header = json.loads(frames[1])
            if frames[0] == b"telemetry":
                status = json.loads(frames[2])
                if isinstance(status.get("fps"), (int, float)):
                    fps.append(float(status["fps"]))
            elif sock is direct:
                arrivals_direct[header["seq"]] = now
            else:
                arrivals_relay.setdefault(header["seq"], []).append(now)


if __name__ == "__main__":
    sys.exit(main())
