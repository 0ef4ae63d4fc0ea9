"""Recording through PyAV (FFmpeg): fragmented MP4 / Matroska / WebM, CPU encoders.

Crash safety comes from the container: MP4 is written fragmented (an empty ``moov`` up
front, then one ``moof``+``mdat`` per keyframe: ``movflags=frag_keyframe+empty_moov+
default_base_moof``), Matroska/WebM close a cluster at least every flush interval. The
recorder asks for a keyframe every ``output.record.flush_interval_s``; when it is muxed,
the previous fragment reaches the file, so a killed process leaves a file that plays up to
its last complete fragment. Encoders are tuned for live use: x264 with a fast preset and
``tune=zerolatency`` (no lookahead, no frame delay), libvpx in realtime mode without
lag, and a bounded thread count so the pipeline keeps its cores.

PyAV's wheels bundle FFmpeg with libx264 (GPL) and libvpx (BSD); PyAV itself is optional
(``pip install segcam[record]``).
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from segcam.errors import OutputError
from segcam.recording.writer import WriterSpec, describe

log = logging.getLogger("segcam.record")

TIME_BASE = Fraction(1, 1000)  # milliseconds: fine enough for any camera, valid for every muxer


def available() -> Tuple[bool, str]:
    """Whether PyAV imports here, and its version or why not."""
    try:
        import av
    except ImportError as exc:
        return False, f"PyAV not installed ({exc}); pip install 'segcam[record]'"
    return True, f"PyAV {av.__version__}"


def has_encoder(name: str) -> bool:
    """Whether this PyAV's FFmpeg has encoder ``name`` (libx264, libvpx-vp9, ...)."""
    try:
        import av

        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - ImportError, UnknownCodecError: not available
        return False
    return True


def container_options(spec: WriterSpec) -> Dict[str, str]:
    """Muxer options that keep the file readable up to its last flush."""
    if spec.container.av_format in ("mp4", "mov"):
        return {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
    if spec.container.av_format in ("matroska", "webm"):
        ms = max(100, int(spec.flush_interval_s * 1000))
        return {"cluster_time_limit": str(ms), "flush_packets": "1"}
    return {}


def encoder_options(spec: WriterSpec) -> Dict[str, str]:
    """Encoder options for live recording (fast, no frame delay)."""
    assert spec.codec is not None
    enc = spec.codec.pyav
    if enc == "libx264":
        opts = {"preset": spec.preset, "tune": "zerolatency"}
        if spec.bitrate_kbps > 0:
            opts["b"] = str(spec.bitrate_bps())
        else:
            opts["crf"] = str(spec.crf)
        # A fixed keyframe cadence, no scene-cut keyframes between (fragments stay even).
        opts["x264-params"] = f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0"
        return opts
    if enc in ("libvpx", "libvpx-vp9"):
        opts = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        if enc == "libvpx-vp9":
            opts["row-mt"] = "1"
        if spec.bitrate_kbps > 0:
            opts["b"] = str(spec.bitrate_bps())
        else:  # constant quality: libvpx reads crf with b=0 (VP9) or as a cap (VP8)
            opts["crf"] = str(max(4, min(63, spec.crf + 8)))
            opts["b"] = "0" if enc == "libvpx-vp9" else str(spec.bitrate_bps())
        return opts
    return {"b": str(spec.bitrate_bps())}  # mpeg4, mjpeg: a bitrate is their only knob


class PyAVWriter:
    """One file written through PyAV; see the module docstring for what makes it safe."""

    backend = "pyav"

    def __init__(self, spec: WriterSpec) -> None:
        import av

        if spec.codec is None:
            raise OutputError(
                f"PyAV cannot record FOURCC {spec.fourcc!r}",
                "use output.codec h264, vp9, vp8, mp4v or mjpg (or output.record.recorder "
                "opencv for other FOURCCs)",
            )
        self.spec = spec
        self.path = spec.path
        self._last_pts = -1
        w, h = spec.size
        try:
            self._container: Any = av.open(
                str(spec.path),
                "w",
                format=spec.container.av_format,
                options=container_options(spec),
            )
        except (OSError, av.error.FFmpegError) as exc:
            raise OutputError(f"cannot record {spec.path}: {exc}") from None
        try:
            rate = Fraction(spec.fps).limit_denominator(1001)
            stream = self._container.add_stream(
                spec.codec.pyav, rate=rate, options=encoder_options(spec)
            )
            stream.width, stream.height = w, h
            stream.pix_fmt = "yuvj420p" if spec.codec.pyav == "mjpeg" else "yuv420p"
            stream.time_base = TIME_BASE
            cc = stream.codec_context
            cc.time_base = TIME_BASE
            cc.framerate = rate
            cc.gop_size = spec.gop
            cc.thread_count = max(1, spec.threads)
            self._stream = stream
            self._container.start_encoding()
        except Exception as exc:  # noqa: BLE001 - FFmpeg/PyAV errors of many kinds: one message
            self._container.close()
            raise OutputError(
                f"cannot record {spec.path} with {spec.codec.pyav}: {exc}",
                "choose another output.codec, or output.record.recorder opencv",
            ) from None
        self._i420: Optional[np.ndarray] = None
        self.description = describe(spec, self.backend, self.encoder_name())

    def encoder_name(self) -> str:
        """``libx264 ultrafast, 1 thread`` for logs and doctor."""
        assert self.spec.codec is not None
        enc = self.spec.codec.pyav
        extra = f" {self.spec.preset}" if enc == "libx264" else ""
        n = max(1, self.spec.threads)
        return f"PyAV {enc}{extra}, {n} thread{'s' if n > 1 else ''}"

    def write(self, image: np.ndarray, pts_s: float, keyframe: bool) -> None:
        """Encode one image at ``pts_s`` (strictly increasing ms), keyframe on request."""
        import av
        from av.video.frame import PictureType

        if image.ndim == 2:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="gray")
        else:
            # OpenCV's converter is multi-threaded and faster than swscale for BGR->I420.
            self._i420 = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420, dst=self._i420)
            frame = av.VideoFrame.from_ndarray(self._i420, format="yuv420p")
        pts = max(int(round(pts_s * 1000)), self._last_pts + 1)
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = TIME_BASE
        if keyframe:
            frame.pict_type = PictureType.I
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self) -> None:
        """Drain the encoder and write the trailer (the index of a finished file)."""
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()


def open_writer(spec: WriterSpec) -> PyAVWriter:
    """Open ``spec.path`` for recording (OutputError with a hint if impossible)."""
    return PyAVWriter(spec)
