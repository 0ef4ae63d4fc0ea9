"""What a new user meets first: the import name, presets, exit codes, stop reasons, paths.

Everything runs as a user would: ``segcam`` in a subprocess, from folders other than the
checkout, with the real model, real files and real signals.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

import segcam.errors as errors
from segcam.config import load_config, preset_names
from segcam.errors import EXIT_CODES, SegcamError

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--set", "input.width=320", "--set", "input.height=180"]


def _env(tmp_path: Path, **extra: str) -> dict:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["SEGCAM_CACHE"] = str(tmp_path / "cache")
    env.update(extra)
    return env


def _segcam(args: List[str], cwd: Path, env: dict, timeout: float = 120):
    return subprocess.run(
        [sys.executable, "-m", "segcam", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ------------------------------------------------------------------ the import name
@pytest.mark.slow
def test_wheel_installs_only_the_segcam_package(tmp_path: Path) -> None:
    """A built wheel has one top-level name, segcam, with configs, kernels and the unit."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("segcam-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top_level).decode().split() == ["segcam"]
        entry = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "segcam = segcam.cli:main" in zf.read(entry[0]).decode()
        (record,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        paths = [line.split(",")[0] for line in zf.read(record).decode().splitlines() if line]
    tops = {p.split("/")[0] for p in paths}
    assert {t for t in tops if not t.startswith("segcam-")} == {"segcam"}, tops
    assert "segcam/configs/default.yaml" in paths
    assert "segcam/configs/devices/orin-nano.yaml" in paths
    assert "segcam/gpu/kernels/composite.cu" in paths
    assert "segcam/systemd/segcam.service" in paths
    assert not any(p.startswith("app/") for p in paths)


def test_segcam_runs_beside_an_unrelated_app_package(tmp_path: Path) -> None:
    """A user's own ``app`` package (Flask, FastAPI) first on sys.path changes nothing."""
    user_app = tmp_path / "app"
    user_app.mkdir()
    (user_app / "__init__.py").write_text("raise ImportError('this is the user\\'s app')\n")
    (user_app / "cli.py").write_text("raise ImportError('this is the user\\'s app.cli')\n")
    env = _env(tmp_path, PYTHONPATH=str(tmp_path))
    proc = _segcam(["--version"], tmp_path, env)
    assert proc.returncode == 0 and proc.stdout.startswith("segcam "), proc.stderr
    exe = shutil.which("segcam")
    if exe is None:
        pytest.skip("the segcam console script is not on PATH in this environment")
    proc = subprocess.run(
        [exe, "--version"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("segcam "), proc.stderr


# ------------------------------------------------------------------ presets
def test_packaged_preset_by_name_runs_from_another_folder(selfie_onnx, tmp_path) -> None:
    stats = tmp_path / "stats.json"
    args = ["run", "--config", "orin-nano", "--frames", "5", "--output", "none"]
    args += ["--set", f"model.path={selfie_onnx}", *SMALL, "--stats-json", str(stats)]
    proc = _segcam(args, tmp_path, _env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    st = json.loads(stats.read_text())
    assert st["stop_reason"] == "5 frames done (--frames)"
    assert st["frames_completed"] == 5
    # the preset's own values are in force, not the defaults
    nano = load_config("orin-nano")
    assert st["config"]["thermal"]["thresholds"]["warm"] == nano.thermal.thresholds.warm
    assert nano.source_path.endswith(os.path.join("devices", "orin-nano.yaml"))


def test_config_list_and_show(tmp_path: Path) -> None:
    env = _env(tmp_path)
    listed = _segcam(["config", "list"], tmp_path, env)
    assert listed.returncode == 0, listed.stderr
    for name in preset_names():
        assert re.search(rf"^{name}\s+Device preset", listed.stdout, re.M), listed.stdout
    assert {"orin-nano", "orin-nx", "orin-agx", "xavier-nx", "xavier-agx"} <= set(preset_names())
    shown = _segcam(
        ["config", "show", "orin-nano", "--set", "refine.threshold=0.65"], tmp_path, env
    )
    assert shown.returncode == 0, shown.stderr
    import yaml

    merged = yaml.safe_load(shown.stdout)
    assert merged["refine"]["threshold"] == 0.65
    assert (
        merged["thermal"]["thresholds"]["warm"] == load_config("orin-nano").thermal.thresholds.warm
    )
    missing = _segcam(["config", "show", "orin-nanoo"], tmp_path, env)
    assert missing.returncode == 2 and "orin-nano" in missing.stderr  # names the presets
    assert "Traceback" not in missing.stderr


def test_a_file_of_the_same_name_wins_over_a_preset(tmp_path: Path) -> None:
    (tmp_path / "orin-nano").write_text("refine:\n  threshold: 0.42\n")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert load_config("orin-nano").refine.threshold == 0.42
    finally:
        os.chdir(cwd)


def test_bare_run_says_what_it_does(selfie_onnx, tmp_path) -> None:
    args = ["run", "--frames", "2", "--set", f"model.path={selfie_onnx}", *SMALL]
    proc = _segcam(args, tmp_path, _env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "running the demo scene with output 'none'" in proc.stderr
    assert "--output display://0" in proc.stderr and "--output file://" in proc.stderr


# ------------------------------------------------------------------ exit codes
def test_exit_code_table_covers_every_error_class_and_matches_readme_and_help(tmp_path) -> None:
    table = dict(EXIT_CODES)
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, SegcamError)
    ]
    for cls in classes:
        assert cls.exit_code in table, cls
        if cls is not SegcamError:
            assert (
                cls.__name__ in table[cls.exit_code]
                or cls.__bases__[0].__name__ in (table[cls.exit_code])
            ), cls
    readme = (REPO / "README.md").read_text()
    rows = dict(
        (int(m.group(1)), m.group(2).strip())
        for m in re.finditer(r"^\| (\d+) \| (.+) \|$", readme, re.M)
    )
    assert rows == table
    proc = _segcam(["--help"], tmp_path, _env(tmp_path))
    for code, what in EXIT_CODES:
        assert f"{code:>3}  {what}" in proc.stdout


@pytest.mark.parametrize(
    "args, code, says",
    [
        (["--set", "pipeline.queue_depth=lots"], 2, "pipeline.queue_depth"),
        (["--set", "model.path=/nonexistent/model.onnx"], 3, "does not exist"),
        (["--input", "/nonexistent/clip.mp4"], 5, "does not exist"),
        (["--output", "file:///nonexistent-segcam/dir/out.mp4"], 6, "mkdir -p"),
        (["--set", "inference.device=gpu"], 8, "no GPU can be used"),
        (
            ["--set", "publish.enabled=true", "--set", "publish.bind=tcp://999.1.1.1:5555"],
            9,
            "cannot bind the mask publisher",
        ),
    ],
    ids=["config-2", "model-3", "input-5", "output-6", "gpu-8", "publish-9"],
)
def test_each_reachable_exit_code(selfie_onnx, tmp_path, args, code, says) -> None:
    if code == 8 and _gpu_usable():
        pytest.skip("this machine has a usable GPU: exit 8 is not reachable")
    base = ["run", "--frames", "3", "--set", f"model.path={selfie_onnx}", *SMALL]
    proc = _segcam(base + args, tmp_path, _env(tmp_path))
    assert proc.returncode == code, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert not Path("/nonexistent-segcam").exists()  # a missing folder is not created


def _gpu_usable() -> bool:
    from segcam.gpu.device import probe

    return probe()[0] is not None


# ------------------------------------------------------------------ output paths
def test_output_whose_parent_is_a_file_says_so(selfie_onnx, tmp_path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not a folder")
    args = ["run", "--frames", "2", "--set", f"model.path={selfie_onnx}", *SMALL]
    proc = _segcam(args + ["--output", f"file://{clip}/out.mp4"], tmp_path, _env(tmp_path))
    assert proc.returncode == 6
    assert f"{clip} is a file, not a folder" in proc.stderr
    assert "File exists" not in proc.stderr


# ------------------------------------------------------------------ stop reasons
def test_seconds_has_its_own_stop_reason(selfie_onnx, tmp_path) -> None:
    stats = tmp_path / "s.json"
    args = ["run", "--seconds", "1", "--set", f"model.path={selfie_onnx}", *SMALL]
    proc = _segcam(args + ["--stats-json", str(stats)], tmp_path, _env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(stats.read_text())["stop_reason"] == "1 s elapsed (--seconds)"
    assert "stopped: 1 s elapsed (--seconds)" in proc.stderr


def _write_clip(path: Path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 180))
    rng = np.random.default_rng(1)
    for i in range(frames):
        f = rng.integers(0, 60, (180, 320, 3), dtype=np.uint8)
        f[:, (i * 2) % 300 : (i * 2) % 300 + 20] = 255
        writer.write(f)
    writer.release()


def test_damaged_file_ends_with_a_warning_naming_the_frames(selfie_onnx, tmp_path) -> None:
    clip = tmp_path / "clip.mp4"
    _write_clip(clip, 150)
    data = bytearray(clip.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = np.random.default_rng(2).integers(0, 256, third, np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    stats = tmp_path / "s.json"
    args = ["run", "--input", str(damaged), "--set", f"model.path={selfie_onnx}"]
    proc = _segcam(args + ["--stats-json", str(stats)], tmp_path, _env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"ended at frame (\d+) of the 150 its container declares", proc.stderr)
    assert m, proc.stderr
    reached = int(m.group(1))
    assert 0 < reached < 150
    st = json.loads(stats.read_text())
    assert st["stop_reason"] == "end of input"
    assert st["frames_completed"] == reached
    # a whole file ends without the warning
    whole = _segcam(
        ["run", "--input", str(clip), "--set", f"model.path={selfie_onnx}"],
        tmp_path,
        _env(tmp_path),
    )
    assert whole.returncode == 0 and "ended at frame" not in whole.stderr


# ------------------------------------------------------------------ thermal on a desktop
def test_missing_sensors_are_info_off_a_jetson_and_warning_on_one(tmp_path, caplog) -> None:
    from segcam.thermal import ThermalGovernor

    desktop = tmp_path / "desktop"
    jetson = tmp_path / "jetson"
    (desktop / "sys").mkdir(parents=True)
    (jetson / "etc").mkdir(parents=True)
    (jetson / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 3.0\n")
    for root, level in ((desktop, logging.INFO), (jetson, logging.WARNING)):
        cfg = load_config(None, [f"thermal.sysfs_root={root}", "thermal.sensor=sysfs"])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="segcam"):
            gov = ThermalGovernor(cfg)
            gov.start(None)
            gov.stop()
        (rec,) = [r for r in caplog.records if "no temperature sensors" in r.getMessage()]
        assert rec.levelno == level, (root, rec.levelname)
