"""systemd integration: the sd_notify protocol and the notifier extension of the runner.

sd_notify needs no library: it is one datagram of ``KEY=VALUE`` lines sent to the
``AF_UNIX`` socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket). Without ``$NOTIFY_SOCKET`` everything here is a no-op, so ``segcam run`` behaves
the same in a terminal and under systemd.

:class:`SystemdNotifier` is an :class:`segcam.pipeline.types.Extension`:

* ``READY=1`` once the first frame has reached every sink (``runner.first_frame_event``);
* ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC``, and only while ``runner.frames_completed``
  grows: a hung camera or a hung inference stops the pings and systemd restarts us;
* ``STATUS=`` with fps, backend, temperature, governor state and threshold;
* ``STOPPING=1`` as soon as the runner is asked to stop;
* ``RELOADING=1`` + ``MONOTONIC_USEC`` and then ``READY=1`` around a SIGHUP reload
  (:meth:`SystemdNotifier.reloading` / :meth:`SystemdNotifier.reloaded`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Dict, Mapping, Optional

log = logging.getLogger("segcam.service")

SEND_TIMEOUT_S = 0.5  # longest a notify datagram may wait for room in systemd's queue


# --------------------------------------------------------------------------- protocol


def notify_address(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The socket address from ``$NOTIFY_SOCKET`` in the form ``socket.sendto`` takes.

    ``@name`` becomes the abstract address ``"\\0name"``. Returns None when the variable
    is unset or empty, or names a transport other than AF_UNIX (``vsock:``), which segcam
    does not speak (a warning says so).
    """
    env = os.environ if env is None else env
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is not an AF_UNIX socket path; systemd notify disabled", value)
    return None


def watchdog_interval_s(env: Optional[Mapping[str, str]] = None) -> Optional[float]:
    """The watchdog timeout in seconds that systemd asked for, or None.

    Honours ``$WATCHDOG_PID``: when it is set and names another process (a parent that
    forked us), the watchdog is not ours to pet.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; watchdog ignored", usec)
        return None
    if value <= 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not an integer; watchdog ignored", pid)
            return None
    return value / 1e6


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd's MONOTONIC_USEC= refers to."""
    return time.monotonic_ns() // 1000


class SdNotify:
    """Sender of sd_notify datagrams; a no-op when there is no ``$NOTIFY_SOCKET``.

    Thread-safe. A send that fails (systemd gone, socket removed) is logged once and
    reported through the return value; it never raises into the pipeline.
    """

    def __init__(self, env: Optional[Mapping[str, str]] = None) -> None:
        self.address = notify_address(env)
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured."""
        return self.address is not None

    def send(self, **fields: Any) -> bool:
        """Send one datagram with ``KEY=VALUE`` lines, e.g. ``send(READY=1, STATUS="ok")``.

        Returns True if it was sent, False when disabled or the send failed.
        """
        if self.address is None or not fields:
            return False
        payload = "\n".join(f"{k}={_one_line(v)}" for k, v in fields.items()).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(
                        socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    )
                    # A full queue (systemd busy) gets a moment to drain, but a manager
                    # that stopped reading must not hang us: STOPPING=1 is sent on the
                    # shutdown path. A send that times out fails like any other.
                    self._sock.settimeout(SEND_TIMEOUT_S)
                self._sock.sendto(payload, self.address)
            except OSError as exc:
                if not self._warned:
                    log.warning("sd_notify to %s failed: %s", self._printable(), exc)
                    self._warned = True
                return False
        return True

    def close(self) -> None:
        """Close the socket (a later send reopens it)."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _printable(self) -> str:
        addr = self.address or ""
        return "@" + addr[1:] if addr.startswith("\0") else addr


def _one_line(value: Any) -> str:
    # Each field is one line of the datagram: a newline inside STATUS would start a
    # bogus field.
    return str(value).replace("\n", " ")


# --------------------------------------------------------------------------- status line


