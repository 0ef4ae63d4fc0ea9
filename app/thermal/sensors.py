"""Pick the temperature source: jtop when its service answers, else sysfs, else none."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Tuple

from segcam.config import ThermalConfig
from segcam.errors import ThermalError
from segcam.thermal.sample import ThermalSample
from segcam.thermal.sysfs import SysfsSensor

log = logging.getLogger("segcam.thermal")


class Sensor(Protocol):
    """What every temperature source offers (SysfsSensor, JtopSensor, test stand-ins)."""

    name: str

    def read(self) -> ThermalSample:
        """One sample now; raise ThermalError when the source is unusable."""

    def close(self) -> None:
        """Release the source."""


def is_jetson(root: str = "/") -> bool:
    """Whether ``root`` is a Jetson's filesystem (L4T's release file or a Jetson model).

    Missing sensors are normal on a desktop, a VM or CI, and a fault on a Jetson.
    """
    base = Path(root)
    if (base / "etc/nv_tegra_release").is_file():
        return True
    try:
        model = (base / "proc/device-tree/model").read_bytes()
    except OSError:
        return False
    return b"jetson" in model.lower()


def jtop_installed() -> bool:
    """Whether the jetson-stats client library can be imported."""
    try:
        import jtop  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def open_sensor(
    cfg: ThermalConfig, jtop_factory: Optional[Callable[..., Any]] = None
) -> Tuple[Optional[Sensor], str]:
    """(sensor, reason) for ``cfg.sensor``; sensor None when nothing can be read.

    ``auto`` tries jtop (if jetson-stats is installed or a factory is given), then sysfs.
    An explicit ``jtop`` that fails falls back to sysfs with the reason, never raises.
    """
    notes = []
    if cfg.sensor == "none":
        return None, "thermal.sensor is 'none'"
    if cfg.sensor in ("auto", "jtop"):
        if jtop_factory is not None or jtop_installed() or cfg.sensor == "jtop":
            try:
                from segcam.thermal.jtop_sensor import JtopSensor

                sensor = JtopSensor(cfg.interval_s, factory=jtop_factory)
                return sensor, f"jtop {sensor.version} (jtop.service)"
            except ThermalError as exc:
                notes.append(str(exc))
        else:
            notes.append("jetson-stats not installed")
    sysfs = SysfsSensor(cfg.sysfs_root)
    if sysfs.available:
        reason = f"sysfs ({len(sysfs.files)} sensors under {sysfs.root})"
        return sysfs, reason + (f"; {'; '.join(notes)}" if notes else "")
    notes.append(f"no thermal zones or hwmon temperatures under {sysfs.root}")
    return None, "; ".join(notes)
