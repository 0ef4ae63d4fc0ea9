"""The mask-stream relay: ZeroMQ's own proxy between devices and many subscribers.

An XSUB socket connects to one or many devices' publishers, an XPUB socket binds for
subscribers, and ``zmq.proxy_steerable`` forwards between them in libzmq's C loop:
messages unchanged downstream, subscriptions upstream (XPUB passes a topic upstream once,
however many subscribers want it), so each device's uplink carries one copy of each
stream whatever the number of viewers.

Around the proxy, in the calling thread: a capture tap (a PUB the proxy copies every
message to) counts messages and ``seq`` gaps per stream and topic as they arrive from the
devices; the control socket asks the proxy for its byte and message totals and stops it;
a monitor counts subscribers' connections and refused handshakes; and every
``status_interval_s`` the relay publishes its counters on topic ``relay`` through the
proxy itself (an inproc PUB the XSUB also connects to). CURVE on both sides: the relay's
own key pair as a client towards devices, and as a server with its own allow-list
towards subscribers.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import socket as pysocket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import zmq

from segcam.errors import PublishError
from segcam.publish import protocol
from segcam.publish.binding import bind_all
from segcam.publish.monitor import ConnectionMonitor
from segcam.publish.publisher import apply_publisher_heartbeats, is_loopback_endpoint

log = logging.getLogger("segcam.relay")

_TAP_HWM = 100_000  # the tap may fall this far behind before it loses count
_STAT_NAMES = (
    "frontend_msgs_in",
    "frontend_bytes_in",
    "frontend_msgs_out",
    "frontend_bytes_out",
    "backend_msgs_in",
    "backend_bytes_in",
    "backend_msgs_out",
    "backend_bytes_out",
)


@dataclass
class Upstream:
    """One device to relay: its publisher address and, for CURVE, its public key file."""

    url: str
    server_key: str = ""


@dataclass
class RelayConfig:
    """What ``segcam relay`` runs with (see ``docs/relay.md``)."""

    upstream: List[Upstream]
    bind: List[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5556"])
    key: str = ""  # the relay's own .key_secret (CURVE towards devices and subscribers)
    authorized_keys_dir: str = ""  # subscribers allowed in; "" = no CURVE downstream
    sndhwm: int = 16  # per-subscriber queue: a slow subscriber loses its own messages
    rcvhwm: int = 1000  # per-device queue in the relay
    heartbeat_s: float = 2.0  # ZMTP heartbeats towards subscribers (see publisher)
    keepalive_s: float = 10.0  # TCP keepalive towards devices
    status_interval_s: float = 1.0  # 0 = no ``relay`` status messages
    name: str = ""  # ``stream`` of the relay's status messages; "" = relay@hostname


def check_relay_config(cfg: RelayConfig) -> None:
    """Refuse what cannot run, with the fix (PublishError)."""
    if not cfg.upstream:
        raise PublishError("no device to relay", "pass --from tcp://DEVICE:5555 (repeatable)")
    if not cfg.bind:
        raise PublishError("no address to serve subscribers on", "pass --bind tcp://*:5556")
    if cfg.sndhwm < 1 or cfg.rcvhwm < 1:
        raise PublishError("high-water marks must be 1 or more", "e.g. --sndhwm 16")
    if cfg.heartbeat_s < 0 or cfg.keepalive_s < 0 or cfg.status_interval_s < 0:
        raise PublishError("intervals must be 0 (off) or positive", "e.g. --heartbeat 2")
    keyed = [u.url for u in cfg.upstream if u.server_key]
    if (keyed or cfg.authorized_keys_dir) and not cfg.key:
        raise PublishError(
            "CURVE needs the relay's own key pair",
            "create one with `segcam keys generate --name relay` and pass --key relay.key_secret",
        )
    exposed = [ep for ep in cfg.bind if not is_loopback_endpoint(ep)]
    if exposed and not cfg.authorized_keys_dir:
        log.warning(
            "relay serves %s without CURVE: anyone on the network can read the streams "
            "(pass --authorized-keys DIR and --key, or bind to tcp://127.0.0.1)",
            ", ".join(exposed),
        )


class _StreamCounts:
    """Messages, bytes and seq gaps of one (stream, topic) as they reach the relay."""

    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.gaps = 0
        self.session = ""
        self.seq = -1

    def add(self, header: Dict[str, Any], nbytes: int) -> None:
        self.messages += 1
        self.bytes += nbytes
        seq, session = header.get("seq"), str(header.get("session"))
        if not isinstance(seq, int) or isinstance(seq, bool):
            return
        if session == self.session and seq > self.seq + 1:
            self.gaps += seq - self.seq - 1
        self.session, self.seq = session, seq


class Relay:
    """XSUB -> XPUB proxy with counters; ``run`` blocks until ``stop`` (thread-safe)."""

    def __init__(self, cfg: RelayConfig) -> None:
        check_relay_config(cfg)
        self.cfg = cfg
        self.name = cfg.name or f"relay@{pysocket.gethostname()}"
        self.session = os.urandom(8).hex()
        self.session_start_ns = time.time_ns()
        self.endpoints: List[str] = []
        self.public_key: Optional[bytes] = None
        self._stop = threading.Event()
        self._started_mono = time.monotonic()
        self._streams: Dict[Tuple[str, str], _StreamCounts] = {}
        self._proxy_stats: Dict[str, int] = {k: 0 for k in _STAT_NAMES}
        self._lock = threading.Lock()
        self._status_seq = 0
        self._auth_denied = 0
        self._monitor_counts: Dict[str, int] = {}
        self._guard: Any = None
        self._monitor: Optional[ConnectionMonitor] = None
        self._ctx = zmq.Context()
        self._sockets: List[zmq.Socket] = []
        try:
            self._open()
        except BaseException:
            self._close()
            raise

    # ------------------------------------------------------------------ sockets

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self._sockets.append(sock)
        return sock

    def _open(self) -> None:
        from segcam.publish.curve import (
            CurveGuard,
            apply_server_keys,
            load_keypair,
            load_public_key,
        )

        cfg = self.cfg
        uid = self.session
        # Towards subscribers: XPUB, CURVE server with its own allow-list.
        if cfg.authorized_keys_dir:
            self._guard = CurveGuard(self._ctx, cfg.authorized_keys_dir)
            self._guard.start()
        backend = self._socket(zmq.XPUB)
        backend.setsockopt(zmq.SNDHWM, int(cfg.sndhwm))
        apply_publisher_heartbeats(backend, cfg.heartbeat_s)
        if cfg.authorized_keys_dir:
            self.public_key = apply_server_keys(backend, cfg.key)
        self._monitor = ConnectionMonitor(backend, log, bool(cfg.authorized_keys_dir), "subscriber")
        self.endpoints += bind_all(
            backend,
            cfg.bind,
            "the relay",
            "is another relay or segcam using that port? choose another --bind",
        )
        # Towards devices: XSUB, a CURVE client with the relay's key where a device has one.
        frontend = self._socket(zmq.XSUB)
        frontend.setsockopt(zmq.RCVHWM, int(cfg.rcvhwm))
        frontend.setsockopt(zmq.RECONNECT_IVL, 100)
        frontend.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        if cfg.keepalive_s > 0:
            idle = max(1, int(cfg.keepalive_s))
            frontend.setsockopt(zmq.TCP_KEEPALIVE, 1)
            frontend.setsockopt(zmq.TCP_KEEPALIVE_IDLE, idle)
            frontend.setsockopt(zmq.TCP_KEEPALIVE_INTVL, max(1, idle // 5))
            frontend.setsockopt(zmq.TCP_KEEPALIVE_CNT, 5)
        keypair = load_keypair(cfg.key) if cfg.key else None
        status_url = f"inproc://segcam-relay-status-{uid}"
        self._status_pub = self._socket(zmq.PUB)
        self._status_pub.bind(status_url)
        frontend.connect(status_url)
        # Socket options apply to the connections made after they are set, so each device
        # gets its own server key; plaintext devices first (CURVE, once set, stays on).
        for up in sorted(cfg.upstream, key=lambda u: bool(u.server_key)):
            if up.server_key:
                assert keypair is not None
                frontend.curve_serverkey = load_public_key(up.server_key)
                frontend.curve_publickey, frontend.curve_secretkey = keypair
            try:
                frontend.connect(up.url)
            except zmq.ZMQError as exc:
                raise PublishError(
                    f"cannot connect to device {up.url}: {exc}",
                    "use an address like tcp://DEVICE:5555",
                ) from None
        self._upstream_monitor = ConnectionMonitor(
            frontend, log, bool(keypair), "device", auth_logged=False
        )
        # The tap: a copy of every message through the proxy, for per-stream counters.
        tap_url = f"inproc://segcam-relay-tap-{uid}"
        capture = self._socket(zmq.PUB)
        capture.setsockopt(zmq.SNDHWM, _TAP_HWM)
        capture.bind(tap_url)
        self._tap = self._socket(zmq.SUB)
        self._tap.setsockopt(zmq.RCVHWM, _TAP_HWM)
        self._tap.setsockopt(zmq.SUBSCRIBE, b"")
        self._tap.connect(tap_url)
        control_url = f"inproc://segcam-relay-control-{uid}"
        control = self._socket(zmq.PAIR)
        control.bind(control_url)
        self._control = self._socket(zmq.PAIR)
        self._control.connect(control_url)
        self._proxy_sockets = (frontend, backend, capture, control)

    def _close(self) -> None:
        for monitor in (self._monitor, getattr(self, "_upstream_monitor", None)):
            if monitor is not None:
                monitor.close()
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets = []
        if self._guard is not None:
            self._auth_denied = self._guard.denied
            self._guard.stop()
            self._guard = None
        self._ctx.term()

    # ------------------------------------------------------------------ running

    def stop(self) -> None:
        """Make ``run`` return within a poll tick (any thread, signal handlers too)."""
        self._stop.set()

    def run(self, seconds: Optional[float] = None) -> Dict[str, Any]:
        """Relay until ``stop()`` (or ``seconds``); returns the final counters."""
        error: List[BaseException] = []

        def proxy() -> None:
            try:
                zmq.proxy_steerable(*self._proxy_sockets)
            except zmq.ZMQError as exc:  # reported by run(), never swallowed
                error.append(exc)

        thread = threading.Thread(target=proxy, name="segcam-relay-proxy", daemon=True)
        thread.start()
        log.info(
            "relaying %s to subscribers on %s%s",
            ", ".join(u.url for u in self.cfg.upstream),
            ", ".join(self.endpoints),
            " with CURVE" if self.cfg.authorized_keys_dir else "",
        )
        deadline = None if seconds is None else time.monotonic() + seconds
        interval = self.cfg.status_interval_s
        next_status = time.monotonic() + (interval if interval > 0 else 3600.0)
        try:
            while not self._stop.is_set() and thread.is_alive():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if self._tap.poll(100):
                    self._read_tap()
                for monitor in (self._monitor, self._upstream_monitor):
                    if monitor is not None:
                        monitor.drain()
                if interval > 0 and time.monotonic() >= next_status:
                    next_status = max(next_status + interval, time.monotonic())
                    self._refresh_proxy_stats()
                    self._publish_status()
        finally:
            if thread.is_alive():
                self._refresh_proxy_stats()
                self._control.send(b"TERMINATE")
                thread.join(2.0)
            self._read_tap()
            final = self.stats()
            self._close()
            final["auth_denied"] = self._auth_denied
        if error:
            raise PublishError(f"relay proxy failed: {error[0]}", "see the log above")
        return final

    def _read_tap(self) -> None:
        for _ in range(_TAP_HWM):
            try:
                frames = self._tap.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(frames) < 3:
                continue  # a subscription going upstream, or not a segcam message
            topic = bytes(frames[0].buffer).decode("ascii", "replace")
            try:
                header = json.loads(bytes(frames[1].buffer))
            except (UnicodeDecodeError, ValueError, RecursionError):
                header = {}
            if not isinstance(header, dict):
                header = {}
            stream = str(header.get("stream", "?"))
            if topic == protocol.TOPIC_RELAY and stream == self.name:
                continue  # our own status
            nbytes = sum(len(f.buffer) for f in frames)
            with self._lock:
                counts = self._streams.setdefault((stream, topic), _StreamCounts())
                counts.add(header, nbytes)

    def _refresh_proxy_stats(self) -> None:
        self._control.send(b"STATISTICS")
        if not self._control.poll(1000):
            return
        parts = self._control.recv_multipart()
        if len(parts) == len(_STAT_NAMES):
            values = [struct.unpack("=Q", p)[0] for p in parts]
            with self._lock:
                self._proxy_stats = dict(zip(_STAT_NAMES, values))

    def stats(self) -> Dict[str, Any]:
        """The relay's counters (also the payload of its ``relay`` status messages)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        with self._lock:
            proxy_stats = dict(self._proxy_stats)
            streams: Dict[str, Dict[str, Dict[str, int]]] = {}
            for (stream, topic), c in sorted(self._streams.items()):
                streams.setdefault(stream, {})[topic] = {
                    "messages": c.messages,
                    "bytes": c.bytes,
                    "gaps": c.gaps,
                }
        monitor = self._monitor
        if monitor is not None:
            self._monitor_counts = dict(monitor.counters)
        mc = self._monitor_counts
        guard = self._guard
        return {
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "upstream": [u.url for u in self.cfg.upstream],
            "endpoints": list(self.endpoints),
            "streams": streams,
            # The proxy counts message parts: three per segcam message.
            "parts_in": proxy_stats["frontend_msgs_in"],
            "bytes_in": proxy_stats["frontend_bytes_in"],
            "parts_out": proxy_stats["backend_msgs_out"],
            "bytes_out": proxy_stats["backend_bytes_out"],
            "subscriptions_forwarded": proxy_stats["backend_msgs_in"],
            "subscribers": max(0, mc.get("connections", 0) - mc.get("disconnects", 0)),
            "connections": mc.get("connections", 0),
            "handshake_failures": mc.get("handshake_failures", 0),
            "auth_denied": guard.denied if guard is not None else self._auth_denied,
            "device_handshake_failures": self._upstream_monitor.counters["handshake_failures"],
        }

    def _publish_status(self) -> None:
        status = self.stats()
        header = protocol.base_header(
            self.name,
            self.session,
            self._status_seq,
            "json",
            session_start_ns=self.session_start_ns,
        )
        self._status_seq += 1
        header["publish_ts_ns"] = time.time_ns()
        payload = json.dumps(status).encode("utf-8")
        # PUB never blocks: with nobody subscribed to ``relay`` the message is dropped.
        self._status_pub.send_multipart(protocol.pack(protocol.TOPIC_RELAY, header, payload))
        log.info(
            "relay: %d subscribers, in %.1f MB, out %.1f MB, cpu %.1f s, streams %s",
            status["subscribers"],
            status["bytes_in"] / 1e6,
            status["bytes_out"] / 1e6,
            status["cpu_s"],
            ", ".join(status["streams"]) or "none yet",
        )
