"""Temperatures from the kernel: thermal zones and hwmon under a configurable root.

``/sys/class/thermal/thermal_zone*/{type,temp}`` (millidegrees) and
``/sys/class/hwmon/hwmon*/{name,temp*_input,temp*_label}`` (millidegrees). The root is
``thermal.sysfs_root`` so tests can point it at a tree of real files. A file that cannot be
read or holds garbage is skipped and named in the sample's ``skipped``; it never raises.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Pattern, Tuple

from segcam.thermal.sample import ThermalSample, plausible

_ZONE_RE = re.compile(r"^thermal_zone(\d+)$")
_HWMON_TEMP_RE = re.compile(r"^temp(\d+)_input$")
_TRIP_RE = re.compile(r"^trip_point_(\d+)_type$")


def _read_text(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().strip()


def _millideg(path: Path) -> float:
    """Value of a millidegree file in deg C; raises OSError/ValueError on a bad file."""
    raw = _read_text(path)
    return int(raw) / 1000.0


def _natural(name: str) -> Tuple[str, int]:
    m = re.search(r"(\d+)$", name)
    return (name[: m.start()] if m else name, int(m.group(1)) if m else -1)


class SysfsSensor:
    """Reads every thermal zone and hwmon temperature under ``root`` (default ``/``)."""

    name = "sysfs"

    def __init__(self, root: str = "/") -> None:
        self.root = Path(root or "/")
        self.zone_dir = self.root / "sys" / "class" / "thermal"
        self.hwmon_dir = self.root / "sys" / "class" / "hwmon"
        # name -> file; discovered once, values re-read every sample
        self.files: Dict[str, Path] = {}
        self.scan_problems: Dict[str, str] = {}
        self._scan()

    # ----------------------------------------------------------------- discovery

    def _scan(self) -> None:
        self.files.clear()
        self.scan_problems.clear()
        for zone in self._list(self.zone_dir, _ZONE_RE):
            temp = zone / "temp"
            try:
                ztype = _read_text(zone / "type") or zone.name
            except OSError as exc:
                self.scan_problems[str(zone / "type")] = _why(exc)
                ztype = zone.name
            if not temp.exists():
                continue
            self._add(ztype, zone.name, temp)
        for dev in self._list(self.hwmon_dir, re.compile(r"^hwmon(\d+)$")):
            try:
                dev_name = _read_text(dev / "name")
            except OSError:
                dev_name = dev.name
            inputs = sorted(
                (p for p in _safe_listdir(dev) if _HWMON_TEMP_RE.match(p)),
                key=lambda p: int(_HWMON_TEMP_RE.match(p).group(1)),  # type: ignore[union-attr]
            )
            for fname in inputs:
                num = _HWMON_TEMP_RE.match(fname).group(1)  # type: ignore[union-attr]
                try:
                    label = _read_text(dev / f"temp{num}_label")
                except OSError:
                    label = f"temp{num}"
                self._add(f"{dev_name} {label}", dev.name, dev / fname)

    def _add(self, name: str, where: str, path: Path) -> None:
        if name in self.files:  # several zones of one type (x86 acpitz): keep them apart
            name = f"{name}@{where}"
        self.files[name] = path

    @staticmethod
    def _list(directory: Path, pattern: Pattern[str]) -> List[Path]:
        names = [n for n in _safe_listdir(directory) if pattern.match(n)]
        return [directory / n for n in sorted(names, key=_natural)]

    @property
    def available(self) -> bool:
        """Whether any temperature file was found."""
        return bool(self.files)

    # ----------------------------------------------------------------- reading

    def read(self) -> ThermalSample:
        """Read every discovered file now; bad files are skipped and reported."""
        sample = ThermalSample(source=self.name, mono_s=time.monotonic())
        sample.skipped.update(self.scan_problems)
        for name, path in self.files.items():
            try:
                value = _millideg(path)
            except OSError as exc:
                sample.skipped[name] = f"{path}: {_why(exc)}"
                continue
            except ValueError:
                sample.skipped[name] = f"{path}: not a temperature ({_peek(path)!r})"
                continue
            if not plausible(value):
                sample.skipped[name] = f"{path}: implausible {value:.1f}C (offline sensor?)"
                continue
            sample.temps[name] = value
        return sample

    def trip_points(self) -> Dict[str, List[Tuple[str, float]]]:
        """Each zone's trip points (type, deg C) as the kernel reports them."""
        out: Dict[str, List[Tuple[str, float]]] = {}
        for zone in self._list(self.zone_dir, _ZONE_RE):
            try:
                ztype = _read_text(zone / "type")
            except OSError:
                ztype = zone.name
            trips: List[Tuple[str, float]] = []
            for fname in sorted(_safe_listdir(zone)):
                m = _TRIP_RE.match(fname)
                if not m:
                    continue
                try:
                    kind = _read_text(zone / fname)
                    temp = _millideg(zone / f"trip_point_{m.group(1)}_temp")
                except (OSError, ValueError):
                    continue
                trips.append((kind, temp))
            if trips:
                out[ztype] = sorted(trips, key=lambda t: t[1])
        return out

    def close(self) -> None:
        """Nothing to release (kept for the Sensor protocol)."""


def _safe_listdir(directory: Path) -> List[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _why(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def _peek(path: Path) -> Optional[str]:
    try:
        return _read_text(path)[:20]
    except OSError:
        return None
