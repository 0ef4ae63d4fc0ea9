"""The thermal governor: policy, scripted temperature sequences on fake sysfs trees, actions.

Temperatures come from real files in a fake /sys tree rewritten between ticks. The
runner here is a minimal holder of the real :class:`Knobs` (the governor touches nothing
else); the governor against the real pipeline is in test_thermal_pipeline.py.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

import pytest
from thermal_tree import add_zone, orin_tree, set_all, set_temp

from segcam.config import ThermalThresholds, load_config
from segcam.errors import ThermalError
from segcam.pipeline.knobs import Knobs, KnobValues
from segcam.thermal.governor import SensorTimeout, ThermalGovernor, TimedReader
from segcam.thermal.nvpmodel import query_nvpmodel, request_nvpmodel
from segcam.thermal.policy import STATES, next_state
from segcam.thermal.sample import ThermalSample

T = ThermalThresholds(warm=70.0, hot=80.0, critical=90.0)


class Holder:
    """The part of the runner an extension uses: knobs and report_error."""

    def __init__(self, knobs: Optional[KnobValues] = None) -> None:
        self.knobs = Knobs(knobs or KnobValues())
        self.errors: List[Tuple[BaseException, str]] = []

    def report_error(self, exc: BaseException, where: str) -> None:
        self.errors.append((exc, where))


def _cfg(root: Path, *sets: str):
    return load_config(
        None,
        [f"thermal.sysfs_root={root}", "thermal.sensor=sysfs", "thermal.interval_s=0.05", *sets],
    )


def _run(states: List[str], temps: List[float], start: str = "normal", hyst: float = 5.0):
    state = start
    for temp in temps:
        state = next_state(state, temp, T, hyst)
        states.append(state)
    return states


# ----------------------------------------------------------------------------- policy


def test_every_upward_transition() -> None:
    assert _run([], [69.9, 70.0, 79.9, 80.0, 89.9, 90.0]) == [
        "normal",
        "warm",
        "warm",
        "hot",
        "hot",
        "critical",
    ]


def test_jump_straight_to_critical_and_back_down_step_by_step() -> None:
    assert next_state("normal", 95.0, T, 5.0) == "critical"
    # down: each state is left only 5 degrees below its own entry threshold
    seq = _run([], [86.0, 85.0, 84.9, 76.0, 75.0, 74.9, 66.0, 65.0, 64.9], start="critical")
    assert seq == [
        "critical",
        "critical",
        "hot",
        "hot",
        "hot",
        "warm",
        "warm",
        "warm",
        "normal",
    ]


def test_hysteresis_stops_flapping_around_a_threshold() -> None:
    temps = [70.5, 69.5, 70.2, 68.0, 66.0, 70.1, 65.5, 64.0]
    seq = _run([], temps)
    assert seq == ["warm"] * 7 + ["normal"]
    # without hysteresis the same readings flap
    flappy = _run([], temps, hyst=0.0)
    assert flappy.count("normal") >= 3


def test_one_cool_reading_falls_through_several_states() -> None:
    assert next_state("critical", 40.0, T, 5.0) == "normal"
    assert next_state("critical", 72.0, T, 5.0) == "warm"


def test_no_reading_keeps_the_state() -> None:
    for state in STATES:
        assert next_state(state, None, T, 5.0) == state


# ----------------------------------------------------------------------------- on sysfs


def test_scripted_sequence_on_fake_sysfs(tmp_path: Path) -> None:
    orin_tree(tmp_path, 40.0)
    cfg = _cfg(tmp_path, "model.light_profile=mediapipe-selfie-landscape")
    holder = Holder(KnobValues(infer_every=1, fps_cap=0.0))
    gov = ThermalGovernor(cfg)
    gov.start(holder)
    gov.stop()  # stop the background sampler; drive it tick by tick
    seen = []
    for temp in [40, 71, 72, 81, 91, 88, 84.9, 74.9, 64.9]:
        set_all(tmp_path, temp)
        seen.append((gov.tick(), holder.knobs.snapshot()))
    assert [s for s, _ in seen] == [
        "normal",
        "warm",
        "warm",
        "hot",
        "critical",
        "critical",
        "hot",
        "warm",
        "normal",
    ]
    warm, hot, crit = seen[1][1], seen[3][1], seen[4][1]
    assert (warm.infer_every, warm.fps_cap, warm.paused) == (2, 0.0, False)
    assert warm.profile_override is None
    # this holder cannot run another model (the real runner can: test_thermal_pipeline.py)
    assert (hot.infer_every, hot.fps_cap, hot.profile_override) == (3, 15.0, None)
    assert "cannot switch" in gov.status()["light_model"]
    assert crit.paused and crit.fps_cap == 5.0 and crit.pause_mode == "last_mask"
    back = seen[-1][1]
    assert (back.infer_every, back.fps_cap, back.paused, back.profile_override) == (
        1,
        0.0,
        False,
        None,
    )
    hist = gov.history()
    assert [(h["from"], h["to"]) for h in hist] == [
        ("normal", "warm"),
        ("warm", "hot"),
        ("hot", "critical"),
        ("critical", "hot"),
        ("hot", "warm"),
        ("warm", "normal"),
    ]
    assert hist[0]["temp_c"] == 71.0 and hist[0]["threshold_c"] == 70.0
    assert hist[3]["temp_c"] == 84.9 and hist[3]["threshold_c"] == 85.0
    assert hist[0]["sensor"] in {"cpu-thermal", "gpu-thermal", "soc0-thermal", "tj-thermal"}


def test_hottest_configured_zone_decides(tmp_path: Path) -> None:
    orin_tree(tmp_path, 40.0)
    set_temp(tmp_path, 2, 95.0)  # cv0 is not in the default set
    set_temp(tmp_path, 4, 72.5)  # tj is
    gov = ThermalGovernor(_cfg(tmp_path))
    gov.start(Holder())
    gov.stop()
    assert gov.tick() == "warm"
    assert gov.status()["sensor"] == "tj-thermal"
    assert gov.status()["temp_c"] == 72.5


def test_user_knobs_are_kept_and_restored(tmp_path: Path) -> None:
    """Heat only lightens: a user stride of 4 stays 4 at warm; a lower user cap stays."""
    orin_tree(tmp_path, 40.0)
    holder = Holder(KnobValues(infer_every=4, fps_cap=10.0))
    gov = ThermalGovernor(_cfg(tmp_path))
    gov.start(holder)
    gov.stop()
    set_all(tmp_path, 82.0)
    assert gov.tick() == "hot"
    snap = holder.knobs.snapshot()
    assert (snap.infer_every, snap.fps_cap) == (4, 10.0)
    assert snap.profile_override is None  # hot asks for it, but none is configured
    set_all(tmp_path, 30.0)
    assert gov.tick() == "normal"
    snap = holder.knobs.snapshot()
    assert (snap.infer_every, snap.fps_cap, snap.paused) == (4, 10.0, False)


def test_pause_mode_background_is_passed_on(tmp_path: Path) -> None:
    orin_tree(tmp_path, 95.0)
    holder = Holder()
    gov = ThermalGovernor(_cfg(tmp_path, "thermal.pause_mode=background"))
    gov.start(holder)
    gov.stop()
    assert gov.tick() == "critical"
    snap = holder.knobs.snapshot()
    assert snap.paused and snap.pause_mode == "background"


def test_garbage_sensor_never_crashes_the_governor(tmp_path: Path) -> None:
    orin_tree(tmp_path, 40.0)
    gov = ThermalGovernor(_cfg(tmp_path))
    holder = Holder()
    gov.start(holder)
    gov.stop()
    (tmp_path / "sys/class/thermal/thermal_zone0/temp").write_text("garbage\n")
    set_temp(tmp_path, 1, 75.0)
    assert gov.tick() == "warm"
    status = gov.status()
    assert status["skipped_sensors"] == 1
    for i in range(5):
        (tmp_path / f"sys/class/thermal/thermal_zone{i}/temp").write_text("\x00\xff")
    assert gov.tick() == "warm"  # nothing readable: hold the state
    assert holder.errors == []


def test_sampler_thread_follows_the_files(tmp_path: Path) -> None:
    orin_tree(tmp_path, 40.0)
    holder = Holder()
    gov = ThermalGovernor(_cfg(tmp_path))
    gov.start(holder)
    try:
        set_all(tmp_path, 85.0)
        deadline = time.monotonic() + 10.0
        while gov.state != "hot" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gov.state == "hot"
        assert holder.knobs.snapshot().infer_every == 3
    finally:
        gov.stop()
    assert gov._thread is None


def test_no_sensors_stays_normal_with_one_message(tmp_path: Path, caplog) -> None:
    holder = Holder()
    gov = ThermalGovernor(_cfg(tmp_path))
    with caplog.at_level("INFO", logger="segcam.thermal"):
        gov.start(holder)
    assert gov.tick() is None
    status = gov.status()
    assert status["state"] == "normal" and status["source"] == "none"
    assert "no thermal zones" in status["note"]
    assert sum("no temperature sensors" in r.message for r in caplog.records) == 1
    gov.stop()


def test_unmatched_names_fall_back_to_all_sensors(tmp_path: Path) -> None:
    add_zone(tmp_path, 0, "acpitz", 74000)
    add_zone(tmp_path, 1, "x86_pkg_temp", 60000)
    gov = ThermalGovernor(_cfg(tmp_path))
    gov.start(Holder())
    gov.stop()
    assert gov.tick() == "warm"
    assert gov.status()["sensor"] == "acpitz"


def test_status_carries_the_transition() -> None:
    cfg = load_config(None, ["thermal.sensor=none"])
    gov = ThermalGovernor(cfg)
    gov.start(Holder())
    sample = ThermalSample(source="test", temps={"cpu": 91.0}, mono_s=time.monotonic())
    assert gov.observe(sample) == "critical"
    st = gov.status()
    assert st["state"] == "critical" and st["level"] == 3
    assert st["last_transition"]["to"] == "critical"
    assert st["last_transition"]["temp_c"] == 91.0
    assert "inference paused" in st["last_transition"]["actions"]


# ----------------------------------------------------------------------------- slow sensors


class HangingSensor:
    """A sensor whose read blocks until released (a stuck I2C sensor, a wedged jtop)."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def read(self) -> ThermalSample:
        self.calls += 1
        self.release.wait(10.0)
        return ThermalSample(source=self.name, temps={"cpu": 75.0}, mono_s=time.monotonic())

    def close(self) -> None:
        self.release.set()


