"""The segmented recorder a ``file://`` sink drives: writers, rotation, budget, fsync.

Media time of a frame is its capture time (live sources: drops leave gaps instead of
speeding the video up) or ``index / fps`` (files processed frame by frame). Every
``flush_interval_s`` of media time the recorder asks for a keyframe, which closes an MP4
fragment or a Matroska cluster, then asks the :class:`~segcam.recording.durable.Syncer`
to fsync and checks the disk budget. A disk that fills up (or fails) stops recording
with one error, reported through ``on_stop``; the pipeline keeps running, and recording
resumes in a new segment once the free space is back above the floor.
"""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from segcam.errors import OutputError
from segcam.recording import choice as choosing
from segcam.recording.durable import Syncer
from segcam.recording.segments import (
    MIB,
    DiskBudget,
    Segment,
    SegmentNamer,
    free_bytes,
    keep_earlier,
    mask_video_path,
    parse_budget,
)
from segcam.recording.writer import FrameWriter, WriterSpec, even_size

log = logging.getLogger("segcam.record")

# Errors of the disk itself: recording stops, the pipeline goes on.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
RESUME_CHECK_S = 10.0


def open_writer(backend: str, spec: WriterSpec) -> FrameWriter:
    """The writer of ``backend`` for ``spec`` (imports only the backend in use)."""
    if backend == "pyav":
        from segcam.recording import pyav

        return pyav.open_writer(spec)
    if backend == "gstreamer":
        from segcam.recording import gstreamer

        return gstreamer.open_writer(spec)
    from segcam.recording import opencv

    return opencv.open_writer(spec)


class DiskStop(Exception):
    """Recording cannot go on on this disk (full, floor reached, read-only, failing)."""


