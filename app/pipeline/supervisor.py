"""The supervisor: several streams in one process, one control plane over them.

::

    stream a: capture ─▶ preprocess ─▶ infer ─┐            ┌─▶ composite ─▶ sinks of a
    stream b: capture ─▶ preprocess ─▶ infer ─┼─ shared ───┼─▶ composite ─▶ sinks of b
    stream c: capture ─▶ preprocess ─▶ infer ─┘ inference  └─▶ composite ─▶ sinks of c
                                                (batched)
    supervisor: signals, SIGHUP reload, governor, sd_notify, one mask publisher, exit code

Each stream is a :class:`~segcam.pipeline.runner.Runner` with its own slots, queues,
metrics and temporal state; their infer stages share one backend through
:class:`~segcam.pipeline.batching.SharedInference`. A stream that loses its camera
reconnects inside its source and the others never notice; a stream whose stage raises
is stopped and reported, and the others go on unless ``streams.on_error`` is ``stop``
(the exit code is then that stream's error's). The supervisor is the host the
extensions see: its knobs fan out to every stream, its status has the totals plus each
stream under ``streams``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from segcam.config import Config, stream_configs
from segcam.errors import SegcamError
from segcam.inference.backend import Backend
from segcam.pipeline.batching import SharedInference, StreamInference
from segcam.pipeline.contracts import Extension, Sink, Source
from segcam.pipeline.knobs import Knobs, KnobValues, knob_values_for
from segcam.pipeline.metrics import combined_snapshot, status_line
from segcam.pipeline.reports import FailureReports
from segcam.pipeline.runner import Runner, extension_status
from segcam.pipeline.stages import StageSet, build_stages

log = logging.getLogger("segcam.pipeline")

# Knobs the thermal governor sets; each stream combines them with its own settings.
THERMAL_KNOBS = ("infer_every", "fps_cap", "profile_override", "paused", "pause_mode")


@dataclass
class StreamSpec:
    """One input of the run: id, priority, its derived config, its source and sinks."""

    id: str
    priority: int
    cfg: Config
    source: Source
    sinks: List[Sink]


class KnobsGroup(Knobs):
    """Every stream's knobs as one, as the control plane sees them.

    ``update`` from the thermal governor (heat is device-wide) reaches every stream, each
    combined with that stream's own settings: the larger ``infer_every``, the smaller fps
    cap. With ``shed="priority"``, a warm device lightens only the streams below the
    highest priority (if priorities differ); hotter states reach all. Other knob changes
    apply to every stream as given. ``snapshot`` is the lightest demand of any stream,
    which the governor takes as the base to return to.
    """

    def __init__(self, runners: Sequence[Runner], priorities: Sequence[int], shed: str) -> None:
        super().__init__()
        self.runners = list(runners)
        self.priorities = list(priorities)
        self.shed = shed

    def snapshot(self) -> KnobValues:
        """The first stream's values with the smallest infer_every of any stream."""
        snaps = [r.knobs.snapshot() for r in self.runners]
        if not snaps:
            return super().snapshot()
        return dataclasses.replace(
            snaps[0], infer_every=min(s.infer_every for s in snaps), fps_cap=0.0
        )

    def update(self, **changes: Any) -> KnobValues:
        """Apply ``changes`` to every stream (thermal ones per the rules above)."""
        level = int(changes.get("thermal_level", 0))
        top = max(self.priorities) if self.priorities else 0
        spared = self.shed == "priority" and level == 1 and len(set(self.priorities)) > 1
        for runner, prio in zip(self.runners, self.priorities):
            own = dict(changes)
            if any(k in changes for k in THERMAL_KNOBS):
                base = runner.config.refine.infer_every
                if spared and prio == top:  # the most important streams keep their rate
                    own.update(infer_every=base, fps_cap=0.0, paused=False)
                    own.pop("profile_override", None)
                if "infer_every" in own:
                    own["infer_every"] = max(base, int(own["infer_every"]))
            runner.knobs.update(**own)
        with self._lock:
            self._version += 1
        return self.snapshot()

    def as_dict(self) -> Dict[str, Any]:
        """The combined snapshot as a dict."""
        return dataclasses.asdict(self.snapshot())


