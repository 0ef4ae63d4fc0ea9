"""Input sources: a URI in the jetson-utils convention becomes a :class:`Source`.

Supported URIs::

    demo                          synthetic person over a moving background (segcam.demo_scene)
    0, /dev/video0, v4l2:///dev/video0   V4L2 camera (OpenCV), width/height/fps/FOURCC set on it
    csi://0                       Jetson CSI camera via GStreamer nvarguscamerasrc
    rtsp://..., http(s)://...     network stream (GStreamer if OpenCV has it, else FFmpeg)
    clip.mp4, file://clip.mp4     video file (optionally looped)
    dir/, 'shots/*.jpg'           a directory or glob of images, in name order
    gst:<pipeline>                a raw GStreamer pipeline ending in appsink (one that
                                  reads a file, or has num-buffers=, ends like a file)

A Source reads one frame at a time with its capture timestamps. Live sources (cameras,
streams) that fail are reopened with exponential backoff inside ``read``; the losses and
reconnects are counted and logged and the caller never sees the gap except as time.
``interrupt()`` makes a waiting ``read`` return None promptly so the pipeline can stop.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np

from segcam import schemes
from segcam.config import InputConfig
from segcam.errors import SourceError

log = logging.getLogger("segcam.source")

FrameRead = Tuple[np.ndarray, int, int]  # (BGR uint8 frame, capture epoch ns, capture monotonic ns)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")
SCHEMES = tuple(name for entry in schemes.INPUTS for name in entry.schemes)

_FLIP_CODES = {"horizontal": 1, "vertical": 0, "both": -1}
# nvvidconv flip-method for the same flips (0 none, 4 horizontal, 6 vertical, 2 rotate-180).
_NVVIDCONV_FLIP = {"none": 0, "horizontal": 4, "vertical": 6, "both": 2}


@dataclass
class SourceSpec:
    """A parsed input URI: its kind and what it points at."""

    kind: str  # demo | camera | csi | stream | file | images | gst
    target: str  # device path, index, URL, file path, glob or pipeline
    uri: str = ""


@dataclass
class SourceStats:
    """Counters every source keeps."""

    frames: int = 0
    losses: int = 0
    reconnects: int = 0
    skipped: int = 0  # unreadable images, late realtime frames
    last_error: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


def parse_uri(uri: str) -> SourceSpec:
    """Classify an input URI; raise SourceError for an unknown scheme or empty URI."""
    text = str(uri).strip()
    if not text:
        raise SourceError("input URI is empty", "set input.uri, e.g. demo, 0 or clip.mp4")
    if text == "demo" or text.startswith("demo://"):
        return SourceSpec("demo", text, text)
    if re.fullmatch(r"\d+", text):
        return SourceSpec("camera", text, text)
    if re.fullmatch(r"/dev/video\d+", text):
        return SourceSpec("camera", text, text)
    if text.startswith("gst:"):
        pipeline = text[4:].strip()
        if not pipeline:
            raise SourceError(
                "gst: needs a pipeline after the colon", "e.g. gst:videotestsrc ! appsink"
            )
        return SourceSpec("gst", pipeline, text)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", text)
    if m:
        scheme, rest = m.group(1).lower(), m.group(2)
        entry = schemes.input_for_scheme(scheme)
        if entry is None:
            raise SourceError(
                f"unknown input scheme '{scheme}://' in {text!r}", schemes.input_examples()
            )
        if entry.kind == "camera":
            dev = rest or "/dev/video0"
            if re.fullmatch(r"\d+", dev):
                dev = f"/dev/video{dev}"
            return SourceSpec("camera", dev, text)
        if entry.kind == "csi":
            sensor = rest or "0"
            if not re.fullmatch(r"\d+", sensor):
                raise SourceError(f"csi://{rest}: the sensor id must be a number", "e.g. csi://0")
            return SourceSpec("csi", sensor, text)
        if entry.kind == "file":
            return _path_spec(rest, text)
        if entry.kind == "demo":
            return SourceSpec("demo", text, text)
        if entry.kind == "gst":
            return SourceSpec("gst", rest, text)
        return SourceSpec(entry.kind, text, text)
    return _path_spec(text, text)


def _path_spec(path: str, uri: str) -> SourceSpec:
    if any(ch in path for ch in "*?["):
        return SourceSpec("images", path, uri)
    if os.path.isdir(path):
        return SourceSpec("images", path, uri)
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return SourceSpec("images", path, uri)
    return SourceSpec("file", path, uri)


def gstreamer_support() -> Tuple[bool, str]:
    """Whether this OpenCV build runs GStreamer pipelines, and its build line ("YES (1.22)")."""
    info = cv2.getBuildInformation()
    m = re.search(r"GStreamer:\s*(\S.*)", info)
    text = m.group(1).strip() if m else "NO"
    return text.upper().startswith("YES"), text


def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV build can run GStreamer pipelines (needed for csi:// and gst:)."""
    return gstreamer_support()[0]


