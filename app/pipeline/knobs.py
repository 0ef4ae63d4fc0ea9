"""Thread-safe knobs through which the control plane steers the running pipeline.

The thermal governor, SIGHUP reload and the CLI change these; stage threads read a
consistent snapshot once per frame. Nothing here blocks for longer than a lock.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple


@dataclass(frozen=True)
class KnobValues:
    """One consistent snapshot of every knob (immutable; read once per frame)."""

    infer_every: int = 1
    fps_cap: float = 0.0  # 0 = uncapped
    paused: bool = False  # critical heat: no inference, frames pass with the last mask
    pause_mode: str = "last_mask"  # or "background": plain background while paused
    profile_override: Optional[str] = None  # lighter model profile chosen by the governor
    threshold: float = 0.5
    soft: bool = True
    feather: int = 0
    smoothing: float = 0.0
    min_blob_area: int = 0
    background: Tuple[Tuple[str, Any], ...] = ()  # composite.background as sorted items
    publish_every: int = 1
    publish_max_fps: float = 0.0
    extra: Tuple[Tuple[str, Any], ...] = ()  # anything else, for extensions


class Knobs:
    """Holder of the current :class:`KnobValues`; ``update`` swaps in a new snapshot."""

    def __init__(self, initial: Optional[KnobValues] = None) -> None:
        self._lock = threading.Lock()
        self._values = initial or KnobValues()
        self._version = 0

    def snapshot(self) -> KnobValues:
        """Return the current values (a frozen object, safe to keep)."""
        with self._lock:
            return self._values

    @property
    def version(self) -> int:
        """Counter that increases on every update (cheap change detection)."""
        with self._lock:
            return self._version

    def update(self, **changes: Any) -> KnobValues:
        """Replace the named knobs atomically and return the new snapshot."""
        with self._lock:
            self._values = dataclasses.replace(self._values, **changes)
            self._version += 1
            return self._values

    def as_dict(self) -> Dict[str, Any]:
        """Snapshot as a plain dict (for status lines and telemetry)."""
        return dataclasses.asdict(self.snapshot())


__all__ = ["KnobValues", "Knobs", "field"]
