"""segcam as a service under a real systemd, installed the way docs/service.md says.

A minimal Debian bookworm boots in a container (tests/system/nspawn.py). Inside it, as an
operator would: a venv under /opt (``python3 -m venv --system-site-packages
/opt/segcam``), ``pip install`` segcam, ``segcam service install --config my.yaml``. The
unit is the shipped one, unmodified: its own ``segcam`` user, Type=notify, watchdog,
ProtectSystem/ProtectHome/PrivateTmp and the rest of the hardening.

Stand-ins, and why: the container has no network of its own to the registry in CI's
time budget, so pip installs from a wheelhouse built here (segcam's wheel is the
checkout's files, as ``pip install .`` would install them; its dependencies are the
wheels pip picks for Python 3.11, Debian 12's). The model is the real one, converted
here once and copied in as root, as an operator prepares an offline device. The camera
is a real MJPEG-over-HTTP stream served by this test on loopback (the container shares
the host's network), which can hang with its connection open like a real IP camera.

The tests run in file order on one booted machine; each leaves the service running.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import nspawn
import pytest
from mjpeg_camera import MjpegCamera

REPO = Path(__file__).resolve().parents[2]
UNIT = "segcam.service"
VENV = "/opt/segcam"
SEGCAM = f"{VENV}/bin/segcam"
STATE = "/var/lib/segcam"
EXTRAS = "headless,record"  # docs/service.md on a server: pip's headless OpenCV, PyAV
MODEL_FILES = ("mediapipe-selfie.tflite", "mediapipe-selfie.onnx", "mediapipe-selfie.onnx.json")
# Installed Python: Debian 12's (the wheelhouse is for it).
CONTAINER_PYTHON = "3.11"

pytestmark = [pytest.mark.system, pytest.mark.slow]

TIMINGS: Dict[str, float] = {}


def _skip_reason() -> Optional[str]:
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn)"
    missing = nspawn.missing_tools()
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install debootstrap systemd-container)"
    return None


if _skip_reason():
    pytestmark.append(pytest.mark.skip(reason=_skip_reason()))


# --------------------------------------------------------------------------- helpers


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 0.25):
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


class Service:
    """segcam.service on the booted machine, seen through systemctl and journalctl."""

    def __init__(self, machine: nspawn.Machine, camera: MjpegCamera) -> None:
        self.m = machine
        self.camera = camera

    def props(self, *names: str) -> Dict[str, str]:
        wanted = names or ("ActiveState", "SubState", "Result", "NRestarts", "MainPID")
        return self.m.unit(UNIT, *wanted)

    def running(self) -> Optional[Dict[str, str]]:
        """The properties once the unit is active (running), else None."""
        p = self.props("ActiveState", "SubState", "MainPID", "NRestarts", "StatusText")
        return p if (p["ActiveState"], p["SubState"]) == ("active", "running") else None

    def wait_running(self, timeout: float = 60) -> Dict[str, str]:
        return wait_until(self.running, timeout, "segcam.service active (running)")

    def healthy(self) -> Dict[str, str]:
        """Running on a good config: what every test starts from.

        After a failed test the service may be down or on a broken config; this puts it
        back (as an operator would) so that one failure does not fail every later test.
        """
        self.camera.stalled.clear()
        try:
            return self.wait_running(timeout=15)
        except AssertionError:
            self.write_config(0.7)
            self.m.sh("systemctl reset-failed segcam; systemctl restart segcam", check=False)
            return self.wait_running(timeout=60)

    def status_text(self) -> str:
        return self.props("StatusText")["StatusText"]

    def journal(self, *args: str) -> List[dict]:
        """segcam's own journal entries (not systemd's lines about it)."""
        out = self.m.sh(f"journalctl -u {UNIT} -o json --no-pager {' '.join(args)}").stdout
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [e for e in entries if e.get("SYSLOG_IDENTIFIER") == "segcam"]

    def journal_text(self, *args: str) -> str:
        return self.m.sh(f"journalctl -u {UNIT} --no-pager -o cat {' '.join(args)}").stdout

    def write_config(self, threshold: object, extra: str = "") -> None:
        text = (
            "input:\n"
            f"  uri: {self.camera.url}\n"
            "  width: 320\n"
            "  height: 240\n"
            "output:\n"
            "  uris: [file://recording.mp4]\n"
            "refine:\n"
            f"  threshold: {threshold}\n"
            "pipeline:\n"
            "  status_interval_s: 1.0\n" + extra
        )
        self.m.sh(f"cat > /etc/segcam/config.yaml <<'EOF'\n{text}EOF")


def _build_wheel(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dest)]
    proc = subprocess.run(base + ["--no-build-isolation", str(REPO)], capture_output=True)
    if proc.returncode != 0:  # no setuptools/wheel here: let pip fetch them
        subprocess.run(base + [str(REPO)], check=True, capture_output=True, timeout=300)
    return next(dest.glob("segcam-*.whl"))


def _requirements(wheel: Path) -> List[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    return sorted(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Requires-Dist:"))


def _wheelhouse(wheel: Path) -> Path:
    """Wheels of segcam's dependencies for the container's Python (downloaded once)."""
    house = nspawn.cache_dir() / "wheelhouse"
    house.mkdir(parents=True, exist_ok=True)
    stamp = house / ".requirements"
    wanted = "\n".join([f"extras {EXTRAS}"] + _requirements(wheel)) + "\n"
    if stamp.is_file() and stamp.read_text() == wanted:
        return house
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    # segcam asks for no OpenCV by itself: a server takes the headless extra (docs/service.md)
    cmd += ["--python-version", CONTAINER_PYTHON, "-d", str(house), f"{wheel}[{EXTRAS}]"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    (house / wheel.name).unlink(missing_ok=True)  # segcam itself comes from the build
    stamp.write_text(wanted)
    return house


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def camera() -> Iterator[MjpegCamera]:
    cam = MjpegCamera(fps=30.0)
    yield cam
    cam.close()


@pytest.fixture(scope="module")
def machine(tmp_path_factory, selfie_onnx: Path, request) -> Iterator[nspawn.Machine]:
    work = tmp_path_factory.mktemp("system")
    t0 = time.monotonic()
    try:
        root, built = nspawn.build_root()
    except nspawn.CannotRun as exc:
        pytest.skip(str(exc))
    TIMINGS["debootstrap (built)" if built else "root from cache"] = time.monotonic() - t0

    t0 = time.monotonic()
    wheel = _build_wheel(work / "wheel")
    house = _wheelhouse(wheel)
    seed = work / "seed"
    seed.mkdir()
    for name in MODEL_FILES:
        shutil.copy2(str(selfie_onnx.parent / name), str(seed / name))
    TIMINGS["wheel + wheelhouse + model"] = time.monotonic() - t0

    binds = [(house, "/wheelhouse", True), (wheel.parent, "/segcam-wheel", True)]
    binds.append((seed, "/seed", True))
    m = nspawn.Machine(root, f"segcam-test-{os.getpid()}", binds, work / "console.log")
    try:
        TIMINGS["boot"] = m.boot()
    except nspawn.CannotRun as exc:
        pytest.skip(f"systemd-nspawn cannot boot a container here: {exc}")
    yield m
    t0 = time.monotonic()
    m.shutdown()
    TIMINGS["power off"] = time.monotonic() - t0
    report = nspawn.cache_dir() / "system-timings.json"
    report.write_text(json.dumps(TIMINGS, indent=2) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(
            "system tier timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items())
        )


@pytest.fixture(scope="module")
def service(machine: nspawn.Machine, camera: MjpegCamera) -> Service:
    return Service(machine, camera)


@pytest.fixture(autouse=True)
def _timed(request) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    TIMINGS[request.node.name.replace("test_", "", 1)] = time.monotonic() - t0


# --------------------------------------------------------------------------- the tests


def test_install_as_the_docs_say_and_ready_only_after_the_first_frame(service: Service):
    m, camera = service.m, service.camera
    # docs/service.md, Install.
    m.sh(f"python3 -m venv --system-site-packages {VENV}")
    m.sh(
        f"{VENV}/bin/pip install -q --no-index --find-links /wheelhouse "
        f"--find-links /segcam-wheel 'segcam[{EXTRAS}]'",
        timeout=300,
    )
    # The built-in defaults read the demo scene, whose photo comes with scikit-image, which
    # a plain install lacks: the service is not started only to fail and restart.
    dry = m.sh(f"{SEGCAM} service install --dry-run").stdout
    assert "warning: input.uri is the demo scene, but the demo source needs scikit-image" in dry
    assert "would run: systemctl enable segcam.service\n" in dry, dry

    # An offline device: the model copied in by root before the install, which hands the
    # state directories' contents to the service user.
    m.sh(f"mkdir -p {STATE}/models && install -m 600 /seed/* {STATE}/models/")
    m.sh(
        "cat > /root/my.yaml <<'EOF'\n"
        f"input:\n  uri: {camera.url}\n  width: 320\n  height: 240\n"
        "output:\n  uris: [file://recording.mp4]\n"
        "refine:\n  threshold: 0.5\n"
        "pipeline:\n  status_interval_s: 1.0\n"
        "EOF"
    )
    dry = m.sh(f"{SEGCAM} service install --dry-run --config /root/my.yaml").stdout
    assert "would run: systemctl enable --now segcam.service" in dry, dry
    assert m.sh("test -e /etc/systemd/system/segcam.service", check=False).returncode == 1

    # The camera hangs from the start: segcam cannot have a first frame, so the unit must
    # stay "activating" (and `enable --now`, inside the install, waits) until it has one.
    camera.stalled.set()
    install = m.spawn(f"{SEGCAM} service install --config /root/my.yaml")
    try:
        time.sleep(8)
        p = service.props("ActiveState", "SubState", "MainPID")
        assert (p["ActiveState"], p["SubState"]) == ("activating", "start"), p
        assert int(p["MainPID"]) > 0
        assert install.poll() is None
    finally:
        t_frames = time.monotonic()
        camera.stalled.clear()
    out, err = install.communicate(timeout=120)
    assert install.returncode == 0, out + err + service.journal_text("-n", "40")
    print(f"\ninstall returned {time.monotonic() - t_frames:.1f} s after the camera sent frames")
    assert f"give the 3 entries below {STATE}/models to segcam:segcam" in out, out
    assert "run: systemctl enable --now segcam.service" in out, out
    p = service.wait_running(timeout=10)
    assert "threshold 0.50" in p["StatusText"] or "fps" in p["StatusText"], p
    text = service.journal_text()
    assert "systemd: READY=1 (first frame through the pipeline)" in text, text[-2000:]

    # It runs as its own user, without privileges, in its sandbox.
    pid = p["MainPID"]
    status = m.sh(f"cat /proc/{pid}/status").stdout
    uid = m.sh("id -u segcam").stdout.strip()
    assert f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}" in status, status
    assert "NoNewPrivs:\t1" in status and "CapEff:\t0000000000000000" in status, status
    m.sh("mkdir -p /root/secret /tmp && touch /root/secret/key /tmp/host-tmp-file")
    assert m.sh(f"test -e /proc/{pid}/root/root/secret/key", check=False).returncode == 1
    assert m.sh(f"test -e /proc/{pid}/root/tmp/host-tmp-file", check=False).returncode == 1
    ro = m.sh(f"grep ' / ' /proc/{pid}/mountinfo").stdout
    assert " ro," in ro or " ro " in ro, ro  # ProtectSystem=strict
    assert m.sh(f"stat -c %U {STATE}/models/mediapipe-selfie.onnx").stdout.strip() == "segcam"


def test_reload_applies_a_new_threshold_live(service: Service):
    before = service.healthy()
    service.write_config(0.7)
    service.m.sh("systemctl reload segcam")
    wait_until(lambda: "threshold 0.70" in service.status_text(), 20, "threshold 0.70 in STATUS")
    after = service.running()
    assert after is not None and after["MainPID"] == before["MainPID"], after
    assert "reload: refine.threshold 0.5 -> 0.7 applied" in service.journal_text()


def test_a_broken_config_on_reload_keeps_the_old_one_and_says_why(service: Service):
    before = service.healthy()
    service.write_config("seven")
    try:
        service.m.sh("systemctl reload segcam")
        rejected = "reload rejected, keeping the running config: refine.threshold (line 8"
        entries = wait_until(
            lambda: [e for e in service.journal("-p", "warning") if rejected in e["MESSAGE"]],
            20,
            "the rejected reload in the journal",
        )
        assert int(entries[-1]["PRIORITY"]) <= 4, entries[-1]
        time.sleep(2.5)  # a few status lines later: still running, still on 0.70
        after = service.running()
        assert after is not None and after["MainPID"] == before["MainPID"], after
        assert "threshold 0.70" in after["StatusText"], after
    finally:
        service.write_config(0.7)


def test_a_hung_camera_stops_the_pings_and_the_watchdog_restarts_it(service: Service):
    before = service.healthy()
    restarts = int(before["NRestarts"])
    t_stall = time.monotonic()
    service.camera.stalled.set()
    # WatchdogSec=30 of the shipped unit: pings every 15 s while frames complete.
    wait_until(lambda: service.status_text().startswith("stalled"), 40, "STATUS=stalled")
    wait_until(lambda: service.props()["Result"] == "watchdog", 45, "Result=watchdog", 0.5)
    t_fired = time.monotonic()
    print(f"\nwatchdog fired {t_fired - t_stall:.1f} s after the camera hung")
    assert t_fired - t_stall >= 15, "fired before a full watchdog period without pings"
    service.camera.stalled.clear()
    after = service.wait_running(timeout=60)
    assert int(after["NRestarts"]) == restarts + 1, after
    assert after["MainPID"] != before["MainPID"]
    text = service.journal_text()
    assert "Failed with result 'watchdog'" in text, text[-2000:]
    warned = [e for e in service.journal("-p", "warning") if "not petting" in e["MESSAGE"]]
    assert warned and warned[-1]["PRIORITY"] == "4", warned


@pytest.mark.parametrize("sig", ["SEGV", "ABRT"])
def test_a_crash_restarts_it(service: Service, sig: str):
    before = service.healthy()
    restarts = int(before["NRestarts"])
    service.m.sh(f"systemctl kill --kill-whom=main --signal=SIG{sig} segcam")
    wait_until(
        lambda: service.props()["Result"] in ("signal", "core-dump"), 10, f"Result, SIG{sig}"
    )
    after = service.wait_running(timeout=30)  # RestartSec=5
    assert int(after["NRestarts"]) == restarts + 1, after
    assert after["MainPID"] != before["MainPID"]


def test_a_config_error_exits_2_and_does_not_loop(service: Service):
    service.healthy()
    service.write_config("seven")
    failed = service.m.sh("systemctl restart segcam", check=False)
    assert failed.returncode != 0
    p = service.props("ActiveState", "Result", "ExecMainStatus", "NRestarts")
    restarts = p["NRestarts"]
    assert (p["ActiveState"], p["ExecMainStatus"]) == ("failed", "2"), p
    time.sleep(8)  # past RestartSec=5: RestartPreventExitStatus=2 keeps it down
    p = service.props("ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert p["ActiveState"] == "failed" and p["NRestarts"] == restarts, p
    # The reason is in the journal as an error (`journalctl -p err` shows it).
    errors = [e["MESSAGE"] for e in service.journal("-p", "err")]
    assert any("segcam: error: refine.threshold (line 8" in msg for msg in errors), errors

    service.write_config(0.7)
    # Five starts in this test's ten minutes already (StartLimitBurst=5): what the docs
    # say after fixing a unit that stayed failed.
    service.m.sh("systemctl reset-failed segcam && systemctl restart segcam")
    service.wait_running()


def test_stop_is_quick_and_leaves_a_playable_recording(service: Service):
    service.healthy()
    time.sleep(3)  # a few seconds of recording
    t0 = time.monotonic()
    service.m.sh("systemctl stop segcam")
    took = time.monotonic() - t0
    print(f"\nsystemctl stop took {took:.2f} s")
    assert took < 2.0, took
    p = service.props("ActiveState", "Result")
    assert (p["ActiveState"], p["Result"]) == ("inactive", "success"), p
    said = [
        re.match(r"segcam\.record: recorded (\d+) frames to (\S+)", e["MESSAGE"])
        for e in service.journal()
    ]
    recorded = [m for m in said if m][-1]
    frames, path = int(recorded.group(1)), posixpath.join(STATE, recorded.group(2))
    probe = (
        "import cv2, sys\n"
        f"cap = cv2.VideoCapture('{path}')\n"
        "n = 0\n"
        "while cap.read()[0]:\n"
        "    n += 1\n"
        "w, h = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)\n"
        "print(n, int(w), int(h))\n"
    )
    out = service.m.sh(f"{VENV}/bin/python - <<'EOF'\n{probe}EOF").stdout.split()
    assert int(out[0]) == frames and frames >= 30, (out, recorded.group(0))
    assert out[1:] == ["320", "240"], out
    service.m.sh("systemctl start segcam")
    service.wait_running()


def test_the_journal_holds_every_line_with_its_priority(service: Service):
    entries = service.journal()
    assert entries
    # journald took the <N> prefixes as priorities: none is left in a message.
    assert not [e["MESSAGE"] for e in entries if str(e["MESSAGE"])[:1] == "<"]
    by_text = {}
    for e in entries:
        by_text.setdefault(str(e["MESSAGE"]), e["PRIORITY"])
    assert by_text["segcam: SIGTERM: stopping"] == "6"
    assert any(
        t.startswith("segcam.service: systemd: READY=1") and p == "6" for t, p in by_text.items()
    )
    assert any(
        t.startswith("segcam: error: refine.threshold") and p == "3" for t, p in by_text.items()
    )
    # -p warning filters to warnings and errors only.
    assert all(int(e["PRIORITY"]) <= 4 for e in service.journal("-p", "warning"))


def test_uninstall_keeps_config_and_engines_and_purge_removes_them(service: Service):
    m = service.m
    m.sh(f"install -o segcam -g segcam -m 600 /dev/null {STATE}/engines/model.engine")
    out = m.sh(f"{SEGCAM} service uninstall").stdout
    assert "remove unit /etc/systemd/system/segcam.service" in out, out
    assert service.props("LoadState")["LoadState"] == "not-found"
    m.sh(f"test -f /etc/segcam/config.yaml && test -f {STATE}/engines/model.engine")
    m.sh(f"test -f {STATE}/models/mediapipe-selfie.onnx && id segcam")
    status = m.sh(f"{SEGCAM} service status", check=False)
    assert status.returncode == 3 and "not installed" in status.stdout, status

    out = m.sh(f"{SEGCAM} service uninstall --purge").stdout
    assert "run: userdel segcam (--purge)" in out, out
    for path in ("/etc/segcam", STATE, "/var/cache/segcam"):
        assert m.sh(f"test -e {path}", check=False).returncode == 1, path
    assert m.sh("id segcam", check=False).returncode != 0
