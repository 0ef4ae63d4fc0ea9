"""Run by the distribution's Python (python3-gi): are segcam's GStreamer strings real?

Two strings are built by segcam for a Jetson: the ``csi://`` camera pipeline
(segcam.sources.csi_pipeline) and the hardware H.264 recording pipeline
(segcam.recording.gstreamer.pipeline_string).

The Jetson-only elements cannot exist here, so they get stand-ins under their own names
(a camera cannot be faked further than a test picture); everything else in the string is
GStreamer's own: caps with their types, videoconvert, appsink and its properties.

``parse``: the string exactly as segcam builds it goes through Gst.parse_launch, the two
Jetson elements being stand-ins registered under their names (untargeted ghost pads link
like NVMM pads; properties as NVIDIA documents them). ``run``: ``videotestsrc`` at the
camera's place and the ``NVMM`` memory feature dropped (videotestsrc makes system memory),
the rest unchanged; one frame is pulled from the appsink. Prints one JSON object per flip.
"""

from __future__ import annotations

import json
import os
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstApp", "1.0")
from gi.repository import GLib, GObject, Gst, GstApp  # noqa: E402, F401

Gst.init(None)  # before the stand-in's class is made: it derives from GstBin

import numpy as np  # noqa: E402

from segcam.sources import _NVVIDCONV_FLIP, csi_pipeline  # noqa: E402

# NVIDIA's flip-method -> videoflip's method enum (same geometric operation).
NV_TO_VIDEOFLIP = {0: 0, 1: 3, 2: 2, 3: 1, 4: 4, 5: 7, 6: 5, 7: 6}
MODE = sys.argv[1]  # csi-parse | csi-run | record-parse | record
PARSE_ONLY = MODE.endswith("parse")


def _ghost(name: str, direction: Gst.PadDirection, target: Gst.Pad = None) -> Gst.GhostPad:
    # An untargeted ghost pad answers ANY to a caps query, like the real element's NVMM
    # pads do for video/x-raw(memory:NVMM): enough to link, never to play.
    if target is None:
        return Gst.GhostPad.new_no_target(name, direction)
    return Gst.GhostPad.new(name, target)


class NvArgusStandIn(Gst.Bin):
    """``nvarguscamerasrc`` for parsing only: its name, a src pad, sensor-id."""

    __gproperties__ = {
        "sensor-id": (int, "sensor-id", "camera sensor", 0, 255, 0, GObject.ParamFlags.READWRITE),
    }

    def __init__(self) -> None:
        super().__init__()
        self.add_pad(_ghost("src", Gst.PadDirection.SRC))
        self._sensor = 0

    def do_get_property(self, prop):  # noqa: ANN001 - GObject's signature
        return self._sensor

    def do_set_property(self, prop, value):  # noqa: ANN001
        self._sensor = value


class NvVidConvStandIn(Gst.Bin):
    """``nvvidconv``: name, pads and flip-method (NVIDIA's numbering), around videoflip."""

    __gproperties__ = {
        "flip-method": (int, "flip-method", "video flip methods (NVIDIA's numbering)", 0, 7, 0,
                        GObject.ParamFlags.READWRITE),
    }  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self._method = 0
        if PARSE_ONLY:
            self._flip = None
            self.add_pad(_ghost("sink", Gst.PadDirection.SINK))
            self.add_pad(_ghost("src", Gst.PadDirection.SRC))
            return
        self._flip = Gst.ElementFactory.make("videoflip")
        convert = Gst.ElementFactory.make("videoconvert")
        self.add(self._flip)
        self.add(convert)
        self._flip.link(convert)
        self.add_pad(_ghost("sink", Gst.PadDirection.SINK, self._flip.get_static_pad("sink")))
        self.add_pad(_ghost("src", Gst.PadDirection.SRC, convert.get_static_pad("src")))

    def do_get_property(self, prop):  # noqa: ANN001
        return self._method

    def do_set_property(self, prop, value):  # noqa: ANN001
        self._method = value
        if self._flip is not None:
            self._flip.set_property("method", NV_TO_VIDEOFLIP[value])


class NvV4l2H264EncStandIn(Gst.Bin):
    """``nvv4l2h264enc`` for parsing only: pads and the properties segcam sets, typed as
    NVIDIA's Accelerated GStreamer guide lists them."""

    __gproperties__ = {
        "bitrate": (GObject.TYPE_UINT, "bitrate", "bit/s", 0, 2**32 - 1, 4000000,
                    GObject.ParamFlags.READWRITE),
        "control-rate": (int, "control-rate", "0 variable, 1 constant", 0, 1, 1,
                         GObject.ParamFlags.READWRITE),
        "iframeinterval": (GObject.TYPE_UINT, "iframeinterval", "frames", 0, 2**32 - 1, 30,
                           GObject.ParamFlags.READWRITE),
        "idrinterval": (GObject.TYPE_UINT, "idrinterval", "frames", 0, 2**32 - 1, 256,
                        GObject.ParamFlags.READWRITE),
        "insert-sps-pps": (bool, "insert-sps-pps", "SPS/PPS at IDR", False,
                           GObject.ParamFlags.READWRITE),
        "maxperf-enable": (bool, "maxperf-enable", "max performance", False,
                           GObject.ParamFlags.READWRITE),
    }  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.add_pad(_ghost("sink", Gst.PadDirection.SINK))
        self.add_pad(_ghost("src", Gst.PadDirection.SRC))
        self._props = {}

    def do_get_property(self, prop):  # noqa: ANN001
        return self._props.get(prop.name)

    def do_set_property(self, prop, value):  # noqa: ANN001
        self._props[prop.name] = value


