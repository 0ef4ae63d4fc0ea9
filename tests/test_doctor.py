"""``segcam doctor``: the real command on this machine, and checks against fake roots.

The fake roots are trees of real files (/proc/device-tree/model, /etc/nv_tegra_release,
/sys/class/thermal, /dev/video*) as a Jetson has them. Tools that exist only on a Jetson or
a systemd host (nvpmodel, systemctl, v4l2-ctl) are replaced through the context's
``which``/``runner`` by stand-ins that print what the real tools print; each test says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from thermal_tree import add_zone

from segcam.config import load_config
from segcam.doctor import (
    CHECKS,
    FAIL,
    OK,
    WARN,
    Check,
    DoctorContext,
    check_cameras,
    check_jetson,
    check_power,
    check_publish,
    check_recorder,
    check_service,
    check_thermal,
    exit_code,
    format_report,
    run_checks,
)

REPO = Path(__file__).resolve().parent.parent


def _segcam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segcam", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _jetson_root(root: Path, trips: bool = True) -> Path:
    """A fake Orin Nano: device-tree model, L4T 36.3, five zones with trip points, a camera."""
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson Orin Nano Developer Kit\x00")
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64, "
        "DATE: Mon May  6 17:34:21 UTC 2024\n"
    )
    t = {"passive": 99000, "critical": 104500} if trips else None
    for i, name in enumerate(["cpu-thermal", "gpu-thermal", "soc0-thermal", "tj-thermal"]):
        add_zone(root, i, name, 48000 + i * 500, trips=t)
    (root / "dev").mkdir()
    (root / "dev/video0").write_text("")
    return root


class Tools:
    """Stand-ins for Jetson/systemd tools: maps argv prefixes to (rc, stdout)."""

    def __init__(self, outputs: Dict[str, tuple]) -> None:
        self.outputs = outputs
        self.calls: List[List[str]] = []

    def which(self, name: str) -> Optional[str]:
        return f"/usr/bin/{name}" if any(k.split()[0] == name for k in self.outputs) else None

    def runner(self, args, **kwargs):
        self.calls.append(list(args))
        key = " ".join(args)
        for prefix, (rc, out) in self.outputs.items():
            if key.startswith(prefix):
                return subprocess.CompletedProcess(args, rc, out, "")
        return subprocess.CompletedProcess(args, 1, "", "unknown")


# ----------------------------------------------------------------------------- this machine


def test_doctor_runs_here_and_exits_0() -> None:
    proc = _segcam("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for fn in CHECKS:
        name = fn.__name__.replace("check_", "")
        assert any(line.split()[1:2] == [name] for line in lines if line[:4].strip()), name
    assert "0 failures: fit to run" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_doctor_json_shape() -> None:
    proc = _segcam("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True
    assert set(doc["counts"]) == {OK, WARN, FAIL} and doc["counts"][FAIL] == 0
    assert len(doc["checks"]) == len(CHECKS)
    for item in doc["checks"]:
        assert set(item) == {"name", "status", "detail", "hint", "data"}
        assert item["status"] in (OK, WARN, FAIL)
    names = [c["name"] for c in doc["checks"]]
    assert names[:3] == ["config", "python", "jetson"]
    onnx = next(c for c in doc["checks"] if c["name"] == "onnxruntime")
    assert "CPUExecutionProvider" in onnx["data"]["providers"]


def test_doctor_fails_for_a_missing_camera(tmp_path: Path) -> None:
    proc = _segcam("doctor", "--root", str(tmp_path), "--set", "input.uri=/dev/video3")
    assert proc.returncode == 1
    line = next(ln for ln in proc.stdout.splitlines() if " cameras " in ln)
    assert line.startswith(FAIL) and "/dev/video3" in line
    assert "not fit to run" in proc.stdout


def test_doctor_bad_config_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("thermal:\n  thresholds: {warm: 90, hot: 80, critical: 95}\n")
    proc = _segcam("doctor", "--config", str(bad))
    assert proc.returncode == 2
    assert "warm < hot < critical" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- fake Jetson


def test_jetson_model_release_and_preset(tmp_path: Path) -> None:
    ctx = DoctorContext(load_config(), root=_jetson_root(tmp_path))
    result = check_jetson(ctx)
    assert result.status == OK
    assert "Orin Nano" in result.detail and "L4T 36.3.0" in result.detail
    assert "JetPack 6.0" in result.detail
    assert "preset: --config orin-nano" in result.detail


def test_jetson_without_release_file_warns(tmp_path: Path) -> None:
    root = _jetson_root(tmp_path)
    (root / "etc/nv_tegra_release").unlink()
    result = check_jetson(DoctorContext(load_config(), root=root))
    assert result.status == WARN and "nv_tegra_release" in result.detail


def test_thermal_reports_temps_trips_and_state(tmp_path: Path) -> None:
    ctx = DoctorContext(load_config("configs/devices/orin-nano.yaml"), root=_jetson_root(tmp_path))
    result = check_thermal(ctx)
    assert result.status == OK, result
    assert "tj-thermal 49.5C" in result.detail
    assert "throttling 99.0C" in result.detail and "shutdown 104.5C" in result.detail
    assert result.data["state"] == "normal"
    assert result.data["trip_points"]["cpu-thermal"] == [["passive", 99.0], ["critical", 104.5]]


def test_thermal_warns_when_critical_is_above_the_kernel_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["thermal.thresholds={warm: 80, hot: 95, critical: 101}"])
    result = check_thermal(DoctorContext(cfg, root=_jetson_root(tmp_path)))
    assert result.status == WARN and "not below" in result.hint


def test_thermal_warns_when_already_hot(tmp_path: Path) -> None:
    root = _jetson_root(tmp_path)
    add_zone(root, 1, "gpu-thermal", 83000)
    result = check_thermal(DoctorContext(load_config(), root=root))
    assert result.status == WARN and result.data["state"] == "hot"


def test_thermal_without_sensors_warns(tmp_path: Path) -> None:
    result = check_thermal(DoctorContext(load_config(), root=tmp_path))
    assert result.status == WARN and "stay 'normal'" in result.detail


def test_power_reads_nvpmodel(tmp_path: Path) -> None:
    """`nvpmodel -q` is a stand-in printing what JetPack's tool prints."""
    tools = Tools({"nvpmodel -q": (0, "NV Power Mode: 15W\n0\n")})
    ctx = DoctorContext(
        load_config(), root=_jetson_root(tmp_path), which=tools.which, runner=tools.runner
    )
    result = check_power(ctx)
    assert result.status == OK and "nvpmodel: 15W (id 0)" in result.detail
    assert ["nvpmodel", "-q"] in tools.calls


