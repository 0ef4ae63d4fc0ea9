"""Connection events of a bound ZeroMQ socket (publisher, relay), counted and logged sparingly.

A refused client (wrong CURVE key, plaintext against a CURVE server) is dropped by libzmq
and reconnects by itself every ``RECONNECT_IVL`` ms, for as long as it runs: one warning
per attempt would flood the journal. :class:`LogThrottle` lets the first event of a kind
through and then at most one line per interval, which says how many were held back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Dict, Hashable, Optional

import zmq

EVENTS = (
    zmq.EVENT_ACCEPTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)

WARN_INTERVAL_S = 60.0


class LogThrottle:
    """Per-key gate: the first event passes, then at most one per ``interval_s`` seconds.

    ``allow(key)`` returns None to hold an event back, or the number of events held back
    since the last one that passed (0 for the first).
    """

    def __init__(
        self, interval_s: float = WARN_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: Dict[Hashable, float] = {}
        self._held: Dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> Optional[int]:
        """None to hold this event back, else how many were held back before it."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            if len(self._last) > 4096:  # many distinct peers: forget the old ones
                self._last.clear()
                self._held.clear()
            self._last[key] = now
            return self._held.pop(key, 0)


def event_name(kind: int) -> str:
    """Readable cause of a failed handshake."""
    if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        return "authentication refused"
    if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return "security mechanism mismatch"
    return "handshake error"


class ConnectionMonitor:
    """Reads a socket's monitor events without blocking; counts and logs them.

    ``curve`` says whether the socket uses CURVE keys. ``auth_logged``: a refused key
    has already been logged (with the key) by this process's ZAP handler, so the
    monitor's copy goes to debug (true for a CURVE server, false for a client).
    Counters: ``connections`` (TCP accepted), ``handshakes`` (succeeded),
    ``disconnects`` and ``handshake_failures``.
    """

    def __init__(
        self,
        sock: zmq.Socket,
        log: logging.Logger,
        curve: bool,
        what: str,
        auth_logged: Optional[bool] = None,
    ) -> None:
        self._monitor: Optional[zmq.Socket] = sock.get_monitor_socket(EVENTS)
        self._sock = sock
        self._log = log
        self._curve = curve
        self._auth_logged = curve if auth_logged is None else auth_logged
        self._what = what
        self._throttle = LogThrottle()
        self.counters: Dict[str, int] = {
            "connections": 0,
            "handshakes": 0,
            "disconnects": 0,
            "handshake_failures": 0,
        }

    def drain(self) -> None:
        """Handle every queued event (call from the thread that owns the socket)."""
        from zmq.utils.monitor import recv_monitor_message

        if self._monitor is None:
            return
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle(int(event.get("event", 0)), event.get("endpoint"))

    def _handle(self, kind: int, endpoint: object) -> None:
        where = endpoint.decode("utf-8", "replace") if isinstance(endpoint, bytes) else endpoint
        if kind == zmq.EVENT_ACCEPTED:
            self.counters["connections"] += 1
            self._log.debug("%s connected on %s", self._what, where)
        elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.counters["handshakes"] += 1
        elif kind == zmq.EVENT_DISCONNECTED:
            self.counters["disconnects"] += 1
        elif kind & HANDSHAKE_FAILED:
            self.counters["handshake_failures"] += 1
            if self._auth_logged and kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                self._log.debug("%s handshake refused on %s", self._what, where)
                return
            held = self._throttle.allow("handshake")
            if held is None:
                return
            self._log.warning(
                "%s handshake failed on %s (%s): %s%s",
                self._what,
                where,
                event_name(kind),
                "wrong or missing CURVE keys" if self._curve else "protocol mismatch",
                f" ({held} more since the last warning)" if held else "",
            )

    def close(self) -> None:
        """Stop monitoring and close the monitor socket."""
        if self._monitor is None:
            return
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self._monitor.close(linger=0)
        self._monitor = None
