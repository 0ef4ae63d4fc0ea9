"""The ``segcam`` command line: one subcommand per module in ``app/commands/``.

Each command module exposes ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Command modules import heavy dependencies inside ``run`` so that
``segcam --help`` stays fast and works when optional pieces are missing.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional, Sequence

from segcam import __version__
from segcam.errors import SegcamError, exit_codes_text
from segcam.log import for_stderr, setup_logging

# (command name, module) in the order `segcam --help` lists them.
COMMANDS = (
    ("run", "segcam.commands.run"),
    ("demo", "segcam.commands.demo"),
    ("bench", "segcam.commands.bench"),
    ("eval", "segcam.commands.eval"),
    ("model", "segcam.commands.model"),
    ("engine", "segcam.commands.engine"),
    ("subscribe", "segcam.commands.subscribe"),
    ("relay", "segcam.commands.relay"),
    ("keys", "segcam.commands.keys"),
    ("config", "segcam.commands.config"),
    ("doctor", "segcam.commands.doctor"),
    ("service", "segcam.commands.service"),
)

log = logging.getLogger("segcam")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="segcam",
        description="Person segmentation and background replacement for live video.",
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"segcam {__version__}")
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default=None,
        help="log verbosity (default: the config's logging.level, else info)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS:
        # A command module that fails to import is a packaging bug: let it fail loudly.
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``segcam`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    setup_logging(args.log_level or "info")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except SegcamError as exc:
        _print_error(exc)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        if exc.name != "cv2":
            raise
        # OpenCV is an installer's choice (setup.py's extras), so it may be absent.
        _print_error(
            SegcamError(
                "OpenCV (cv2) is not installed",
                "install segcam with one OpenCV: pip install -e '.[gui]' (desktop windows) or "
                "'.[headless]' (servers); on a Jetson use JetPack's python3-opencv in a venv "
                "made with --system-site-packages (docs/jetson.md)",
            )
        )
        return SegcamError.exit_code
    except KeyboardInterrupt:
        print("segcam: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _print_error(exc: SegcamError) -> None:
    lines: List[str] = [f"segcam: error: {exc.message}"]
    if exc.hint:
        lines.append(f"segcam: hint: {exc.hint}")
    print(for_stderr("\n".join(lines)), file=sys.stderr)