def test_power_on_a_jetson_without_nvpmodel_warns(tmp_path: Path) -> None:
    tools = Tools({})
    ctx = DoctorContext(
        load_config(), root=_jetson_root(tmp_path), which=tools.which, runner=tools.runner
    )
    assert check_power(ctx).status == WARN


def test_cameras_with_formats(tmp_path: Path) -> None:
    """`v4l2-ctl --list-formats` is a stand-in with the real tool's output format."""
    root = _jetson_root(tmp_path)
    out = (
        "ioctl: VIDIOC_ENUM_FMT\n"
        "\t[0]: 'MJPG' (Motion-JPEG, compressed)\n"
        "\t[1]: 'YUYV' (YUYV 4:2:2)\n"
    )
    tools = Tools({"v4l2-ctl": (0, out)})
    cfg = load_config(None, ["input.uri=0"])
    result = check_cameras(DoctorContext(cfg, root=root, which=tools.which, runner=tools.runner))
    assert result.status == OK
    assert result.detail == "/dev/video0 [MJPG YUYV]"


def test_cameras_wrong_index_fails(tmp_path: Path) -> None:
    cfg = load_config(None, ["input.uri=1"])
    result = check_cameras(DoctorContext(cfg, root=_jetson_root(tmp_path), which=lambda n: None))
    assert result.status == FAIL and "/dev/video1" in result.detail


def test_publish_exposure_warns_and_missing_keys_fail(tmp_path: Path) -> None:
    cfg = load_config(None, ["publish.enabled=true", "publish.bind=[tcp://0.0.0.0:5555]"])
    result = check_publish(DoctorContext(cfg))
    assert result.status == WARN and "without CURVE" in result.hint
    cfg = load_config(
        None,
        [
            "publish.enabled=true",
            "publish.curve.enabled=true",
            f"publish.curve.server_secret_key={tmp_path / 'absent.key_secret'}",
        ],
    )
    assert check_publish(DoctorContext(cfg)).status == FAIL
    assert check_publish(DoctorContext(load_config())).status == OK