def _writer_spec(path: str, width: int, height: int, fps: float):
    from pathlib import Path

    from segcam.recording.formats import CODECS, CONTAINERS
    from segcam.recording.writer import WriterSpec

    return WriterSpec(
        path=Path(path), size=(width, height), fps=fps, container=CONTAINERS["mp4"],
        codec=CODECS["h264"], fourcc="", gray=False, flush_interval_s=0.5,
        preset="ultrafast", threads=1, crf=23, bitrate_kbps=0,
    )  # fmt: skip


def _typos(text: str) -> str:
    for typo in filter(None, os.environ.get("GST_TYPO", "").split(";")):
        old, new = typo.split("=>")  # the test's proof that a broken string fails
        text = text.replace(old, new)
    return text


def record_main(path: str, frames: int, kill: bool) -> int:
    """``record-parse PATH`` / ``record PATH FRAMES [kill]``: one JSON object on stdout."""
    from segcam.recording import gstreamer

    spec = _writer_spec(path, 320, 240, 25.0)
    if PARSE_ONLY:
        Gst.Element.register(None, "nvvidconv", Gst.Rank.NONE, NvVidConvStandIn.__gtype__)
        Gst.Element.register(None, "nvv4l2h264enc", Gst.Rank.NONE, NvV4l2H264EncStandIn.__gtype__)
        text = _typos(gstreamer.pipeline_string(spec))  # the hardware string, as built
        try:
            Gst.parse_launch(text)
        except GLib.Error as exc:
            print(json.dumps({"pipeline": text, "ok": False, "error": exc.message}))
            return 0
        print(json.dumps({"pipeline": text, "ok": True}))
        return 0
    writer = gstreamer.open_writer(spec, encoder="x264enc")
    base = np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    for i in range(frames):
        writer.write(np.roll(base, 3 * i, axis=1), i / spec.fps, False)
    if kill:
        print(json.dumps({"pipeline": writer.pipeline, "written": frames}), flush=True)
        import time

        time.sleep(2.0)  # the frames reach the muxer; then the power goes
        os.kill(os.getpid(), 9)
    writer.close()
    print(json.dumps({"pipeline": writer.pipeline, "written": frames}))
    return 0


def _runnable(text: str) -> str:
    """The string with a test source at the camera's place and system memory caps."""
    head, sep, rest = text.partition(" ! ")
    assert head.startswith("nvarguscamerasrc "), head
    return "videotestsrc pattern=smpte is-live=true" + sep + rest.replace("(memory:NVMM)", "")


def _appsink(pipe: Gst.Bin) -> Gst.Element:
    it = pipe.iterate_sinks()  # a Gst.Iterator (not a Python iterable without gst-python)
    while True:
        res, element = it.next()
        if res != Gst.IteratorResult.OK:
            raise AssertionError("the pipeline has no appsink")
        if element.get_factory().get_name() == "appsink":
            return element


def _pull(text: str):
    pipe = Gst.parse_launch(text)
    sink = _appsink(pipe)
    pipe.set_state(Gst.State.PLAYING)
    sample = sink.try_pull_sample(10 * Gst.SECOND)
    pipe.set_state(Gst.State.NULL)
    if sample is None:
        return None
    caps = sample.get_caps().get_structure(0)
    w, h = caps.get_value("width"), caps.get_value("height")
    buf = sample.get_buffer()
    ok, info = buf.map(Gst.MapFlags.READ)
    frame = np.frombuffer(info.data, np.uint8).reshape(h, w, 3).copy()
    buf.unmap(info)
    return caps.get_value("format"), frame


def main() -> int:
    """``csi-parse|csi-run WIDTH HEIGHT FPS``: one JSON object per flip on stdout."""
    if MODE.startswith("record"):
        frames = int(sys.argv[3]) if len(sys.argv) > 3 else 0
        return record_main(sys.argv[2], frames, "kill" in sys.argv[4:])
    if PARSE_ONLY:
        Gst.Element.register(None, "nvarguscamerasrc", Gst.Rank.NONE, NvArgusStandIn.__gtype__)
    Gst.Element.register(None, "nvvidconv", Gst.Rank.NONE, NvVidConvStandIn.__gtype__)
    width, height, fps = (int(v) for v in sys.argv[2:5])
    out = {}
    frames = {}
    for flip in _NVVIDCONV_FLIP:
        text = csi_pipeline("0", width, height, fps, flip)
        text = _typos(text)
        entry = {"pipeline": text}
        try:
            if PARSE_ONLY:
                Gst.parse_launch(text)  # the string exactly as segcam builds it
            else:
                entry["pipeline"] = text = _runnable(text)
                pulled = _pull(text)
                if pulled is not None:
                    entry["format"], frames[flip] = pulled[0], pulled[1]
                    entry["shape"] = list(pulled[1].shape)
            entry["ok"] = True
        except GLib.Error as exc:
            entry["ok"] = False
            entry["error"] = exc.message
        out[flip] = entry
    if "none" in frames:
        # smpte bars: the top two thirds are static (a moving corner sits bottom right)
        top = slice(0, height * 2 // 3)
        ref = frames["none"].astype(np.int16)
        expected = {"horizontal": ref[:, ::-1], "vertical": ref[::-1], "both": ref[::-1, ::-1]}
        for flip, want in expected.items():
            if flip in frames:
                got = frames[flip].astype(np.int16)
                rows = top if flip == "horizontal" else slice(height - height * 2 // 3, height)
                out[flip]["mean_diff_vs_expected"] = float(np.abs(got[rows] - want[rows]).mean())
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
