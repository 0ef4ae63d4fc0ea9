"""Thread-safe knobs through which the control plane steers the running pipeline.

The thermal governor, SIGHUP reload and the CLI change these; stage threads read a
consistent snapshot once per frame. Nothing here blocks for longer than a lock.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from segcam.config import Config


@dataclass(frozen=True)
class KnobValues:
    """One consistent snapshot of every knob (immutable; read once per frame)."""

    infer_every: int = 1
    fps_cap: float = 0.0  # 0 = uncapped
    paused: bool = False  # critical heat: no inference, frames pass with the last mask
    pause_mode: str = "last_mask"  # or "background": plain background while paused
    profile_override: Optional[str] = None  # lighter model profile chosen by the governor
    thermal_level: int = 0  # the governor's state: 0 normal, 1 warm, 2 hot, 3 critical
    threshold: float = 0.5
    soft: bool = True
    feather: int = 0
    smoothing: float = 0.0
    min_blob_area: float = 0.0  # fraction of the frame (refine.min_blob_area)
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


#: The config keys that steer the running pipeline, and the knob each one sets. The one
#: mapping: knobs_from_config builds the initial values from it, SIGHUP reload applies
#: changed keys through it, and each stream of a multi-input run gets its own values.
CONFIG_KNOBS: Dict[str, str] = {
    "refine.threshold": "threshold",
    "refine.soft": "soft",
    "refine.feather": "feather",
    "refine.smoothing": "smoothing",
    "refine.min_blob_area": "min_blob_area",  # a fraction of the frame, as in the config
    "refine.infer_every": "infer_every",
    "publish.every_n": "publish_every",
    "publish.max_fps": "publish_max_fps",
    "thermal.pause_mode": "pause_mode",
}
#: Keys under this prefix all set the one ``background`` knob.
BACKGROUND_PREFIX = "composite.background."


def _lookup(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def background_knob(cfg: Config) -> Tuple[Tuple[str, Any], ...]:
    """``composite.background`` as the sorted, hashable items that KnobValues holds."""
    items = dataclasses.asdict(cfg.composite.background)
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in items.items()))


def knob_values_for(cfg: Config, keys: Any) -> Dict[str, Any]:
    """``{knob: value}`` that ``cfg`` gives for the config ``keys`` that map to knobs."""
    out: Dict[str, Any] = {}
    for key in keys:
        if key in CONFIG_KNOBS:
            out[CONFIG_KNOBS[key]] = _lookup(cfg, key)
        elif key.startswith(BACKGROUND_PREFIX) or key == "background":
            out["background"] = background_knob(cfg)
    return out


def is_knob_key(key: str) -> bool:
    """Whether a config key is applied live through the knobs."""
    return key in CONFIG_KNOBS or key.startswith(BACKGROUND_PREFIX)


def knobs_from_config(cfg: Config, base: Optional[KnobValues] = None) -> KnobValues:
    """Knob values that a config asks for (refine, background, publish, pause mode).

    ``base`` keeps what the config does not set (e.g. the governor's fps cap) when a
    reloaded config is applied to a running pipeline.
    """
    values = base or KnobValues()
    return dataclasses.replace(values, **knob_values_for(cfg, list(CONFIG_KNOBS) + ["background"]))


__all__ = [
    "BACKGROUND_PREFIX",
    "CONFIG_KNOBS",
    "KnobValues",
    "Knobs",
    "background_knob",
    "field",
    "is_knob_key",
    "knob_values_for",
    "knobs_from_config",
]
