"""``segcam subscribe``: receive a segcam mask stream and report rate, latency and errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

HELP = "receive a published mask stream: fps, latency, bytes/s, errors; show or save it"

_ALL = ("mask", "frame", "telemetry", "relay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """URL [--topic ...] [--show] [--save DIR] [--count N] [--json] [--timeout S] ..."""
    parser.add_argument("url", nargs="+", help="publisher address(es), e.g. tcp://HOST:5555")
    parser.add_argument(
        "--topic",
        action="append",
        choices=_ALL + ("all",),
        help="topic to receive (repeatable; default: mask and telemetry)",
    )
    parser.add_argument("--show", action="store_true", help="display masks and frames")
    parser.add_argument(
        "--save", metavar="DIR", help="write masks (PNG, binary as 0/255), frames, telemetry"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        metavar="N",
        help="stop after N masks (N messages if mask is not a topic; 0 = no limit)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON line per message on stdout")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up (exit 9) after S seconds without any message",
    )
    parser.add_argument(
        "--latest", action="store_true", help="drop queued messages, keep only the newest"
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=2.0,
        metavar="S",
        help="discard messages published more than S seconds ago (default 2; 0 = keep all; "
        "needs this host's clock in sync with the publisher's)",
    )
    parser.add_argument("--server-key", metavar="FILE", help="publisher's public .key (CURVE)")
    parser.add_argument("--client-key", metavar="FILE", help="this client's .key_secret (CURVE)")
    parser.add_argument(
        "--interval", type=float, default=1.0, metavar="S", help="seconds between status lines"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="largest width*height accepted per message (default 33554432, an 8K frame); "
        "larger messages are counted as malformed",
    )


class _Window:
    """Rolling statistics over the last status interval."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.monotonic()
        self.counts: Dict[str, int] = {}
        self.nbytes = 0
        self.pub_ms: List[float] = []
        self.cap_ms: List[float] = []

    def add(self, msg: Any) -> Dict[str, Optional[float]]:
        self.counts[msg.topic] = self.counts.get(msg.topic, 0) + 1
        self.nbytes += msg.nbytes
        lat: Dict[str, Optional[float]] = {"publish_ms": None, "capture_ms": None}
        pub = msg.header.get("publish_ts_ns")
        if isinstance(pub, int) and pub > 0:
            lat["publish_ms"] = (msg.recv_ts_ns - pub) / 1e6
        cap = msg.header.get("capture_ts_ns")
        if isinstance(cap, int) and cap > 0:
            lat["capture_ms"] = (msg.recv_ts_ns - cap) / 1e6
        if msg.topic == "mask":
            if lat["publish_ms"] is not None:
                self.pub_ms.append(lat["publish_ms"])
            if lat["capture_ms"] is not None:
                self.cap_ms.append(lat["capture_ms"])
        return lat

    def summary(self, sub_stats: Dict[str, Any]) -> Dict[str, Any]:
        import numpy as np

        dt = max(1e-6, time.monotonic() - self.started)

        def pct(v: List[float], q: float) -> Optional[float]:
            return round(float(np.percentile(v, q)), 2) if v else None

        return {
            "fps": {t: round(n / dt, 2) for t, n in sorted(self.counts.items())},
            "publish_to_recv_ms": {"p50": pct(self.pub_ms, 50), "p95": pct(self.pub_ms, 95)},
            "capture_to_recv_ms": {"p50": pct(self.cap_ms, 50), "p95": pct(self.cap_ms, 95)},
            "bytes_per_s": round(self.nbytes / dt),
            "decode_errors": sub_stats["decode_errors"],
            "gaps": sub_stats["gaps"],
            "lost_publisher": sub_stats["lost_publisher"],
            "lost_transport": sub_stats["lost_transport"],
            "missed_before_join": sub_stats["missed_before_join"],
            "discarded_old": sub_stats["discarded_old"],
            "restarts": sub_stats["restarts"],
            "handshake_failures": sub_stats["handshake_failures"],
        }


def _status_line(s: Dict[str, Any]) -> str:
    fps = " ".join(f"{t} {v:.1f}/s" for t, v in s["fps"].items()) or "no messages"

    def ms(d: Dict[str, Any]) -> str:
        return "-" if d["p50"] is None else f"{d['p50']:.1f}/{d['p95']:.1f} ms"

    return (
        f"{fps} | publish->recv p50/p95 {ms(s['publish_to_recv_ms'])}"
        f" | capture->recv {ms(s['capture_to_recv_ms'])}"
        f" | {s['bytes_per_s'] / 1e6:.2f} MB/s"
        f" | lost {s['gaps']} (publisher {s['lost_publisher']}, transport {s['lost_transport']})"
        f" | too old {s['discarded_old']} | decode errors {s['decode_errors']}"
    )