@pytest.mark.parametrize(
    "outputs, status, text",
    [
        ({}, OK, "systemctl not available"),
        ({"systemctl is-enabled": (1, "not-found\n")}, OK, "not installed"),
        (
            {"systemctl is-enabled": (0, "enabled\n"), "systemctl is-active": (0, "active\n")},
            OK,
            "enabled, active",
        ),
        (
            {"systemctl is-enabled": (0, "enabled\n"), "systemctl is-active": (3, "failed\n")},
            WARN,
            "enabled, failed",
        ),
    ],
)
def test_service_states(outputs, status, text) -> None:
    """systemctl is a stand-in: this machine has no systemd as PID 1."""
    tools = Tools(outputs)
    result = check_service(DoctorContext(load_config(), which=tools.which, runner=tools.runner))
    assert result.status == status and text in result.detail


def test_a_broken_check_is_a_warning_not_a_traceback() -> None:
    def check_broken(ctx: DoctorContext) -> Check:
        raise RuntimeError("boom")

    def check_bad(ctx: DoctorContext) -> Check:
        return Check("bad", FAIL, "it is broken", "fix it")

    results = run_checks(DoctorContext(load_config()), [check_broken, check_bad])
    assert results[0].status == WARN and "boom" in results[0].detail
    assert exit_code(results) == 1
    report = format_report(results)
    assert "-> fix it" in report and report.endswith("not fit to run")


def test_cuda_required_but_absent_fails_here() -> None:
    from segcam.doctor import check_cuda

    cfg = load_config(None, ["inference.device=gpu"])
    result = check_cuda(DoctorContext(cfg))
    if result.status == OK:
        pytest.skip("this machine has a usable CUDA GPU")
    assert result.status == FAIL and "inference.device" in result.detail
    auto = check_cuda(DoctorContext(load_config()))
    assert auto.status == WARN and "pipeline: CPU" in auto.detail


def test_model_in_cache_is_ok_and_missing_is_a_warning(
    tmp_path: Path, selfie_onnx: Path, model_cache: Path
) -> None:
    from segcam.doctor import check_model

    cfg = load_config(None, [f"model.cache_dir={model_cache}"])
    result = check_model(DoctorContext(cfg))
    assert result.status == OK and str(selfie_onnx) in result.detail
    empty = load_config(None, [f"model.cache_dir={tmp_path}"])
    missing = check_model(DoctorContext(empty))
    assert missing.status == WARN and "segcam model fetch" in missing.hint
    bad = load_config(None, [f"model.path={tmp_path / 'absent.onnx'}"])
    assert check_model(DoctorContext(bad)).status == FAIL


def test_recorder_line_names_the_writer_and_why(tmp_path: Path) -> None:
    pytest.importorskip("av", reason="PyAV not installed (pip install 'segcam[record]')")
    out = tmp_path / "rec.mp4"
    cfg = load_config(None, [f"output.uris=[file://{out}]"])
    line = check_recorder(DoctorContext(cfg))
    assert line.status == OK and line.data["backend"] == "pyav" and line.data["crash_safe"]
    assert "rec.mp4 pyav: H.264" in line.detail and "no hardware" in line.detail
    assert "GPL" in line.data["encoder_licence"]
    avi = load_config(None, [f"output.uris=[file://{tmp_path / 'rec.avi'}]"])
    line = check_recorder(DoctorContext(avi))
    assert line.status == WARN and "NOT crash-safe" in line.detail and "segcam[record]" in line.hint
    bad = load_config(
        None, [f"output.uris=[file://{tmp_path / 'a.webm'}]", "output.record.recorder=gstreamer"]
    )
    line = check_recorder(DoctorContext(bad))
    assert line.status == FAIL and "H.264 in .mp4/.mov/.mkv only" in line.detail


def test_opencv_warns_when_two_opencv_wheels_share_the_venv(monkeypatch) -> None:
    from segcam import doctor

    monkeypatch.setattr(
        doctor, "installed_opencv_wheels", lambda: ["opencv-python", "opencv-python-headless"]
    )
    ctx = doctor.DoctorContext(cfg=load_config(None))
    check = doctor.check_opencv(ctx)
    assert check.status == doctor.WARN and "overwrites" in check.detail
    assert "pip uninstall -y opencv-python opencv-python-headless" in check.hint


def test_segcam_without_opencv_says_how_to_install_one() -> None:
    code = (
        "import sys; sys.modules['cv2'] = None\n"  # as if no OpenCV were installed
        "from segcam.cli import main\n"
        "sys.exit(main(['run', '--input', 'demo', '--frames', '1']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "segcam: error: OpenCV (cv2) is not installed" in done.stderr
    assert ".[gui]" in done.stderr and ".[headless]" in done.stderr
    assert "Traceback" not in done.stderr
