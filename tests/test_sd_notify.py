"""The sd_notify protocol over real AF_UNIX datagram sockets (path and abstract)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import List

import pytest

from segcam.service import (
    SdNotify,
    SystemdNotifier,
    format_status,
    monotonic_usec,
    notify_address,
    watchdog_interval_s,
)


@pytest.fixture()
def path_socket(tmp_path: Path):
    """A bound datagram socket at a file path, as systemd creates it."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    yield path, sock
    sock.close()


def _fields(data: bytes) -> dict:
    return dict(line.split("=", 1) for line in data.decode().split("\n"))


def test_send_to_a_path_socket(path_socket):
    path, sock = path_socket
    n = SdNotify({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.send(READY=1, STATUS="first frame\nsecond line")
    fields = _fields(sock.recv(4096))
    assert fields == {"READY": "1", "STATUS": "first frame second line"}
    n.close()


def test_send_to_an_abstract_socket():
    name = f"segcam-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        n = SdNotify({"NOTIFY_SOCKET": "@" + name})
        assert n.address == "\0" + name
        assert n.send(WATCHDOG=1)
        assert sock.recv(4096) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_no_op():
    n = SdNotify({})
    assert not n.enabled
    assert n.send(READY=1) is False
    notifier = SystemdNotifier(notify=n, watchdog_s=None)
    notifier.start(runner=None)  # no thread, no error
    notifier.reloading()
    notifier.reloaded()
    notifier.stop()
    assert notifier.status()["notify"] is False


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path):
    n = SdNotify({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.send(READY=1) is False
    assert n.send(READY=1) is False  # warned once, still no exception


def test_only_unix_socket_addresses_are_used():
    assert notify_address({"NOTIFY_SOCKET": ""}) is None
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"


def test_watchdog_interval_honours_watchdog_pid():
    me = str(os.getpid())
    assert watchdog_interval_s({"WATCHDOG_USEC": "4000000"}) == 4.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": me}) == 4.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s({}) is None


def test_reload_messages_carry_monotonic_usec(path_socket):
    path, sock = path_socket
    notifier = SystemdNotifier(notify=SdNotify({"NOTIFY_SOCKET": path}), watchdog_s=None)
    before = monotonic_usec()
    notifier.reloading()
    fields = _fields(sock.recv(4096))
    after = monotonic_usec()
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after
    notifier.reloaded("reloaded: 1 change(s) applied")
    fields = _fields(sock.recv(4096))
    assert fields == {"READY": "1", "STATUS": "reloaded: 1 change(s) applied"}
    notifier.stop()
    messages: List[bytes] = [sock.recv(4096)]
    assert b"STOPPING=1" in messages[0]


def test_status_line_from_runner_status():
    status = {
        "fps": 29.84,
        "backend": "onnxruntime:CPUExecutionProvider",
        "extensions": {"thermal": {"state": "warm", "temp_c": 71.26}},
    }
    line = format_status(status, threshold=0.7)
    assert line == "29.8 fps | onnxruntime:CPUExecutionProvider | 71.3 C warm | threshold 0.70"
    assert format_status({}) == "running"


def test_a_manager_that_stops_reading_never_blocks_a_send(path_socket):
    """If the notify socket's queue fills (systemd busy or hung: nobody reads), a send must
    fail at once, not block: ``stop()`` sends STOPPING=1 on the runner's shutdown path,
    which has to end within ``pipeline.stop_timeout_s``."""
    import threading

    path, _sock = path_socket  # bound, never read: its queue fills after a few datagrams
    n = SdNotify({"NOTIFY_SOCKET": path})
    results: List[bool] = []

    def flood() -> None:
        for i in range(200):
            results.append(n.send(STATUS=f"status {i}"))
            if not results[-1]:
                break

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    t.join(5.0)
    blocked, sent = t.is_alive(), len(results)
    _sock.close()  # wakes a sender that did block
    t.join(5.0)
    n.close()
    assert not blocked, f"send blocked after {sent} datagrams"
    assert results[0] and not results[-1]  # the first got through; the overflow is reported
