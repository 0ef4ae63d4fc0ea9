"""What every recorder backend implements, and what it is given to open a file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol, Tuple

import numpy as np

from segcam.recording.formats import Codec, Container


@dataclass(frozen=True)
class WriterSpec:
    """One file to open: where, what size and rate, which codec, and the tuning knobs."""

    path: Path
    size: Tuple[int, int]  # (width, height), even numbers
    fps: float
    container: Container
    codec: Optional[Codec]  # None: ``fourcc`` for the OpenCV writer only
    fourcc: str
    gray: bool  # a single-channel image (the mask video)
    flush_interval_s: float
    preset: str
    threads: int
    crf: int
    bitrate_kbps: int

    @property
    def gop(self) -> int:
        """Keyframe interval in frames: one fragment (and one flush) per interval."""
        return max(1, int(round(self.fps * self.flush_interval_s)))

    def bitrate_bps(self) -> int:
        """Target bitrate for encoders that need one: the setting, else ~0.1 bit per pixel."""
        if self.bitrate_kbps > 0:
            return self.bitrate_kbps * 1000
        w, h = self.size
        return max(500_000, int(w * h * self.fps * 0.1))


class FrameWriter(Protocol):
    """An open recording of one stream (the composite or the mask) into one file."""

    path: Path
    backend: str  # "pyav" | "gstreamer" | "opencv"

    def write(self, image: np.ndarray, pts_s: float, keyframe: bool) -> None:
        """Encode one BGR (or gray) image of ``spec.size`` at media time ``pts_s``.

        ``keyframe`` asks for a keyframe (a fragment boundary); writers that cannot force
        one keep a fixed keyframe interval of ``spec.gop`` frames instead.
        """

    def close(self) -> None:
        """Finish the file (flush the encoder, write the trailer)."""


def even_size(width: int, height: int) -> Tuple[int, int]:
    """4:2:0 encoders need even sizes: drop an odd last column/row."""
    return max(2, width - width % 2), max(2, height - height % 2)


def describe(spec: WriterSpec, backend: str, encoder: str) -> str:
    """``1280x720 @ 30 fps, H.264 (libx264 ultrafast) in fragmented MP4`` for logs."""
    w, h = spec.size
    name = spec.codec.label if spec.codec is not None else spec.fourcc
    cont = "fragmented MP4" if spec.container.name in ("mp4", "mov") else spec.container.name
    if not spec.container.crash_safe or backend == "opencv":
        cont = f"{spec.container.name} (not crash-safe)"
    return f"{w}x{h} @ {spec.fps:g} fps, {name} ({encoder}) in {cont}"
