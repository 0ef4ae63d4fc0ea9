"""The one table of input and output URI schemes: what each is, what builds it, what it needs.

``segcam.sources`` and ``segcam.outputs`` build sources and sinks through it, ``segcam
doctor`` reads from it which inputs need GStreamer or a /dev/video device, and the error
hints for an unknown scheme list its examples. Factories are named as ``module:function``
and imported on use, so reading the table costs no import of OpenCV windows, ZeroMQ or
the web preview.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

REQUIRED = "required"  # the input cannot open without OpenCV's GStreamer support
PREFERRED = "preferred"  # works through FFmpeg; GStreamer gives hardware decode

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "rtp")


@dataclass(frozen=True)
class Scheme:
    """One kind of input or output and the URI schemes that select it."""

    kind: str  # SourceSpec.kind for inputs; the sink kind for outputs
    schemes: Tuple[str, ...]  # "csi" means csi://...; "gst" means gst:<pipeline>
    factory: str  # "module:callable": (spec, InputConfig) -> Source / (uri, target, cfg) -> Sink
    example: str  # for hints: what a user types
    gstreamer: str = ""  # REQUIRED, PREFERRED or ""
    camera: bool = False  # a device the doctor looks for under /dev/video*

    def build(self, *args: Any) -> Any:
        """Call the factory with ``args``."""
        return resolve(self.factory)(*args)


INPUTS: Tuple[Scheme, ...] = (
    Scheme("demo", ("demo",), "segcam.sources:DemoSource", "demo"),
    Scheme(
        "camera",
        ("v4l2",),
        "segcam.sources:CaptureSource",
        "a camera (0, /dev/video0, v4l2:///dev/video0)",
        camera=True,
    ),
    Scheme(
        "csi",
        ("csi",),
        "segcam.sources:CaptureSource",
        "a Jetson CSI camera (csi://0)",
        gstreamer=REQUIRED,
        camera=True,
    ),
    Scheme(
        "stream",
        STREAM_SCHEMES,
        "segcam.sources:CaptureSource",
        "a network stream (rtsp://host/path, http://host/video.mjpg)",
        gstreamer=PREFERRED,
    ),
    Scheme("file", ("file",), "segcam.sources:CaptureSource", "a video file (clip.mp4)"),
    Scheme(
        "images", (), "segcam.sources:ImageSource", "an image directory or glob ('shots/*.jpg')"
    ),
    Scheme(
        "gst",
        ("gst",),
        "segcam.sources:CaptureSource",
        "gst:<pipeline ending in appsink>",
        gstreamer=REQUIRED,
    ),
)

OUTPUTS: Tuple[Scheme, ...] = (
    Scheme("none", ("none",), "", "none"),
    Scheme("display", ("display",), "segcam.outputs:display_sink", "display://0"),
    Scheme("file", ("file",), "segcam.outputs:file_sink", "file://out.mp4"),
    Scheme(
        "http",
        ("http",),
        "segcam.outputs:web_preview_sink",
        "http://0.0.0.0:8080 (browser preview)",
    ),
)


def resolve(factory: str) -> Callable[..., Any]:
    """Import ``module:callable``."""
    module, _, name = factory.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return found


def _by_kind(table: Tuple[Scheme, ...], kind: str) -> Scheme:
    for entry in table:
        if entry.kind == kind:
            return entry
    raise KeyError(kind)


def input_kind(kind: str) -> Scheme:
    """The input entry of a SourceSpec kind."""
    return _by_kind(INPUTS, kind)


def output_kind(kind: str) -> Scheme:
    """The output entry of a sink kind."""
    return _by_kind(OUTPUTS, kind)


def input_for_scheme(scheme: str) -> Optional[Scheme]:
    """The input entry that ``scheme://`` selects, or None for an unknown scheme."""
    scheme = scheme.lower()
    for entry in INPUTS:
        if scheme in entry.schemes:
            return entry
    return None


def output_for_scheme(scheme: str) -> Optional[Scheme]:
    """The output entry that ``scheme://`` selects, or None for an unknown scheme."""
    scheme = scheme.lower()
    for entry in OUTPUTS:
        if scheme in entry.schemes:
            return entry
    return None


def input_examples() -> str:
    """``use demo, a camera (...), ...``: the hint for an unknown input."""
    return "use " + ", ".join(e.example for e in INPUTS)


def output_examples() -> str:
    """The hint for an unknown output."""
    return "use " + ", ".join(e.example for e in OUTPUTS) + " (several --output may be given)"


def input_needs(uri: str) -> Tuple[str, bool]:
    """(GStreamer need, is a camera device) for an input URI; ("", False) if unparsable."""
    from segcam.errors import SourceError
    from segcam.sources import parse_uri

    try:
        entry = input_kind(parse_uri(uri).kind)
    except (SourceError, KeyError):
        return "", False
    return entry.gstreamer, entry.camera


__all__ = [
    "INPUTS",
    "OUTPUTS",
    "PREFERRED",
    "REQUIRED",
    "STREAM_SCHEMES",
    "Scheme",
    "input_examples",
    "input_for_scheme",
    "input_kind",
    "input_needs",
    "output_examples",
    "output_for_scheme",
    "output_kind",
    "resolve",
]
