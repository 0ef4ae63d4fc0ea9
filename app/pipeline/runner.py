"""The runner: one object that owns the pipeline's threads, queues, slots and metrics.

::

    capture ─▶ [preprocess_in] ─▶ preprocess ─▶ [infer_in] ─▶ infer ─▶ [composite_in]
            ─▶ composite ─▶ sinks (each sink has its own thread and drops when busy)

Live sources use latest-frame queues (a full queue drops its oldest frame). Finite files
and images (``source.live`` False and ``input.realtime`` off) use backpressure instead, so
every frame is processed and the end of the stream drains through every stage before
``run`` returns. A stage that raises reports the error, the pipeline stops in order and
``run`` returns the error's exit code (``runner.error`` holds it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from segcam.config import Config
from segcam.errors import OutputError, PipelineError
from segcam.inference.backend import Backend
from segcam.pipeline.contracts import METRIC_SERIES, Extension, Host, Sink, Source, drive_stage
from segcam.pipeline.knobs import Knobs, knob_values_for, knobs_from_config
from segcam.pipeline.metrics import PipelineMetrics, status_line
from segcam.pipeline.queues import END_OF_STREAM, LatestQueue
from segcam.pipeline.reports import FailureReports
from segcam.pipeline.slots import FrameSlot, SlotRing, ensure_buffer, filled
from segcam.pipeline.stages import Stage, StageSet, build_stages
from segcam.pipeline.types import FrameResult

log = logging.getLogger("segcam.pipeline")

QUEUES = ("preprocess_in", "infer_in", "composite_in")


class Runner(FailureReports):
    """Runs one stream's pipeline: ``Runner(cfg, source, backend, sinks, extensions).run()``.

    On its own (``segcam bench``, tests, the single-input case of older callers) it also
    hosts the control-plane ``extensions``. Under a :class:`~segcam.pipeline.supervisor.
    Supervisor` it is one of several streams: ``host`` is the supervisor, which owns the
    extensions, and :meth:`start` / :meth:`shutdown` are called by it. ``stages``
    overrides the factory's choice (tests, benchmarks); ``backpressure`` forces lossless
    (True) or latest-frame (False) hand-off instead of deciding from the source.
    """

    def __init__(
        self,
        cfg: Config,
        source: Source,
        backend: Backend,
        sinks: Sequence[Sink] = (),
        extensions: Sequence[Extension] = (),
        stages: Optional[StageSet] = None,
        backpressure: Optional[bool] = None,
        stream_id: str = "",
        host: Optional[Host] = None,
    ) -> None:
        self._config = cfg
        self.source = source
        self.backend = backend
        self.stream_id = stream_id
        self.host = host
        self.sinks: List[Sink] = list(sinks)
        self.extensions: List[Extension] = list(extensions)
        self.profile = backend.profile
        self.stages = stages if stages is not None else build_stages(cfg, backend, self.profile)
        # Stages of other model profiles (the thermal governor's light model), by name:
        # frames whose knobs say profile_override=name run through them.
        self.profile_stages: Dict[str, Tuple[StageSet, Optional[Backend], str]] = {}
        if backpressure is None:
            backpressure = not source.live and not cfg.input.realtime
        self.backpressure = bool(backpressure)
        self.knobs = Knobs(knobs_from_config(cfg))
        self.metrics = PipelineMetrics(list(METRIC_SERIES))
        self.metrics.backend = backend.provider or backend.name
        self.stop_event = threading.Event()
        self.first_frame_event = threading.Event()
        self.eos_event = threading.Event()  # a finite source ended and every frame drained
        self.frames_completed = 0
        self._init_reports()
        self.stop_reason = ""
        self._threads: List[threading.Thread] = []
        self._started_sinks: List[Sink] = []
        self._started_exts: List[Extension] = []
        self._running = False
        self._shut_down = False  # set once shutdown took the profile stages to close
        self._max_frames: Optional[int] = None
        # Why the capture loop ended the stream; the drained end reports it as the reason.
        self._end_reason = "end of input"
        self._cv_threads_before: Optional[int] = None
        self._build_queues()

    # ------------------------------------------------------------------ public API
    @property
    def config(self) -> Config:
        """The current Config (a SIGHUP reload may replace it)."""
        return self._config

    @config.setter
    def config(self, cfg: Config) -> None:
        self._config = cfg

    def set_config(self, cfg: Config) -> None:
        """Record ``cfg`` as the config in effect (after a reload)."""
        self._config = cfg

    def apply_config_knobs(self, cfg: Config, keys: Sequence[str]) -> None:
        """Set the knobs named in ``keys`` to what ``cfg`` asks for."""
        changes = knob_values_for(cfg, keys)
        if changes:
            self.knobs.update(**changes)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask every thread to stop (safe from any thread and from signal handlers)."""
        if not self.stop_event.is_set():
            self.stop_reason = self.stop_reason or reason
            self.stop_event.set()
        self.source.interrupt()

    def add_profile_stages(
        self, name: str, stages: StageSet, backend: Optional[Backend] = None
    ) -> None:
        """Register the stages of model profile ``name`` (built off the hot path).

        Frames captured with ``knobs.profile_override == name`` run through them; the
        runner closes them and ``backend`` at shutdown, or at once if they arrive after it
        (a builder thread racing with the stop).
        """
        model_id = backend.profile.identity() if backend is not None else name
        with self._lock:
            if not self._shut_down:
                self.profile_stages[name] = (stages, backend, model_id)
                return
        stages.close()
        if backend is not None:
            backend.close()

    def _stage_of(self, slot: FrameSlot, name: str, default: Stage) -> Tuple[Stage, str]:
        """The stage ``name`` for this slot's profile and that profile's model id ("" = main)."""
        override = slot.knobs.profile_override if slot.knobs is not None else None
        entry = self.profile_stages.get(override) if override else None
        if entry is None:
            return default, ""
        return entry[0].stage(name), entry[2]

    def add_extension(self, ext: Extension) -> None:
        """Add a control-plane extension; started at once if the pipeline runs."""
        self.extensions.append(ext)
        if self._running:
            self._start_extension(ext)

    def stream_status(self) -> Dict[str, object]:
        """This stream's metrics snapshot plus its source, knobs, device and hand-off mode."""
        snap: Dict[str, object] = dict(self.metrics.snapshot())
        snap["source"] = self.source.stats()
        snap["knobs"] = self.knobs.as_dict()
        snap["device"] = self.stages.device
        snap["mode"] = "backpressure" if self.backpressure else "latest-frame"
        with self._lock:
            snap["degraded"] = dict(self.degraded)
        if self.stream_id:
            snap["stream_id"] = self.stream_id
        snap["state"] = self.state
        if self.error is not None:
            snap["error"] = str(self.error)
        return snap

    @property
    def state(self) -> str:
        """running | ended | failed | stopped | idle."""
        if self.error is not None:
            return "failed"
        if self.eos_event.is_set():
            return "ended"
        if self.stop_event.is_set():
            return "stopped"
        return "running" if self._running else "idle"

    def status(self) -> Dict[str, object]:
        """Metrics snapshot plus source, knobs and every extension's status."""
        snap = self.stream_status()
        snap["extensions"] = extension_status(self.extensions)
        return snap

    def run(self, max_frames: Optional[int] = None, max_seconds: Optional[float] = None) -> int:
        """Run until stopped, the source ends, ``max_frames`` or ``max_seconds``.

        Returns 0, or the exit code of the error that stopped the pipeline. Errors while
        starting (a sink that cannot open) are raised after cleaning up.
        """
        try:
            self.start(max_frames)
            for ext in list(self.extensions):
                self._start_extension(ext)
        except BaseException:
            self.shutdown()
            raise
        try:
            self._supervise(max_seconds)
        finally:
            self.shutdown()
        return self.exit_code()

    def exit_code(self) -> int:
        """0, or the exit code of the error that stopped this pipeline."""
        if self.error is not None:
            return int(self.error.exit_code) or 1
        return 0

    # ------------------------------------------------------------------ construction
    def _build_queues(self) -> None:
        depth = self._config.pipeline.queue_depth
        count = max(2, self._config.pipeline.slots)
        self.ring = SlotRing(count)
        self.queues: Dict[str, LatestQueue] = {}
        for order, name in enumerate(QUEUES):
            self.queues[name] = LatestQueue(
                name,
                depth,
                block_when_full=self.backpressure,
                on_drop=self._dropped,
                order=order,
            )
            self.metrics.watch_drops(name, _queue_drops(self.queues[name]))

    def _dropped(self, item: object) -> None:
        if isinstance(item, FrameSlot):
            self.ring.release(item)

    # ------------------------------------------------------------------ start / stop
    def start(self, max_frames: Optional[int] = None) -> None:
        """Open the source (unless open) and the sinks, start the stage threads.

        Extensions are not started here: the host (this runner's :meth:`run`, or the
        supervisor) starts them once every stream runs.
        """
        self._max_frames = max_frames
        if not self.source.is_open:  # the command may have opened it
            self.source.open()
        self._set_cv_threads()
        for sink in self.sinks:
            sink.attach(self)
            if self.backpressure:
                sink.lossless = True
            sink.start()
            self._started_sinks.append(sink)
            self.metrics.watch_sink(sink.name, sink.stats)
            self.metrics.watch_drops(f"sink:{sink.name}", _sink_drops(sink))
        q = self.queues
        specs: List[Tuple[str, Callable[..., None], tuple]] = [
            ("composite", self._composite_loop, ()),
            ("infer", self._stage_loop, (self.stages.infer, q["infer_in"], q["composite_in"])),
            (
                "preprocess",
                self._stage_loop,
                (self.stages.preprocess, q["preprocess_in"], q["infer_in"]),
            ),
            ("capture", self._capture_loop, ()),
        ]
        tag = f"-{self.stream_id}" if self.stream_id and self.host is not None else ""
        for name, target, args in specs:
            t = threading.Thread(
                target=self._guard,
                args=(name, target, args),
                name=f"segcam-{name}{tag}",
                daemon=True,
            )
            self._threads.append(t)
            t.start()
        self._running = True
        log.info(
            "pipeline%s running: %s, %s, %s hand-off, %d slots",
            f" {self.stream_id}" if tag else "",
            self.metrics.backend or "backend",
            self.stages.reason or self.stages.device,
            "lossless" if self.backpressure else "latest-frame",
            len(self.ring),
        )

    def _start_extension(self, ext: Extension) -> None:
        ext.start(self)
        self._started_exts.append(ext)

    def _supervise(self, max_seconds: Optional[float]) -> None:
        interval = float(self._config.pipeline.status_interval_s)
        start = time.monotonic()
        next_status = start + interval if interval > 0 else None
        while not self.stop_event.is_set():
            self.stop_event.wait(0.1)
            now = time.monotonic()
            if max_seconds is not None and now - start >= max_seconds:
                self.request_stop(f"{max_seconds:g} s elapsed (--seconds)")
            if next_status is not None and now >= next_status:
                next_status = now + interval
                status = self.status()
                log.info(status_line(status, status.get("extensions")))  # type: ignore[arg-type]

    def shutdown(self, deadline: Optional[float] = None) -> None:
        """Orderly stop within ``pipeline.stop_timeout_s``: extensions, stages, sinks, source.

        ``deadline`` (monotonic seconds) is the supervisor's, shared by every stream.
        """
        self.request_stop()
        budget = float(self._config.pipeline.stop_timeout_s)
        if deadline is None:
            deadline = time.monotonic() + budget
        for ext in reversed(self._started_exts):
            try:
                ext.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                log.warning("extension %s did not stop cleanly: %s", ext.name, exc)
        self._started_exts.clear()
        self.ring.close()
        for q in self.queues.values():
            q.close()
        # Sinks get at least half of the budget: finalising a recording matters most.
        stage_deadline = deadline - budget / 2
        for t in self._threads:
            t.join(max(0.0, stage_deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            log.warning("threads still busy at shutdown: %s", ", ".join(stuck))
        for q in self.queues.values():
            for item in q.drain():
                self._dropped(item)
        for sink in self._started_sinks:
            try:
                sink.stop(max(0.2, deadline - time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - reported, then keep stopping
                self.report_error(exc, f"sink {sink.name}")
        self._started_sinks.clear()
        capture_alive = any(
            t.name.startswith("segcam-capture") and t.is_alive() for t in self._threads
        )
        if not capture_alive:  # never close a device another thread is still reading
            try:
                self.source.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the input failed: %s", exc)
        with self._lock:  # from here on, add_profile_stages closes what it is given
            self._shut_down = True
            extra = list(self.profile_stages.values())
        if not stuck:
            self.stages.close()
            for stages, backend, _ in extra:
                stages.close()
                if backend is not None:
                    backend.close()
        if self._cv_threads_before is not None:
            cv2.setNumThreads(self._cv_threads_before)
            self._cv_threads_before = None
        self._running = False

    def _set_cv_threads(self) -> None:
        """Apply ``pipeline.cv_threads`` (0 = keep OpenCV's default) while running.

        Stage threads already run in parallel, so fewer OpenCV workers can avoid fighting
        for cores; on 2 cores, one worker measured slower (the composite stage, the
        slowest, lost its own parallelism), hence the default leaves OpenCV alone.
        """
        want = int(self._config.pipeline.cv_threads)
        if want <= 0:
            return
        self._cv_threads_before = cv2.getNumThreads()
        cv2.setNumThreads(want)
        log.debug("OpenCV threads: %d (was %d)", want, self._cv_threads_before)

    # ------------------------------------------------------------------ threads
    def _guard(self, name: str, target: Callable[..., None], args: tuple) -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - every thread death is reported
            self.report_error(exc, name)

    def _capture_loop(self) -> None:
        source = self.source
        out_q = self.queues["preprocess_in"]
        metrics = self.metrics
        frame_id = 0
        next_due = 0.0
        while not self.stop_event.is_set():
            if self._max_frames is not None and frame_id >= self._max_frames:
                self._end_reason = f"{self._max_frames} frames done (--frames)"
                break
            t0 = time.perf_counter()
            got = source.read()
            if got is None:
                break  # end of a finite stream (or interrupted by stop)
            frame, ts_ns, mono_ns = got
            read_s = time.perf_counter() - t0
            knobs = self.knobs.snapshot()
            if knobs.fps_cap > 0:
                now = time.monotonic()
                if now < next_due:
                    if source.live:
                        continue  # a live source moves on: skip this frame
                    self.stop_event.wait(next_due - now)
                next_due = max(next_due + 1.0 / knobs.fps_cap, time.monotonic())
            slot = None
            while slot is None and not self.stop_event.is_set():
                slot = self.ring.acquire(0.1, steal=not self.backpressure)
            if slot is None:
                break
            t1 = time.perf_counter()
            slot.frame = ensure_buffer(slot.frame, frame.shape, np.uint8)
            np.copyto(slot.frame, frame)  # the source may reuse its buffer
            slot.frame_id = frame_id
            slot.capture_ts_ns = ts_ns
            slot.capture_mono_ns = mono_ns
            slot.knobs = knobs
            frame_id += 1
            # Reading plus copying; waiting for a free slot (backpressure) is not work.
            dt = (read_s + time.perf_counter() - t1) * 1e3
            slot.timings_ms["capture"] = dt
            metrics.record("capture", dt)
            metrics.count_in()
            if not self._put(out_q, slot):
                break
        if not self.stop_event.is_set():
            out_q.put_end()

    def _put(self, q: LatestQueue, slot: FrameSlot) -> bool:
        """Hand ``slot`` on; in backpressure mode wait (in steps) for room."""
        while True:
            if q.put(slot, timeout=0.1):
                return True
            if q.closed or self.stop_event.is_set():
                self.ring.release(slot)
                return False

    def _stage_loop(self, stage: Stage, in_q: LatestQueue, out_q: LatestQueue) -> None:
        name = stage.name
        main, last = stage, stage
        while not self.stop_event.is_set():
            item = in_q.get(0.1)
            if item is None:
                continue
            if item is END_OF_STREAM:
                out_q.put_end()
                return
            slot = item
            stage, _ = self._stage_of(slot, name, main)
            if stage is not last:  # profile switched: start that stage afresh
                stage.reset()
                last = stage
            try:
                drive_stage(stage, slot, self.metrics)
            except BaseException:
                self.ring.release(slot)
                raise
            if not self._put(out_q, slot):
                return

    def _composite_loop(self) -> None:
        main = last = self.stages.composite
        in_q = self.queues["composite_in"]
        metrics = self.metrics
        main_id = self.profile.identity()
        while not self.stop_event.is_set():
            item = in_q.get(0.1)
            if item is None:
                continue
            if item is END_OF_STREAM:
                self.eos_event.set()
                self.request_stop(self._end_reason)
                return
            slot = item
            stage, model_id = self._stage_of(slot, "composite", main)
            model_id = model_id or main_id
            if stage is not last:  # profile switched: no temporal state across models
                stage.reset()
                last = stage
            try:
                drive_stage(stage, slot, metrics)
                t1 = time.perf_counter()
                self._fan_out(slot, model_id)
                metrics.record("output", (time.perf_counter() - t1) * 1e3)
            finally:
                self.ring.release(slot)

    def _fan_out(self, slot: FrameSlot, model_id: str) -> None:
        knobs = slot.knobs
        result = FrameResult(
            frame_id=slot.frame_id,
            capture_ts_ns=slot.capture_ts_ns,
            capture_mono_ns=slot.capture_mono_ns,
            frame=filled(slot.composite, "composite"),
            mask=filled(slot.mask, "mask"),
            source=slot.frame,
            inferred=slot.inferred,
            model_id=model_id,
            threshold=knobs.threshold if knobs is not None else 0.5,
            timings_ms=dict(slot.timings_ms),
        )
        for sink in self.sinks:
            try:
                sink.submit(result)
            except OutputError:
                raise
            except Exception as exc:  # noqa: BLE001 - name the sink in the error
                raise PipelineError(
                    f"sink {sink.name} failed: {type(exc).__name__}: {exc}",
                    "run with --log-level debug for the traceback",
                ) from exc
        self.metrics.frame_done(slot.capture_mono_ns)
        self.frames_completed += 1
        if not self.first_frame_event.is_set():
            self.first_frame_event.set()


def extension_status(extensions: Sequence[Extension]) -> Dict[str, object]:
    """Every extension's ``status()`` by name; a failing one shows its error instead."""
    out: Dict[str, object] = {}
    for ext in list(extensions):
        try:
            out[ext.name] = ext.status()
        except Exception as exc:  # noqa: BLE001 - status must never kill the caller
            out[ext.name] = {"error": str(exc)}
    return out


def _queue_drops(q: LatestQueue) -> Callable[[], int]:
    return lambda: q.drops


def _sink_drops(sink: Sink) -> Callable[[], int]:
    return lambda: int(sink.stats().get("dropped", 0))
