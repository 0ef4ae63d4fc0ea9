"""The publisher thread: the one owner of the ZeroMQ PUB socket.

The pipeline hands over work through a one-item latest slot (``offer`` never waits); this
thread encodes masks/frames, sends them with ``NOBLOCK`` and emits telemetry about once
a second. Nothing here can slow the pipeline: a busy publisher overwrites the pending
item (``dropped_busy``), and a full subscriber queue drops inside ZeroMQ (or, with
``nodrop``, raises ``zmq.Again`` which is counted as ``dropped_hwm``).

Loss accounting: a job takes its ``seq`` numbers when it is offered, so every message the
publisher drops (replaced while busy, refused at the high-water mark, failed to encode)
leaves a gap in ``seq``. Each header also carries ``dropped``, the number of earlier
``seq`` numbers of its topic that never left this publisher, so a subscriber can tell
publisher-side drops from losses on the way (a full per-subscriber queue, which PUB
drops silently and no publisher counter can see).
"""

from __future__ import annotations

import json
import logging
import os
import socket as pysocket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import zmq

from segcam.errors import PublishError
from segcam.netutil import is_loopback_host
from segcam.publish import protocol
from segcam.publish.binding import bind_all
from segcam.publish.monitor import ConnectionMonitor

log = logging.getLogger("segcam.publish")


def is_loopback_endpoint(endpoint: str) -> bool:
    """True when a ZeroMQ endpoint is reachable only from this host.

    ``ipc://`` and ``inproc://`` are local; ``tcp://`` is local only on a loopback
    address or ``localhost``; anything else (``*``, ``0.0.0.0``, an interface name,
    pgm/udp/ws transports) counts as exposed.
    """
    scheme, sep, rest = endpoint.partition("://")
    if not sep:
        return False
    if scheme in ("ipc", "inproc"):
        return True
    if scheme != "tcp":
        return False
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    host = host.split(";")[-1]  # "source;dest" form: the bound part is what counts
    return is_loopback_host(host)


def exposure_warning(cfg: Any) -> Optional[str]:
    """Warning text when the mask stream is reachable from the network without CURVE.

    ``cfg`` is the whole Config (or its ``publish`` section). None when publishing is
    off, every bind address is loopback/ipc, or CURVE is on. ``segcam doctor`` and the
    publisher's start-up log use this.
    """
    pcfg = getattr(cfg, "publish", cfg)
    if not pcfg.enabled or pcfg.curve.enabled:
        return None
    exposed = [ep for ep in pcfg.bind if not is_loopback_endpoint(ep)]
    if not exposed:
        return None
    return (
        f"mask stream is exposed on {', '.join(exposed)} without CURVE: anyone on the "
        "network can read it (set publish.curve.enabled=true with keys from "
        "`segcam keys generate`, or bind to tcp://127.0.0.1)"
    )


@dataclass
class PublishJob:
    """What the sink hands the publisher thread for one frame.

    ``mask`` is the wire-ready uint8 mask (quantised, scaled) and ``frame`` a copy of the
    composed frame (or None): both owned by the job, as the pipeline recycles its buffers.
    """

    frame_id: int
    capture_ts_ns: int
    mask: np.ndarray
    frame: Optional[np.ndarray]
    frame_width: int
    frame_height: int
    model_id: str
    threshold: float
    inferred: bool
    stream_id: str = ""  # the stream it belongs to; "" = the publisher's own stream id
    seq: Dict[str, int] = field(default_factory=dict)  # topic -> seq, set by ``offer``


