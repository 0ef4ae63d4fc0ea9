"""An MJPEG network camera for tests: real HTTP on loopback, frames of the demo scene.

Serves ``multipart/x-mixed-replace`` JPEG frames at ``/video.mjpg``, as IP cameras do, so
segcam reads it through OpenCV like any ``http://`` camera. ``unplug()`` drops every
connection and closes the listening socket (the camera vanished from the network);
``plug()`` listens again on the same port. While :attr:`MjpegCamera.stalled` is set, every
connection stays open and nothing is sent, as a hung camera does: the reader blocks in a
read instead of seeing an error.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import List, Optional, Tuple

import cv2

from segcam.demo_scene import DemoScene

BOUNDARY = "segcamframe"


class MjpegCamera:
    """A small MJPEG-over-HTTP server in a thread; ``url`` is what segcam opens."""

    def __init__(self, size: Tuple[int, int] = (320, 240), fps: float = 15.0) -> None:
        self.size = size
        self.fps = fps
        self.scene = DemoScene(size[0], size[1], fps)
        self.frames_sent = 0
        self.stalled = threading.Event()
        self.port = 0
        self._listener: Optional[socket.socket] = None
        self._clients: List[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self.plug()

    @property
    def url(self) -> str:
        """The stream's URL."""
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def plug(self) -> None:
        """Listen (again, on the same port once it had one) and serve clients."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(4)
        s.settimeout(0.2)
        self.port = s.getsockname()[1]
        self._listener = s
        self._unplugged = threading.Event()
        t = threading.Thread(target=self._accept, args=(s, self._unplugged), daemon=True)
        t.start()
        self._acceptor = t
        self._threads.append(t)

    def unplug(self) -> None:
        """Drop every client and stop listening."""
        self._unplugged.set()
        self._acceptor.join(2)  # its accept() must end before the port is free again
        with self._lock:
            clients, self._clients = self._clients, []
        for c in clients:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def close(self) -> None:
        """Stop everything."""
        self._stop.set()
        self.unplug()
        for t in self._threads:
            t.join(2)

    def _accept(self, s: socket.socket, unplugged: threading.Event) -> None:
        while not self._stop.is_set() and not unplugged.is_set():
            try:
                conn, _ = s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._clients.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, unplugged), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, unplugged: threading.Event) -> None:
        try:
            conn.settimeout(2.0)
            conn.recv(4096)  # the request; any path gets the stream
            conn.sendall(
                (
                    "HTTP/1.0 200 OK\r\n"
                    f"Content-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n"
                    "Cache-Control: no-cache\r\n\r\n"
                ).encode()
            )
            i = 0
            while not self._stop.is_set() and not unplugged.is_set():
                if self.stalled.is_set():
                    time.sleep(0.05)  # connection open, nothing sent
                    continue
                frame, _ = self.scene.render(i)
                ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
                assert ok
                head = (
                    f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpg)}\r\n\r\n"
                ).encode()
                conn.sendall(head + jpg.tobytes() + b"\r\n")
                self.frames_sent += 1
                i += 1
                time.sleep(1.0 / self.fps)
        except OSError:
            pass  # the client went away, or unplug() cut it
        finally:
            conn.close()
