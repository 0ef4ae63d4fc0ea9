"""The declared contracts of the pipeline's collaborators, and the one way to drive a stage.

Everything the runner, the supervisor and the control plane call on a source, a stage, a
sink, an extension or an inference backend is declared here; the pipeline core is type
checked against these protocols in CI (mypy), so a collaborator that lacks a method fails
there instead of at run time. ``STAGE_NAMES`` is the one list of stage names;
:func:`drive_stage` is the one function that runs a stage for a slot and records its time.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from segcam.inference.backend import Backend, TensorSpec
from segcam.pipeline.slots import FrameSlot

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Protocol

    from segcam.config import Config
    from segcam.pipeline.knobs import Knobs
    from segcam.pipeline.metrics import PipelineMetrics
    from segcam.pipeline.types import FrameResult
else:
    try:
        from typing import Protocol
    except ImportError:  # pragma: no cover - 3.8 has typing.Protocol; kept for safety
        Protocol = object

#: Every stage of a pipeline, in order. ``capture`` runs on the CPU always; the others are
#: the swappable ones (CPU or GPU implementations, see ``DEVICE_STAGES``).
STAGE_NAMES: Tuple[str, ...] = ("capture", "preprocess", "infer", "composite")
#: The stages a StageSet provides (CPU or GPU); capture belongs to the source.
DEVICE_STAGES: Tuple[str, ...] = STAGE_NAMES[1:]
#: Metrics series of a running pipeline: the stages plus the hand-off to the sinks.
METRIC_SERIES: Tuple[str, ...] = STAGE_NAMES + ("output",)

FrameRead = Tuple[np.ndarray, int, int]  # (BGR uint8 frame, capture epoch ns, monotonic ns)


class Source(Protocol):
    """A video input (segcam.sources): opened once, read frame by frame, closed once."""

    live: bool  # drops the oldest frame when downstream is busy (cameras, streams)
    fps: float
    size: Tuple[int, int]

    @property
    def is_open(self) -> bool:
        """True between a successful ``open`` and ``close``."""

    def open(self) -> None:
        """Open the device/file; raise SourceError naming the problem if impossible."""

    def read(self) -> Optional[FrameRead]:
        """Next frame and its capture timestamps; None at the end or when interrupted."""

    def interrupt(self) -> None:
        """Make a waiting ``read`` return None soon (shutdown)."""

    def close(self) -> None:
        """Release the device/file (safe twice)."""

    def stats(self) -> Dict[str, Any]:
        """Frames, losses, reconnects, skipped frames, last error."""


class Stage(Protocol):
    """One step of the pipeline: ``process(slot)`` does one frame's work in place."""

    name: str

    def process(self, slot: FrameSlot) -> None:
        """Do this stage's work for ``slot`` (raise on failure; the runner reports it)."""

    def reset(self) -> None:
        """Forget per-stream state (the frames came from another model profile)."""

    def close(self) -> None:
        """Release resources (once, after the stage's thread ended)."""


class Host(Protocol):
    """What a pipeline shows its sinks and extensions: a stream's runner or the supervisor.

    Extensions steer through ``knobs`` and ``apply_config``; the notifier waits on
    ``first_frame_event`` and watches ``frames_completed``; every failure goes to
    ``report_error``, which decides.
    """

    stop_event: threading.Event
    first_frame_event: threading.Event
    eos_event: threading.Event
    extensions: List[Extension]

    @property
    def knobs(self) -> Knobs:
        """The live knobs (a group of every stream's under a supervisor)."""

    @property
    def config(self) -> Config:
        """The config now in effect (a reload may replace it)."""

    @property
    def frames_completed(self) -> int:
        """Frames that reached the sinks so far (all streams)."""

    def status(self) -> Dict[str, Any]:
        """Metrics and state for the status line, STATUS=, telemetry and --stats-json."""

    def report_error(self, exc: BaseException, where: str) -> None:
        """Record a failure of ``where``; the host decides what stops."""

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask everything to stop (safe from any thread and from signal handlers)."""

    def report_degraded(self, where: str, message: str) -> None:
        """``where`` stopped working (a recording on a full disk); everything else goes on."""

    def clear_degraded(self, where: str) -> None:
        """``where`` works again."""

    def add_profile_stages(self, name: str, stages: Any, backend: Optional[Backend] = None) -> None:
        """Register the stages of another model profile (the governor's light model)."""

    def set_config(self, cfg: Config) -> None:
        """Record ``cfg`` as the config in effect (after a reload)."""

    def apply_config_knobs(self, cfg: Config, keys: Sequence[str]) -> None:
        """Set the live knobs named in ``keys`` from ``cfg`` (each stream its own values)."""


class StreamHost(Host, Protocol):
    """A host of one stream: sinks also see its source and stream id."""

    source: Source
    stream_id: str


class Sink(Protocol):
    """An output that runs in its own thread and never blocks the pipeline.

    ``submit`` must return at once: a busy sink drops (and counts) instead of waiting,
    unless the runner set ``lossless`` (finite inputs, where every frame must be written).
    """

    name: str
    lossless: bool

    def attach(self, host: StreamHost) -> None:
        """Learn the stream it serves (knobs, source size, report_error) before ``start``."""

    def start(self) -> None:
        """Open resources and start the sink's thread; raise OutputError if impossible."""

    def submit(self, result: FrameResult) -> bool:
        """Offer a result; return False if it was dropped."""

    def stop(self, timeout: float = 2.0) -> None:
        """Finish pending work (e.g. finalise a recording) and join within ``timeout``."""

    def stats(self) -> Dict[str, Any]:
        """Counters for metrics (frames written, dropped, ...)."""


class Extension(Protocol):
    """Control-plane companion of the host (thermal governor, sd_notify).

    Started after the pipelines' threads and stopped before them. ``status`` is merged
    into the status line, the telemetry topic and ``--stats-json``.
    """

    name: str

    def start(self, host: Host) -> None:
        """Begin work."""

    def stop(self) -> None:
        """Stop promptly (bounded time)."""

    def status(self) -> Dict[str, Any]:
        """Small dict of current state for status/telemetry."""


def drive_stage(stage: Stage, slot: FrameSlot, metrics: Optional[PipelineMetrics] = None) -> float:
    """Run ``stage`` on ``slot``; note its time in the slot and (if given) in ``metrics``.

    The one place that times a stage: the runner's threads, the sequential loop of
    ``segcam bench`` and the GPU tests all go through it, so they measure the same thing.
    A skipped inference (``infer_every``, paused) is not recorded as a latency sample
    (it would flatter the p50); sub-step timings (``"composite/refine"``) are.
    Returns the time in ms.
    """
    t0 = time.perf_counter()
    stage.process(slot)
    dt = (time.perf_counter() - t0) * 1e3
    name = stage.name
    slot.timings_ms[name] = dt
    if metrics is not None:
        if name != "infer" or slot.inferred:
            metrics.record(name, dt)
        if name == "infer" and slot.inferred:
            metrics.count_inference()
        if name == "composite":
            for key, ms in slot.timings_ms.items():
                if "/" in key:
                    metrics.record(key, ms)
    return dt


__all__ = [
    "Backend",
    "DEVICE_STAGES",
    "Extension",
    "FrameRead",
    "Host",
    "METRIC_SERIES",
    "STAGE_NAMES",
    "Sink",
    "Source",
    "Stage",
    "StreamHost",
    "TensorSpec",
    "drive_stage",
]
