"""Getting recorded bytes onto the disk: fsync of files and directories off the writer's thread.

On Linux ``fsync`` of any descriptor of a file writes all of that file's dirty pages, so a
read-only descriptor opened beside the encoder's own (PyAV, GStreamer's filesink, OpenCV)
makes its data durable without touching the encoder. ``fsync`` can take long on SD cards
and eMMC; a :class:`Syncer` runs it in its own thread so the recorder never waits for it.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Dict, Optional

log = logging.getLogger("segcam.record")


def fsync_dir(path: Path) -> None:
    """Make a new or removed entry in directory ``path`` durable (best effort)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on directories
        log.debug("fsync of directory %s: %s", path, exc)
    finally:
        os.close(fd)


class Syncer:
    """Background fsync of the files it tracks, each time :meth:`request` is called.

    ``track(path)`` opens a read-only descriptor (after the writer created the file),
    ``untrack(path)`` syncs it a last time and closes it. Requests while a sync runs
    coalesce into one more pass. Counters: ``syncs`` done, ``last_error``.
    """

    def __init__(self, name: str = "record") -> None:
        self._fds: Dict[Path, int] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._io = threading.Lock()  # held while fsyncing: a descriptor closes only outside
        self._pending = False
        self._stopping = False
        self.syncs = 0
        self.last_error: Optional[str] = None
        self._thread = threading.Thread(target=self._loop, name=f"segcam-fsync-{name}")
        self._thread.daemon = True
        self._thread.start()

    def track(self, path: Path) -> None:
        """Start syncing ``path`` (ignored if it cannot be opened: reported in last_error)."""
        try:
            fd = os.open(str(path), os.O_RDONLY)
        except OSError as exc:
            self.last_error = f"{path}: {exc.strerror or exc}"
            return
        with self._io, self._lock:
            old = self._fds.pop(path, None)
            self._fds[path] = fd
            if old is not None:
                os.close(old)
        fsync_dir(path.parent)

    def untrack(self, path: Path, sync: bool = True) -> None:
        """Stop syncing ``path``; sync it one last time first (in the caller's thread)."""
        with self._io:
            with self._lock:
                fd = self._fds.pop(path, None)
            if fd is None:
                return
            try:
                if sync:
                    os.fsync(fd)
            except OSError as exc:
                self.last_error = f"{path}: {exc.strerror or exc}"
            finally:
                os.close(fd)

    def request(self) -> None:
        """Ask for one sync pass of every tracked file (returns at once)."""
        with self._lock:
            self._pending = True
            self._wake.notify()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the thread and close every descriptor (after a final sync)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)
        with self._lock:
            paths = list(self._fds)
        for path in paths:
            self.untrack(path)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                self._pending = False
            with self._io:
                with self._lock:
                    fds = list(self._fds.items())
                for path, fd in fds:
                    try:
                        os.fsync(fd)
                    except OSError as exc:  # reported in stats; writers see their own errors
                        self.last_error = f"{path}: {exc.strerror or exc}"
            self.syncs += 1
