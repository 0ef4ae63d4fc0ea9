"""Output sinks: ``display://0`` (OpenCV window), ``file://out.mp4`` (recorder), ``none``,
and ``http://HOST:PORT`` (browser preview, :mod:`segcam.web_preview`).

Every sink runs in its own thread behind a one-frame mailbox. ``submit`` copies what the
sink needs out of the pipeline's slot (the slot is recycled as soon as ``submit`` returns)
into one of two buffers the sink owns, and returns at once: when the sink is still busy
with the previous frame, the frame waiting in the mailbox is replaced and counted as
dropped. A slow sink therefore never slows the pipeline. For finite files processed frame
by frame the runner sets ``lossless`` and ``submit`` waits for room instead, so the
recording holds every frame.

``build_sinks(cfg)`` turns ``output.uris`` into sinks (plus the ZeroMQ mask publisher
when ``publish.enabled``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from segcam import schemes
from segcam.config import RecordConfig
from segcam.errors import OutputError, SegcamError
from segcam.pipeline.metrics import SampleRing
from segcam.pipeline.types import FrameResult
from segcam.recording.formats import VIDEO_SUFFIXES
from segcam.recording.recorder import SegmentRecorder
from segcam.recording.segments import mask_video_path  # noqa: F401 - part of this API

log = logging.getLogger("segcam.output")

ESC = 27


class SinkFrame:
    """A sink-owned copy of one frame (buffers reused from frame to frame)."""

    __slots__ = ("frame", "mask", "source", "frame_id", "capture_ts_ns", "capture_mono_ns")

    def __init__(self) -> None:
        self.frame: Optional[np.ndarray] = None
        self.mask: Optional[np.ndarray] = None  # uint8 0..255
        self.source: Optional[np.ndarray] = None
        self.frame_id = -1
        self.capture_ts_ns = 0
        self.capture_mono_ns = 0


def _copy_into(dst: Optional[np.ndarray], src: np.ndarray) -> np.ndarray:
    if dst is None or dst.shape != src.shape or dst.dtype != src.dtype:
        dst = np.empty_like(src)
    np.copyto(dst, src)
    return dst


class ThreadedSink:
    """Base of the built-in sinks: mailbox, worker thread, counters, error reporting.

    Subclasses set ``needs_frame``/``needs_mask``/``needs_source`` and implement
    ``_open()`` (called by ``start`` in the caller's thread: raise OutputError there),
    ``_write(item)`` and ``_close()`` (both in the sink's thread), and optionally
    ``_idle()`` (called about every 30 ms while no frame waits).
    """

    name = "sink"
    needs_frame = True
    needs_mask = False
    needs_source = False
    idle_interval_s = 0.05

    def __init__(self, name: str) -> None:
        self.name = name
        self.lossless = False
        self.written = 0
        self.dropped = 0
        self.g2g = SampleRing(256)
        self.error: Optional[BaseException] = None
        self._runner: Any = None
        self._items = (SinkFrame(), SinkFrame())
        self._pending: Optional[SinkFrame] = None
        self._busy: Optional[SinkFrame] = None
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    # -- Sink contract ----------------------------------------------------------------
    def attach(self, runner: Any) -> None:
        """Remember the runner (for errors, stop requests and the source's size/fps)."""
        self._runner = runner

    def start(self) -> None:
        """Open the output (OutputError if impossible) and start the thread."""
        self._open()
        self._thread = threading.Thread(target=self._loop, name=f"segcam-sink-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def submit(self, result: FrameResult) -> bool:
        """Copy what this sink needs from ``result``; never waits unless ``lossless``.

        Returns True: this frame is taken (an older one still waiting is dropped and
        counted); False only once the sink is stopping.
        """
        with self._cond:
            if self._stopping:
                return False
            if self.lossless:
                while self._pending is not None and not self._stopping:
                    if self._runner is not None and self._runner.stop_event.is_set():
                        if not getattr(self._runner, "eos_event", threading.Event()).is_set():
                            break
                    self._cond.wait(0.05)
            if self._pending is not None:
                item = self._pending  # replace the (older) frame that was still waiting
                self.dropped += 1
            else:
                item = self._items[0] if self._busy is not self._items[0] else self._items[1]
            self._fill(item, result)
            self._pending = item
            self._cond.notify_all()
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Write the frame still waiting, close the output, join within ``timeout``."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("output %s did not finish within %.1f s", self.name, timeout)
        else:
            self._close()

    def stats(self) -> Dict[str, Any]:
        """Frames written and dropped, and this sink's glass-to-glass latency."""
        p50, p95 = self.g2g.percentiles(50, 95)
        return {
            "written": self.written,
            "dropped": self.dropped,
            "glass_to_glass_ms": {
                "p50": None if p50 is None else round(p50, 3),
                "p95": None if p95 is None else round(p95, 3),
            },
        }

    # -- internals --------------------------------------------------------------------
    def _fill(self, item: SinkFrame, result: FrameResult) -> None:
        item.frame_id = result.frame_id
        item.capture_ts_ns = result.capture_ts_ns
        item.capture_mono_ns = result.capture_mono_ns
        if self.needs_frame:
            item.frame = _copy_into(item.frame, result.frame)
        if self.needs_source and result.source is not None:
            item.source = _copy_into(item.source, result.source)
        if self.needs_mask:
            mask = result.mask
            if item.mask is None or item.mask.shape != mask.shape:
                item.mask = np.empty(mask.shape, np.uint8)
            if mask.dtype == np.uint8:
                np.copyto(item.mask, mask)
            else:
                cv2.convertScaleAbs(mask, dst=item.mask, alpha=255.0)

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._pending is None and not self._stopping:
                        if not self._cond.wait(self.idle_interval_s):
                            break
                    item = self._pending
                    if item is None:
                        if self._stopping:
                            break
                        idle = True
                    else:
                        idle = False
                        self._pending = None
                        self._busy = item
                        self._cond.notify_all()
                if idle:
                    self._idle()
                    continue
                try:
                    self._write(item)
                finally:
                    with self._cond:
                        self._busy = None
                        self._cond.notify_all()
                self.written += 1
                self.g2g.add((time.monotonic_ns() - item.capture_mono_ns) / 1e6)
        except BaseException as exc:  # noqa: BLE001 - a sink's death is reported
            self.error = exc
            with self._cond:
                self._stopping = True
                self._pending = None
                self._cond.notify_all()
            if self._runner is not None:
                self._runner.report_error(exc, f"output {self.name}")
            else:
                log.error("output %s failed: %s", self.name, exc)
        finally:
            try:
                self._close()
            except Exception as exc:  # noqa: BLE001 - closing must not mask the first error
                if self.error is None and self._runner is not None:
                    # Finalising is part of the output (the sheet, a file's index): the
                    # run failed if it did, even after the last frame.
                    self.error = exc
                    self._runner.report_error(exc, f"output {self.name}")
                else:
                    log.warning("output %s: close failed: %s", self.name, exc)

    def _open(self) -> None:
        pass

    def _write(self, item: SinkFrame) -> None:
        raise NotImplementedError

    def _idle(self) -> None:
        pass

    def _close(self) -> None:
        pass


# ---------------------------------------------------------------------------- file://


def check_writable(path: Path) -> None:
    """Raise OutputError unless ``path`` can be created/written (no file is left behind).

    The parent folder must exist: creating folders from a mistyped URI
    (``file:///nonexistent/dir/out.mp4``) would litter the filesystem.
    """
    parent = path.parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(
            f"cannot write {path}: {existing} is a file, not a folder",
            "choose a path inside a folder, e.g. --output file:///tmp/out.mp4",
        )
    if existing != parent:
        raise OutputError(
            f"cannot write {path}: folder {parent} does not exist",
            f"create it first (mkdir -p {parent}) or choose another path",
        )
    try:
        existed = path.exists()
        with open(path, "ab"):  # append: an existing file is not truncated by a check
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: {exc.strerror or exc}",
            "choose a writable path, e.g. --output file:///tmp/out.mp4",
        ) from None


class FileSink(ThreadedSink):
    """Records the composite (and optionally the mask) through :mod:`segcam.recording`.

    The recorder runs in this sink's thread; a frame that arrives while it is still
    encoding the previous one replaces the waiting one (counted as dropped), so encoding
    never slows the pipeline. When the disk fills up, recording stops with one error
    reported to the runner as degraded (the pipeline and the other outputs keep running).
    """

    def __init__(
        self,
        path: str,
        codec: str = "auto",
        record_mask: bool = False,
        fps: float = 30.0,
        settings: Optional[RecordConfig] = None,
    ) -> None:
        super().__init__(f"file:{path}")
        self.path = Path(path).expanduser()
        self.codec = codec
        self.record_mask = record_mask
        self.needs_mask = record_mask
        self.fps = fps
        self.settings = settings if settings is not None else RecordConfig()
        self._recorder: Optional[SegmentRecorder] = None

    @property
    def recorder(self) -> SegmentRecorder:
        """The segmented recorder (created by preflight)."""
        if self._recorder is None:
            self._recorder = SegmentRecorder(
                self.path,
                self.codec,
                self.settings,
                self.record_mask,
                self.fps,
                on_stop=self._disk_stopped,
                on_resume=self._disk_resumed,
            )
        return self._recorder

    def preflight(self) -> None:
        """Choose the recorder and check that the file(s) can be written (before the model)."""
        self.recorder.preflight()

    def _open(self) -> None:
        self.preflight()
        rec = self.recorder
        rec.lossless = self.lossless
        size = None
        src = getattr(self._runner, "source", None)
        if src is not None:
            self.fps = float(getattr(src, "fps", 0) or self.fps)
            got = getattr(src, "size", None)
            if got and got[0] > 0 and got[1] > 0:
                size = (int(got[0]), int(got[1]))
        rec.start(size, self.fps)

    def _write(self, item: SinkFrame) -> None:
        self.recorder.write(item.frame, item.mask, item.capture_mono_ns)

    def _close(self) -> None:
        if self._recorder is not None:
            self._recorder.close()

    def _disk_stopped(self, reason: str) -> None:
        message = f"recording stopped: {reason}"
        if self._runner is not None:
            self._runner.report_degraded(f"output {self.name}", message)
        else:
            log.error("output %s: %s", self.name, message)

    def _disk_resumed(self) -> None:
        if self._runner is not None:
            self._runner.clear_degraded(f"output {self.name}")

    def stats(self) -> Dict[str, Any]:
        """Counters plus the file path and the recorder's state."""
        out = super().stats()
        out["path"] = str(self.path)
        if self._recorder is not None:
            rec = self._recorder.stats()
            out.update(rec)
            # Frames taken from the pipeline while recording was stopped are not on disk.
            out["written"] = self._recorder.written
        return out


# ---------------------------------------------------------------------------- display://


def display_available() -> Tuple[bool, str]:
    """Whether an OpenCV window can be shown here, and if not, why."""
    info = cv2.getBuildInformation()
    gui = ""
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip()
            break
    if gui.upper() in ("NONE", "NO"):
        return False, "this OpenCV has no GUI support (opencv-python-headless)"
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False, "no display ($DISPLAY and $WAYLAND_DISPLAY are unset)"
    return True, f"OpenCV GUI {gui or 'available'}"


def require_display(uri: str) -> None:
    """Raise OutputError when ``uri`` (a display://) cannot be shown here."""
    ok, why = display_available()
    if not ok:
        raise OutputError(
            f"{uri} cannot open a window: {why}",
            "use --output file://out.mp4 or http://127.0.0.1:8080 (browser preview); for "
            "windows on a desktop install segcam's gui extra in place of headless: "
            "pip uninstall -y opencv-python-headless && pip install -e '.[gui]' "
            "(a Jetson's JetPack OpenCV has windows already)",
        )


class DisplaySink(ThreadedSink):
    """An OpenCV window (its own thread); q, Esc or closing the window stops the run."""

    idle_interval_s = 0.03

    def __init__(self, uri: str, title: str = "segcam", fullscreen: bool = False) -> None:
        super().__init__(uri.replace("://", ":"))
        self.uri = uri
        self.title = title
        self.fullscreen = fullscreen
        self._window = False
        self._shown = False  # a frame was drawn: the window's visibility now means something
        self._closed_by_viewer = False

    def _open(self) -> None:
        require_display(self.uri)

    def _make_window(self, width: int, height: int) -> None:
        # GUI_NORMAL: the picture only (Qt builds otherwise add a toolbar and a status
        # bar); KEEPRATIO: a resized or fullscreen window letterboxes instead of stretching.
        flags = cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL
        cv2.namedWindow(self.title, flags)
        if self.fullscreen:
            cv2.setWindowProperty(self.title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
        else:
            # A resizable window opens at the toolkit's default size (400x300 in Qt),
            # not the frame's: start at 1:1.
            cv2.resizeWindow(self.title, width, height)
        self._window = True

    def _write(self, item: SinkFrame) -> None:
        if self._closed_by_viewer:
            return  # imshow would open the window again while the run stops
        if not self._window:
            self._make_window(item.frame.shape[1], item.frame.shape[0])
        cv2.imshow(self.title, item.frame)
        self._keys()
        self._shown = True

    def _idle(self) -> None:
        if self._window and not self._closed_by_viewer:
            self._keys()

    def _keys(self) -> None:
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), ord("Q"), ESC):
            log.info("%s: quit key pressed", self.uri)
            self._stop_run("quit key")
        elif self._shown and not self._visible():
            log.info("%s: window closed", self.uri)
            self._closed_by_viewer = True
            self._window = False
            self._stop_run("window closed")

    def _visible(self) -> bool:
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1
        except cv2.error:  # some backends raise for a window that no longer exists
            return False

    def _stop_run(self, reason: str) -> None:
        if self._runner is not None:
            self._runner.request_stop(reason)

    def _close(self) -> None:
        if self._window:
            self._window = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error as exc:  # the viewer closed the window already: nothing lost
                log.debug("%s: closing the window: %s", self.uri, exc)


# ---------------------------------------------------------------------------- contact sheet


class ContactSheetSink(ThreadedSink):
    """Keeps a few instants (frame | mask | composite) and writes them as one PNG at stop.

    An instant is taken every ``every_s`` seconds after the first frame, up to ``rows``.
    """

    needs_frame = True
    needs_mask = True
    needs_source = True

    def __init__(
        self,
        path: str,
        rows: int = 4,
        every_s: float = 2.0,
        width: int = 480,
        truth: Optional[Callable[[int], np.ndarray]] = None,
    ) -> None:
        super().__init__(f"sheet:{path}")
        self.truth = truth  # frame id -> true silhouette (the demo knows it): IoU per row
        self.ious: List[float] = []
        self.path = Path(path).expanduser()
        self.rows = max(1, rows)
        self.every_s = max(0.0, every_s)
        self.width = width
        self.lossless = False
        self._tiles: List[np.ndarray] = []
        self._first: Optional[float] = None
        self._taken = 0
        self.saved: Optional[Path] = None

    def preflight(self) -> None:
        """The PNG's directory must be writable."""
        check_writable(self.path)

    def _open(self) -> None:
        self.preflight()

    def submit(self, result: FrameResult) -> bool:
        """Take a copy only when the next instant is due (most frames are not needed)."""
        now = time.monotonic()
        if self._first is None:
            self._first = now
        due = self._first + self._taken * self.every_s
        if self._taken >= self.rows or now < due:
            return True  # not wanted: not a drop
        self._taken += 1
        return super().submit(result)

    def _write(self, item: SinkFrame) -> None:
        if item.source is not None and item.mask is not None:
            self._tiles.append(self._row(item))

    def _row(self, item: SinkFrame) -> np.ndarray:
        h, w = item.frame.shape[:2]
        tw = self.width
        th = max(1, int(round(h * tw / w)))
        parts = []
        mask_label = "mask"
        if self.truth is not None:
            truth = self.truth(item.frame_id) > 0
            pred = item.mask > 127
            union = np.logical_or(pred, truth).sum()
            score = float(np.logical_and(pred, truth).sum() / union) if union else 1.0
            self.ious.append(score)
            mask_label = f"mask (IoU {score:.2f} vs truth)"
        for img, label in (
            (item.source, f"frame {item.frame_id}"),
            (cv2.cvtColor(item.mask, cv2.COLOR_GRAY2BGR), mask_label),
            (item.frame, "composite"),
        ):
            tile = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
            cv2.putText(tile, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3)
            cv2.putText(tile, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1)
            parts.append(tile)
        return np.hstack(parts)

    def _close(self) -> None:
        if not self._tiles or self.saved is not None:
            return
        sheet = np.vstack(self._tiles)
        if not cv2.imwrite(str(self.path), sheet):
            raise OutputError(f"cannot write the contact sheet {self.path}")
        self.saved = self.path
        log.info("contact sheet (%d instants) written to %s", len(self._tiles), self.path)


# ---------------------------------------------------------------------------- factory


def parse_output(uri: str) -> Tuple[str, str]:
    """Classify an output URI: (kind of segcam.schemes.OUTPUTS, target)."""
    text = str(uri).strip()
    if text in ("", "none", "null", "none://"):
        return "none", ""
    scheme, sep, rest = text.partition("://")
    entry = schemes.output_for_scheme(scheme) if sep else None
    if entry is not None and entry.kind == "display":
        index = rest or "0"
        if not index.isdigit():
            raise OutputError(f"output {text!r}: expected display://<number>", "e.g. display://0")
        return "display", index
    if entry is not None and entry.kind == "file":
        if not rest:
            raise OutputError(f"output {text!r}: no file name", "e.g. file://out.mp4")
        return "file", rest
    if entry is not None and entry.kind == "http":
        return "http", text
    if not sep and Path(text).suffix.lower() in VIDEO_SUFFIXES:
        return "file", text  # a plain video path is what users mean
    raise OutputError(
        f"unknown output {text!r} ({scheme!r} is not an output scheme)",
        schemes.output_examples(),
    )


def display_sink(uri: str, target: str, cfg: Any) -> DisplaySink:
    """``display://N``: a window (OutputError at once when none can be shown here)."""
    require_display(uri)
    d = cfg.output.display
    return DisplaySink(uri, d.title, d.fullscreen)


def file_sink(uri: str, target: str, cfg: Any) -> FileSink:
    """``file://PATH``: a recording."""
    out = cfg.output
    return FileSink(target, out.codec, out.record_mask, cfg.input.fps, out.record)


def web_preview_sink(uri: str, target: str, cfg: Any) -> Any:
    """``http://HOST:PORT``: the MJPEG browser preview."""
    from segcam.web_preview import WebPreviewSink

    return WebPreviewSink(target)


def build_sinks(
    cfg: Any, uris: Optional[Sequence[str]] = None, publisher: Optional[Any] = None
) -> List[Any]:
    """Sinks for ``uris`` (default ``cfg.output.uris``) plus the mask publisher if enabled.

    Raises OutputError for an unknown scheme or a display:// without a display; file
    paths are checked when the sink starts. ``publisher`` is a shared
    segcam.publish.publisher.MaskPublisher when several streams publish on one socket.
    """
    sinks: List[Any] = []
    seen = set()
    for uri in list(uris if uris is not None else cfg.output.uris):
        kind, target = parse_output(uri)
        if kind == "none":
            continue
        key = (kind, target)
        if key in seen:
            continue
        seen.add(key)
        sinks.append(schemes.output_kind(kind).build(uri, target, cfg))
    if cfg.publish.enabled:
        try:
            from segcam.publish.sink import MaskPublisherSink
        except ImportError as exc:
            raise OutputError(
                f"publish.enabled is true but the publisher is not available ({exc})",
                "install pyzmq (pip install pyzmq) or set publish.enabled=false",
            ) from None
        sinks.append(MaskPublisherSink(cfg, publisher=publisher))
    return sinks


def stop_sinks(sinks: Sequence[Any], timeout: float = 2.0) -> None:
    """Stop sinks that were started outside a runner (error paths)."""
    for sink in sinks:
        try:
            sink.stop(timeout)
        except SegcamError as exc:
            log.warning("output %s: %s", getattr(sink, "name", sink), exc.message)
