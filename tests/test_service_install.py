"""`segcam service install/uninstall`: the dry run, and real installs into a temporary root.

Everything runs the real `segcam` console script in a subprocess. A temporary root
(--root) is the only place an install can go in a test: there the user is not created
and systemctl is not run, and the output says so.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "configs" / "default.yaml"


def segcam(*args: str) -> subprocess.CompletedProcess:
    cmd: List[str] = [sys.executable, "-m", "segcam", *args]
    return subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=60)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_dry_run_prints_every_action_and_changes_nothing(tmp_path: Path):
    root = tmp_path / "root"
    proc = segcam("service", "install", "--dry-run", "--root", str(root), "--user", "camuser")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "skip: create system user 'camuser' (--root given)" in out
    for path in ("etc/segcam", "var/lib/segcam", "var/lib/segcam/engines", "var/cache/segcam"):
        assert f"would create directory {root}/{path} mode 750" in out
    assert f"would install config {DEFAULT_CONFIG} -> {root}/etc/segcam/config.yaml" in out
    assert f"would install unit {root}/etc/systemd/system/segcam.service" in out
    assert "User=camuser" in out
    assert "skip: systemctl daemon-reload, enable --now segcam (--root given)" in out
    assert out.rstrip().endswith("dry run: nothing was changed")
    assert not root.exists()


def test_dry_run_on_the_real_root_lists_user_and_systemctl_steps():
    if Path("/etc/systemd/system/segcam.service").exists():
        pytest.skip("segcam is installed on this machine; the plan would differ")
    proc = segcam("service", "install", "--dry-run", "--user", "segcam-dry-run-test")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("note: the config reads the built-in demo scene; set input.uri")
    useradd = "would run: useradd --system --user-group --home-dir /var/lib/segcam"
    assert lines[1].startswith(useradd)
    assert lines[1].endswith(" segcam-dry-run-test")
    assert "would run: systemctl daemon-reload" in lines
    assert "would run: systemctl enable --now segcam.service" in lines
    assert not Path("/etc/systemd/system/segcam.service").exists()


def test_install_into_a_temporary_root_is_idempotent_and_keeps_the_config(tmp_path: Path):
    root = tmp_path / "root"
    first = segcam("service", "install", "--root", str(root))
    assert first.returncode == 0, first.stderr
    assert "not creating user 'segcam' and not running systemctl" in first.stdout

    config = root / "etc/segcam/config.yaml"
    unit = root / "etc/systemd/system/segcam.service"
    assert config.read_text() == DEFAULT_CONFIG.read_text()
    assert _mode(config) == 0o640
    for d in ("etc/segcam", "var/lib/segcam", "var/lib/segcam/engines", "var/cache/segcam"):
        assert (root / d).is_dir() and _mode(root / d) == 0o750, d
    text = unit.read_text()
    exe = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")][0]
    script = exe.split("=", 1)[1].split()[0]
    assert os.path.isabs(script) and os.access(script, os.X_OK), exe
    assert exe.endswith(" run --config /etc/segcam/config.yaml")

    # The operator edits the config; a second install changes nothing.
    config.write_text(config.read_text() + "\n# edited by the operator\n")
    edited = config.read_text()
    second = segcam("service", "install", "--root", str(root))
    assert second.returncode == 0, second.stderr
    assert (
        f"keep: {config} exists (differs from {DEFAULT_CONFIG}; not overwritten)" in second.stdout
    )
    assert f"ok: unit {unit} is up to date" in second.stdout
    assert config.read_text() == edited

    analyze = shutil.which("systemd-analyze")
    if analyze:
        proc = subprocess.run(
            [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True
        )
        assert proc.returncode == 0 and unit.name not in proc.stderr, proc.stderr


def test_install_with_a_given_config_and_refuses_a_broken_one(tmp_path: Path):
    root = tmp_path / "root"
    good = tmp_path / "mine.yaml"
    good.write_text("refine:\n  threshold: 0.7\n")
    proc = segcam("service", "install", "--root", str(root), "--config", str(good))
    assert proc.returncode == 0, proc.stderr
    assert (root / "etc/segcam/config.yaml").read_text() == good.read_text()

    bad = tmp_path / "bad.yaml"
    bad.write_text("refine:\n  threshold: 7\n")
    other = tmp_path / "other"
    proc = segcam("service", "install", "--root", str(other), "--config", str(bad))
    assert proc.returncode == 2
    assert "refine.threshold (line 2" in proc.stderr
    assert not other.exists()


def test_uninstall_keeps_config_and_engines_unless_purged(tmp_path: Path):
    root = tmp_path / "root"
    assert segcam("service", "install", "--root", str(root)).returncode == 0
    engine = root / "var/lib/segcam/engines/model.engine"
    engine.write_bytes(b"engine")

    proc = segcam("service", "uninstall", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert not (root / "etc/systemd/system/segcam.service").exists()
    assert (root / "etc/segcam/config.yaml").is_file()
    assert engine.is_file()
    assert f"keep: {root}/var/lib/segcam" in proc.stdout

    dry = segcam("service", "uninstall", "--root", str(root), "--purge", "--dry-run")
    assert f"would remove {root}/etc/segcam (--purge)" in dry.stdout
    assert engine.is_file()

    proc = segcam("service", "uninstall", "--root", str(root), "--purge")
    assert proc.returncode == 0, proc.stderr
    assert not (root / "etc/segcam").exists()
    assert not (root / "var/lib/segcam").exists()


@pytest.mark.skipif(
    Path("/run/systemd/system").is_dir(), reason="systemd runs here: status would really answer"
)
def test_status_without_systemd_says_so():
    if shutil.which("systemctl") is None:
        pytest.skip("no systemctl on this machine")
    proc = segcam("service", "status")
    assert proc.returncode == 11
    assert "segcam: error: cannot ask systemd about segcam.service" in proc.stderr


def test_a_segcam_under_home_is_refused(tmp_path: Path):
    # ProtectHome=yes hides /home from the service: such an install could never start.
    from segcam.errors import ServiceError
    from segcam.service_install import Options, execute, plan_install

    opts = Options(root=str(tmp_path / "root"), executable="/home/me/venv/bin/segcam")
    with pytest.raises(ServiceError, match="ProtectHome"):
        plan_install(opts)
    lines: List[str] = []
    dry = Options(
        root=str(tmp_path / "root"),
        executable="/home/me/venv/bin/segcam",
        dry_run=True,
        out=lines.append,
    )
    execute(plan_install(dry), dry)
    assert lines[0].startswith("warning: /home/me/venv/bin/segcam is under a home directory")
    assert not (tmp_path / "root").exists()


def test_install_says_when_the_config_it_keeps_could_not_start(tmp_path: Path):
    # The existing config is never overwritten; when it is broken the service could only
    # fail, so install says why (and on a real root enables without starting it).
    root = tmp_path / "root"
    assert segcam("service", "install", "--root", str(root)).returncode == 0
    config = root / "etc/segcam/config.yaml"
    config.write_text("refine:\n  threshold: seven\n")
    proc = segcam("service", "install", "--root", str(root), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"warning: the existing {config} is invalid: refine.threshold (line 2" in proc.stdout
    assert "the service would not start with it" in proc.stdout
