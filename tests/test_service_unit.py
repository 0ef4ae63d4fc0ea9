"""The systemd unit: `systemd-analyze verify` and the offline security exposure score.

systemd-analyze runs here for real (CI installs the systemd package when it is absent).
``verify`` resolves ExecStart=, so it checks a copy of the unit whose ExecStart names the
segcam script of this checkout's environment (what `segcam service install` writes).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from segcam.service_install import packaged_unit_text, render_unit

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "segcam.service"
ANALYZE = shutil.which("systemd-analyze")

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


def _segcam_script() -> str:
    script = Path(sys.executable).parent / "segcam"
    return str(script if script.is_file() else Path(sys.executable))


def _rendered(tmp_path: Path, text: str = "") -> Path:
    unit = tmp_path / "segcam.service"
    unit.write_text(
        text or render_unit(packaged_unit_text(), _segcam_script(), "segcam", ["video"])
    )
    return unit


def _verify(unit: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    if "Failed to" in proc.stderr and "bus" in proc.stderr.lower() and proc.returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {proc.stderr.strip()}")
    return proc


def test_the_packaged_unit_is_the_one_the_installer_renders():
    # render_unit only rewrites ExecStart/User/Group/SupplementaryGroups: the shipped
    # file is already a complete unit.
    text = UNIT.read_text()
    assert packaged_unit_text() == text
    rendered = render_unit(text, "/usr/local/bin/segcam", "segcam", ["video", "render"])
    assert rendered == text
    for line in (
        "Type=notify",
        "ExecReload=/bin/sh -c 'kill -HUP \"$$1\"' segcam-reload $MAINPID",
        "Restart=on-failure",
        "User=segcam",
        "StateDirectory=segcam",
        "CapabilityBoundingSet=",
        "ExecStart=/usr/local/bin/segcam run --config /etc/segcam/config.yaml",
    ):
        assert line in text.splitlines(), line


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path):
    unit = _rendered(tmp_path)
    proc = _verify(unit)
    messages = [ln for ln in (proc.stdout + proc.stderr).splitlines() if unit.name in ln]
    assert proc.returncode == 0, proc.stderr
    assert messages == [], messages


@needs_analyze
def test_verify_catches_a_misspelt_directive(tmp_path: Path):
    # Proof that the check above can fail: a typo in a directive is reported.
    text = render_unit(packaged_unit_text(), _segcam_script(), "segcam", ["video"])
    unit = _rendered(tmp_path, text.replace("\nUMask=", "\nUMsk="))
    proc = _verify(unit)
    assert "Unknown key" in proc.stderr and "UMsk" in proc.stderr, proc.stderr


@needs_analyze
def test_security_exposure_is_at_most_2_5(tmp_path: Path):
    unit = _rendered(tmp_path)
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 and "offline" in proc.stderr:
        pytest.skip(f"this systemd-analyze has no --offline: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", proc.stdout)
    assert m, proc.stdout[-2000:]
    score = float(m.group(1))
    loose = [ln.strip() for ln in proc.stdout.splitlines() if ln.lstrip().startswith("✗")]
    print(f"\nsystemd-analyze security exposure: {score} {m.group(2)}")
    print("\n".join(loose))
    assert score <= 2.5, "\n".join(loose)