# Source elements that read something with an end: a gst: pipeline starting with one of
# these (or limited by num-buffers=) ends like a video file instead of being reconnected.
_FINITE_GST_SOURCES = ("filesrc", "multifilesrc", "splitmuxsrc")


def gst_pipeline_ends(pipeline: str) -> bool:
    """Whether a ``gst:`` pipeline reaches an end by itself (a file, or num-buffers=N).

    Its end is then the input's end (or, with input.loop, the pipeline starts again), not
    a lost camera to reconnect to forever.
    """
    first = pipeline.split("!", 1)[0].split()
    if not first:
        return False
    if first[0] in _FINITE_GST_SOURCES:
        return True
    if first[0] in ("uridecodebin", "uridecodebin3", "urisourcebin"):
        return any(tok.startswith("uri=file:") for tok in first[1:])
    return any(tok.startswith("num-buffers=") and tok != "num-buffers=-1" for tok in first[1:])


def csi_pipeline(sensor_id: str, width: int, height: int, fps: float, flip: str = "none") -> str:
    """The GStreamer pipeline for a Jetson CSI camera (nvarguscamerasrc -> BGR appsink)."""
    rate = max(1, int(round(fps)))
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, "
        f"framerate=(fraction){rate}/1, format=(string)NV12 ! "
        f"nvvidconv flip-method={_NVVIDCONV_FLIP.get(flip, 0)} ! "
        "video/x-raw, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! "
        "appsink drop=true max-buffers=1 sync=false"
    )


