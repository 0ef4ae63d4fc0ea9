"""Codecs and containers a recording can use: the one table every writer reads.

A container is chosen by the file's suffix; ``output.codec`` names a codec (``auto`` picks
the container's browser-playable default) or, for the OpenCV writer only, any FOURCC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

from segcam.errors import OutputError


@dataclass(frozen=True)
class Codec:
    """One video codec and how each writer names it."""

    name: str  # key of CODECS and the value of output.codec
    label: str
    pyav: str  # FFmpeg encoder (PyAV)
    fourcc: str  # cv2.VideoWriter FOURCC
    licence: str  # of the encoder library that PyAV's wheels bundle
    browser: bool  # plays in current browsers (in a container they accept)


@dataclass(frozen=True)
class Container:
    """One container, chosen by suffix."""

    name: str
    av_format: str  # FFmpeg muxer
    suffixes: Tuple[str, ...]
    codecs: Tuple[str, ...]  # codecs this container carries (first = default)
    crash_safe: bool  # readable up to its last fragment/cluster when the process dies
    browser_codecs: Tuple[str, ...]  # which of them a browser plays in this container


CODECS: Dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("h264", "H.264", "libx264", "avc1", "GPL-2.0+ (libx264)", True),
        Codec("vp8", "VP8", "libvpx", "VP80", "BSD-3-Clause (libvpx)", True),
        Codec("vp9", "VP9", "libvpx-vp9", "VP90", "BSD-3-Clause (libvpx)", True),
        Codec("mp4v", "MPEG-4 Part 2", "mpeg4", "mp4v", "LGPL-2.1+ (FFmpeg)", False),
        Codec("mjpg", "Motion JPEG", "mjpeg", "MJPG", "LGPL-2.1+ (FFmpeg)", False),
    )
}

CONTAINERS: Dict[str, Container] = {
    c.name: c
    for c in (
        # Fragmented MP4: an empty moov up front, then a moof+mdat per keyframe interval.
        Container("mp4", "mp4", (".mp4", ".m4v"), ("h264", "vp9", "mp4v"), True, ("h264", "vp9")),
        Container("mov", "mov", (".mov",), ("h264", "mp4v", "mjpg"), True, ("h264",)),
        Container("mkv", "matroska", (".mkv",), ("h264", "vp9", "vp8", "mp4v", "mjpg"), True, ()),
        Container("webm", "webm", (".webm",), ("vp9", "vp8"), True, ("vp9", "vp8")),
        # AVI keeps its index at the end: only the OpenCV writer records it, not crash-safe.
        Container("avi", "avi", (".avi",), ("mjpg", "mp4v"), False, ()),
    )
}

VIDEO_SUFFIXES = tuple(s for c in CONTAINERS.values() for s in c.suffixes)

# Spellings users type for a codec (FOURCCs of the old OpenCV-only setting included).
_ALIASES = {
    "h264": "h264",
    "avc1": "h264",
    "avc": "h264",
    "x264": "h264",
    "vp8": "vp8",
    "vp80": "vp8",
    "vp9": "vp9",
    "vp90": "vp9",
    "mp4v": "mp4v",
    "mpeg4": "mp4v",
    "mjpg": "mjpg",
    "mjpeg": "mjpg",
}


def container_for(path: Path) -> Container:
    """The container of ``path`` by its suffix (OutputError for an unknown one)."""
    suffix = path.suffix.lower()
    for cont in CONTAINERS.values():
        if suffix in cont.suffixes:
            return cont
    raise OutputError(
        f"cannot record {path}: unknown video suffix {suffix or '(none)'!r}",
        "use .mp4 (H.264, plays in browsers), .webm (VP9/VP8), .mkv, .mov or .avi",
    )


def check_codec_name(setting: str) -> None:
    """Raise OutputError unless ``setting`` is auto, a known codec or a FOURCC."""
    text = (setting or "auto").strip()
    if text.lower() == "auto" or text.lower() in _ALIASES:
        return
    if len(text) == 4 and text.isalnum():
        return
    raise OutputError(
        f"output.codec {text!r} is not a codec",
        "use auto, h264, vp9, vp8, mp4v, mjpg, or a four-character code for the OpenCV writer",
    )


def resolve_codec(setting: str, container: Container) -> Tuple[Optional[Codec], str]:
    """``output.codec`` for ``container``: (Codec, "") or (None, FOURCC) for OpenCV only.

    Raises OutputError when the container cannot carry the codec or the name is unknown.
    """
    text = (setting or "auto").strip()
    if text.lower() == "auto":
        return CODECS[container.codecs[0]], ""
    check_codec_name(text)
    name = _ALIASES.get(text.lower())
    if name is None:
        return None, text  # a FOURCC the OpenCV writer may know (XVID, ...)
    if name not in container.codecs:
        raise OutputError(
            f"output.codec {name} cannot go in a .{container.name} file",
            f".{container.name} carries {', '.join(container.codecs)}; or change the suffix "
            "(.mp4 for h264, .webm for vp9/vp8)",
        )
    return CODECS[name], ""