class Supervisor(FailureReports):
    """Runs several streams (``specs``) on one ``backend`` with one control plane.

    ``publisher`` is the one mask publisher (segcam.publish.publisher.MaskPublisher) the
    streams' publish sinks share, started before and stopped after the streams.
    """

    def __init__(
        self,
        cfg: Config,
        specs: Sequence[StreamSpec],
        backend: Backend,
        extensions: Sequence[Extension] = (),
        publisher: Any = None,
    ) -> None:
        self._config = cfg
        self.specs = list(specs)
        self.backend = backend
        self.publisher = publisher
        s = cfg.streams
        self.shared = SharedInference(backend, s.batch_max, s.batch_wait_ms)
        self.clients: List[StreamInference] = []
        self.runners: List[Runner] = []
        for spec in self.specs:
            client = self.shared.client(spec.id)
            self.clients.append(client)
            self.runners.append(
                Runner(spec.cfg, spec.source, client, spec.sinks, stream_id=spec.id, host=self)
            )
        self.knobs = KnobsGroup(self.runners, [sp.priority for sp in self.specs], s.shed)
        self.extensions: List[Extension] = list(extensions)
        self.stop_event = threading.Event()
        self.first_frame_event = threading.Event()
        self.eos_event = threading.Event()
        self._init_reports()
        self.stop_reason = ""
        self.failed: Dict[str, str] = {}  # stream id -> its error
        self._done: Dict[str, threading.Thread] = {}  # streams being or already shut down
        self._started_exts: List[Extension] = []
        self._light: List[Any] = []  # (SharedInference, backend) of light profiles

    # ------------------------------------------------------------------ Host
    @property
    def config(self) -> Config:
        """The top-level config in effect."""
        return self._config

    def set_config(self, cfg: Config) -> None:
        """Record a reloaded config; each stream gets its derived one."""
        self._config = cfg
        by_id = {st.id: st.cfg for st in stream_configs(cfg)}
        for runner in self.runners:
            if runner.stream_id in by_id:
                runner.set_config(by_id[runner.stream_id])

    def apply_config_knobs(self, cfg: Config, keys: Sequence[str]) -> None:
        """Each stream's knobs from its own entry of ``cfg`` (its refine/background win)."""
        by_id = {st.id: st.cfg for st in stream_configs(cfg)}
        for runner in self.runners:
            own = by_id.get(runner.stream_id)
            if own is None:
                continue
            changes = knob_values_for(own, keys)
            if "infer_every" in changes:  # heat may hold a larger stride right now
                changes["infer_every"] = max(
                    changes["infer_every"], runner.knobs.snapshot().infer_every
                )
            if changes:
                runner.knobs.update(**changes)

    @property
    def frames_completed(self) -> int:
        """Frames that reached the sinks, all streams together."""
        return sum(r.frames_completed for r in self.runners)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop every stream (safe from signal handlers)."""
        if not self.stop_event.is_set():
            self.stop_reason = self.stop_reason or reason
            self.stop_event.set()
        for runner in self.runners:
            runner.request_stop(reason)

    def add_profile_stages(
        self, name: str, stages: StageSet, backend: Optional[Backend] = None
    ) -> None:
        """Give every stream stages of model profile ``name`` on one shared ``backend``."""
        stages.close()  # built for one stream; each stream gets its own below
        if backend is None or self.stop_event.is_set():
            if backend is not None:
                backend.close()
            return
        s = self._config.streams
        shared = SharedInference(backend, s.batch_max, s.batch_wait_ms)
        shared.start()
        self._light.append((shared, backend))
        for runner in self.runners:
            client = shared.client(runner.stream_id)
            client.activate()
            runner.add_profile_stages(
                name, build_stages(runner.config, client, backend.profile), None
            )

    def status(self) -> Dict[str, Any]:
        """Totals of every stream, each stream under ``streams``, inference and extensions."""
        snap = combined_snapshot(
            [r.metrics for r in self.runners], [r.stream_id for r in self.runners]
        )
        snap["streams"] = {r.stream_id: r.stream_status() for r in self.runners}
        snap["inference"] = self.shared.stats()
        snap["knobs"] = self.knobs.as_dict()
        snap["device"] = self.runners[0].stages.device if self.runners else "cpu"
        snap["source"] = {
            "streams": len(self.runners),
            "running": sum(1 for r in self.runners if r.state == "running"),
            "failed": dict(self.failed),
        }
        snap["extensions"] = extension_status(self.extensions)
        degraded = dict(self.degraded)
        for r in self.runners:  # a stream's own outputs, named with the stream
            degraded.update({f"{r.stream_id}:{k}": v for k, v in r.degraded.items()})
        if degraded:
            snap["degraded"] = degraded
        return snap

    # ------------------------------------------------------------------ running
    def run(self, max_frames: Optional[int] = None, max_seconds: Optional[float] = None) -> int:
        """Run every stream until stopped, all ended, ``max_frames`` each or ``max_seconds``.

        Returns 0, or the exit code of the first error (a failed stream or extension).
        A stream that cannot start (its output cannot open) is raised after cleanup.
        """
        try:
            if self.publisher is not None:
                self.publisher.start()
            self.shared.start()
            for runner, client in zip(self.runners, self.clients):
                runner.start(max_frames)
                client.activate()
            for ext in list(self.extensions):
                ext.start(self)
                self._started_exts.append(ext)
        except BaseException:
            self.shutdown()
            raise
        try:
            self._supervise(max_seconds)
        finally:
            self.shutdown()
        return self.exit_code()

    def exit_code(self) -> int:
        """0, or the exit code of the first error."""
        err = self.first_error()
        return 0 if err is None else int(err.exit_code) or 1

    def first_error(self) -> Optional[SegcamError]:
        """The supervisor's own error, else the first failed stream's."""
        if self.error is not None:
            return self.error
        for runner in self.runners:
            if runner.error is not None:
                return runner.error
        return None

    def _supervise(self, max_seconds: Optional[float]) -> None:
        interval = float(self._config.pipeline.status_interval_s)
        start = time.monotonic()
        next_status = start + interval if interval > 0 else None
        while not self.stop_event.is_set():
            self.stop_event.wait(0.1)
            for runner, client in zip(self.runners, self.clients):
                if runner.stop_event.is_set() and runner.stream_id not in self._done:
                    self._stream_stopped(runner, client)
            if not self.first_frame_event.is_set() and all(
                r.first_frame_event.is_set() or r.stream_id in self._done for r in self.runners
            ):
                self.first_frame_event.set()
            if len(self._done) == len(self.runners):
                if all(r.eos_event.is_set() for r in self.runners):
                    self.eos_event.set()
                    # every stream reached --frames: that is the reason, not their inputs
                    limited = {r.stop_reason for r in self.runners}
                    reason = limited.pop() if len(limited) == 1 else ""
                    self.request_stop(
                        reason if reason.endswith("(--frames)") else "end of every input"
                    )
                else:
                    self.request_stop("every stream stopped")
            now = time.monotonic()
            if max_seconds is not None and now - start >= max_seconds:
                self.request_stop(f"{max_seconds:g} s elapsed (--seconds)")
            if next_status is not None and now >= next_status:
                next_status = now + interval
                status = self.status()
                log.info(
                    "%s | %s", status_line(status, status.get("extensions")), streams_line(status)
                )

    def _stream_stopped(self, runner: Runner, client: StreamInference) -> None:
        """A stream ended or failed on its own: shut it down; maybe stop the rest."""
        client.activate(False)  # the batcher stops waiting for its frames
        t = threading.Thread(
            target=runner.shutdown, name=f"segcam-stop-{runner.stream_id}", daemon=True
        )
        self._done[runner.stream_id] = t
        t.start()
        if runner.error is not None:
            self.failed[runner.stream_id] = str(runner.error)
            log.error(
                "stream %s failed (%s): %s%s",
                runner.stream_id,
                runner.error_where,
                runner.error,
                "" if self._config.streams.on_error == "stop" else "; the other streams go on",
            )
            if self._config.streams.on_error == "stop":
                self.request_stop(f"stream {runner.stream_id} failed")
        else:
            log.info("stream %s stopped: %s", runner.stream_id, runner.stop_reason or "done")

    def shutdown(self) -> None:
        """Stop extensions, then every stream at once within one ``stop_timeout_s``."""
        self.request_stop()
        budget = float(self._config.pipeline.stop_timeout_s)
        deadline = time.monotonic() + budget
        for ext in reversed(self._started_exts):
            try:
                ext.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                log.warning("extension %s did not stop cleanly: %s", ext.name, exc)
        self._started_exts.clear()
        for runner in self.runners:
            if runner.stream_id not in self._done:
                t = threading.Thread(
                    target=runner.shutdown,
                    args=(deadline,),
                    name=f"segcam-stop-{runner.stream_id}",
                    daemon=True,
                )
                self._done[runner.stream_id] = t
                t.start()
        for t in self._done.values():
            t.join(max(0.1, deadline - time.monotonic()))
        for runner in self.runners:
            if runner.error is not None and runner.stream_id not in self.failed:
                self.failed[runner.stream_id] = str(runner.error)
        self.shared.stop(max(0.1, deadline - time.monotonic()))
        for shared, backend in self._light:
            shared.stop(0.2)
            backend.close()
        self._light.clear()
        if self.publisher is not None:
            try:
                self.publisher.stop(max(0.2, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - reported, not raised from shutdown
                self.report_error(exc, "publish")


def streams_line(status: Dict[str, Any]) -> str:
    """``streams: a 29.9 fps, b 30.0 fps, c failed`` for the status line."""
    parts = []
    for sid, st in status.get("streams", {}).items():
        state = st.get("state", "")
        parts.append(
            f"{sid} {st.get('fps', 0.0):.1f} fps" if state == "running" else f"{sid} {state}"
        )
    return "streams: " + ", ".join(parts)


def build_streams(
    cfg: Config, build_sinks: Any, open_source: Any, publisher: Any
) -> List[StreamSpec]:
    """A StreamSpec per input of ``cfg``: derived config, opened source, sinks.

    Every source is opened and every sink built before anything runs, so a bad input
    (unknown scheme, missing file, absent camera) fails with its error before any thread
    starts; what was opened is closed again.
    """
    specs: List[StreamSpec] = []
    try:
        for st in stream_configs(cfg):
            sinks = build_sinks(st.cfg, publisher=publisher)
            source = open_source(st.cfg.input)
            specs.append(StreamSpec(st.id, st.priority, st.cfg, source, sinks))
            source.open()
    except BaseException:
        for spec in specs:
            spec.source.close()
        raise
    return specs


__all__ = ["KnobsGroup", "StreamSpec", "Supervisor", "build_streams", "streams_line"]
