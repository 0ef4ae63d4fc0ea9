"""``segcam relay``: republish one or many devices' mask streams to any number of subscribers."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path
from typing import Any, List

HELP = "relay devices' mask streams to many subscribers (ZeroMQ proxy, CURVE both sides)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--from URL [--device-key FILE] ... --bind ADDR --key FILE --authorized-keys DIR ..."""
    parser.add_argument(
        "--from",
        dest="upstream",
        action="append",
        required=True,
        metavar="URL",
        help="a device's publisher address, e.g. tcp://cam1:5555 (repeatable)",
    )
    parser.add_argument(
        "--device-key",
        action="append",
        metavar="FILE",
        help="the device's public server.key for CURVE: once for all devices, or once per "
        "--from in the same order ('-' = that device is plaintext)",
    )
    parser.add_argument(
        "--bind",
        action="append",
        metavar="ADDR",
        help="where subscribers connect (repeatable; default tcp://127.0.0.1:5556)",
    )
    parser.add_argument(
        "--key",
        metavar="FILE",
        help="the relay's own .key_secret (segcam keys generate --name relay): its identity "
        "towards devices and its server key towards subscribers",
    )
    parser.add_argument(
        "--authorized-keys",
        metavar="DIR",
        help="directory of the subscribers' public .key files: CURVE towards subscribers",
    )
    parser.add_argument(
        "--sndhwm", type=int, default=16, help="queue per subscriber (default 16 messages)"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=2.0,
        metavar="S",
        help="ZMTP heartbeat towards subscribers; silent ones are cut after 3 S (0 = off)",
    )
    parser.add_argument(
        "--status-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="publish the relay's counters on topic 'relay' every S seconds (0 = off)",
    )
    parser.add_argument("--name", default="", help="stream name of the relay's status messages")
    parser.add_argument("--seconds", type=float, default=None, help="stop after S seconds")
    parser.add_argument("--stats-json", metavar="FILE", help="write the final counters here")


def _upstreams(args: argparse.Namespace) -> List[Any]:
    from segcam.errors import UsageError
    from segcam.publish.relay import Upstream

    keys = args.device_key or []
    if len(keys) not in (0, 1, len(args.upstream)):
        raise UsageError(
            f"{len(keys)} --device-key for {len(args.upstream)} --from",
            "give one --device-key for all devices, or one per --from in the same order",
        )
    if len(keys) == 1:
        keys = keys * len(args.upstream)
    if not keys:
        keys = [""] * len(args.upstream)
    return [Upstream(url, "" if key == "-" else key) for url, key in zip(args.upstream, keys)]


def run(args: argparse.Namespace) -> int:
    """Relay until SIGINT/SIGTERM or --seconds; print the final counters."""
    from segcam.errors import UsageError
    from segcam.publish.relay import Relay, RelayConfig

    if args.seconds is not None and not args.seconds > 0:
        raise UsageError("--seconds must be a positive number")
    if args.stats_json and not Path(args.stats_json).expanduser().parent.is_dir():
        raise UsageError(f"--stats-json {args.stats_json}: its directory does not exist")
    cfg = RelayConfig(
        upstream=_upstreams(args),
        bind=args.bind or ["tcp://127.0.0.1:5556"],
        key=args.key or "",
        authorized_keys_dir=args.authorized_keys or "",
        sndhwm=args.sndhwm,
        heartbeat_s=args.heartbeat,
        status_interval_s=args.status_interval,
        name=args.name,
    )
    relay = Relay(cfg)
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: relay.stop())
    try:
        final = relay.run(args.seconds)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    text = json.dumps(final, indent=2)
    if args.stats_json:
        Path(args.stats_json).expanduser().write_text(text + "\n")
    print("relay summary " + json.dumps(final), flush=True)
    return 0