def format_status(status: Mapping[str, Any], threshold: Optional[float] = None) -> str:
    """One-line STATUS= text from ``runner.status()``.

    Example: ``29.8 fps | onnxruntime:CPUExecutionProvider | 52.0 C normal | threshold 0.50``.
    Missing pieces are left out rather than guessed.
    """
    parts = []
    fps = status.get("fps")
    if isinstance(fps, (int, float)):
        parts.append(f"{fps:.1f} fps")
    backend = status.get("backend")
    if backend:
        parts.append(str(backend))
    thermal = _find_thermal(status)
    if thermal:
        temp = thermal.get("temperature_c", thermal.get("temp_c", thermal.get("temperature")))
        state = thermal.get("state")
        piece = []
        if isinstance(temp, (int, float)):
            piece.append(f"{temp:.1f} C")
        if state:
            piece.append(str(state))
        if piece:
            parts.append(" ".join(piece))
    if threshold is not None:
        parts.append(f"threshold {threshold:.2f}")
    degraded = status.get("degraded")
    if isinstance(degraded, Mapping):
        parts.extend(f"DEGRADED {where}: {why}" for where, why in degraded.items())
    streams = status.get("streams")
    if isinstance(streams, Mapping) and streams:
        states = [st.get("state", "") for st in streams.values() if isinstance(st, Mapping)]
        piece = f"{states.count('running')}/{len(states)} streams running"
        failed = [
            sid
            for sid, st in streams.items()
            if isinstance(st, Mapping) and st.get("state") == "failed"
        ]
        if failed:
            piece += f" (failed: {', '.join(failed)})"
        parts.append(piece)
    return " | ".join(parts) if parts else "running"


