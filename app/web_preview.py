"""``http://HOST:PORT``: watch the composite in a browser (MJPEG), for headless devices.

The sink serves four paths from a small threaded HTTP server:

* ``/``: a page showing the stream and a status panel (fps, drops, temperature, thermal
  governor state, viewers) that polls ``/status.json`` every second;
* ``/stream.mjpg``: ``multipart/x-mixed-replace`` JPEG stream (any browser, VLC, ffplay);
* ``/snapshot.jpg``: the latest frame;
* ``/status.json``: the running pipeline's status in brief (:func:`preview_status`).

Frames are JPEG-encoded in the sink's own thread, and only while someone is watching. A
slow viewer only ever gets the newest frame. ``http://:8080`` binds to 127.0.0.1; to watch
from another machine bind ``http://0.0.0.0:8080`` (anyone on the network can then see the
video: segcam logs a warning).
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Tuple

import cv2

from segcam.errors import OutputError
from segcam.netutil import is_loopback_host
from segcam.outputs import SinkFrame, ThreadedSink

log = logging.getLogger("segcam.output")

BOUNDARY = "segcamframe"
# Every path the server answers (the 404 page lists them).
ROUTES = ("/", "/stream.mjpg", "/snapshot.jpg", "/status.json")
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>segcam</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{margin:0;background:#111;color:#ddd;font:14px/1.4 system-ui,sans-serif}
#live{display:block;width:100%;height:auto}
#status{position:fixed;left:0;right:0;bottom:0;padding:4px 10px;background:rgba(0,0,0,.7)}
#status span{margin-right:1.2em;white-space:nowrap;display:inline-block}
#status .stale{color:#f66}
</style></head>
<body><img id="live" src="/stream.mjpg" alt="segcam live">
<div id="status">
<span id="state">connecting</span>
<span id="fps"></span>
<span id="frames"></span>
<span id="drops"></span>
<span id="temp"></span>
<span id="governor"></span>
<span id="viewers"></span>
</div>
<script>
"use strict";
function show(id, text) { document.getElementById(id).textContent = text; }
function poll() {
  fetch("/status.json", {cache: "no-store"})
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
    .then(function (s) {
      show("state", "live");
      document.getElementById("state").className = "";
      show("fps", s.fps.toFixed(1) + " fps");
      show("frames", "frame " + s.frames);
      show("drops", "drops " + s.drops);
      show("temp", s.temperature_c === null ? "no temperature"
                                            : s.temperature_c.toFixed(1) + " \u00b0C");
      show("governor", "governor " + (s.governor === null ? "off" : s.governor));
      show("viewers", s.viewers + (s.viewers === 1 ? " viewer" : " viewers"));
    })
    .catch(function (e) {
      show("state", "no status (" + e.message + ")");
      document.getElementById("state").className = "stale";
    })
    .then(function () { setTimeout(poll, 1000); });
}
poll();
</script></body></html>
"""


def preview_status(status: Dict[str, Any], viewers: int) -> Dict[str, Any]:
    """The page's status panel from a runner's ``status()``: plain numbers and names.

    ``temperature_c`` and ``governor`` are None when the thermal governor is off (or has
    no sensor reading yet).
    """
    thermal = status.get("extensions", {}).get("thermal") or {}
    drops = status.get("drops") or {}
    return {
        "fps": float(status.get("fps") or 0.0),
        "frames": int(status.get("frames_out") or 0),
        "drops": int(sum(int(v or 0) for v in drops.values())),
        "drops_by_stage": {k: int(v or 0) for k, v in drops.items()},
        "temperature_c": thermal.get("temp_c"),
        "governor": thermal.get("state"),
        "backend": status.get("backend"),
        "uptime_s": status.get("uptime_s"),
        "viewers": viewers,
    }


