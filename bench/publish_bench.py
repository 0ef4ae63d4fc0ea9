"""Benchmark of the mask publisher (a benchmark, not a test: it reports, asserts nothing).

Two parts, for every encoding at 256x256 and 1920x1080:

1. codec: encode and decode time per mask and payload size (so masks/s and MB/s of the
   codec alone);
2. loopback: the real sink + publisher thread + a real subscriber on tcp://127.0.0.1,
   fed as fast as ``submit`` returns for ``--seconds``: masks/s published and received,
   MB/s on the wire, the publisher thread's CPU time per message (``time.thread_time``
   inside that thread), the whole process's CPU per message (``time.process_time``,
   which includes the feeder, the subscriber and ZeroMQ's I/O threads), and the cost of
   ``submit`` on the caller (the pipeline's compositing thread in real use).

Masks look like refined person masks (soft edges). Prints a table and, with ``--json
FILE``, writes everything plus the machine's load (``uptime``) for the report.

    python bench/publish_bench.py [--seconds 2] [--json out.json]
        [--stall-model MODEL.onnx [--stall-pairs 3] [--stall-size 640x480]]

With ``--stall-model`` it also runs ``segcam run`` (unpaced demo input) alternately
without and with a stalled subscriber and compares the pipeline's fps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import select
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from segcam.config import load_config
from segcam.pipeline.types import FrameResult
from segcam.publish import protocol
from segcam.publish.sink import MaskPublisherSink

SIZES = [(256, 256), (1920, 1080)]

_SUBSCRIBER = """
import json, select, sys, time
from segcam.publish.subscriber import MaskSubscriber
sub = MaskSubscriber(sys.argv[1], ["mask"], rcvhwm=4, stale_after_s=0)
while sub.recv(timeout=0.05) is None:
    pass
print("ready", flush=True)
n, t_first, t_last = 0, None, None
while not select.select([sys.stdin], [], [], 0)[0]:
    if sub.recv(timeout=0.05) is not None:
        n += 1
        t_last = time.perf_counter()
        t_first = t_first or t_last
