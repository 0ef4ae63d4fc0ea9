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


def knobs_from_config(cfg: Config, base: Optional[KnobValues] = None) -> KnobValues:
    """Knob values that a config asks for (refine, background, publish, pause mode).

    ``base`` keeps what the config does not set (e.g. the governor's fps cap) when a
    reloaded config is applied to a running pipeline.
    """
    r = cfg.refine
    bg = dataclasses.asdict(cfg.composite.background)
    values = base or KnobValues()
    return dataclasses.replace(
        values,
        infer_every=r.infer_every,
        threshold=r.threshold,
        soft=r.soft,
        feather=r.feather,
        smoothing=r.smoothing,
        min_blob_area=r.min_blob_area,  # a fraction of the frame, as in the config
        pause_mode=cfg.thermal.pause_mode,
        background=tuple(
            sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in bg.items())
        ),
        publish_every=cfg.publish.every_n,
        publish_max_fps=cfg.publish.max_fps,
    )


__all__ = ["KnobValues", "Knobs", "field", "knobs_from_config"]
