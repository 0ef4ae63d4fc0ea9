"""journald-friendly logging: <N> priority prefixes, no timestamps, only on the journal stream."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from segcam.log import JournalFormatter, stream_is_journal, syslog_priority

REPO = Path(__file__).resolve().parent.parent

SCRIPT = """
import logging
from segcam.log import setup_logging
setup_logging("debug")
log = logging.getLogger("segcam.test")
log.debug("dbg")
log.info("hello")
log.warning("careful")
log.error("two\\nlines")
"""


def _run_with_stderr_file(
    tmp_path: Path, journal_stream: str, args: Sequence[str] = ("-c", SCRIPT), rc: int = 0
) -> str:
    err = tmp_path / "stderr.txt"
    env = dict(os.environ)
    with open(err, "w") as fh:
        st = os.fstat(fh.fileno())
        env["JOURNAL_STREAM"] = journal_stream.format(dev=st.st_dev, ino=st.st_ino)
        proc = subprocess.run([sys.executable, *args], cwd=str(REPO), env=env, stderr=fh)
    assert proc.returncode == rc, err.read_text()
    return err.read_text()


def test_priorities_follow_sd_daemon():
    assert syslog_priority(logging.DEBUG) == 7
    assert syslog_priority(logging.INFO) == 6
    assert syslog_priority(logging.WARNING) == 4
    assert syslog_priority(logging.ERROR) == 3
    assert syslog_priority(logging.CRITICAL) == 2
    assert syslog_priority(logging.INFO + 5) == 6  # custom levels round to the next lower


def test_journal_formatter_prefixes_every_line():
    rec = logging.LogRecord("segcam.x", logging.ERROR, __file__, 1, "a\nb", None, None)
    assert JournalFormatter().format(rec) == "<3>segcam.x: a\n<3>b"


def test_under_journald_lines_carry_priority_and_no_timestamp(tmp_path: Path):
    out = _run_with_stderr_file(tmp_path, "{dev}:{ino}")
    assert out.splitlines() == [
        "<7>segcam.test: dbg",
        "<6>segcam.test: hello",
        "<4>segcam.test: careful",
        "<3>segcam.test: two",
        "<3>lines",
    ]


def test_a_stale_journal_stream_keeps_the_console_format(tmp_path: Path):
    # JOURNAL_STREAM inherited by a child whose stderr was redirected: not the journal.
    out = _run_with_stderr_file(tmp_path, "{dev}:1")
    first = out.splitlines()[0]
    assert re.match(r"^\d\d:\d\d:\d\d DEBUG   segcam.test: dbg$", first), first


def test_stream_is_journal_compares_device_and_inode(tmp_path: Path):
    with open(tmp_path / "f", "w") as fh:
        st = os.fstat(fh.fileno())
        assert stream_is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stream_is_journal(fh, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stream_is_journal(fh, {"JOURNAL_STREAM": "garbage"})
        assert not stream_is_journal(fh, {})


def test_the_cli_error_of_a_failed_start_is_an_error_in_the_journal(tmp_path: Path):
    # What `segcam run` prints before exiting 2 on a broken config: under systemd it must
    # be found by `journalctl -p err`, not hidden among the info lines.
    bad = tmp_path / "bad.yaml"
    bad.write_text("refine:\n  threshold: seven\n")
    args = ("-m", "segcam", "run", "--config", str(bad))
    out = _run_with_stderr_file(tmp_path, "{dev}:{ino}", args, rc=2)
    assert out.splitlines() == [
        f"<3>segcam: error: refine.threshold (line 2 of {bad}): expected a number, got 'seven'",
        "<3>segcam: hint: fix the value or remove the key to use the default",
    ]
    plain = _run_with_stderr_file(tmp_path, "{dev}:1", args, rc=2)
    assert plain.startswith("segcam: error: refine.threshold"), plain


def test_an_uncaught_exception_is_critical_on_every_line(tmp_path: Path):
    script = (
        "from segcam.log import setup_logging\n"
        "setup_logging()\n"
        "import threading\n"
        "t = threading.Thread(target=lambda: 1 / 0, name='worker')\n"
        "t.start(); t.join()\n"
        "raise RuntimeError('boom')\n"
    )
    out = _run_with_stderr_file(tmp_path, "{dev}:{ino}", ("-c", script), rc=1)
    lines = out.splitlines()
    assert lines[0] == "<2>uncaught exception in thread worker:"
    assert all(line.startswith("<2>") for line in lines), lines
    assert "<2>ZeroDivisionError: division by zero" in lines
    assert lines[-1] == "<2>RuntimeError: boom"