def _display_problem() -> Optional[str]:
    """Why a window cannot be opened here, or None if it can."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return "no display (DISPLAY/WAYLAND_DISPLAY unset)"
    import cv2

    try:
        cv2.namedWindow("segcam mask", cv2.WINDOW_NORMAL)
    except cv2.error:
        return "this OpenCV has no GUI support (opencv-python-headless)"
    return None


def _save(directory: Path, msg: Any) -> None:
    import cv2

    if msg.topic == "mask":
        img = msg.data * 255 if msg.header.get("values") == "binary" else msg.data
        cv2.imwrite(str(directory / f"mask_{msg.header['frame_id']:08d}.png"), img)
    elif msg.topic == "frame":
        (directory / f"frame_{msg.header['frame_id']:08d}.jpg").write_bytes(msg.payload)
    else:
        with open(directory / "telemetry.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"header": msg.header, "status": msg.data}) + "\n")


def run(args: argparse.Namespace) -> int:
    """Subscribe and report until Ctrl-C, --count, or --timeout."""
    from segcam.errors import PublishError, UsageError
    from segcam.publish.limits import DEFAULT_LIMITS
    from segcam.publish.subscriber import MaskSubscriber

    topics = args.topic or ["mask", "telemetry"]
    if "all" in topics:
        topics = list(_ALL)
    topics = list(dict.fromkeys(topics))
    if args.count < 0:
        raise UsageError("--count must be 0 or more")
    if not args.max_age >= 0:
        raise UsageError("--max-age must be 0 (keep all) or a positive number of seconds")
    # What --count counts: masks, or every message when masks are not subscribed.
    counted = "mask" if "mask" in topics else None
    show = False
    if args.show:
        problem = _display_problem()
        if problem:
            print(f"segcam: --show ignored: {problem}; use --save DIR instead", file=sys.stderr)
        else:
            show = True
    save_dir = None
    if args.save:
        save_dir = Path(args.save).expanduser()
        try:
            save_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create {save_dir}: {exc}", "choose a writable --save DIR"
            ) from None

    limits = DEFAULT_LIMITS
    if args.max_pixels is not None:
        if not 1 <= args.max_pixels <= 1 << 30:
            raise UsageError("--max-pixels must be from 1 to 1073741824")
        limits = dataclasses.replace(DEFAULT_LIMITS, max_pixels=args.max_pixels)
    sub = MaskSubscriber(
        args.url,
        topics,
        latest_only=args.latest,
        timeout=args.timeout,
        server_key=args.server_key,
        client_key=args.client_key,
        limits=limits,
        max_age_s=args.max_age,
    )
    # Ctrl-C and SIGTERM end the loop between messages, so a --json line is never cut.
    stopping = threading.Event()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: (stopping.set(), sub.stop()))
    window, total = _Window(), _Window()
    masks = 0
    next_status = time.monotonic() + args.interval
    rc = 0
    try:
        while not stopping.is_set():
            msg = sub.recv(timeout=0.25)
            now = time.monotonic()
            if msg is not None:
                lat = window.add(msg)
                total.add(msg)
                if args.json:
                    rec = {"topic": msg.topic, "header": msg.header, "bytes": msg.nbytes}
                    rec["recv_ts_ns"] = msg.recv_ts_ns
                    rec.update(lat)
                    if msg.topic == "mask":
                        rec["foreground"] = round(float((msg.data > 0).mean()), 4)
                    elif msg.topic == "telemetry":
                        rec["status"] = msg.data
                    print(json.dumps(rec), flush=True)
                if save_dir is not None:
                    _save(save_dir, msg)
                if show:
                    _show(msg)
                if counted is None or msg.topic == counted:
                    masks += 1
                    if args.count and masks >= args.count:
                        break
            elif args.timeout is not None and now - sub.last_message_mono >= args.timeout:
                rc = 9
                break
            if args.interval > 0 and now >= next_status:
                line = window.summary(sub.stats)
                if args.json:
                    print(json.dumps({"status": line}), file=sys.stderr, flush=True)
                else:
                    print(_status_line(line), flush=True)
                window.reset()
                next_status = now + args.interval
    except KeyboardInterrupt:
        pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        summary = total.summary(sub.stats)
        stats = sub.stats
        sub.close()
        if show:
            import cv2

            cv2.destroyAllWindows()
    summary["received"] = stats["received"]
    summary["errors"] = stats["errors"]
    if args.json:  # stdout stays one JSON object per line
        print(json.dumps({"summary": summary}), flush=True)
    else:
        print("summary " + json.dumps(summary), flush=True)
    if rc == 9:
        hint = (
            "is segcam running with publish.enabled=true on that address? "
            "check the port, firewall and CURVE keys"
        )
        if stats["handshake_failures"]:
            hint = (
                f"the publisher refused the handshake {stats['handshake_failures']} times: "
                "pass --server-key (its public key) and --client-key (a .key_secret whose "
                ".key is in the publisher's authorised keys), or drop them for a "
                "plaintext publisher"
            )
        elif stats["discarded_old"]:
            hint = (
                f"{stats['discarded_old']} messages arrived but were older than "
                f"--max-age {args.max_age:g} s: sync the clocks (NTP) or raise --max-age"
            )
        raise PublishError(f"no message from {', '.join(args.url)} for {args.timeout:g} s", hint)
    return rc


def _show(msg: Any) -> None:
    import cv2

    if msg.topic == "mask":
        img = msg.data * 255 if msg.header.get("values") == "binary" else msg.data
        cv2.imshow("segcam mask", img)
    elif msg.topic == "frame":
        cv2.imshow("segcam frame", msg.data)
    cv2.waitKey(1)
