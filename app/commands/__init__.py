"""Subcommands of ``segcam``; see :mod:`segcam.cli` for the contract each module follows."""

from __future__ import annotations

import argparse

from segcam.config import Config, load_config
from segcam.log import setup_logging


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` and repeatable ``--set KEY=VALUE`` to a subcommand."""
    parser.add_argument("--config", "-c", metavar="FILE", help="YAML config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set refine.threshold=0.6 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by ``--config``/``--set`` and apply its log level."""
    cfg = load_config(getattr(args, "config", None), getattr(args, "overrides", ()))
    if not getattr(args, "log_level", None):
        setup_logging(cfg.logging.level)
    return cfg
