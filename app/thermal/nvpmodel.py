"""Query and request Jetson power modes through NVIDIA's ``nvpmodel`` tool.

Changing the mode (``nvpmodel -m N``) needs root: run the service as root or allow that
one command in sudoers. Querying (``nvpmodel -q``) works for any user on JetPack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Callable, Optional, Sequence

from segcam.errors import ThermalError

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _run(args: Sequence[str], runner: Optional[Runner], timeout: float):
    run = runner or subprocess.run
    return run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def query_nvpmodel(runner: Optional[Runner] = None, timeout: float = 5.0) -> Optional[str]:
    """The current power mode, e.g. ``"MAXN (id 0)"``, or None when nvpmodel is absent."""
    if runner is None and shutil.which("nvpmodel") is None:
        return None
    try:
        proc = _run(["nvpmodel", "-q"], runner, timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    m = re.search(r"NV Power Mode:\s*(\S.*)", proc.stdout)
    if not m:
        return None
    ident = re.search(r"^\s*(\d+)\s*$", proc.stdout[m.end() :], re.MULTILINE)
    return f"{m.group(1).strip()} (id {ident.group(1)})" if ident else m.group(1).strip()


def request_nvpmodel(mode: int, runner: Optional[Runner] = None, timeout: float = 15.0) -> str:
    """Switch to power mode ``mode`` (``nvpmodel -m N``); ThermalError says why not."""
    if runner is None and shutil.which("nvpmodel") is None:
        raise ThermalError(
            f"cannot switch to nvpmodel {mode}: the nvpmodel tool is not installed",
            "this is a Jetson-only action; set thermal.allow_nvpmodel: false elsewhere",
        )
    try:
        proc = _run(["nvpmodel", "-m", str(int(mode))], runner, timeout)
    except subprocess.TimeoutExpired:
        raise ThermalError(f"nvpmodel -m {mode} did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise ThermalError(f"cannot run nvpmodel -m {mode}: {exc}") from None
    if proc.returncode != 0:
        text = (proc.stderr or proc.stdout or "").strip().splitlines()
        detail = text[-1] if text else f"exit status {proc.returncode}"
        hint = "nvpmodel needs root: run the service as root or allow `nvpmodel -m` in sudoers"
        low = detail.lower()
        if "invalid" in low or ("not" in low and "mode" in low and "permission" not in low):
            hint = (
                "list this device's modes with `nvpmodel -p --verbose` and fix actions.*.nvpmodel"
            )
        raise ThermalError(f"nvpmodel -m {mode} failed: {detail}", hint)
    return f"nvpmodel {mode} set"
