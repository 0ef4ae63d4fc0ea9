"""Thermals: sensors (jtop, else sysfs, else none) and the governor that backs off under heat.

``ThermalGovernor(cfg)`` is a runner extension; ``open_sensor(cfg.thermal)`` picks the
source; ``SysfsSensor``/``JtopSensor`` read it. See docs/thermal.md.
"""

from __future__ import annotations

from segcam.thermal.governor import SensorTimeout, ThermalGovernor, TimedReader
from segcam.thermal.policy import STATES, next_state
from segcam.thermal.sample import ThermalSample
from segcam.thermal.sensors import open_sensor
from segcam.thermal.sysfs import SysfsSensor

__all__ = [
    "STATES",
    "SensorTimeout",
    "SysfsSensor",
    "ThermalGovernor",
    "ThermalSample",
    "TimedReader",
    "next_state",
    "open_sensor",
]