def test_hung_read_is_reported_and_the_sampler_keeps_going() -> None:
    sensor = HangingSensor()
    cfg = load_config(None, ["thermal.interval_s=0.05", "thermal.read_timeout_s=0.1"])
    holder = Holder()
    gov = ThermalGovernor(cfg, sensor=sensor)
    gov.start(holder)
    try:
        deadline = time.monotonic() + 10.0
        while gov.timeouts < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gov.timeouts >= 3  # the sampler kept ticking while the read hung
        assert sensor.calls == 1  # and did not pile up more reads behind the stuck one
        assert "hung" in gov.status()["error"] or "longer than" in gov.status()["error"]
        assert holder.knobs.snapshot().infer_every == 1  # knobs untouched while blind
        sensor.release.set()
        deadline = time.monotonic() + 10.0
        while gov.state != "warm" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gov.state == "warm"
        assert "error" not in gov.status()
    finally:
        gov.stop()


def test_timed_reader_passes_errors_through() -> None:
    class Broken:
        name = "broken"

        def read(self) -> ThermalSample:
            raise ThermalError("broken sensor")

        def close(self) -> None:
            pass

    reader = TimedReader(Broken())
    with pytest.raises(ThermalError, match="broken sensor"):
        reader.read(1.0)
    reader.close()