class SegmentRecorder:
    """Records frames (and masks) into segments under a disk budget.

    ``settings`` is ``cfg.output.record``; ``codec`` is ``cfg.output.codec``.
    ``on_stop(reason)`` / ``on_resume()`` tell the owner when recording stops for the
    disk and when it starts again.
    """

    def __init__(
        self,
        path: Path,
        codec: str,
        settings: Any,
        record_mask: bool = False,
        fps: float = 30.0,
        on_stop: Optional[Callable[[str], None]] = None,
        on_resume: Optional[Callable[[], None]] = None,
    ) -> None:
        self.path = path
        self.codec_setting = codec
        self.settings = settings
        self.record_mask = record_mask
        self.fps = fps if fps > 0 else 30.0
        self.lossless = False
        self.on_stop = on_stop
        self.on_resume = on_resume
        self.choice = choosing.choose(path, codec, settings.recorder)
        self.namer = SegmentNamer(path, settings.segment_s > 0)
        max_b, floor_b = parse_budget(settings.max_mib, settings.min_free_mib)
        self.budget = DiskBudget(path.parent, max_b, floor_b)
        self.size: Optional[Tuple[int, int]] = None
        self.written = 0  # frames handed to the encoder(s)
        self.not_recorded = 0  # frames that arrived while recording was stopped
        self.segments = 0
        self.stopped: Optional[str] = None
        self.syncer: Optional[Syncer] = None
        self._writers: List[FrameWriter] = []
        self._seg_paths: List[Path] = []
        self.last_path: Optional[Path] = None
        self._seg_frames = 0
        self._seg_start_ns = 0
        self._last_key_s = -1e9
        self._last_pts_s = -1.0
        self._next_resume_check = 0.0
        self._gray: Optional[np.ndarray] = None

    # ------------------------------------------------------------------ lifecycle
    def preflight(self) -> None:
        """Check the path can be written and the floor is not already reached."""
        from segcam.outputs import check_writable

        probe = self.namer.next_path()
        folder = Path(self.namer.pattern).parent
        if "%" in str(folder):
            # Folders named by the pattern (rec/%Y/%m) are made as segments start; the
            # fixed part above them must exist like any output folder.
            fixed: List[str] = []
            for part in folder.parts:
                if "%" in part:
                    break
                fixed.append(part)
            probe = Path(*fixed) / probe.name
        check_writable(probe)
        if self.record_mask:
            check_writable(mask_video_path(probe))

    def start(self, size: Optional[Tuple[int, int]], fps: float) -> None:
        """Begin (in the sink's thread): earlier segments join the budget; open if size known."""
        if fps > 0:
            self.fps = fps
        self.syncer = Syncer(self.path.name)
        for seg in self.namer.existing():
            self.budget.finished.append(seg)
        if self.choice.backend == "opencv":
            log.warning("recording %s with OpenCV's writer: %s", self.path, self.choice.reason)
        else:
            log.info("recorder for %s: %s", self.path, self.choice.summary())
        if size:
            self._open_segment(size)

    def close(self) -> None:
        """Finish the current segment (a file without frames is removed) and stop syncing."""
        try:
            self._close_segment(final=True)
        finally:
            if self.syncer is not None:
                self.syncer.close()

    # ------------------------------------------------------------------ frames
    def write(self, frame: np.ndarray, mask: Optional[np.ndarray], mono_ns: int) -> bool:
        """Record one frame; False when it was not recorded (recording stopped)."""
        if self.stopped is not None and not self._try_resume(frame):
            self.not_recorded += 1
            return False
        h, w = frame.shape[:2]
        if not self._writers:
            self._open_segment((w, h))
            if not self._writers:
                self.not_recorded += 1
                return False
        pts = self._pts(mono_ns)
        if self.settings.segment_s > 0 and pts >= self.settings.segment_s:
            self._rotate()
            if not self._writers:
                self.not_recorded += 1
                return False
            pts = self._pts(mono_ns)
        key = pts - self._last_key_s >= self.settings.flush_interval_s or self._seg_frames == 0
        try:
            self._encode(frame, mask, pts, key)
        except OSError as exc:
            if getattr(exc, "errno", None) in DISK_ERRNOS:
                self._disk_stop(f"writing {self._seg_paths[0]} failed: {exc.strerror or exc}")
                self.not_recorded += 1
                return False
            raise OutputError(f"recording {self._seg_paths[0]} failed: {exc}") from None
        self._seg_frames += 1
        self.written += 1
        if key:
            self._last_key_s = pts
            if self._seg_frames > 1:  # the keyframe closed the fragment before it
                self._flush_point()
        return True

    def idle(self) -> None:
        """Called while no frame waits: nothing to do yet (fsyncs run in their own thread)."""

    # ------------------------------------------------------------------ internals
    def _pts(self, mono_ns: int) -> float:
        if self.lossless or not mono_ns:
            pts = self._seg_frames / self.fps
        else:
            if self._seg_frames == 0:
                self._seg_start_ns = mono_ns
            pts = (mono_ns - self._seg_start_ns) / 1e9
        return max(pts, self._last_pts_s + 0.001, 0.0)  # strictly increasing, 1 ms apart

    def _encode(self, frame: np.ndarray, mask: Optional[np.ndarray], pts: float, key: bool) -> None:
        assert self.size is not None
        w, h = self.size
        if frame.shape[1] != w or frame.shape[0] != h:
            fh, fw = frame.shape[:2]
            if fw >= w and fh >= h and fw - w <= 1 and fh - h <= 1:
                frame = frame[:h, :w]  # an odd column/row dropped for 4:2:0
            else:  # the source changed size mid-stream: keep one size per segment
                frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        if not frame.flags.c_contiguous:
            frame = np.ascontiguousarray(frame)
        self._writers[0].write(frame, pts, key)
        if len(self._writers) > 1 and mask is not None:
            if mask.shape[1] != w or mask.shape[0] != h:
                mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)
            self._writers[1].write(np.ascontiguousarray(mask), pts, key)
        if self._seg_frames == 0 and self.syncer is not None:
            for p in self._seg_paths:
                self.syncer.track(p)
        self._last_pts_s = pts

    def _flush_point(self) -> None:
        """A fragment was completed: make it durable and check the budget."""
        if self.syncer is not None:
            self.syncer.request()
        log.debug("progress: %d frames written to %s", self.written, self._seg_paths[0])
        if self.budget.max_bytes or self.budget.min_free_bytes:
            if self.settings.segment_s > 0 and self.budget.over_limit(self._seg_paths):
                self._rotate()
                return
            reason = self.budget.enforce(self._seg_paths)
            if reason is not None:
                self._disk_stop(reason)

    def _spec(self, path: Path, size: Tuple[int, int], gray: bool) -> WriterSpec:
        s = self.settings
        return WriterSpec(
            path=path,
            size=size,
            fps=self.fps,
            container=self.choice.container,
            codec=self.choice.codec,
            fourcc=self.choice.fourcc,
            gray=gray,
            flush_interval_s=s.flush_interval_s,
            preset=s.preset,
            threads=s.threads,
            crf=s.crf,
            bitrate_kbps=s.bitrate_kbps,
        )

    def _open_segment(self, frame_size: Tuple[int, int]) -> None:
        reason = self.budget.enforce()
        if reason is not None:
            self._disk_stop(reason)
            return
        size = even_size(*frame_size) if self.choice.backend != "opencv" else frame_size
        path = self.namer.next_path()
        if not self.namer.is_pattern:
            keep_earlier(path)  # a fixed name: what a run before this one recorded stays
        self.namer.claim(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        paths = [path] + ([mask_video_path(path)] if self.record_mask else [])
        writers: List[FrameWriter] = []
        try:
            for i, p in enumerate(paths):
                writers.append(self._open_writer(p, size, gray=i == 1))
        except OutputError:
            for wr in writers:
                _close_quietly(wr)
            raise
        except OSError as exc:
            for wr in writers:
                _close_quietly(wr)
            if getattr(exc, "errno", None) in DISK_ERRNOS:
                self._disk_stop(f"cannot create {path}: {exc.strerror or exc}")
                return
            raise OutputError(f"cannot record {path}: {exc.strerror or exc}") from None
        self._writers = writers
        self._seg_paths = paths
        self.last_path = path
        self._seg_frames = 0
        self._last_key_s = -1e9
        self._last_pts_s = -1.0
        self.size = size
        self.segments += 1
        log.info("recording %s (%s)", path, getattr(writers[0], "description", ""))

    def _open_writer(self, path: Path, size: Tuple[int, int], gray: bool) -> FrameWriter:
        spec = self._spec(path, size, gray)
        try:
            return open_writer(self.choice.backend, spec)
        except OutputError as exc:
            if self.choice.backend != "gstreamer" or self.settings.recorder != "auto":
                raise
            # The element exists but the encoder does not run (no NVENC, busy, driver).
            fallback = choosing.choose(self.path, self.codec_setting, "pyav")
            log.warning("hardware recording failed (%s); recording with PyAV instead", exc.message)
            self.choice = fallback
            return open_writer("pyav", self._spec(path, size, gray))

    def _rotate(self) -> None:
        self._close_segment(final=False)
        assert self.size is not None
        self._open_segment(self.size)

    def _close_segment(self, final: bool) -> None:
        writers, paths = self._writers, self._seg_paths
        self._writers, self._seg_paths = [], []
        if not writers:
            return
        error: Optional[BaseException] = None
        for wr in writers:
            try:
                wr.close()
            except Exception as exc:  # noqa: BLE001 - every writer gets closed first
                error = error or exc
        if self.syncer is not None:
            for p in paths:
                self.syncer.untrack(p)
        if self._seg_frames == 0:  # a container without frames does not play
            for p in paths:
                if p.is_file():
                    p.unlink()
            log.info("nothing recorded to %s (no frames)", paths[0])
        else:
            self.budget.add_finished(Segment(list(paths)))
            log.info("recorded %d frames to %s", self._seg_frames, paths[0])
        if error is not None:
            if isinstance(error, OSError) and getattr(error, "errno", None) in DISK_ERRNOS:
                if not final:
                    self._disk_stop(f"finishing {paths[0]} failed: {error.strerror or error}")
                else:
                    log.error("finishing %s failed: %s", paths[0], error)
                return
            raise error

    def _disk_stop(self, reason: str) -> None:
        if self._writers:
            writers, paths = self._writers, self._seg_paths
            self._writers, self._seg_paths = [], []
            for wr in writers:
                _close_quietly(wr)
            if self.syncer is not None:
                for p in paths:
                    self.syncer.untrack(p)
            if self._seg_frames:
                self.budget.add_finished(Segment(list(paths)))
                log.info("recorded %d frames to %s before stopping", self._seg_frames, paths[0])
        first = self.stopped is None
        self.stopped = reason
        self._next_resume_check = time.monotonic() + RESUME_CHECK_S
        if first and self.on_stop is not None:
            self.on_stop(reason)

    def _try_resume(self, frame: np.ndarray) -> bool:
        now = time.monotonic()
        if now < self._next_resume_check:
            return False
        self._next_resume_check = now + RESUME_CHECK_S
        floor = self.budget.min_free_bytes
        margin = max(MIB, floor // 10)  # hysteresis: no stop/start flapping at the floor
        try:
            free = free_bytes(self.path.parent)
        except OSError:
            return False
        if floor and free < floor + margin:
            return False
        if "max_mib" in (self.stopped or "") and self.settings.segment_s <= 0:
            return False  # one file over its byte limit stays stopped
        self.stopped = None
        if not self.namer.is_pattern:  # never overwrite the file recorded before the stop
            self.namer = SegmentNamer(self.path, rotate=True)
        h, w = frame.shape[:2]
        self._open_segment((w, h))
        if self.stopped is not None or not self._writers:
            return False
        log.warning("recording %s resumed: %.0f MiB free", self.path, free / MIB)
        if self.on_resume is not None:
            self.on_resume()
        return True

    def stats(self) -> Dict[str, Any]:
        """Counters for the status line and --stats-json."""
        st = self.budget.state
        out: Dict[str, Any] = {
            "recorder": self.choice.backend,
            "codec": self.choice.codec.name if self.choice.codec else self.choice.fourcc,
            "crash_safe": self.choice.crash_safe,
            "segments": self.segments,
            "segment": str(self.last_path) if self.last_path else None,
            "not_recorded": self.not_recorded,
            "removed_segments": st.removed,
            "fsyncs": self.syncer.syncs if self.syncer is not None else 0,
        }
        if self.stopped is not None:
            out["error"] = f"recording stopped: {self.stopped}"
        if self.syncer is not None and self.syncer.last_error:
            out["fsync_error"] = self.syncer.last_error
        return out


def _close_quietly(writer: FrameWriter) -> None:
    try:
        writer.close()
    except Exception as exc:  # noqa: BLE001 - already stopping for a worse reason
        log.debug("closing %s: %s", writer.path, exc)
