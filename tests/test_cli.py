"""The `segcam` command line: help, version, error reporting without tracebacks."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from segcam.cli import COMMANDS, main
from segcam.errors import ConfigError, SegcamError


def _segcam(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segcam", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_every_built_command() -> None:
    proc = _segcam("--help")
    assert proc.returncode == 0
    for name, module in COMMANDS:
        try:
            __import__(module)
        except ModuleNotFoundError:
            continue
        assert name in proc.stdout


def test_version() -> None:
    proc = _segcam("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("segcam ")


def test_no_command_prints_help_and_exits_2() -> None:
    proc = _segcam()
    assert proc.returncode == 2 and "COMMAND" in proc.stdout


def test_console_script_installed() -> None:
    exe = shutil.which("segcam")
    if exe is None:
        pytest.skip("segcam console script not on PATH (package not installed in this env)")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0


def test_segcam_errors_become_one_line_and_exit_code(monkeypatch, capsys) -> None:
    import segcam.cli as cli

    def boom(args):
        raise ConfigError("refine.threshold (line 3): expected a number", "fix it")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args_ns = parser.parse_args(["--log-level", "error"])
    args_ns._run = boom
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args_ns)
    code = main([])
    err = capsys.readouterr().err
    assert code == ConfigError.exit_code == 2
    assert "segcam: error: refine.threshold (line 3)" in err and "hint: fix it" in err


def test_every_error_type_has_a_distinct_meaningful_exit_code() -> None:
    import segcam.errors as errors

    codes = {
        cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, SegcamError)
    }
    assert 0 not in codes and all(1 <= c < 126 for c in codes)
