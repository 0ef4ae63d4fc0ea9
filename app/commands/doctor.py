"""``segcam doctor``: check this device, one line per check (OK / WARN / FAIL + fix)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segcam.commands import add_config_options, config_from_args

HELP = "check this device: Jetson, CUDA, TensorRT, ONNX Runtime, cameras, thermals, model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--json, --root and the usual --config/--set."""
    add_config_options(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--root",
        default="/",
        metavar="DIR",
        help="look for /proc, /etc, /sys and /dev under DIR (inspect a mounted image)",
    )


def run(args: argparse.Namespace) -> int:
    """Run every check; exit 1 if any FAILed (something that stops `segcam run`)."""
    from segcam.doctor import DoctorContext, exit_code, format_report, run_checks, to_json

    cfg = config_from_args(args)
    ctx = DoctorContext(cfg=cfg, root=Path(args.root))
    results = run_checks(ctx)
    print(to_json(results) if args.json else format_report(results))
    return exit_code(results)
