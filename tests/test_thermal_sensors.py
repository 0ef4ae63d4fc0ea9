"""Thermal sensors: sysfs against fake trees of real files; jtop against a stand-in.

jetson-stats cannot talk to a jtop.service on this machine (no Jetson), so the jtop tests
use a stand-in class with the documented shapes of jtop's properties, read from
rbonghi/jetson_stats' sources (tags 4.2.12 and 7.2.0: ``temperature`` as
``{name: {"temp", "online"}}`` with -256 for offline sensors, ``power`` as
``{"rail": ..., "tot": ...}``, ``gpu`` as ``{name: {"status": {"load"}}}``; 3.1.4:
``temperature`` as ``{name: float}``, ``power`` as ``(total, rails)``, ``gpu`` as
``{"val": load}``) and the messages its ``start()`` raises.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest
from thermal_tree import add_hwmon, add_zone, orin_tree

from segcam.config import load_config
from segcam.errors import ThermalError
from segcam.thermal.jtop_sensor import JtopSensor, explain_jtop_failure
from segcam.thermal.sample import ThermalSample
from segcam.thermal.sensors import open_sensor
from segcam.thermal.sysfs import SysfsSensor

# ----------------------------------------------------------------------------- sysfs


def test_sysfs_reads_zones_in_celsius(tmp_path: Path) -> None:
    orin_tree(tmp_path, 45.5)
    sensor = SysfsSensor(str(tmp_path))
    sample = sensor.read()
    assert sample.source == "sysfs"
    assert set(sample.temps) == {
        "cpu-thermal",
        "gpu-thermal",
        "cv0-thermal",
        "soc0-thermal",
        "tj-thermal",
    }
    assert all(t == pytest.approx(45.5) for t in sample.temps.values())
    assert sample.skipped == {}


def test_sysfs_default_set_matches_case_insensitively(tmp_path: Path) -> None:
    add_zone(tmp_path, 0, "CPU-therm", 50000)
    add_zone(tmp_path, 1, "GPU-therm", 61000)
    add_zone(tmp_path, 2, "AO-therm", 99000)  # not in the default set
    add_zone(tmp_path, 3, "Tboard_tegra", 30000)
    sample = SysfsSensor(str(tmp_path)).read()
    assert sample.hottest(["cpu", "gpu", "soc", "tj"]) == ("GPU-therm", 61.0)
    assert sample.hottest(["ao"]) == ("AO-therm", 99.0)
    assert sample.hottest(["nothing"]) is None


def test_garbage_and_unreadable_files_are_skipped_and_reported(tmp_path: Path) -> None:
    add_zone(tmp_path, 0, "cpu-thermal", 52000)
    add_zone(tmp_path, 1, "gpu-thermal", "not-a-number")
    add_zone(tmp_path, 2, "soc0-thermal", "")
    add_zone(tmp_path, 3, "tj-thermal", -256000)  # offline sensor
    add_zone(tmp_path, 4, "cv0-thermal", 53000)
    # a "temp" that is a directory: reading it fails with an OSError like EIO/EACCES would
    cv = tmp_path / "sys/class/thermal/thermal_zone4/temp"
    cv.unlink()
    cv.mkdir()
    sample = SysfsSensor(str(tmp_path)).read()
    assert sample.temps == {"cpu-thermal": 52.0}
    assert set(sample.skipped) == {"gpu-thermal", "soc0-thermal", "tj-thermal", "cv0-thermal"}
    assert "not a temperature" in sample.skipped["gpu-thermal"]
    assert "implausible" in sample.skipped["tj-thermal"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_file_is_skipped(tmp_path: Path) -> None:
    add_zone(tmp_path, 0, "cpu-thermal", 52000)
    zone = add_zone(tmp_path, 1, "gpu-thermal", 60000)
    (zone / "temp").chmod(0)
    try:
        sample = SysfsSensor(str(tmp_path)).read()
    finally:
        (zone / "temp").chmod(0o644)
    assert sample.temps == {"cpu-thermal": 52.0}
    assert "gpu-thermal" in sample.skipped


def test_zone_vanishing_between_reads_is_reported(tmp_path: Path) -> None:
    orin_tree(tmp_path, 40.0)
    sensor = SysfsSensor(str(tmp_path))
    (tmp_path / "sys/class/thermal/thermal_zone1/temp").unlink()
    sample = sensor.read()
    assert "gpu-thermal" in sample.skipped and "gpu-thermal" not in sample.temps
    assert len(sample.temps) == 4


def test_duplicate_zone_types_stay_apart(tmp_path: Path) -> None:
    add_zone(tmp_path, 0, "acpitz", 30000)
    add_zone(tmp_path, 1, "acpitz", 35000)
    sample = SysfsSensor(str(tmp_path)).read()
    assert sorted(sample.temps.values()) == [30.0, 35.0]
    assert len(sample.temps) == 2


def test_hwmon_labels_and_unlabelled_inputs(tmp_path: Path) -> None:
    add_hwmon(tmp_path, 0, "coretemp", {"Package id 0": 47000, "Core 0": 45000})
    dev = add_hwmon(tmp_path, 1, "nvme", {})
    (dev / "temp1_input").write_text("38850\n")  # no label file
    sample = SysfsSensor(str(tmp_path)).read()
    assert sample.temps == {
        "coretemp Package id 0": 47.0,
        "coretemp Core 0": 45.0,
        "nvme temp1": pytest.approx(38.85),
    }


def test_trip_points_are_read(tmp_path: Path) -> None:
    add_zone(tmp_path, 0, "cpu-thermal", 50000, trips={"passive": 99000, "critical": 104500})
    trips = SysfsSensor(str(tmp_path)).trip_points()
    assert trips == {"cpu-thermal": [("passive", 99.0), ("critical", 104.5)]}


def test_empty_or_missing_root_has_no_sensors(tmp_path: Path) -> None:
    sensor = SysfsSensor(str(tmp_path / "absent"))
    assert not sensor.available
    assert sensor.read().temps == {}


# ----------------------------------------------------------------------------- selection


def _thermal(tmp_path: Path, **extra: str):
    sets = [f"thermal.sysfs_root={tmp_path}"] + [f"thermal.{k}={v}" for k, v in extra.items()]
    return load_config(None, sets).thermal


def test_auto_falls_back_to_sysfs_without_jetson_stats(tmp_path: Path) -> None:
    orin_tree(tmp_path)
    sensor, reason = open_sensor(_thermal(tmp_path))
    assert isinstance(sensor, SysfsSensor)
    assert "sysfs" in reason and "jetson-stats not installed" in reason


def test_no_sensors_gives_none_with_reason(tmp_path: Path) -> None:
    sensor, reason = open_sensor(_thermal(tmp_path))
    assert sensor is None
    assert "no thermal zones" in reason


def test_sensor_none_is_respected(tmp_path: Path) -> None:
    orin_tree(tmp_path)
    sensor, reason = open_sensor(_thermal(tmp_path, sensor="none"))
    assert sensor is None and "none" in reason


# ----------------------------------------------------------------------------- jtop


class FakeNVPModel:
    """Like jtop.core.nvpmodel.NVPModel: ``name`` and ``id`` properties."""

    name = "15W"
    id = 2


class FakeJetsonClocks:
    """Like jtop.core.jetson_clocks.JetsonClocks: truthy when active."""

    def __init__(self, active: bool) -> None:
        self.active = active

    def __bool__(self) -> bool:
        return self.active


class FakeJtop:
    """Stand-in for ``jtop.jtop`` (7.x shapes unless ``legacy``); see the module docstring."""

    start_error: Optional[BaseException] = None

    def __init__(self, interval: float = 1.0, legacy: bool = False) -> None:
        self.interval = interval
        self.legacy = legacy
        self.running = True
        self.closed = False
        self.cpu = 61.5

    def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error

    def ok(self, spin: bool = False) -> bool:
        return self.running

    def close(self) -> None:
        self.closed = True

    @property
    def temperature(self):
        if self.legacy:
            return {"CPU": self.cpu, "GPU": 58.0, "PMIC": 100.0, "thermal": 59.0}
        return {
            "cpu": {"online": True, "temp": self.cpu},
            "cv0": {"online": False, "temp": -256},
            "gpu": {"online": True, "temp": 58.0},
            "soc0": {"online": True, "temp": 57.25},
            "tj": {"online": True, "temp": 62.0},
        }

    @property
    def power(self):
        if self.legacy:
            return ({"cur": 5100, "avg": 5000}, {"POM_5V_GPU": {"cur": 1200, "avg": 1100}})
        return {
            "rail": {
                "VDD_GPU_SOC": {"online": True, "type": "INA3221", "power": 3200, "avg": 3000},
                "VDD_CPU_CV": {"online": False, "type": "INA3221", "power": 0, "avg": 0},
            },
            "tot": {"power": 7400, "avg": 7000},
        }

    @property
    def gpu(self):
        if self.legacy:
            return {"val": 42.0, "frq": 1300500}
        return {"gpu": {"type": "integrated", "status": {"load": 87.5}, "freq": {"cur": 612000}}}

    @property
    def nvpmodel(self):
        return FakeNVPModel()

    @property
    def jetson_clocks(self):
        return FakeJetsonClocks(True)


def test_jtop_7x_shapes() -> None:
    sensor = JtopSensor(1.0, factory=FakeJtop)
    sample = sensor.read()
    assert sample.source == "jtop"
    assert sample.temps == {"cpu": 61.5, "gpu": 58.0, "soc0": 57.25, "tj": 62.0}
    assert sample.skipped == {"cv0": "jtop: sensor offline"}
    assert sample.hottest(["CPU", "GPU", "SOC", "TJ"]) == ("tj", 62.0)
    assert sample.power_mw == {"VDD_GPU_SOC": 3200.0, "total": 7400.0}
    assert sample.gpu_load == 87.5
    assert sample.nvpmodel == "15W (id 2)"
    assert sample.jetson_clocks is True
    sensor.close()
    assert sensor._jetson.closed


def test_jtop_3x_shapes() -> None:
    sensor = JtopSensor(1.0, factory=lambda interval: FakeJtop(interval, legacy=True))
    sample = sensor.read()
    assert sample.temps["CPU"] == 61.5 and sample.temps["GPU"] == 58.0
    assert sample.power_mw == {"POM_5V_GPU": 1200.0, "total": 5100.0}
    assert sample.gpu_load == 42.0


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            Exception("The jtop.service is not active. Please run:\nsudo jtop --install-service"),
            "not running",
        ),
        (ConnectionRefusedError(111, "Connection refused"), "not running"),
        (
            Exception("I can't access jtop.service.\nPlease logout or reboot this board."),
            "no permission",
        ),
        (
            Exception("Mismatch version jtop service: [4.2.0] and client: [7.2.0]. Please run:"),
            "Mismatch version",
        ),
    ],
)
def test_jtop_start_failures_are_explained(error: BaseException, expected: str) -> None:
    class Failing(FakeJtop):
        start_error = error

    with pytest.raises(ThermalError) as info:
        JtopSensor(1.0, factory=Failing)
    assert expected in info.value.message
    assert info.value.hint


def test_jtop_service_not_running_falls_back_to_sysfs(tmp_path: Path) -> None:
    """The "jtop service not running" path: auto picks sysfs and keeps jtop's reason."""
    orin_tree(tmp_path)

    class NotRunning(FakeJtop):
        start_error = FileNotFoundError(2, "No such file or directory")

    cfg = load_config(None, [f"thermal.sysfs_root={tmp_path}", "thermal.sensor=jtop"]).thermal
    sensor, reason = open_sensor(cfg, jtop_factory=NotRunning)
    assert isinstance(sensor, SysfsSensor)
    assert "jtop.service is not running" in reason


def test_jtop_ok_false_raises_thermal_error() -> None:
    sensor = JtopSensor(1.0, factory=FakeJtop)
    sensor._jetson.running = False
    with pytest.raises(ThermalError, match="ok\\(\\) is False"):
        sensor.read()


def test_jtop_ok_reraising_thread_error_is_explained() -> None:
    class Lost(FakeJtop):
        def ok(self, spin: bool = False) -> bool:
            raise Exception("Lost connection with jtop server")

    sensor = JtopSensor(1.0, factory=Lost)
    with pytest.raises(ThermalError, match="not running"):
        sensor.read()


def test_explain_unknown_failure_keeps_the_message() -> None:
    err = explain_jtop_failure(RuntimeError("something odd"))
    assert "something odd" in err.message


def test_sample_as_dict_is_json_ready() -> None:
    import json

    sample = ThermalSample(source="x", temps={"a": 50.123}, skipped={"b": "bad"}, gpu_load=3.0)
    data = json.loads(json.dumps(sample.as_dict()))
    assert data == {"source": "x", "temps_c": {"a": 50.1}, "skipped": {"b": "bad"}, "gpu_load": 3.0}
