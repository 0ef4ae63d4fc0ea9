"""Data that crosses stage boundaries and the contracts of sinks and extensions.

These are the seams between the pipeline and its neighbours (outputs, the ZeroMQ
publisher, the thermal governor, the systemd notifier): keep them small and stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Protocol
else:
    try:
        from typing import Protocol
    except ImportError:  # pragma: no cover - 3.8 has typing.Protocol; kept for safety
        Protocol = object


@dataclass
class FrameResult:
    """What the composite stage hands to every sink for one frame.

    ``mask`` is float32 in [0, 1] at frame size (after refinement); ``frame`` is the
    composed BGR uint8 image; ``source`` is the captured BGR frame. All three are buffers
    of a recycled frame slot: they stay valid while ``submit`` runs and are overwritten
    a few frames later, so a sink that reads them after ``submit`` returns (in its own
    thread) copies what it needs in ``submit`` (segcam.outputs.ThreadedSink does).
    Timestamps are ns: ``capture_ts_ns`` on ``time.time_ns()`` (epoch, for the wire) and
    ``capture_mono_ns`` on ``time.monotonic_ns()`` (for latency).
    """

    frame_id: int
    capture_ts_ns: int
    capture_mono_ns: int
    frame: np.ndarray
    mask: np.ndarray
    source: Optional[np.ndarray] = None
    inferred: bool = True  # False when the mask was reused (infer_every > 1 or paused)
    model_id: str = ""
    threshold: float = 0.5
    timings_ms: Dict[str, float] = field(default_factory=dict)


class Sink(Protocol):
    """An output that runs in its own thread and never blocks the pipeline.

    ``submit`` must return at once: a busy sink drops (and counts) instead of waiting.
    """

    name: str

    def start(self) -> None:
        """Open resources and start the sink's thread; raise OutputError if impossible."""

    def submit(self, result: FrameResult) -> bool:
        """Offer a result; return False if it was dropped."""

    def stop(self, timeout: float = 2.0) -> None:
        """Finish pending work (e.g. finalise a recording) and join within ``timeout``."""

    def stats(self) -> Dict[str, Any]:
        """Counters for metrics (frames written, dropped, ...)."""


class Extension(Protocol):
    """Control-plane companion of the runner (thermal governor, sd_notify, telemetry).

    Started after the pipeline's threads and stopped before them. ``status`` is merged
    into the status line, the telemetry topic and ``--stats-json``.
    """

    name: str

    def start(self, runner: Any) -> None:
        """Begin work; ``runner`` exposes knobs, metrics, frames_completed, report_error."""

    def stop(self) -> None:
        """Stop promptly (bounded time)."""

    def status(self) -> Dict[str, Any]:
        """Small dict of current state for status/telemetry."""
