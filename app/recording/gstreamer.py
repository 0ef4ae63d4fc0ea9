"""Hardware H.264 on a Jetson: OpenCV's GStreamer backend feeding ``nvv4l2h264enc``.

Element names are those of NVIDIA's *Accelerated GStreamer* guide for JetPack 5 (L4T
r35) and JetPack 6 (r36), which share them: ``nvvidconv`` copies system-memory frames
into NVMM buffers (it takes BGRx, not BGR: ``videoconvert`` comes first), the V4L2
encoder ``nvv4l2h264enc`` (``bitrate`` in bit/s, ``iframeinterval``/``idrinterval`` in
frames, ``insert-sps-pps`` so every IDR carries its parameter sets, ``control-rate`` 1 =
constant), then ``h264parse`` and a muxer that keeps the file playable while it grows:
``mp4mux fragment-duration=<ms>`` (fragmented MP4) or ``matroskamux``.

:func:`pipeline_string` builds the whole ``appsrc ! ... ! filesink`` description in one
place; with ``encoder="x264enc"`` the same pipeline runs on any machine whose OpenCV has
GStreamer (Debian's python3-opencv), which is how it is tested off a Jetson. The Orin
Nano has no hardware encoder: there the element may exist but the pipeline cannot run,
so the recorder falls back to PyAV.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Tuple

import cv2
import numpy as np

from segcam.errors import OutputError
from segcam.recording.writer import WriterSpec, describe

HW_ENCODER = "nvv4l2h264enc"
_MODEL = Path("/proc/device-tree/model")


def _quote(path: Path) -> str:
    text = str(path)
    if '"' in text:
        raise OutputError(f"cannot record {text!r} through GStreamer: the name contains a quote")
    return f'"{text}"'


def pipeline_string(spec: WriterSpec, encoder: str = HW_ENCODER) -> str:
    """The ``cv2.VideoWriter`` GStreamer pipeline recording ``spec`` with ``encoder``.

    ``encoder`` is ``nvv4l2h264enc`` on a Jetson; ``x264enc`` gives the same pipeline in
    software (tests on machines without NVIDIA's plugins).
    """
    w, h = spec.size
    fmt = "GRAY8" if spec.gray else "BGR"
    # OpenCV's writer stamps each buffer with frame_index / fps: keep those timestamps.
    src = f"appsrc ! video/x-raw,format={fmt},width={w},height={h}"
    gop = spec.gop
    if encoder == HW_ENCODER:
        enc = (
            "videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! "
            "video/x-raw(memory:NVMM),format=NV12 ! "
            f"{HW_ENCODER} bitrate={spec.bitrate_bps()} control-rate=1 "
            f"iframeinterval={gop} idrinterval={gop} insert-sps-pps=true maxperf-enable=true"
        )
    elif encoder == "x264enc":
        kbps = max(1, spec.bitrate_bps() // 1000)
        enc = (
            "videoconvert ! video/x-raw,format=I420 ! "
            f"x264enc tune=zerolatency speed-preset={spec.preset} bitrate={kbps} "
            f"key-int-max={gop} threads={max(1, spec.threads)}"
        )
    else:
        raise OutputError(f"no GStreamer pipeline for encoder {encoder!r}")
    if spec.container.name in ("mp4", "mov"):
        ms = max(100, int(spec.flush_interval_s * 1000))
        mux = f"mp4mux fragment-duration={ms}"
    elif spec.container.name == "mkv":
        mux = "matroskamux"
    else:
        raise OutputError(
            f"the GStreamer recorder writes .mp4, .mov or .mkv, not .{spec.container.name}",
            "use a .mp4 file, or output.record.recorder pyav",
        )
    return f"{src} ! queue ! {enc} ! h264parse ! {mux} ! filesink location={_quote(spec.path)}"


@functools.lru_cache(maxsize=None)
def opencv_has_gstreamer() -> bool:
    """Whether this OpenCV was built with the GStreamer backend (JetPack's is)."""
    m = re.search(r"GStreamer:\s*(\S+)", cv2.getBuildInformation())
    return bool(m and m.group(1).upper().startswith("YES"))


@functools.lru_cache(maxsize=None)
def element_exists(name: str) -> bool:
    """Whether GStreamer has element ``name`` (GObject introspection, else gst-inspect-1.0)."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst

        Gst.init(None)
        return Gst.ElementFactory.find(name) is not None
    except (ImportError, ValueError):
        pass
    tool = shutil.which("gst-inspect-1.0")
    if tool is None:
        return False
    try:
        done = subprocess.run(
            [tool, "--exists", name], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _has_hardware_encoder() -> Tuple[bool, str]:
    try:
        model = _MODEL.read_text(errors="replace").replace("\x00", "").strip()
    except OSError:
        model = ""
    if "orin nano" in model.lower():
        return False, f"{model} has no hardware video encoder"
    return True, model


def available() -> Tuple[bool, str]:
    """Whether hardware H.264 recording through GStreamer can run here, and why (not)."""
    if not opencv_has_gstreamer():
        return False, "OpenCV has no GStreamer (JetPack's python3-opencv has it)"
    if not element_exists(HW_ENCODER):
        return False, f"GStreamer has no {HW_ENCODER} (NVIDIA's Jetson plugins)"
    ok, why = _has_hardware_encoder()
    if not ok:
        return False, why
    return True, f"{HW_ENCODER} through OpenCV's GStreamer"


class GStreamerWriter:
    """One file written by a GStreamer pipeline behind ``cv2.VideoWriter``."""

    backend = "gstreamer"

    def __init__(self, spec: WriterSpec, encoder: str = HW_ENCODER) -> None:
        if spec.codec is None or spec.codec.name != "h264":
            raise OutputError(
                "the GStreamer recorder encodes H.264 only",
                "set output.codec auto or h264, or output.record.recorder pyav",
            )
        self.spec = spec
        self.path = spec.path
        self.pipeline = pipeline_string(spec, encoder)
        writer = cv2.VideoWriter(
            self.pipeline, cv2.CAP_GSTREAMER, 0, spec.fps, spec.size, not spec.gray
        )
        if not writer.isOpened():
            raise OutputError(
                f"cannot start the GStreamer recording pipeline for {spec.path}",
                f"check it with gst-launch-1.0 (videotestsrc instead of appsrc): {self.pipeline}",
            )
        self._writer = writer
        self.description = describe(spec, self.backend, encoder)

    def write(self, image: np.ndarray, pts_s: float, keyframe: bool) -> None:
        """Push one frame into appsrc (timestamps come from the pipeline clock)."""
        self._writer.write(image)

    def close(self) -> None:
        """Send end-of-stream: the muxer finishes the file."""
        self._writer.release()


def open_writer(spec: WriterSpec, encoder: str = HW_ENCODER) -> GStreamerWriter:
    """Open ``spec.path`` through GStreamer (OutputError if the pipeline cannot start)."""
    return GStreamerWriter(spec, encoder)
