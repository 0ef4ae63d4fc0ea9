"""Logging set-up shared by every command (plain console format; journald aware)."""

from __future__ import annotations

import logging
import os
import sys

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def setup_logging(level: str = "info") -> None:
    """Configure the ``segcam`` logger once; later calls only change the level."""
    logger = logging.getLogger("segcam")
    logger.setLevel(_LEVELS.get(level, logging.INFO))
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        # journald stamps every line itself; a second timestamp is noise.
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    logger.addHandler(handler)
    logger.propagate = False
