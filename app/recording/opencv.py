"""The last-resort recorder: ``cv2.VideoWriter`` with a FOURCC.

Its MP4/MOV files get their index only when closed, so a killed process leaves a file
that does not play; MKV and AVI keep most frames but nothing is fsynced by the writer
itself (the recorder's Syncer still syncs the file). Chosen only when neither GStreamer's
hardware encoder nor PyAV is available, or when ``output.codec`` is a FOURCC that only
OpenCV knows; the recorder warns each time.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from segcam.errors import OutputError
from segcam.recording.writer import WriterSpec, describe

# What OpenCV's own FFmpeg can always encode, per container: pip's opencv-python wheels
# have no H.264 (or VP9) encoder, and the writer only finds that out when it opens.
FALLBACK_FOURCC = {"mp4": "mp4v", "mov": "mp4v", "mkv": "MJPG", "avi": "MJPG"}

log = logging.getLogger("segcam.record")


class OpenCVWriter:
    """One file written by ``cv2.VideoWriter`` (constant frame rate, no forced keyframes)."""

    backend = "opencv"

    def __init__(self, spec: WriterSpec) -> None:
        self.spec = spec
        self.path = spec.path
        fourcc = spec.codec.fourcc if spec.codec is not None else spec.fourcc
        writer = self._open(fourcc)
        fallback = FALLBACK_FOURCC.get(spec.container.name)
        if not writer.isOpened() and spec.codec is not None and fallback:
            # A named codec (auto, h264, ...) this OpenCV cannot encode: record the
            # container's basic codec instead of failing; a FOURCC asked for is kept.
            log.warning(
                "OpenCV's writer cannot encode %s here; recording %s with %s instead "
                "(for %s: pip install 'segcam[record]')",
                spec.codec.label,
                spec.path,
                fallback,
                spec.codec.label,
            )
            fourcc = fallback
            writer = self._open(fourcc)
        self.fourcc = fourcc
        if not writer.isOpened():
            raise OutputError(
                f"cannot record {spec.path} with the OpenCV writer and codec {fourcc!r}",
                "this OpenCV build cannot write that codec/container; try output.codec=mp4v "
                "with a .mp4 file, or MJPG with .avi (or install PyAV: pip install "
                "'segcam[record]')",
            )
        self._writer = writer
        self.description = describe(spec, self.backend, f"OpenCV {fourcc}")

    def _open(self, fourcc: str) -> cv2.VideoWriter:
        spec = self.spec
        return cv2.VideoWriter(
            str(spec.path), cv2.VideoWriter_fourcc(*fourcc), spec.fps, spec.size, not spec.gray
        )

    def write(self, image: np.ndarray, pts_s: float, keyframe: bool) -> None:
        """Append one frame (the writer's rate is fixed: ``pts_s`` is not used)."""
        self._writer.write(image)

    def close(self) -> None:
        """Write the index/trailer."""
        self._writer.release()


def open_writer(spec: WriterSpec) -> OpenCVWriter:
    """Open ``spec.path`` with cv2.VideoWriter (OutputError if this build cannot)."""
    return OpenCVWriter(spec)
