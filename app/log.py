"""Logging set-up shared by every command: a plain console format, journald aware.

Under systemd with stderr connected to the journal (``$JOURNAL_STREAM`` names stderr's
device and inode), lines carry no timestamp (journald stamps each entry) and start with
the syslog priority in the ``<N>`` form of sd-daemon(3), so ``journalctl -p warning``
filters segcam's warnings and errors. Every line of a multi-line message (a traceback)
gets the prefix, because journald reads each line as its own entry. The same holds for
what does not go through a logger: the CLI's final ``error:``/``hint:`` lines
(:func:`for_stderr`) and the traceback of an uncaught exception (critical).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from typing import IO, Any, Mapping, Optional

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# sd-daemon.h: SD_EMERG 0 ... SD_ERR 3, SD_WARNING 4, SD_NOTICE 5, SD_INFO 6, SD_DEBUG 7.
SYSLOG_PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def syslog_priority(levelno: int) -> int:
    """The syslog priority (0-7) of a logging level; in-between levels round up in severity."""
    for level in sorted(SYSLOG_PRIORITIES, reverse=True):
        if levelno >= level:
            return SYSLOG_PRIORITIES[level]
    return 7


def prefix_lines(text: str, levelno: int) -> str:
    """``text`` with the ``<N>`` priority of ``levelno`` at the start of every line."""
    prefix = f"<{syslog_priority(levelno)}>"
    return "\n".join(prefix + line for line in text.split("\n"))


class JournalFormatter(logging.Formatter):
    """``<N>name: message`` with every line prefixed, and no timestamp."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` and prefix each of its lines with its ``<priority>``."""
        return prefix_lines(super().format(record), record.levelno)


def console_formatter() -> logging.Formatter:
    """The terminal format: time, level, logger, message."""
    return logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")


def stream_is_journal(
    stream: Optional[IO[str]] = None, env: Optional[Mapping[str, str]] = None
) -> bool:
    """True when ``stream`` (default stderr) is the journal stream systemd connected.

    ``$JOURNAL_STREAM`` is ``<device>:<inode>`` of that stream; comparing it with the
    stream's own fstat() avoids prefixing output that a user redirected elsewhere (the
    variable is inherited by children whose stderr is a pipe or a terminal).
    """
    env = os.environ if env is None else env
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        dev_text, ino_text = value.split(":", 1)
        st = os.fstat(stream.fileno())
        return st.st_dev == int(dev_text) and st.st_ino == int(ino_text)
    except (ValueError, OSError, AttributeError):
        return False


def for_stderr(text: str, levelno: int = logging.ERROR) -> str:
    """``text`` ready for stderr: priority-prefixed when stderr is the journal, else as is."""
    return prefix_lines(text, levelno) if stream_is_journal() else text


def _journal_excepthook(exc_type: Any, exc: Any, tb: Any) -> None:
    # An uncaught exception is a crash: critical, so `journalctl -p err` shows the
    # traceback instead of hiding it among the info lines.
    text = "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n")
    sys.stderr.write(prefix_lines(text, logging.CRITICAL) + "\n")
    sys.stderr.flush()


def _journal_thread_excepthook(args: Any) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "?"
    sys.stderr.write(prefix_lines(f"uncaught exception in thread {name}:", logging.CRITICAL))
    sys.stderr.write("\n")
    _journal_excepthook(args.exc_type, args.exc_value, args.exc_traceback)


def setup_logging(level: str = "info") -> None:
    """Configure the ``segcam`` logger once; later calls only change the level."""
    logger = logging.getLogger("segcam")
    logger.setLevel(_LEVELS.get(level, logging.INFO))
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    journal = stream_is_journal()
    handler.setFormatter(JournalFormatter() if journal else console_formatter())
    logger.addHandler(handler)
    if journal:
        sys.excepthook = _journal_excepthook
        threading.excepthook = _journal_thread_excepthook
    # Propagation stays on: the CLI's root logger has no handlers, so nothing prints twice,
    # and hosts that embed segcam (or pytest's caplog) still see its records.
