"""Which writer records a file here, and why: the one place that decides.

``output.record.recorder: auto`` prefers, for H.264 in MP4/MKV, NVIDIA's hardware encoder
through GStreamer (a Jetson with JetPack's OpenCV), then PyAV's CPU encoders (any
container that survives a crash), and only then OpenCV's writer, with a warning that its
file is not crash-safe. The reason is logged when recording starts and shown by
``segcam doctor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from segcam.errors import OutputError
from segcam.recording import gstreamer, pyav
from segcam.recording.formats import Codec, Container, container_for, resolve_codec

RECORDERS = ("auto", "gstreamer", "pyav", "opencv")


@dataclass(frozen=True)
class Choice:
    """The writer chosen for one output and why."""

    backend: str  # gstreamer | pyav | opencv
    container: Container
    codec: Optional[Codec]
    fourcc: str  # OpenCV-only FOURCC when codec is None
    reason: str
    crash_safe: bool
    browser: bool

    def summary(self) -> str:
        """``pyav: H.264 in .mp4 (crash-safe, plays in browsers): <reason>``."""
        name = self.codec.label if self.codec is not None else self.fourcc
        props = ["crash-safe" if self.crash_safe else "NOT crash-safe"]
        if self.browser:
            props.append("plays in browsers")
        where = f".{self.container.name} ({', '.join(props)})"
        return f"{self.backend}: {name} in {where}; {self.reason}"


Probe = Callable[[], Tuple[bool, str]]


def _probes() -> Dict[str, Probe]:
    return {"gstreamer": gstreamer.available, "pyav": pyav.available}


def choose(
    path: Path, codec_setting: str, recorder: str, probes: Optional[Dict[str, Probe]] = None
) -> Choice:
    """The writer for ``path`` given ``output.codec`` and ``output.record.recorder``.

    ``probes`` replaces the availability checks (tests). Raises OutputError when the
    asked-for recorder cannot record here, naming why and what to do.
    """
    probes = probes or _probes()
    container = container_for(path)
    codec, fourcc = resolve_codec(codec_setting, container)
    if recorder not in RECORDERS:
        raise OutputError(
            f"output.record.recorder {recorder!r} is not a recorder",
            f"use one of {', '.join(RECORDERS)}",
        )

    def make(backend: str, reason: str) -> Choice:
        safe = container.crash_safe and backend != "opencv"
        browser = codec is not None and codec.name in container.browser_codecs
        return Choice(backend, container, codec, fourcc, reason, safe, browser)

    gst_ok, gst_why = probes["gstreamer"]()
    av_ok, av_why = probes["pyav"]()
    hw_fits = codec is not None and codec.name == "h264" and container.name in ("mp4", "mov", "mkv")
    av_encoder_ok = av_ok and codec is not None and pyav.has_encoder(codec.pyav)

    if recorder == "gstreamer":
        if not hw_fits:
            raise OutputError(
                "output.record.recorder gstreamer records H.264 in .mp4/.mov/.mkv only",
                "use output.codec h264 with a .mp4 file, or recorder auto",
            )
        if not gst_ok:
            raise OutputError(
                f"output.record.recorder gstreamer is not available: {gst_why}",
                "use output.record.recorder auto (PyAV on the CPU)",
            )
        return make("gstreamer", f"hardware H.264: {gst_why}")
    if recorder == "pyav":
        if not av_ok:
            raise OutputError(f"output.record.recorder pyav: {av_why}")
        if not av_encoder_ok or not container.crash_safe:
            what = codec.pyav if codec is not None else fourcc
            raise OutputError(
                f"output.record.recorder pyav cannot write {what} in .{container.name}",
                "use .mp4/.mkv/.webm with output.codec auto, h264, vp9 or vp8",
            )
        return make("pyav", "asked for (output.record.recorder: pyav)")
    if recorder == "opencv":
        return make("opencv", "asked for (output.record.recorder: opencv): not crash-safe")

    # auto
    if hw_fits and gst_ok:
        return make("gstreamer", f"hardware H.264: {gst_why}")
    if av_encoder_ok and container.crash_safe:
        assert codec is not None
        why_not_hw = gst_why if hw_fits else f"no hardware encoder for {codec.label}"
        return make("pyav", f"CPU encoder {codec.pyav} (no hardware: {why_not_hw})")
    if codec is None:
        why = f"FOURCC {fourcc} is known to OpenCV's writer only"
    elif not container.crash_safe:
        why = f".{container.name} has its index at the end"
    elif not av_ok:
        why = av_why
    else:
        why = f"this PyAV has no {codec.pyav} encoder"
    return make("opencv", f"fallback ({why}): a crash loses the file's index")
