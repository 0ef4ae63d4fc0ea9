"""The browser preview sink over a real HTTP socket on loopback."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from segcam.errors import OutputError
from segcam.outputs import build_sinks, parse_output
from segcam.pipeline.types import FrameResult
from segcam.web_preview import WebPreviewSink, parse_http_uri


def _result(i: int) -> FrameResult:
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32] = (0, 0, 255)  # red left half: survives JPEG
    return FrameResult(i, time.time_ns(), time.monotonic_ns(), frame, np.ones((48, 64), np.float32))


def _feed(sink: WebPreviewSink, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        sink.submit(_result(i))
        i += 1
        time.sleep(0.02)


def test_parse_http_uri() -> None:
    assert parse_http_uri("http://0.0.0.0:8080") == ("0.0.0.0", 8080)
    assert parse_http_uri("http://:8080") == ("127.0.0.1", 8080)
    assert parse_http_uri("http://[::1]:9000/") == ("::1", 9000)
    for bad in ("http://host", "http://host:port", "http://h:80/path"):
        with pytest.raises(OutputError):
            parse_http_uri(bad)
    assert parse_output("http://:8080") == ("http", "http://:8080")


def test_snapshot_stream_and_page_over_http() -> None:
    sink = WebPreviewSink("http://127.0.0.1:0")
    sink.start()
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(sink, stop))
    feeder.start()
    try:
        host, port = sink.address
        base = f"http://{host}:{port}"
        page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        assert "/stream.mjpg" in page
        jpeg = urllib.request.urlopen(base + "/snapshot.jpg", timeout=10).read()
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (48, 64, 3) and img[:, :20, 2].mean() > 200
        with urllib.request.urlopen(base + "/stream.mjpg", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            head = resp.read(4096)
        assert b"--segcamframe" in head and b"Content-Type: image/jpeg" in head
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/nope", timeout=10)
        assert missing.value.code == 404
        listed = missing.value.read().decode()
        for route in ("/stream.mjpg", "/snapshot.jpg"):  # every real route is offered
            assert route in listed
    finally:
        stop.set()
        feeder.join(5)
        sink.stop(3.0)
    assert sink.written >= 1


def test_no_viewer_no_encoding() -> None:
    sink = WebPreviewSink("http://127.0.0.1:0")
    sink.start()
    for i in range(5):
        sink.submit(_result(i))
    time.sleep(0.2)
    sink.stop(3.0)
    assert sink.written == 0  # nobody asked: frames were neither copied nor encoded


def test_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OutputError, match="cannot serve the web preview"):
            WebPreviewSink(f"http://127.0.0.1:{port}").start()


def test_build_sinks_makes_a_web_preview() -> None:
    from segcam.config import load_config

    sinks = build_sinks(load_config(None, ["output.uris=[http://127.0.0.1:0]"]))
    assert len(sinks) == 1 and isinstance(sinks[0], WebPreviewSink)


def test_viewer_leaving_before_its_snapshot_is_not_a_traceback(capfd) -> None:
    """A browser tab closed while /snapshot.jpg waits for the next frame: the reply then
    meets a reset connection. That is a viewer leaving, not an error: no traceback on
    stderr (the journal), and the preview keeps serving."""
    import struct

    sink = WebPreviewSink("http://127.0.0.1:0")
    sink.start()
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(sink, stop))
    try:
        host, port = sink.address
        client = socket.create_connection((host, port), timeout=10)
        client.sendall(b"GET /snapshot.jpg HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10.0
        while not sink._wanted():  # the handler now waits for a frame
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Leave abruptly (RST, as a killed tab does); then the frame arrives.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        time.sleep(0.1)
        feeder.start()
        jpeg = urllib.request.urlopen(f"http://{host}:{port}/snapshot.jpg", timeout=10).read()
        assert jpeg[:2] == b"\xff\xd8"  # still serving
    finally:
        stop.set()
        if feeder.is_alive():
            feeder.join(5)
        sink.stop(3.0)
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


def test_status_json_summarises_the_runner_status() -> None:
    from segcam.web_preview import preview_status

    status = {
        "fps": 14.5,
        "frames_out": 120,
        "drops": {"capture": 2, "output:http": 3},
        "extensions": {"thermal": {"state": "warm", "temp_c": 71.5}},
        "backend": "onnxruntime:CPUExecutionProvider",
        "uptime_s": 9.0,
    }
    out = preview_status(status, viewers=2)
    assert out["fps"] == 14.5 and out["frames"] == 120 and out["drops"] == 5
    assert out["temperature_c"] == 71.5 and out["governor"] == "warm" and out["viewers"] == 2
    off = preview_status({"fps": 0.0, "drops": {}, "extensions": {}}, viewers=0)
    assert off["governor"] is None and off["temperature_c"] is None and off["drops"] == 0


def test_status_json_over_http_without_a_runner() -> None:
    import json

    sink = WebPreviewSink("http://127.0.0.1:0")
    sink.start()
    try:
        host, port = sink.address
        with urllib.request.urlopen(f"http://{host}:{port}/status.json", timeout=10) as resp:
            assert resp.headers["Content-Type"] == "application/json"
            body = json.loads(resp.read())
        assert body["viewers"] == 0 and body["fps"] == 0.0 and body["governor"] is None
        page = urllib.request.urlopen(f"http://{host}:{port}/", timeout=10).read().decode()
        assert "/status.json" in page and 'id="status"' in page
    finally:
        sink.stop()


def test_a_viewer_that_leaves_while_no_frame_comes_is_no_longer_counted() -> None:
    """A stalled input sends nothing to write, so a closed tab must be seen on the socket."""
    sink = WebPreviewSink("http://127.0.0.1:0")
    sink.start()
    try:
        host, port = sink.address
        client = socket.create_connection((host, port), timeout=10)
        client.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        assert client.recv(12).startswith(b"HTTP/1.")
        deadline = time.monotonic() + 5
        while sink.stats()["viewers"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.stats()["viewers"] == 1
        client.close()  # the tab closes; no frame was ever submitted
        deadline = time.monotonic() + 5
        while sink.stats()["viewers"] != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sink.stats()["viewers"] == 0
    finally:
        sink.stop()