sub.close()
print(json.dumps({"n": n - 1, "seconds": (t_last - t_first) if n > 1 else 0.0}))
"""
ENCODINGS = [
    ("raw", "probability"),
    ("png", "probability"),
    ("raw", "binary"),
    ("png", "binary"),
    ("rle", "binary"),
]


def person_mask(w: int, h: int, t: float = 0.0) -> np.ndarray:
    """A float32 mask like the refiner's: head + torso, feathered edges, moving a little."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = w * (0.5 + 0.05 * np.sin(t))
    head = np.hypot((xx - cx) / (0.09 * w), (yy - 0.28 * h) / (0.14 * h))
    body = np.hypot((xx - cx) / (0.25 * w), (yy - 0.95 * h) / (0.5 * h))
    d = np.minimum(head, body)
    mask = np.clip((1.08 - d) / 0.16, 0.0, 1.0)
    k = max(3, (w // 150) | 1)
    return cv2.GaussianBlur(mask, (k, k), 0)


def codec_bench(w: int, h: int, encoding: str, values: str) -> Dict[str, Any]:
    """Encode/decode time and payload size of one encoding (no sockets)."""
    wire = protocol.quantize(person_mask(w, h), values, 0.5)
    header = {"encoding": encoding, "values": values, "width": w, "height": h}
    n, enc_s, dec_s, size = 0, 0.0, 0.0, 0
    deadline = time.perf_counter() + 1.0
    while n < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        payload = protocol.encode_mask(wire, encoding)
        t1 = time.perf_counter()
        back = protocol.decode_mask_payload(header, payload)
        t2 = time.perf_counter()
        enc_s += t1 - t0
        dec_s += t2 - t1
        size = len(payload)
        n += 1
    assert np.array_equal(back, wire)
    return {
        "encode_ms": 1000 * enc_s / n,
        "decode_ms": 1000 * dec_s / n,
        "payload_bytes": size,
        "encode_masks_per_s": n / enc_s,
        "encode_MB_per_s": size * n / enc_s / 1e6,
    }


def loopback_bench(w: int, h: int, encoding: str, values: str, seconds: float) -> Dict[str, Any]:
    """The real sink/publisher/subscriber over tcp loopback, fed as fast as possible."""
    cfg = load_config(
        None,
        [
            "publish.enabled=true",
            "publish.bind=['tcp://127.0.0.1:*']",
            f"publish.encoding={encoding}",
            f"publish.values={values}",
            "publish.telemetry_interval_s=0",
            "publish.sndhwm=4",
        ],
    )
    sink = MaskPublisherSink(cfg)
    sink.start()
    masks = [person_mask(w, h, t) for t in (0.0, 0.5, 1.0, 1.5)]
    frame = np.zeros((h, w, 3), np.uint8)
    # The subscriber runs in its own process (as a remote app would), so its decoding
    # does not compete with the publisher for this process's GIL.
    sub = subprocess.Popen(
        [sys.executable, "-c", _SUBSCRIBER, sink.endpoints[0]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout is not None and sub.stdin is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # until the subscriber has received one
        sink.submit(FrameResult(0, time.time_ns(), time.monotonic_ns(), frame, masks[0]))
        time.sleep(0.05)
        if sink.stats()["sent_mask"] and select.select([sub.stdout], [], [], 0)[0]:
            sub.stdout.readline()
            break
    base_stats = sink.stats()
    submit_ms: List[float] = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    i = 0
    while time.perf_counter() - t0 < seconds:
        result = FrameResult(i, time.time_ns(), time.monotonic_ns(), frame, masks[i % 4])
        s0 = time.perf_counter()
        sink.submit(result)
        submit_ms.append(1000 * (time.perf_counter() - s0))
        i += 1
        time.sleep(0)  # let the publisher thread take the GIL, as a pipeline would
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stats = sink.stats()
    time.sleep(0.3)
    sub.stdin.close()  # the subscriber prints its counts and exits
    rx = json.loads(sub.stdout.read().strip().splitlines()[-1])
    sub.wait(10)
    sink.stop()
    sent = stats["sent_mask"] - base_stats["sent_mask"]
    wire = stats["bytes_sent"] - base_stats["bytes_sent"]
    pub_cpu = stats["cpu_s"] - base_stats["cpu_s"]
    return {
        "submitted": i,
        "published_per_s": sent / elapsed,
        "received_per_s": rx["n"] / rx["seconds"] if rx["seconds"] else 0.0,
        "wire_MB_per_s": wire / elapsed / 1e6,
        "bytes_per_mask": wire / sent if sent else None,
        "publisher_cpu_ms_per_msg": 1000 * pub_cpu / sent if sent else None,
        "process_cpu_ms_per_msg": 1000 * cpu / sent if sent else None,
        "submit_ms_p50": float(np.percentile(submit_ms, 50)),
        "submit_ms_p95": float(np.percentile(submit_ms, 95)),
        "dropped_busy": stats["dropped_busy"] - base_stats["dropped_busy"],
    }


def stall_bench(model: str, seconds: float, pairs: int, size: str) -> Dict[str, Any]:
    """Unpaced ``segcam run`` fps: publishing with no subscriber vs with a stalled one.

    Runs alternate (A B A B ...) so that the machine's changing load hits both alike;
    the stalled subscriber connects, subscribes to everything and never reads.
    """
    import socket
    import tempfile

    import zmq

    w, h = size.split("x")
    ctx = zmq.Context()
    fps: Dict[str, List[float]] = {"no-subscriber": [], "stalled": []}
    drops: List[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(pairs * 2):
            name = "no-subscriber" if k % 2 == 0 else "stalled"
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
            stalled = None
            if name == "stalled":
                stalled = ctx.socket(zmq.SUB)
                stalled.setsockopt(zmq.RCVHWM, 2)
                stalled.setsockopt(zmq.LINGER, 0)
                stalled.setsockopt(zmq.SUBSCRIBE, b"")
                stalled.connect(url)
            stats = os.path.join(tmp, f"{k}.json")
            cmd = [sys.executable, "-m", "segcam", "run", "--input", "demo", "--seconds",
                   str(seconds), "--stats-json", stats, "--set", f"model.path={model}",
                   "--set", f"input.width={w}", "--set", f"input.height={h}",
                   "--set", "thermal.enabled=false", "--set", "publish.enabled=true",
                   "--set", f"publish.bind=['{url}']", "--set", "publish.encoding=raw",
                   "--set", "publish.values=probability", "--set", "publish.frame_topic=true",
                   "--set", "publish.nodrop=true"]  # fmt: skip
            subprocess.run(cmd, capture_output=True, check=True, timeout=seconds + 120)
            if stalled is not None:
                stalled.close(0)
            with open(stats, encoding="utf-8") as f:
                st = json.load(f)
            fps[name].append(st["average_fps"])
            if name == "stalled":
                drops.append(st["sinks"]["publish"]["dropped_hwm"])
            print(f"stall run {k}: {name} {st['average_fps']:.2f} fps", flush=True)
    ctx.term()
    a, b = np.mean(fps["no-subscriber"]), np.mean(fps["stalled"])
    return {
        "size": size,
        "seconds": seconds,
        "fps": fps,
        "mean_no_subscriber": float(a),
        "mean_stalled": float(b),
        "change_percent": float(100 * (b - a) / a) if a else None,
        "stalled_dropped_hwm": drops,
    }


def machine() -> Dict[str, Any]:
    """What the numbers were measured on, including the load at the time."""
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        uptime = ""
    return {
        "uptime": uptime,
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "zmq": __import__("zmq").zmq_version(),
    }


def main() -> int:
    """Run both parts for every size and encoding; print a table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="loopback run per case")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    ap.add_argument(
        "--stall-model", metavar="ONNX", help="also measure pipeline fps with a stalled subscriber"
    )
    ap.add_argument("--stall-pairs", type=int, default=3, help="A/B pairs of --stall runs")
    ap.add_argument("--stall-seconds", type=float, default=8.0, help="seconds per --stall run")
    ap.add_argument("--stall-size", default="640x480", help="frame size of --stall runs")
    ap.add_argument("--skip-codec", action="store_true", help="only the --stall measurement")
    args = ap.parse_args()
    before = machine()
    stall = None
    if args.stall_model:
        stall = stall_bench(args.stall_model, args.stall_seconds, args.stall_pairs, args.stall_size)
    rows: List[Tuple[str, Dict[str, Any], Dict[str, Any]]] = []
    for w, h in [] if args.skip_codec else SIZES:
        for encoding, values in ENCODINGS:
            name = f"{w}x{h} {encoding}/{values}"
            codec = codec_bench(w, h, encoding, values)
            loop = loopback_bench(w, h, encoding, values, args.seconds)
            rows.append((name, codec, loop))
            print(f"done {name}", flush=True)
    after = machine()
    head = (
        f"{'case':<30}{'bytes':>9}{'enc ms':>8}{'dec ms':>8}{'codec/s':>9}{'pub/s':>8}"
        f"{'rx/s':>8}{'MB/s':>8}{'pubCPU ms':>10}{'procCPU':>9}{'submit':>8}"
    )
    print(head)
    for name, c, lo in rows:
        print(
            f"{name:<30}{c['payload_bytes']:>9}{c['encode_ms']:>8.2f}{c['decode_ms']:>8.2f}"
            f"{c['encode_masks_per_s']:>9.0f}{lo['published_per_s']:>8.1f}"
            f"{lo['received_per_s']:>8.1f}{lo['wire_MB_per_s']:>8.2f}"
            f"{lo['publisher_cpu_ms_per_msg'] or 0:>10.2f}{lo['process_cpu_ms_per_msg'] or 0:>9.2f}"
            f"{lo['submit_ms_p50']:>8.2f}"
        )
    if stall is not None:
        print(
            f"stalled subscriber ({stall['size']}, nodrop, raw+frame): "
            f"{stall['mean_no_subscriber']:.2f} fps without vs {stall['mean_stalled']:.2f} fps "
            f"with ({stall['change_percent']:+.1f}%), runs {stall['fps']}, "
            f"dropped_hwm {stall['stalled_dropped_hwm']}"
        )
    print(f"machine before: {before['uptime']}")
    print(f"machine after:  {after['uptime']}")
    if args.json:
        out = {
            "machine_before": before,
            "machine_after": after,
            "cases": [{"case": n, "codec": c, "loopback": lo} for n, c, lo in rows],
            "stall": stall,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