class _LatestSlot:
    """One pending job per stream; a new one replaces (and counts) that stream's unsent one.

    Streams are served in the order their jobs arrived, so a busy stream cannot starve
    the others of the one socket. ``put`` numbers the job: each topic it will be sent on
    takes its stream's next ``seq``, so a replaced job's numbers are never reused and
    show as a gap.
    """

    def __init__(self, topics: Sequence[str], default_stream: str) -> None:
        self._cond = threading.Condition()
        self._jobs: Dict[str, PublishJob] = {}  # insertion order = arrival order
        self._topics = tuple(topics)
        self._default_stream = default_stream
        self._next: Dict[Tuple[str, str], int] = {}  # (stream, topic) -> next seq
        self.replaced = 0

    def put(self, job: PublishJob) -> bool:
        with self._cond:
            stream = job.stream_id or self._default_stream
            for topic in self._topics:
                n = self._next.get((stream, topic), 0)
                job.seq[topic] = n
                self._next[(stream, topic)] = n + 1
            replaced = job.stream_id in self._jobs
            if replaced:
                self.replaced += 1
                del self._jobs[job.stream_id]  # re-inserted last: it waits its turn again
            self._jobs[job.stream_id] = job
            self._cond.notify()
        return not replaced

    def take(self, timeout: float) -> Optional[PublishJob]:
        with self._cond:
            if not self._jobs and timeout > 0:
                self._cond.wait(timeout)
            if not self._jobs:
                return None
            key = next(iter(self._jobs))
            return self._jobs.pop(key)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class MaskPublisher:
    """Thread owning the PUB socket: encodes and sends masks, frames and telemetry.

    ``pcfg`` is the ``publish`` config section. ``status_fn`` returns the telemetry dict
    (``runner.status``); ``on_error(exc, where)`` is called if the thread fails.
    """

    def __init__(
        self,
        pcfg: Any,
        status_fn: Optional[Callable[[], Dict[str, Any]]] = None,
        on_error: Optional[Callable[[BaseException, str], None]] = None,
    ) -> None:
        self.cfg = pcfg
        self.status_fn = status_fn
        self.on_error = on_error
        self.stream = pcfg.stream_id or pysocket.gethostname()
        self.session = os.urandom(8).hex()
        self.session_start_ns = time.time_ns()
        self.endpoints: List[str] = []
        self.server_public_key: Optional[bytes] = None
        job_topics = [protocol.TOPIC_MASK] + ([protocol.TOPIC_FRAME] if pcfg.frame_topic else [])
        self._slot = _LatestSlot(job_topics, self.stream)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._ctx: Optional[zmq.Context] = None
        self._sock: Optional[zmq.Socket] = None
        self._monitor: Optional[ConnectionMonitor] = None
        self._guard: Any = None
        self._auth_denied = 0  # kept after the guard stops, for the exit summary
        self._monitor_counts: Dict[str, int] = {}
        self._telemetry_seq = 0
        # Messages handed to ZeroMQ per (stream, topic): seq - handed = drops before seq.
        self._handed: Dict[Tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._counters: Dict[str, Any] = {
            "sent_mask": 0,
            "sent_frame": 0,
            "sent_telemetry": 0,
            "bytes_sent": 0,
            "dropped_hwm": 0,
            "encode_errors": 0,
            "telemetry_errors": 0,
            "cpu_s": 0.0,
            "encode_ms_last": 0.0,
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Create the socket, bind every address and start the thread (PublishError on failure)."""
        if self._thread is not None:
            return
        warning = exposure_warning(self.cfg) if self.cfg.enabled else None
        if warning:
            log.warning("%s", warning)
        self._ctx = zmq.Context()
        try:
            self._open_socket()
        except BaseException:
            self._close_socket()
            raise
        self._thread = threading.Thread(target=self._run, name="segcam-publish", daemon=True)
        self._thread.start()
        log.info(
            "publishing %s masks (%s) on %s%s",
            self.cfg.values,
            self.cfg.encoding,
            ", ".join(self.endpoints),
            " with CURVE" if self.cfg.curve.enabled else "",
        )

    def _open_socket(self) -> None:
        assert self._ctx is not None
        ccfg = self.cfg.curve
        if ccfg.enabled:
            from segcam.publish.curve import CurveGuard

            if not ccfg.server_secret_key or not ccfg.authorized_keys_dir:
                raise PublishError(
                    "publish.curve.enabled needs server_secret_key and authorized_keys_dir",
                    "create keys with `segcam keys generate` and set both paths",
                )
            self._guard = CurveGuard(self._ctx, ccfg.authorized_keys_dir)
            self._guard.start()
        sock = self._ctx.socket(zmq.PUB)
        self._sock = sock
        sock.setsockopt(zmq.SNDHWM, int(self.cfg.sndhwm))
        sock.setsockopt(zmq.LINGER, 0)
        if self.cfg.nodrop:
            sock.setsockopt(zmq.XPUB_NODROP, 1)
        apply_publisher_heartbeats(sock, self.cfg.heartbeat_s)
        if ccfg.enabled:
            from segcam.publish.curve import apply_server_keys

            self.server_public_key = apply_server_keys(sock, ccfg.server_secret_key)
        self._monitor = ConnectionMonitor(sock, log, ccfg.enabled, "subscriber")
        self.endpoints += bind_all(
            sock,
            self.cfg.bind,
            "the mask publisher",
            "is another segcam running? choose another port in publish.bind",
        )

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the socket (LINGER 0: pending messages are dropped)."""
        self._stop.set()
        self._slot.wake()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("publisher thread did not stop within %.1f s", timeout)
                return  # the thread still owns the socket; never close it under it
            self._thread = None
        self._close_socket()

    def _close_socket(self) -> None:
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        if self._guard is not None:
            self._auth_denied = self._guard.denied
            self._guard.stop()
            self._guard = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    # ------------------------------------------------------------------ hand-off

    def offer(self, job: PublishJob) -> bool:
        """Hand a job to the thread; returns False if it replaced an unsent one."""
        return self._slot.put(job)

    def stats(self) -> Dict[str, Any]:
        """Counters: messages and bytes sent, drops by cause, CPU time of the thread."""
        with self._lock:
            out = dict(self._counters)
        out["cpu_s"] = round(out["cpu_s"], 3)
        out["encode_ms_last"] = round(out["encode_ms_last"], 3)
        out["dropped_busy"] = self._slot.replaced
        guard = self._guard
        out["auth_denied"] = guard.denied if guard is not None else self._auth_denied
        monitor = self._monitor
        if monitor is not None:  # counters outlive the socket, for the exit summary
            self._monitor_counts = dict(monitor.counters)
        out.update(self._monitor_counts)
        out["endpoints"] = list(self.endpoints)
        out["session"] = self.session
        return out

    def _count(self, key: str, n: Any = 1) -> None:
        with self._lock:
            self._counters[key] += n

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        interval = float(self.cfg.telemetry_interval_s)
        next_telemetry = time.monotonic() + (interval if interval > 0 else 0)
        try:
            while not self._stop.is_set():
                wait = 0.25
                if interval > 0 and self.status_fn is not None:
                    wait = min(wait, max(0.0, next_telemetry - time.monotonic()))
                job = self._slot.take(wait)
                if self._stop.is_set():
                    break
                if job is not None:
                    self._publish_job(job)
                if (
                    interval > 0
                    and self.status_fn is not None
                    and time.monotonic() >= next_telemetry
                ):
                    next_telemetry = max(next_telemetry + interval, time.monotonic())
                    self._publish_telemetry()
                self._drain_monitor()
                with self._lock:
                    self._counters["cpu_s"] = time.thread_time()
        except Exception as exc:  # noqa: BLE001 - reported to the runner, never swallowed
            log.error("mask publisher failed: %s", exc)
            if self.on_error is not None:
                self.on_error(exc, "publish")

    def _send(self, topic: str, seq: int, header: Dict[str, Any], payload: bytes) -> bool:
        assert self._sock is not None
        key = (str(header.get("stream", "")), topic)  # each stream numbers its own messages
        header["seq"] = seq
        header["dropped"] = seq - self._handed.get(key, 0)
        header["session_start_ns"] = self.session_start_ns
        header["publish_ts_ns"] = time.time_ns()
        frames = protocol.pack(topic, header, payload)
        try:
            self._sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._count("dropped_hwm")
            return False
        self._handed[key] = self._handed.get(key, 0) + 1
        with self._lock:
            self._counters["sent_" + topic] += 1
            self._counters["bytes_sent"] += sum(len(f) for f in frames)
        return True

    def _publish_job(self, job: PublishJob) -> None:
        t0 = time.perf_counter()
        cfg = self.cfg
        wire = job.mask
        try:
            payload = protocol.encode_mask(wire, cfg.encoding)
        except (ValueError, protocol.ProtocolError) as exc:
            # Its seq numbers (mask and frame) stay unused: a gap counted in ``dropped``.
            self._count("encode_errors")
            log.warning("mask %d not published: %s", job.frame_id, exc)
            return
        stream = job.stream_id or self.stream
        header = protocol.base_header(stream, self.session, 0, cfg.encoding)
        header.update(
            frame_id=int(job.frame_id),
            capture_ts_ns=int(job.capture_ts_ns),
            width=int(wire.shape[1]),
            height=int(wire.shape[0]),
            frame_width=int(job.frame_width),
            frame_height=int(job.frame_height),
            values=cfg.values,
            dtype="uint8",
            model=job.model_id,
            threshold=float(job.threshold),
            inferred=bool(job.inferred),
        )
        with self._lock:
            self._counters["encode_ms_last"] = (time.perf_counter() - t0) * 1000.0
        self._send(protocol.TOPIC_MASK, job.seq[protocol.TOPIC_MASK], header, payload)
        if protocol.TOPIC_FRAME in job.seq and job.frame is not None:
            jpeg = protocol.encode_jpeg(job.frame, cfg.jpeg_quality)
            header = protocol.base_header(stream, self.session, 0, "jpeg")
            header.update(
                frame_id=int(job.frame_id),
                capture_ts_ns=int(job.capture_ts_ns),
                width=int(job.frame.shape[1]),
                height=int(job.frame.shape[0]),
            )
            self._send(protocol.TOPIC_FRAME, job.seq[protocol.TOPIC_FRAME], header, jpeg)

    def _publish_telemetry(self) -> None:
        assert self.status_fn is not None
        seq = self._telemetry_seq
        self._telemetry_seq += 1  # taken even if the status fails: the loss shows as a gap
        try:
            status = dict(self.status_fn())
            status["publisher"] = self.stats()
            payload = json.dumps(_clean(status), allow_nan=False).encode("utf-8")
        except Exception as exc:  # noqa: BLE001 - a status provider's fault must not stop masks
            self._count("telemetry_errors")
            log.warning("telemetry not published: %s", exc)
            return
        header = protocol.base_header(self.stream, self.session, 0, "json")
        self._send(protocol.TOPIC_TELEMETRY, seq, header, payload)

    def _drain_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.drain()


def apply_publisher_heartbeats(sock: zmq.Socket, heartbeat_s: float) -> None:
    """ZMTP heartbeats on a publishing (bound) socket: PING every ``heartbeat_s``, and a
    peer that answers nothing for three intervals is disconnected.

    Only the sending side uses heartbeats: a subscriber that stops reading stops seeing
    PINGs, and a heartbeat timeout on a SUB whose input is stalled trips libzmq's
    ``_input_stopped`` assertion (libzmq issue 3937), so no HEARTBEAT_TTL is sent
    either. A stalled subscriber is therefore cut off here after 3 x ``heartbeat_s``
    and reconnects by itself when it reads again.
    """
    if heartbeat_s > 0:
        ivl = int(heartbeat_s * 1000)
        sock.setsockopt(zmq.HEARTBEAT_IVL, ivl)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, ivl * 3)


def _clean(value: Any, depth: int = 0) -> Any:
    """Plain JSON data from a status dict: numpy values, dataclasses, paths; NaN/inf -> null."""
    import dataclasses
    import math

    if depth > 32:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean(v, depth + 1) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)