def _find_thermal(status: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    # The governor's status sits under its extension name; accept the likely names.
    for key in ("thermal", "governor", "thermal_governor"):
        value = status.get(key)
        if isinstance(value, Mapping):
            return value
    exts = status.get("extensions")
    if isinstance(exts, Mapping):
        return _find_thermal(exts)
    return None


# --------------------------------------------------------------------------- extension


class SystemdNotifier:
    """Runner extension that keeps systemd informed (see the module docstring).

    ``progress_watchdog=False`` (config ``service.watchdog: false``) pets the watchdog
    whenever the process is alive instead of only while frames complete.
    """

    name = "systemd"

    def __init__(
        self,
        notify: Optional[SdNotify] = None,
        watchdog_s: Optional[float] = None,
        status_interval_s: float = 5.0,
        progress_watchdog: bool = True,
        env: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.notify = notify if notify is not None else SdNotify(env)
        self.watchdog_s = watchdog_s if watchdog_s is not None else watchdog_interval_s(env)
        self.status_interval_s = status_interval_s if status_interval_s > 0 else 5.0
        self.progress_watchdog = progress_watchdog
        self._runner: Any = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._ready_sent = False
        self._stopping_sent = False
        self._pings = 0
        self._stalled = False
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        """True when running under systemd (a notify socket exists)."""
        return self.notify.enabled

    # -- Extension interface

    def start(self, runner: Any) -> None:
        """Begin watching ``runner``; starts a thread only under systemd."""
        self._runner = runner
        if not self.enabled:
            return
        if self.watchdog_s:
            log.info(
                "systemd watchdog %.1f s: pinging every %.1f s while frames complete",
                self.watchdog_s,
                self.watchdog_s / 2,
            )
        self.notify.send(STATUS="starting: waiting for the first frame")
        self._thread = threading.Thread(target=self._loop, name="sd-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Send STOPPING=1 (once) and end the thread."""
        self.stopping()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.notify.close()

    def status(self) -> Dict[str, Any]:
        """State of the systemd link for status lines and telemetry."""
        return {
            "notify": self.enabled,
            "ready": self._ready_sent,
            "watchdog_s": self.watchdog_s,
            "watchdog_pings": self._pings,
            "stalled": self._stalled,
        }

    def reconfigure(self, cfg: Any) -> None:
        """Apply a reloaded config (status cadence, progress-based watchdog)."""
        interval = float(getattr(cfg.pipeline, "status_interval_s", 5.0) or 5.0)
        self.status_interval_s = interval if interval > 0 else 5.0
        self.progress_watchdog = bool(getattr(cfg.service, "watchdog", True))

    # -- hooks for shutdown and reload

    def stopping(self) -> None:
        """Tell systemd that shutdown began (sent once)."""
        with self._lock:
            if self._stopping_sent:
                return
            self._stopping_sent = True
        self.notify.send(STOPPING=1, STATUS="stopping")

    def reloading(self) -> None:
        """Tell systemd that a reload began (``RELOADING=1`` with ``MONOTONIC_USEC``)."""
        self.notify.send(RELOADING=1, MONOTONIC_USEC=monotonic_usec(), STATUS="reloading config")

    def reloaded(self, message: str = "") -> None:
        """Tell systemd that the reload is over (``READY=1``), with a status line."""
        status = message or self._status_line()
        self.notify.send(READY=1, STATUS=status)

    # -- the thread

    def _loop(self) -> None:
        runner = self._runner
        first = getattr(runner, "first_frame_event", None)
        stop_event = getattr(runner, "stop_event", None)
        tick = 0.1
        now = time.monotonic()
        next_ping = now + (self.watchdog_s / 2 if self.watchdog_s else float("inf"))
        next_status = now + self.status_interval_s
        last_frames = self._frames()
        last_progress = now
        while not self._stop.wait(tick):
            if stop_event is not None and stop_event.is_set():
                self.stopping()
                return
            now = time.monotonic()
            if not self._ready_sent and first is not None and first.is_set():
                self._ready_sent = True
                self.notify.send(READY=1, STATUS=self._status_line())
                log.info("systemd: READY=1 (first frame through the pipeline)")
                next_status = now + self.status_interval_s
            frames = self._frames()
            if frames != last_frames:
                last_frames = frames
                last_progress = now
                if self._stalled:
                    log.info("pipeline progressing again; watchdog pings resume")
                    self._stalled = False
            if self._ready_sent and now >= next_ping:
                next_ping = now + self.watchdog_s / 2
                self._maybe_ping(now, last_progress)
            if self._ready_sent and now >= next_status:
                next_status = now + self.status_interval_s
                line = self._status_line()
                if line != self._last_status:
                    self._last_status = line
                    self.notify.send(STATUS=line)

    def _maybe_ping(self, now: float, last_progress: float) -> None:
        # Progress means at least one frame completed since the previous ping (half a
        # watchdog period ago): a stalled pipeline goes quiet and systemd restarts it.
        assert self.watchdog_s is not None
        progressing = now - last_progress <= self.watchdog_s / 2 + 0.2
        if progressing or not self.progress_watchdog:
            if self.notify.send(WATCHDOG=1):
                self._pings += 1
            return
        if not self._stalled:
            self._stalled = True
            log.warning(
                "no frame completed for %.1f s: not petting the systemd watchdog "
                "(systemd restarts segcam after %.0f s)",
                now - last_progress,
                self.watchdog_s,
            )
            self.notify.send(STATUS=f"stalled: no frame for {now - last_progress:.0f} s")

    def _frames(self) -> int:
        try:
            return int(getattr(self._runner, "frames_completed", 0))
        except (TypeError, ValueError):
            return 0

    def _status_line(self) -> str:
        runner = self._runner
        status: Mapping[str, Any] = {}
        threshold = None
        if runner is not None:
            try:
                status = runner.status()
            except Exception as exc:  # noqa: BLE001 - a status line must never kill the notifier
                log.debug("runner.status() failed: %s", exc)
            knobs = getattr(runner, "knobs", None)
            if knobs is not None:
                threshold = knobs.snapshot().threshold
        return format_status(status, threshold)


def build_notifier(cfg: Any, env: Optional[Mapping[str, str]] = None) -> Optional[SystemdNotifier]:
    """The notifier extension for ``segcam run``, or None outside systemd."""
    notify = SdNotify(env)
    if not notify.enabled:
        return None
    return SystemdNotifier(
        notify=notify,
        watchdog_s=watchdog_interval_s(env),
        status_interval_s=float(getattr(cfg.pipeline, "status_interval_s", 5.0) or 5.0),
        progress_watchdog=bool(getattr(cfg.service, "watchdog", True)),
    )
