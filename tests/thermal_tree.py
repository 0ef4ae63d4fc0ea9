"""Build fake /sys thermal trees of real files for the thermal and doctor tests."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Union

# Zone types as an Orin reports them (thermal_zone*/type on JetPack 5/6).
ORIN_ZONES = ("cpu-thermal", "gpu-thermal", "cv0-thermal", "soc0-thermal", "tj-thermal")


def add_zone(
    root: Path,
    index: int,
    ztype: str,
    temp: Union[int, str, None],
    trips: Optional[Dict[str, int]] = None,
) -> Path:
    """Create sys/class/thermal/thermal_zone<index> with ``type`` and ``temp`` (m°C)."""
    zone = root / "sys" / "class" / "thermal" / f"thermal_zone{index}"
    zone.mkdir(parents=True, exist_ok=True)
    (zone / "type").write_text(ztype + "\n")
    if temp is not None:
        (zone / "temp").write_text(f"{temp}\n")
    for i, (kind, value) in enumerate((trips or {}).items()):
        (zone / f"trip_point_{i}_type").write_text(kind + "\n")
        (zone / f"trip_point_{i}_temp").write_text(f"{value}\n")
    return zone


def set_temp(root: Path, index: int, celsius: float) -> None:
    """Rewrite one zone's temperature (deg C) the way the kernel shows it (m°C)."""
    path = root / "sys" / "class" / "thermal" / f"thermal_zone{index}" / "temp"
    path.write_text(f"{int(round(celsius * 1000))}\n")


def orin_tree(root: Path, celsius: float = 45.0) -> Path:
    """An Orin-like tree: five zones at ``celsius``."""
    for i, name in enumerate(ORIN_ZONES):
        add_zone(root, i, name, int(celsius * 1000))
    return root


def set_all(root: Path, celsius: float) -> None:
    """Set every zone of :func:`orin_tree` to ``celsius``."""
    for i in range(len(ORIN_ZONES)):
        set_temp(root, i, celsius)


def add_hwmon(root: Path, index: int, name: str, temps: Dict[str, Union[int, str]]) -> Path:
    """Create sys/class/hwmon/hwmon<index> with ``name`` and temp<N>_{label,input}."""
    dev = root / "sys" / "class" / "hwmon" / f"hwmon{index}"
    dev.mkdir(parents=True, exist_ok=True)
    (dev / "name").write_text(name + "\n")
    for n, (label, value) in enumerate(temps.items(), start=1):
        (dev / f"temp{n}_label").write_text(label + "\n")
        (dev / f"temp{n}_input").write_text(f"{value}\n")
    return dev