class Source:
    """Base of every source: timestamps, pacing, flips, reconnect with backoff.

    Subclasses implement ``_open()`` and ``_grab() -> Optional[np.ndarray]`` (None means
    "no frame": end of a finite stream, or a failure of a live one) and ``_close()``.
    """

    live = False  # drops the oldest frame when downstream is busy (cameras, streams)
    reconnects = False  # a failed read means "lost", not "ended"

    def __init__(self, spec: SourceSpec, cfg: InputConfig) -> None:
        self.spec = spec
        self.cfg = cfg
        self.fps = float(cfg.fps)
        self.size: Tuple[int, int] = (cfg.width, cfg.height)
        self._stats = SourceStats()
        self._interrupted = threading.Event()
        self._opened = False
        self._next_due = 0.0
        self._flip = _FLIP_CODES.get(cfg.flip)
        # Flipped frames go into two buffers used in turn (like the demo's): a frame stays
        # valid until the next read but one, and no frame-sized array is made per read.
        self._flipped: List[Optional[np.ndarray]] = [None, None]
        self._flip_turn = 0

    # -- public API -------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        """True between a successful ``open`` and ``close``."""
        return self._opened

    def open(self) -> None:
        """Open the device/file; raise SourceError naming the problem if impossible."""
        self._open()
        self._opened = True
        self._next_due = time.monotonic()
        log.info(
            "input %s opened: %dx%d @ %.1f fps%s",
            self.spec.uri,
            self.size[0],
            self.size[1],
            self.fps,
            " (live)" if self.live else "",
        )

    def read(self) -> Optional[FrameRead]:
        """Next frame with its capture timestamps, or None at the end / when interrupted.

        The frame is one of the source's own buffers, reused in turn: it stays valid until
        the read after next, so a caller that keeps it longer must copy it (the pipeline's
        capture stage copies it into a frame slot at once).
        """
        if not self._opened:
            raise SourceError(f"input {self.spec.uri}: read() before open()")
        while not self._interrupted.is_set():
            self._pace()
            if self._interrupted.is_set():
                break
            frame = self._grab()
            if frame is not None:
                ts, mono = time.time_ns(), time.monotonic_ns()
                if self._flip is not None:
                    frame = self._flip_into(frame)
                self._stats.frames += 1
                return frame, ts, mono
            if not self.reconnects:
                return None
            self._stats.losses += 1
            self._stats.last_error = f"{self.spec.uri}: no frame (device or stream lost)"
            log.warning("input %s lost; reconnecting", self.spec.uri)
            if not self._reconnect():
                return None
        return None

    def interrupt(self) -> None:
        """Make a blocked or backing-off ``read`` return None soon (used at shutdown)."""
        self._interrupted.set()

    def close(self) -> None:
        """Release the device/file. Safe to call twice."""
        if self._opened:
            self._opened = False
            self._close()

    def stats(self) -> Dict[str, Any]:
        """Frames read, losses, reconnects, skipped frames and the last error."""
        s = self._stats
        out = {
            "frames": s.frames,
            "losses": s.losses,
            "reconnects": s.reconnects,
            "skipped": s.skipped,
            "last_error": s.last_error,
        }
        out.update(s.extra)
        return out

    def _flip_into(self, frame: np.ndarray) -> np.ndarray:
        i = self._flip_turn
        self._flip_turn ^= 1
        dst = self._flipped[i]
        if dst is None or dst.shape != frame.shape or dst.dtype != frame.dtype:
            dst = self._flipped[i] = np.empty_like(frame)
        return cv2.flip(frame, self._flip, dst=dst)

    # -- helpers for subclasses -------------------------------------------------------
    @property
    def paced(self) -> bool:
        """Whether read() waits for each frame's due time (realtime files, demo)."""
        return False

    def _pace(self) -> None:
        if not self.paced:
            return
        period = 1.0 / self.fps if self.fps > 0 else 0.0
        now = time.monotonic()
        if self._next_due > now:
            self._interrupted.wait(self._next_due - now)
        # Never accumulate debt: a stalled consumer should not cause a burst afterwards.
        self._next_due = max(self._next_due + period, time.monotonic())

    def _reconnect(self) -> bool:
        backoff = self.cfg.reconnect
        delay = max(0.01, backoff.initial_s)
        attempt = 0
        while not self._interrupted.is_set():
            attempt += 1
            if self._interrupted.wait(delay):
                return False
            try:
                self._close()
                self._open()
            except SourceError as exc:
                self._stats.last_error = exc.message
                log.warning(
                    "input %s: reconnect attempt %d failed: %s", self.spec.uri, attempt, exc.message
                )
                if backoff.max_attempts and attempt >= backoff.max_attempts:
                    raise SourceError(
                        f"input {self.spec.uri} lost and not back after {attempt} attempts",
                        "check the cable/stream; raise input.reconnect.max_attempts (0 = forever)",
                    ) from None
                delay = min(backoff.max_s, delay * 2)
                continue
            self._stats.reconnects += 1
            log.info("input %s reconnected after %d attempt(s)", self.spec.uri, attempt)
            return True
        return False

    # -- to implement -----------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _grab(self) -> Optional[np.ndarray]:
        raise NotImplementedError

    def _close(self) -> None:
        pass


class DemoSource(Source):
    """The synthetic demo scene; endless. Paced at ``fps`` (and live) when ``realtime``."""

    def __init__(self, spec: SourceSpec, cfg: InputConfig) -> None:
        super().__init__(spec, cfg)
        self.live = bool(cfg.realtime)
        self.scene = None
        self.index = -1  # render index of the frame last returned (= its frame id)
        self._frames: List[np.ndarray] = []

    @property
    def paced(self) -> bool:
        return bool(self.cfg.realtime)

    def _open(self) -> None:
        from segcam.demo_scene import DemoScene

        self.scene = DemoScene(self.cfg.width, self.cfg.height, self.cfg.fps)
        # Two buffers rendered alternately: the consumer copies a frame before asking again.
        self._frames = [np.empty((self.cfg.height, self.cfg.width, 3), np.uint8) for _ in range(2)]
        self._truth = np.empty((self.cfg.height, self.cfg.width), np.uint8)

    def _grab(self) -> Optional[np.ndarray]:
        self.index += 1
        buf = self._frames[self.index % 2]
        self.scene.render(self.index, buf, self._truth)
        return buf

    def truth(self, index: int) -> np.ndarray:
        """Ground-truth person silhouette (uint8 0/1) of demo frame ``index``."""
        return self.scene.render(index)[1]


