"""One reading of the device's sensors, whichever source it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

# Readings outside this range are a sensor that is offline or lying (jtop reports offline
# sensors as -256; some PMIC zones report a constant 100000 m°C), never a real die temperature.
PLAUSIBLE_C = (-40.0, 150.0)


def matches(name: str, patterns: Sequence[str]) -> bool:
    """True when one of ``patterns`` is a case-insensitive substring of ``name``."""
    low = name.lower()
    return any(p.lower() in low for p in patterns if p)


@dataclass
class ThermalSample:
    """Temperatures (deg C by sensor name) plus whatever else the source knows.

    ``skipped`` maps a sensor (or file) to why it gave no value: unreadable, garbage,
    offline. Power is in milliwatts per rail (``total`` when known); ``gpu_load`` in
    percent; ``nvpmodel`` the power mode's name; ``jetson_clocks`` whether it is active.
    """

    source: str
    temps: Dict[str, float] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    power_mw: Dict[str, float] = field(default_factory=dict)
    gpu_load: Optional[float] = None
    nvpmodel: Optional[str] = None
    jetson_clocks: Optional[bool] = None
    mono_s: float = 0.0

    def select(self, patterns: Sequence[str]) -> Dict[str, float]:
        """The temperatures whose names match ``patterns`` (case-insensitive substrings)."""
        return {n: t for n, t in self.temps.items() if matches(n, patterns)}

    def hottest(self, patterns: Sequence[str]) -> Optional[Tuple[str, float]]:
        """(name, deg C) of the hottest matching sensor, or None when none matches."""
        chosen = self.select(patterns)
        if not chosen:
            return None
        name = max(chosen, key=lambda n: chosen[n])
        return name, chosen[name]

    def as_dict(self) -> Dict[str, Any]:
        """Plain view for JSON (doctor, telemetry)."""
        out: Dict[str, Any] = {
            "source": self.source,
            "temps_c": {n: round(t, 1) for n, t in sorted(self.temps.items())},
        }
        if self.skipped:
            out["skipped"] = dict(sorted(self.skipped.items()))
        if self.power_mw:
            out["power_mw"] = {n: round(v, 1) for n, v in sorted(self.power_mw.items())}
        for key in ("gpu_load", "nvpmodel", "jetson_clocks"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


def plausible(celsius: float) -> bool:
    """Whether a reading can be a real temperature (see :data:`PLAUSIBLE_C`)."""
    return PLAUSIBLE_C[0] <= celsius <= PLAUSIBLE_C[1]


def describe(temps: Dict[str, float], limit: int = 6) -> str:
    """Short 'name 41.2C, ...' text of the hottest few sensors (for logs and doctor)."""
    items: List[Tuple[str, float]] = sorted(temps.items(), key=lambda kv: -kv[1])[:limit]
    text = ", ".join(f"{n} {t:.1f}C" for n, t in items)
    more = len(temps) - len(items)
    return text + (f" (+{more} more)" if more > 0 else "")