def parse_http_uri(uri: str) -> Tuple[str, int]:
    """``http://[host]:port`` -> (host, port); an empty host means 127.0.0.1."""
    rest = uri[len("http://") :].rstrip("/")
    if "/" in rest:
        raise OutputError(f"output {uri!r}: a web preview has no path", "e.g. http://0.0.0.0:8080")
    host, sep, port_text = rest.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise OutputError(f"output {uri!r}: expected http://HOST:PORT", "e.g. http://0.0.0.0:8080")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a viewer that never leaves must not hold up shutdown
    sink: WebPreviewSink


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        log.debug("web preview: " + format, *args)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        try:
            self._get()
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as exc:
            # The viewer left while we replied (a closed tab): not an error, and the
            # server's default would print a traceback to stderr (the journal).
            log.debug("web preview: viewer %s left: %s", self.client_address[0], exc)
            self.close_connection = True

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", PAGE.encode())
        elif path == "/snapshot.jpg":
            jpeg = self.server.sink.snapshot(timeout=5.0)
            if jpeg is None:
                self._send(503, "text/plain", b"no frame yet\n")
            else:
                self._send(200, "image/jpeg", jpeg)
        elif path == "/stream.mjpg":
            self._stream()
        elif path == "/status.json":
            body = json.dumps(self.server.sink.status(), default=str).encode()
            self._send(200, "application/json", body)
        else:
            self._send(404, "text/plain", f"not found: try {', '.join(ROUTES)}\n".encode())

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        sink = self.server.sink
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        seq = 0
        sink.viewer_joined()
        try:
            while not sink.closing:
                seq, jpeg = sink.wait_jpeg(seq, timeout=1.0)
                if jpeg is None:
                    # No new frame (a stalled input): a write would not notice a closed
                    # tab, so look at the socket, or the viewer would be counted forever.
                    if self._viewer_gone():
                        break
                    continue
                self.wfile.write(
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                )
                self.wfile.write(jpeg)
                self.wfile.write(b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the viewer left
        finally:
            sink.viewer_left()

    def _viewer_gone(self) -> bool:
        """Whether the client closed its side (readable with nothing to read: EOF)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True


class WebPreviewSink(ThreadedSink):
    """Serves the composite as MJPEG over HTTP (see the module docstring)."""

    def __init__(self, uri: str, quality: int = 80) -> None:
        super().__init__(uri)
        self.uri = uri
        self.host, self.port = parse_http_uri(uri)
        self.quality = quality
        self.closing = False
        self._server: Optional[_Server] = None
        self._server_thread: Optional[threading.Thread] = None
        self._jpeg: Optional[bytes] = None
        self._seq = 0
        self._viewers = 0
        self._snapshot_wanted = False
        self._jcond = threading.Condition()

    @property
    def address(self) -> Tuple[str, int]:
        """(host, port) actually bound (port 0 asks the OS for a free one)."""
        if self._server is None:
            return self.host, self.port
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def _open(self) -> None:
        try:
            server = _Server((self.host, self.port), _Handler)
        except OSError as exc:
            raise OutputError(
                f"cannot serve the web preview on {self.host}:{self.port}: {exc.strerror or exc}",
                "pick another port (is another segcam running?), e.g. http://0.0.0.0:8081",
            ) from None
        server.sink = self
        self._server = server
        self._server_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="segcam-web-preview",
            daemon=True,
        )
        self._server_thread.start()
        host, port = self.address
        log.info("web preview on http://%s:%d/", host, port)
        if not is_loopback_host(self.host):
            log.warning(
                "the web preview on %s:%d is reachable from the network without a password: "
                "anyone who can reach it sees the video (bind http://127.0.0.1:%d to keep it "
                "local)",
                host,
                port,
                port,
            )

    # -- viewers ------------------------------------------------------------------------
    def viewer_joined(self) -> None:
        """A stream client connected."""
        with self._jcond:
            self._viewers += 1

    def viewer_left(self) -> None:
        """A stream client disconnected."""
        with self._jcond:
            self._viewers -= 1

    def wait_jpeg(self, after_seq: int, timeout: float) -> Tuple[int, Optional[bytes]]:
        """The newest JPEG once its sequence number passes ``after_seq`` (or timeout)."""
        with self._jcond:
            self._jcond.wait_for(lambda: self._seq > after_seq or self.closing, timeout)
            if self._seq > after_seq:
                return self._seq, self._jpeg
            return after_seq, None

    def snapshot(self, timeout: float) -> Optional[bytes]:
        """A fresh JPEG of the next frame (the last one if none comes within ``timeout``)."""
        with self._jcond:
            seq = self._seq
            self._snapshot_wanted = True
            self._jcond.wait_for(lambda: self._seq > seq or self.closing, timeout)
            return self._jpeg

    def status(self) -> Dict[str, Any]:
        """What ``/status.json`` serves: the runner's status in brief, and the viewers."""
        with self._jcond:
            viewers = self._viewers
        runner = self._runner
        return preview_status(runner.status() if runner is not None else {}, viewers)

    def _wanted(self) -> bool:
        with self._jcond:
            return self._viewers > 0 or self._snapshot_wanted

    # -- ThreadedSink -------------------------------------------------------------------
    def submit(self, result: Any) -> bool:
        """Take the frame only while someone watches (no copy, no encoding otherwise)."""
        if not self._wanted():
            return True
        return super().submit(result)

    def _write(self, item: SinkFrame) -> None:
        ok, buf = cv2.imencode(".jpg", item.frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise OutputError("JPEG encoding failed for the web preview")
        with self._jcond:
            self._jpeg = buf.tobytes()
            self._seq += 1
            self._snapshot_wanted = False
            self._jcond.notify_all()

    def _close(self) -> None:
        with self._jcond:
            self.closing = True
            self._jcond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def stats(self) -> Dict[str, Any]:
        """Counters plus the number of viewers."""
        out = super().stats()
        out["viewers"] = self._viewers
        return out