class CaptureSource(Source):
    """Anything cv2.VideoCapture opens: cameras, CSI/GStreamer, streams, video files."""

    def __init__(self, spec: SourceSpec, cfg: InputConfig) -> None:
        super().__init__(spec, cfg)
        self._cap: Optional[cv2.VideoCapture] = None
        kind = spec.kind
        # A gst: pipeline that reads a file (or counts its buffers) is finite, like a file.
        self.finite_gst = kind == "gst" and gst_pipeline_ends(spec.target)
        finite = kind == "file" or self.finite_gst
        self.live = (kind in ("camera", "csi", "stream", "gst") and not finite) or (
            finite and cfg.realtime
        )
        self.reconnects = kind in ("camera", "csi", "stream", "gst") and not finite
        self.frame_count = 0
        self._pass_frames = 0  # frames decoded since the file was opened or rewound
        # Decoded frames go into two buffers used in turn (see Source._flipped).
        self._decoded: List[Optional[np.ndarray]] = [None, None]
        self._turn = 0

    @property
    def paced(self) -> bool:
        return (self.spec.kind == "file" or self.finite_gst) and bool(self.cfg.realtime)

    def _open(self) -> None:
        kind, target = self.spec.kind, self.spec.target
        if kind == "camera":
            self._cap = self._open_camera(target)
        elif kind == "csi":
            self._need_gstreamer()
            pipe = csi_pipeline(
                target, self.cfg.width, self.cfg.height, self.cfg.fps, self.cfg.flip
            )
            self._flip = None  # nvvidconv already flipped
            self._cap = self._checked(
                cv2.VideoCapture(pipe, cv2.CAP_GSTREAMER),
                f"CSI camera {target} did not start",
                "is nvargus-daemon running and the camera connected? "
                "try: gst-launch-1.0 nvarguscamerasrc ! fakesink",
            )
        elif kind == "gst":
            self._need_gstreamer()
            self._cap = self._checked(
                cv2.VideoCapture(target, cv2.CAP_GSTREAMER),
                "GStreamer pipeline did not start",
                "test it with gst-launch-1.0; it must end in appsink",
            )
        elif kind == "stream":
            backend = cv2.CAP_GSTREAMER if opencv_has_gstreamer() else cv2.CAP_FFMPEG
            cap = cv2.VideoCapture(target, backend)
            if not cap.isOpened() and backend == cv2.CAP_GSTREAMER:
                cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG)
            self._cap = self._checked(
                cap,
                f"cannot open stream {target}",
                "check the URL, credentials and that the server is up",
            )
        else:  # file
            if not os.path.isfile(target):
                raise SourceError(
                    f"input file {target} does not exist",
                    "check the path (relative paths start at the current directory)",
                )
            self._cap = self._checked(
                cv2.VideoCapture(target),
                f"cannot decode video {target}",
                "is it a video file OpenCV's FFmpeg can read?",
            )
            self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if fps and 0 < fps < 1000:
            self.fps = float(fps)
        w = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        h = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w > 0 and h > 0:
            self.size = (w, h)

    def _open_camera(self, target: str) -> cv2.VideoCapture:
        index: Any = int(target) if target.isdigit() else target
        path = f"/dev/video{target}" if target.isdigit() else target
        if not os.path.exists(path):
            raise SourceError(
                f"no camera at {path}",
                "is it plugged in? `ls /dev/video*` lists cameras; "
                "`segcam doctor` shows their formats",
            )
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceError(
                f"camera {path} cannot be opened",
                "is another program using it? is your user in the 'video' group?",
            )
        if self.cfg.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.cfg.fourcc[:4].ljust(4)))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        cap.set(cv2.CAP_PROP_FPS, self.cfg.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of stale ones
        return cap

    @staticmethod
    def _checked(cap: cv2.VideoCapture, message: str, hint: str) -> cv2.VideoCapture:
        if not cap.isOpened():
            cap.release()
            raise SourceError(message, hint)
        return cap

    def _need_gstreamer(self) -> None:
        if not opencv_has_gstreamer():
            raise SourceError(
                f"{self.spec.uri} needs OpenCV built with GStreamer, and this OpenCV has none",
                "on a Jetson use JetPack's python3-opencv (create the venv with "
                "--system-site-packages and do not pip-install opencv there)",
            )

    def _grab(self) -> Optional[np.ndarray]:
        cap = self._cap
        if cap is None:
            return None
        frame = self._read_into(cap)
        if frame is not None:
            self._pass_frames += 1
            return frame
        if self.finite_gst and self.cfg.loop and self._stats.frames > 0:
            self._close()  # a pipeline at its end cannot seek through OpenCV: start it again
            self._open()
            return self._read_into(self._cap) if self._cap is not None else None
        if self.spec.kind != "file":
            return None
        self._check_complete()
        if self.cfg.loop and self._stats.frames > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._pass_frames = 0
            frame = self._read_into(cap)
            if frame is not None:
                self._pass_frames += 1
            return frame
        return None

    def _check_complete(self) -> None:
        """Warn when a file ends before the frame count its container declares.

        A damaged or truncated file otherwise ends like a whole one, with exit code 0.
        The count is the container's (sometimes an estimate from duration x fps), so a
        shortfall of a frame or two, or under 1%, is not reported.
        """
        declared, reached = self.frame_count, self._pass_frames
        if declared <= 0 or reached >= declared - max(2, declared // 100):
            return
        self._stats.extra["ended_early"] = {"reached": reached, "declared": declared}
        log.warning(
            "input %s ended at frame %d of the %d its container declares: the file may be "
            "damaged or truncated (check it with ffprobe)",
            self.spec.uri,
            reached,
            declared,
        )

    def _read_into(self, cap: cv2.VideoCapture) -> Optional[np.ndarray]:
        """One decoded frame, written into this turn's buffer (OpenCV reuses it when the
        size matches, else makes a new one, which is then kept)."""
        buf = self._decoded[self._turn]
        ok, frame = cap.read(buf) if buf is not None else cap.read()
        if not ok or frame is None:
            return None
        self._decoded[self._turn] = frame
        self._turn ^= 1
        return frame

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageSource(Source):
    """A directory or glob of images, in name order; optionally looped.

    A file that cannot be read is skipped and counted. If every file of the set has gone
    (a network folder unmounted, say) the source reports a loss and rescans with backoff.
    """

    def __init__(self, spec: SourceSpec, cfg: InputConfig) -> None:
        super().__init__(spec, cfg)
        self.live = bool(cfg.realtime)
        self.reconnects = bool(cfg.loop)  # an endless slideshow should survive a rescan
        self._files: List[str] = []
        self._pos = 0
        self._missing_in_row = 0

    @property
    def paced(self) -> bool:
        return bool(self.cfg.realtime)

    def _scan(self) -> List[str]:
        target = self.spec.target
        if os.path.isdir(target):
            names = [os.path.join(target, n) for n in os.listdir(target)]
        else:
            names = glob.glob(os.path.expanduser(target))
        return sorted(
            n for n in names if n.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(n)
        )

    def _open(self) -> None:
        self._files = self._scan()
        if not self._files:
            raise SourceError(
                f"no images found at {self.spec.target}",
                f"expected files ending in {', '.join(IMAGE_EXTENSIONS)}",
            )
        self._pos = 0
        self._missing_in_row = 0
        first = cv2.imread(self._files[0], cv2.IMREAD_COLOR)
        if first is not None:
            self.size = (first.shape[1], first.shape[0])
        self.frame_count = len(self._files)

    def _grab(self) -> Optional[np.ndarray]:
        while self._files:
            if self._pos >= len(self._files):
                if not self.cfg.loop:
                    return None
                self._pos = 0
            path = self._files[self._pos]
            self._pos += 1
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                self._stats.skipped += 1
                self._missing_in_row += 1
                log.warning("input: cannot read image %s; skipped", path)
                if self._missing_in_row >= len(self._files):
                    return None  # the whole set is gone: report a loss, rescan on reconnect
                continue
            self._missing_in_row = 0
            if (img.shape[1], img.shape[0]) != self.size:
                # The pipeline's frame slots have one size: fit odd images to the first one.
                img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
            return img
        return None


def open_source(cfg: InputConfig) -> Source:
    """Build (not yet open) the Source for ``cfg.uri``; raise SourceError if unusable."""
    spec = parse_uri(cfg.uri)
    if spec.kind == "file" and not Path(spec.target).exists():
        raise SourceError(
            f"input file {spec.target} does not exist",
            "check the path, or use demo / a camera (0, csi://0)",
        )
    source: Source = schemes.input_kind(spec.kind).build(spec, cfg)
    return source
