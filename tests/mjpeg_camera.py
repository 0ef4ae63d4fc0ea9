"""An MJPEG-over-HTTP camera for tests: what IP cameras serve, and able to hang.

segcam reads it like any network camera (``http://HOST:PORT/stream.mjpg`` through
OpenCV/FFmpeg). :attr:`MjpegCamera.stalled` keeps every connection open while sending
nothing, as a hung camera does: the reader blocks in a read instead of seeing an error.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


class MjpegCamera:
    """An MJPEG-over-HTTP camera (multipart/x-mixed-replace) that can be made to stall."""

    def __init__(self, host: str = "127.0.0.1", width: int = 320, height: int = 240) -> None:
        self.stalled = threading.Event()
        self.closing = threading.Event()
        self.frames_sent = 0
        camera = self
        frame = np.zeros((height, width, 3), np.uint8)
        cv2.circle(frame, (width // 2, height // 2), height // 4, (200, 180, 160), -1)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace;boundary=frame")
                self.end_headers()
                i = 0
                while not camera.closing.is_set():
                    if camera.stalled.is_set():
                        time.sleep(0.05)  # connection open, nothing sent: a hung camera
                        continue
                    img = np.roll(frame, i % width, axis=1)
                    jpg = cv2.imencode(".jpg", img)[1].tobytes()
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                    try:
                        self.wfile.write(head % len(jpg) + jpg + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    i += 1
                    camera.frames_sent += 1
                    time.sleep(1 / 30)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://{host}:{self.server.server_address[1]}/stream.mjpg"

    def close(self) -> None:
        """Stop serving and close every connection."""
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
