"""``MaskSubscriber``: a client of segcam's mask stream that never hangs and never raises
on bad input.

Iterating yields :class:`~segcam.publish.protocol.Message` objects (``topic``, ``header``,
``data``: a uint8 mask, a BGR frame or a telemetry dict). Waiting happens in short poll
ticks, so ``stop()`` (from any thread), ``timeout`` and Ctrl-C always take effect.
Malformed messages are counted in ``stats`` and skipped. ZeroMQ reconnects by itself
after a publisher restart; TCP keepalive detects a vanished publisher host, and after
``stale_after_s`` without any message the socket is recreated as a last resort.

The socket never uses ZMTP heartbeats: with a receive high-water mark, a heartbeat
timeout while the reader is stalled aborts the process inside libzmq (``Assertion
failed: _input_stopped``, libzmq issue 3937). The publisher's heartbeats cut off a
stalled subscriber instead; it reconnects when it reads again.

Messages older than ``max_age_s`` (by their ``publish_ts_ns``) are discarded before
their payload is decoded: after a stall the backlog in kernel buffers can be many
seconds old. In ``latest_only`` mode every wake-up drains the queue and keeps only the
newest message per topic (ZMQ_CONFLATE cannot be used with multipart messages).

Loss accounting (``stats``): ``gaps`` counts ``seq`` numbers never received, split into
``lost_publisher`` (the header's ``dropped`` grew: dropped at the publisher) and
``lost_transport`` (lost on the way: a full per-subscriber queue at the publisher or a
relay, this socket's receive queue, a reconnection). What was published before the
first message of a session reached this subscriber is not loss: ``missed_before_join``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import zmq

from segcam.errors import PublishError
from segcam.publish import protocol
from segcam.publish.limits import DEFAULT_LIMITS, MAX_WIRE_INT, SubscriberLimits
from segcam.publish.monitor import ConnectionMonitor, LogThrottle

log = logging.getLogger("segcam.subscribe")

_TICK_S = 0.1
_MAX_DRAIN = 10000
_MAX_TRACKED = 1024  # (stream, topic) sequences remembered; the oldest is forgotten first
_MAX_NAME = 256  # characters of a stream or session name kept for tracking


class MaskSubscriber:
    """Subscriber of ``mask`` / ``frame`` / ``telemetry`` topics from one or more publishers.

    ``url``: endpoint(s) to connect to, e.g. ``tcp://127.0.0.1:5555``. ``timeout``: seconds
    without any message after which iteration ends (``timed_out`` is then True); None =
    iterate until ``stop()``. CURVE: ``server_key`` is the publisher's public ``.key``
    file, ``client_key`` this client's ``.key_secret`` file. ``max_age_s``: discard
    messages published longer ago than this (0 = keep all; needs the two hosts' clocks
    in sync). ``keepalive_s``: idle seconds before TCP keepalive probes (0 = off).
    ``limits``: the bounds every message is checked against
    (:class:`~segcam.publish.limits.SubscriberLimits`). Counters saturate at 2**63 - 1
    instead of growing without bound.
    """

    def __init__(
        self,
        url: Union[str, Sequence[str]],
        topics: Sequence[str] = (protocol.TOPIC_MASK,),
        *,
        latest_only: bool = False,
        timeout: Optional[float] = None,
        server_key: Optional[Union[str, Path]] = None,
        client_key: Optional[Union[str, Path]] = None,
        reconnect_ivl_ms: int = 100,
        reconnect_ivl_max_ms: int = 2000,
        keepalive_s: float = 10.0,
        stale_after_s: float = 10.0,
        max_age_s: float = 2.0,
        rcvhwm: int = 16,
        limits: SubscriberLimits = DEFAULT_LIMITS,
    ) -> None:
        self.urls: List[str] = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise PublishError("no publisher address given", "pass e.g. tcp://127.0.0.1:5555")
        unknown = [t for t in topics if t not in protocol.TOPICS]
        if unknown:
            raise PublishError(
                f"unknown topic {unknown[0]!r}", f"choose from {', '.join(protocol.TOPICS)}"
            )
        if (server_key is None) != (client_key is None):
            raise PublishError(
                "CURVE needs both the server's public key and this client's secret key",
                "pass server_key=<server.key> and client_key=<client.key_secret>",
            )
        self.topics = tuple(topics) or (protocol.TOPIC_MASK,)
        self.latest_only = latest_only
        self.timeout = timeout
        self.server_key = str(server_key) if server_key is not None else None
        self.client_key = str(client_key) if client_key is not None else None
        self.reconnect_ivl_ms = reconnect_ivl_ms
        self.reconnect_ivl_max_ms = reconnect_ivl_max_ms
        self.keepalive_s = keepalive_s
        self.stale_after_s = stale_after_s
        self.max_age_s = max_age_s
        self.rcvhwm = rcvhwm
        self.limits = limits
        self.timed_out = False
        self._stop = threading.Event()
        self._ctx: Optional[zmq.Context] = None
        self._sock: Optional[zmq.Socket] = None
        self._monitor: Optional[ConnectionMonitor] = None
        self._monitor_base = 0  # handshake failures of sockets already closed
        self._pending: Deque[protocol.Message] = deque()
        # (stream, topic) -> (session, seq, dropped) of the last message seen
        self._last_seq: Dict[Tuple[str, str], Tuple[str, int, Optional[int]]] = {}
        self._sessions: Dict[str, str] = {}
        self._last_msg_mono = time.monotonic()
        self.last_message_mono = self._last_msg_mono  # monotonic time of the last message
        self._lock = threading.Lock()
        self._stats: Dict[str, Any] = {
            "received": {t: 0 for t in self.topics},
            "bytes": 0,
            "errors": {
                "malformed": 0,
                "unsupported_version": 0,
                "unsupported_encoding": 0,
                "unknown_topic": 0,
            },
            "gaps": 0,
            "lost_publisher": 0,
            "lost_transport": 0,
            "missed_before_join": 0,
            "restarts": 0,
            "skipped_stale": 0,
            "discarded_old": 0,
            "oldest_discarded_s": 0.0,
            "socket_resets": 0,
            "handshake_failures": 0,
        }
        self._old_throttle = LogThrottle(10.0)
        self._connect()

    # ------------------------------------------------------------------ socket

    def _connect(self) -> None:
        if self._ctx is None:
            self._ctx = zmq.Context()
        sock = self._ctx.socket(zmq.SUB)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, int(self.rcvhwm))
            sock.setsockopt(zmq.MAXMSGSIZE, int(self.limits.max_message_bytes))
            sock.setsockopt(zmq.RECONNECT_IVL, int(self.reconnect_ivl_ms))
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, int(self.reconnect_ivl_max_ms))
            if self.keepalive_s > 0:
                # The kernel answers keepalive probes even while this reader is stalled,
                # so only a vanished peer host ends the connection.
                idle = max(1, int(self.keepalive_s))
                sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
                sock.setsockopt(zmq.TCP_KEEPALIVE_IDLE, idle)
                sock.setsockopt(zmq.TCP_KEEPALIVE_INTVL, max(1, idle // 5))
                sock.setsockopt(zmq.TCP_KEEPALIVE_CNT, 5)
            if self.server_key and self.client_key:
                from segcam.publish.curve import apply_client_keys

                apply_client_keys(sock, self.server_key, self.client_key)
            for topic in self.topics:
                sock.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
            monitor = ConnectionMonitor(
                sock, log, bool(self.server_key), "publisher", auth_logged=False
            )
            for url in self.urls:
                try:
                    sock.connect(url)
                except zmq.ZMQError as exc:
                    raise PublishError(
                        f"cannot connect to {url}: {exc}",
                        "use an address like tcp://HOST:5555 or ipc:///path",
                    ) from None
        except BaseException:
            sock.close(linger=0)
            raise
        self._sock = sock
        self._monitor = monitor
        self._last_msg_mono = time.monotonic()

    def _close_socket(self) -> None:
        if self._monitor is not None:
            self._monitor_base += self._monitor.counters["handshake_failures"]
            self._monitor.close()
            self._monitor = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def _reset_socket(self) -> None:
        self._close_socket()
        self._connect()
        self._bump("socket_resets")
        log.info("no message for %.0f s: reconnecting to %s", self.stale_after_s, self.urls)

    def stop(self) -> None:
        """Make a running iteration (or ``recv``) return within a poll tick; thread-safe."""
        self._stop.set()

    def close(self) -> None:
        """Close the socket and context (call from the thread that iterates, or after it)."""
        self._stop.set()
        self._close_socket()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    def __enter__(self) -> MaskSubscriber:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ receiving

    @property
    def stats(self) -> Dict[str, Any]:
        """Counters: received per topic, bytes, errors by kind, losses, restarts, resets."""
        with self._lock:
            out = json.loads(json.dumps(self._stats))
        monitor = self._monitor
        out["handshake_failures"] = min(
            MAX_WIRE_INT,
            self._monitor_base + (monitor.counters["handshake_failures"] if monitor else 0),
        )
        out["decode_errors"] = min(MAX_WIRE_INT, sum(out["errors"].values()))
        return out

    def _bump(self, key: str, n: int = 1, sub: Optional[str] = None) -> int:
        """Add ``n`` to a counter, saturating at 2**63 - 1; returns the new value."""
        with self._lock:
            table = self._stats if sub is None else self._stats[sub]
            value = min(MAX_WIRE_INT, table.get(key, 0) + n)
            table[key] = value
            return value

    def recv(self, timeout: Optional[float] = None) -> Optional[protocol.Message]:
        """Next decoded message, or None after ``timeout`` seconds (None = until ``stop()``)."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while not self._stop.is_set():
            if self._pending:
                return self._pending.popleft()
            if self._sock is None:
                return None
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return None
            if self._monitor is not None:
                self._monitor.drain()
            tick = _TICK_S if deadline is None else min(_TICK_S, deadline - now)
            try:
                ready = self._sock.poll(max(0, int(tick * 1000)), zmq.POLLIN)
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    return None
                raise
            if ready:
                self._read_available()
            elif (
                self.stale_after_s > 0
                and time.monotonic() - self._last_msg_mono > self.stale_after_s
            ):
                # Checked only when nothing is queued: a reader back from a long stall
                # first reads (or discards) its backlog instead of throwing it away.
                self._reset_socket()
        return None

    def __iter__(self) -> Iterator[protocol.Message]:
        """Messages until ``stop()``, or until ``timeout`` seconds pass without one."""
        while not self._stop.is_set():
            msg = self.recv(self.timeout)
            if msg is None:
                if self.timeout is not None and not self._stop.is_set():
                    self.timed_out = True
                return
            yield msg

    def masks(self) -> Iterator[Tuple[Dict[str, Any], np.ndarray]]:
        """(header, mask) pairs of the ``mask`` topic (other topics are passed over)."""
        for msg in self:
            if msg.topic == protocol.TOPIC_MASK:
                yield msg.header, msg.data

    def _read_available(self) -> None:
        assert self._sock is not None
        batch: List[List[bytes]] = []
        for _ in range(_MAX_DRAIN if self.latest_only else 1):
            try:
                batch.append(self._sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        if not batch:
            return
        self._last_msg_mono = self.last_message_mono = time.monotonic()
        recv_ns = time.time_ns()
        if self.max_age_s > 0:
            batch = [f for f in batch if not self._too_old(f, recv_ns)]
        if self.latest_only:
            newest: Dict[bytes, int] = {}
            for i, frames in enumerate(batch):
                newest[frames[0] if frames else b""] = i
            keep = set(newest.values())
            for i, frames in enumerate(batch):
                if i not in keep:
                    self._note_skipped(frames)
            batch = [f for i, f in enumerate(batch) if i in keep]
        for frames in batch:
            msg = self._decode(frames)
            if msg is not None:
                msg.recv_ts_ns = recv_ns
                self._pending.append(msg)

    def _decode(self, frames: List[bytes]) -> Optional[protocol.Message]:
        size = sum(len(f) for f in frames)
        try:
            msg = protocol.decode(frames, self.topics, self.limits)
        except protocol.ProtocolError as exc:
            kind = getattr(exc, "kind", "malformed")
            self._bump("bytes", size)
            n = self._bump(kind, 1, "errors")
            if n <= 3 or n % 1000 == 0:
                log.warning("skipped a message (%s #%d): %s", kind, n, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - hostile input must not end the stream
            # A decoder library failing on bytes our checks let through: counted and
            # logged as malformed, like any other bad message.
            self._bump("bytes", size)
            self._bump("malformed", 1, "errors")
            log.warning("skipped a message that broke a decoder: %s: %s", type(exc).__name__, exc)
            return None
        self._track_seq(msg.topic, msg.header)
        self._bump("bytes", size)
        self._bump(msg.topic, 1, "received")
        return msg

    def _peek(self, frames: List[bytes]) -> Optional[Tuple[str, Dict[str, Any]]]:
        """(topic, header) of a message without decoding its payload; None if unreadable."""
        if len(frames) < 2:
            return None
        try:
            header = protocol.parse_header(frames[1], self.limits)
            topic = bytes(frames[0]).decode("ascii")
        except (protocol.ProtocolError, UnicodeDecodeError):
            return None
        return topic, header

    def _too_old(self, frames: List[bytes], now_ns: int) -> bool:
        """True (and counted, not a gap) if the message was published over max_age_s ago."""
        peeked = self._peek(frames)
        if peeked is None:
            return False  # let the decoder count it as malformed
        topic, header = peeked
        ts = header.get("publish_ts_ns")
        if not isinstance(ts, int) or isinstance(ts, bool):
            return False
        age_s = (now_ns - ts) / 1e9
        if age_s <= self.max_age_s:
            return False
        self._track_seq(topic, header)
        n = self._bump("discarded_old")
        with self._lock:
            oldest = max(self._stats["oldest_discarded_s"], min(round(age_s, 3), 1e12))
            self._stats["oldest_discarded_s"] = oldest
        if self._old_throttle.allow("old") is not None:
            log.warning(
                "discarding messages older than %.1f s (%d so far, this one %.1f s old): "
                "this reader fell behind, or this host's clock and the publisher's differ "
                "(sync them with NTP/PTP, or raise max_age_s)",
                self.max_age_s,
                n,
                age_s,
            )
        return True

    def _note_skipped(self, frames: List[bytes]) -> None:
        """A message passed over in latest-only mode: not a gap, not an error."""
        self._bump("skipped_stale")
        peeked = self._peek(frames)
        if peeked is not None:
            self._track_seq(*peeked)

    def _track_seq(self, topic: str, header: Dict[str, Any]) -> None:
        stream, session, seq = header.get("stream"), header.get("session"), header.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_WIRE_INT:
            return
        dropped = header.get("dropped")  # protocol 1.1; absent from 1.0 publishers
        if not isinstance(dropped, int) or isinstance(dropped, bool):
            dropped = None
        elif not 0 <= dropped <= MAX_WIRE_INT:
            dropped = None
        stream, session = str(stream)[:_MAX_NAME], str(session)[:_MAX_NAME]
        known = self._sessions.pop(stream, None)
        self._sessions[stream] = session
        if known is not None and known != session:
            self._bump("restarts")  # publisher restarted: seq starts again
        key = (stream, topic)
        last = self._last_seq.pop(key, None)
        self._last_seq[key] = (session, seq, dropped)
        # Senders come and go (and a hostile one can invent names): remember a bounded
        # number of sequences, forgetting the least recently seen.
        while len(self._last_seq) > _MAX_TRACKED:
            self._last_seq.pop(next(iter(self._last_seq)))
        while len(self._sessions) > _MAX_TRACKED:
            self._sessions.pop(next(iter(self._sessions)))
        if last is None or last[0] != session:
            # First message of this session here: what came before it was sent before
            # this subscriber joined (slow joiner), not lost on its way.
            self._bump("missed_before_join", seq)
            return
        if seq <= last[1] + 1:
            return
        gap = seq - last[1] - 1
        at_publisher = 0
        if dropped is not None and last[2] is not None:
            at_publisher = min(gap, max(0, dropped - last[2]))
        self._bump("gaps", gap)
        self._bump("lost_publisher", at_publisher)
        self._bump("lost_transport", gap - at_publisher)