def test_timed_reader_timeout() -> None:
    sensor = HangingSensor()
    reader = TimedReader(sensor)
    with pytest.raises(SensorTimeout):
        reader.read(0.05)
    with pytest.raises(SensorTimeout, match="still hung"):
        reader.read(0.05)
    sensor.release.set()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            assert reader.read(1.0).temps == {"cpu": 75.0}
            break
        except SensorTimeout:
            time.sleep(0.02)
    reader.close()


# ----------------------------------------------------------------------------- nvpmodel


def _fake_nvpmodel(tmp_path: Path, body: str) -> Path:
    """A stand-in `nvpmodel` script (the real tool exists only on a Jetson)."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "nvpmodel"
    script.write_text(f"#!{sys.executable}\nimport sys\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bindir


def test_nvpmodel_request_runs_the_tool(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "calls.txt"
    bindir = _fake_nvpmodel(
        tmp_path,
        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        "if sys.argv[1:] == ['-q']:\n    print('NV Power Mode: 15W\\n2')",
    )
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    assert request_nvpmodel(1) == "nvpmodel 1 set"
    assert query_nvpmodel() == "15W (id 2)"
    assert log.read_text().splitlines() == ["-m 1", "-q"]


def test_nvpmodel_permission_failure_is_clear(tmp_path: Path, monkeypatch) -> None:
    bindir = _fake_nvpmodel(
        tmp_path, "print('NVPM ERROR: Permission denied', file=sys.stderr); sys.exit(1)"
    )
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ThermalError) as info:
        request_nvpmodel(0)
    assert "Permission denied" in info.value.message
    assert "root" in info.value.hint


def test_nvpmodel_absent(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ThermalError, match="not installed"):
        request_nvpmodel(0)
    assert query_nvpmodel() is None


def test_governor_nvpmodel_action_only_when_allowed(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "calls.txt"
    bindir = _fake_nvpmodel(
        tmp_path, f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')"
    )
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    hot = "thermal.actions.hot={infer_every: 3, nvpmodel: 1}"
    sample = ThermalSample(source="t", temps={"cpu": 85.0}, mono_s=time.monotonic())

    gov = ThermalGovernor(load_config(None, ["thermal.sensor=none", hot]))
    gov.start(Holder())
    gov.observe(sample)
    assert "allow_nvpmodel is false" in gov.status()["nvpmodel"]
    assert not log.exists()

    gov = ThermalGovernor(
        load_config(None, ["thermal.sensor=none", hot, "thermal.allow_nvpmodel=true"])
    )
    gov.start(Holder())
    gov.observe(sample)
    assert gov.status()["nvpmodel"] == "nvpmodel 1 set"
    assert log.read_text().splitlines() == ["-m 1"]


def test_governor_bug_is_reported_to_the_runner() -> None:
    class Exploding:
        name = "exploding"

        def read(self) -> Any:
            return "not a sample"  # observe() will fail on it: a bug, not a sensor problem

        def close(self) -> None:
            pass

    cfg = load_config(None, ["thermal.interval_s=0.05"])
    holder = Holder()
    gov = ThermalGovernor(cfg, sensor=Exploding())
    gov.start(holder)
    deadline = time.monotonic() + 10.0
    while not holder.errors and time.monotonic() < deadline:
        time.sleep(0.02)
    gov.stop()
    assert holder.errors and holder.errors[0][1] == "thermal"


def test_jtop_service_dying_mid_run_falls_back_to_sysfs(tmp_path: Path) -> None:
    """jtop is the stand-in of test_thermal_sensors (jtop's documented shapes); its
    service goes away after start, so ok() turns False and reads fail."""
    from test_thermal_sensors import FakeJtop

    orin_tree(tmp_path, 81.0)
    clients = []

    def factory(interval: float) -> FakeJtop:
        client = FakeJtop(interval)
        client.cpu = 72.0
        clients.append(client)
        return client

    gov = ThermalGovernor(_cfg(tmp_path, "thermal.sensor=jtop"), jtop_factory=factory)
    holder = Holder()
    gov.start(holder)
    gov.stop()  # drive it tick by tick
    assert gov.sensor.name == "jtop" and gov.state == "warm"  # 72 C from jtop
    clients[0].running = False  # the service went away
    for _ in range(3):
        assert gov.tick() == "warm"  # no reading: the state holds
    assert gov.sensor.name == "sysfs"
    assert clients[0].closed
    assert gov.tick() == "hot"  # 81 C from the files
    assert "jtop failed" in gov.sensor_reason


def test_normal_action_applies_from_the_start(tmp_path: Path) -> None:
    orin_tree(tmp_path, 40.0)
    holder = Holder()
    gov = ThermalGovernor(_cfg(tmp_path, "thermal.actions.normal={fps_cap: 25.0}"))
    gov.start(holder)
    gov.stop()
    assert gov.state == "normal"
    assert holder.knobs.snapshot().fps_cap == 25.0


def test_stop_is_not_held_up_by_a_hung_sensor_read(tmp_path: Path) -> None:
    """A sensor file that blocks on read (a FIFO with no writer: a real hung read) must not
    hold the governor's stop() for ``read_timeout_s``: the runner gives the whole shutdown
    ``pipeline.stop_timeout_s`` (2 s), and what an extension keeps goes missing from the
    sinks' time to finalise recordings."""
    orin_tree(tmp_path, 40.0)
    cfg = _cfg(tmp_path, "thermal.read_timeout_s=4.0")
    gov = ThermalGovernor(cfg)
    gov.start(Holder())
    temp = tmp_path / "sys" / "class" / "thermal" / "thermal_zone0" / "temp"
    temp.unlink()
    os.mkfifo(str(temp))  # every later read of zone 0 blocks in open()
    try:
        deadline = time.monotonic() + 10.0
        while gov._reader is not None and not gov._reader._busy:  # a read is now hung
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = time.monotonic()
        gov.stop()
        took = time.monotonic() - t0
    finally:
        fd = os.open(str(temp), os.O_WRONLY | os.O_NONBLOCK)  # release the hung reader
        os.write(fd, b"40000\n")
        os.close(fd)
    assert took < cfg.pipeline.stop_timeout_s, f"stop() took {took:.1f} s"
    assert gov._thread is None
