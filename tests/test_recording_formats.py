"""Which recorder is chosen where, every container surviving kill -9, the GStreamer string.

The choice is driven by availability probes; the tests pass the probes' answers in (a
Jetson's GStreamer cannot exist here) and check the decision and its stated reason.
Container safety is shown with real files: a child process records through each
container/codec and SIGKILLs itself; ffprobe must open the file and decode all but the
last fragment.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from recording_helpers import need_ffprobe, need_pyav, probe_codec, probe_frames

from segcam.config import RecordConfig, load_config
from segcam.errors import ConfigError, OutputError
from segcam.recording import gstreamer
from segcam.recording.choice import choose
from segcam.recording.formats import CODECS, CONTAINERS
from segcam.recording.writer import WriterSpec

YES = lambda: (True, "yes")  # noqa: E731
NO_GST = lambda: (False, "OpenCV has no GStreamer")  # noqa: E731
NO_AV = lambda: (False, "PyAV not installed")  # noqa: E731


def _probes(gst=NO_GST, av=YES):
    return {"gstreamer": gst, "pyav": av}


def test_auto_prefers_hardware_then_pyav_then_opencv_and_says_why(tmp_path) -> None:
    need_pyav()
    mp4 = tmp_path / "a.mp4"
    hw = choose(mp4, "auto", "auto", _probes(gst=YES))
    assert hw.backend == "gstreamer" and hw.crash_safe and hw.browser
    cpu = choose(mp4, "auto", "auto", _probes())
    assert cpu.backend == "pyav" and cpu.codec.name == "h264"
    assert "OpenCV has no GStreamer" in cpu.reason and "libx264" in cpu.reason
    last = choose(mp4, "auto", "auto", _probes(av=NO_AV))
    assert last.backend == "opencv" and not last.crash_safe
    assert "PyAV not installed" in last.reason and "NOT crash-safe" in last.summary()
    webm = choose(tmp_path / "a.webm", "auto", "auto", _probes(gst=YES))
    assert webm.backend == "pyav" and webm.codec.name == "vp9"  # no hardware VP9 path
    avi = choose(tmp_path / "a.avi", "auto", "auto", _probes())
    assert avi.backend == "opencv" and avi.codec.name == "mjpg" and not avi.crash_safe
    xvid = choose(tmp_path / "a.avi", "XVID", "auto", _probes())
    assert xvid.backend == "opencv" and xvid.fourcc == "XVID"


def test_asking_for_what_cannot_run_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(OutputError, match="gstreamer is not available: OpenCV has no GStreamer"):
        choose(tmp_path / "a.mp4", "auto", "gstreamer", _probes())
    with pytest.raises(OutputError, match="H.264 in .mp4/.mov/.mkv only"):
        choose(tmp_path / "a.webm", "auto", "gstreamer", _probes(gst=YES))
    with pytest.raises(OutputError, match="vp8 cannot go in a .mp4"):
        choose(tmp_path / "a.mp4", "vp8", "auto", _probes())
    with pytest.raises(OutputError, match="unknown video suffix"):
        choose(tmp_path / "a.flv", "auto", "auto", _probes())
    with pytest.raises(ConfigError, match="output.codec 'h264x' is not a codec"):
        load_config(None, ["output.codec=h264x"])
    with pytest.raises(ConfigError, match="output.record.flush_interval_s"):
        load_config(None, ["output.record.flush_interval_s=0"])
    with pytest.raises(ConfigError, match="output.record.segment_s"):
        load_config(None, ["output.record.segment_s=0.5"])


def _spec(path: Path, container: str = "mp4", gray: bool = False) -> WriterSpec:
    return WriterSpec(
        path=path,
        size=(320, 240),
        fps=25.0,
        container=CONTAINERS[container],
        codec=CODECS["h264"],
        fourcc="",
        gray=gray,
        flush_interval_s=1.0,
        preset="ultrafast",
        threads=1,
        crf=23,
        bitrate_kbps=0,
    )


def test_gstreamer_pipeline_string_for_the_jetson_encoder(tmp_path) -> None:
    text = gstreamer.pipeline_string(_spec(tmp_path / "o.mp4"))
    # Element names and caps as NVIDIA's Accelerated GStreamer guide (JetPack 5 and 6).
    assert text.startswith("appsrc ")
    assert "video/x-raw,format=BGR,width=320,height=240" in text
    assert "videoconvert ! video/x-raw,format=BGRx ! nvvidconv ! " in text
    assert "video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc " in text
    assert "iframeinterval=25 idrinterval=25 insert-sps-pps=true" in text
    assert "! h264parse ! mp4mux fragment-duration=1000 ! filesink location=" in text
    mkv = gstreamer.pipeline_string(_spec(tmp_path / "o.mkv", "mkv", gray=True))
    assert "format=GRAY8" in mkv and "! matroskamux !" in mkv
    sw = gstreamer.pipeline_string(_spec(tmp_path / "o.mp4"), encoder="x264enc")
    assert "x264enc tune=zerolatency speed-preset=ultrafast" in sw and "key-int-max=25" in sw
    with pytest.raises(OutputError, match="quote"):
        gstreamer.pipeline_string(_spec(tmp_path / 'a"b.mp4'))


GST_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import numpy as np
    from segcam.recording import gstreamer
    from segcam.recording.formats import CODECS, CONTAINERS
    from segcam.recording.writer import WriterSpec

    path, frames, kill = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "kill"
    cont = CONTAINERS[path.suffix[1:]]
    spec = WriterSpec(path, (320, 240), 25.0, cont, CODECS["h264"], "", False, 1.0,
                      "ultrafast", 1, 23, 0)
    writer = gstreamer.open_writer(spec, encoder="x264enc")
    rng = np.random.default_rng(0)
    for i in range(frames):
        writer.write(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), i / 25, False)
    if kill:
        import time
        time.sleep(0.5)  # let the pipeline thread mux what it was given
        os.kill(os.getpid(), signal.SIGKILL)
    writer.close()
    """
)


@pytest.mark.skipif(
    not (
        gstreamer.opencv_has_gstreamer()
        and all(gstreamer.element_exists(e) for e in ("x264enc", "h264parse", "mp4mux"))
    ),
    reason="needs OpenCV built with GStreamer plus x264enc, h264parse and mp4mux (Debian: "
    "python3-opencv, gstreamer1.0-plugins-ugly/-bad/-good); the pip wheel has no GStreamer",
)
@pytest.mark.parametrize("name", ["gst.mp4", "gst.mkv"])
def test_gstreamer_pipeline_with_x264enc_in_place_of_the_hardware(tmp_path, name) -> None:
    """The Jetson pipeline with the software encoder: complete at close, safe at kill -9."""
    need_ffprobe()
    out = tmp_path / name
    done = subprocess.run(
        [sys.executable, "-c", GST_CHILD, str(out), "50", "close"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert probe_codec(out) == "h264" and probe_frames(out) == 50
    killed = tmp_path / f"killed-{name}"
    done = subprocess.run(
        [sys.executable, "-c", GST_CHILD, str(killed), "110", "kill"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert 110 - 25 <= probe_frames(killed) <= 110  # all but the fragment being filled


CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    import numpy as np
    from segcam.config import RecordConfig
    from segcam.recording.recorder import SegmentRecorder

    path, codec, frames = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    rec = SegmentRecorder(path, codec, RecordConfig(recorder="pyav", flush_interval_s=0.5,
                          min_free_mib=0), fps=20.0)
    rec.lossless = True
    rec.start(None, 20.0)
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for i in range(frames):
        rec.write(np.roll(base, i * 2, axis=1), None, 0)
    print(rec.written, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize(
    "name, codec, want",
    [
        ("a.mp4", "h264", "h264"),
        ("a.mkv", "h264", "h264"),
        ("a.webm", "vp9", "vp9"),
        ("a.webm", "vp8", "vp8"),
        ("a.mov", "h264", "h264"),
    ],
)
def test_every_crash_safe_container_plays_after_kill_9(tmp_path, name, codec, want) -> None:
    need_pyav()
    need_ffprobe()
    out = tmp_path / name
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), codec, "47"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert int(done.stdout.strip()) == 47
    assert probe_codec(out) == want
    decoded = probe_frames(out)
    # Keyframes every 0.5 s = 10 frames: what is lost is at most the fragment being filled.
    assert 47 - 10 <= decoded <= 47, decoded


def test_record_config_defaults_match_default_yaml() -> None:
    cfg = load_config(None)
    assert cfg.output.record == RecordConfig()
    assert cfg.output.codec == "auto"


def test_the_opencv_fallback_records_even_where_opencv_has_no_h264(tmp_path, caplog) -> None:
    # Found by the service under a real systemd: without PyAV, `output.codec: auto` in a
    # .mp4 fell back to OpenCV's writer with H.264, which pip's OpenCV cannot encode, and
    # segcam exited 6 at start. It now records the container's basic codec and warns.
    import cv2
    import numpy as np

    from segcam.recording.opencv import OpenCVWriter

    path = tmp_path / "rec.mp4"
    h264 = cv2.VideoWriter(
        str(tmp_path / "probe.mp4"), cv2.VideoWriter_fourcc(*"avc1"), 25.0, (320, 240)
    )
    has_h264 = h264.isOpened()
    h264.release()
    with caplog.at_level("WARNING", logger="segcam.record"):
        writer = OpenCVWriter(_spec(path))
        for i in range(10):
            writer.write(np.full((240, 320, 3), i * 20, np.uint8), i / 25.0, i == 0)
        writer.close()
    assert writer.fourcc == ("avc1" if has_h264 else "mp4v")
    if not has_h264:
        assert "cannot encode H.264 here; recording" in caplog.text
    cap = cv2.VideoCapture(str(path))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 10


def test_a_restart_never_overwrites_the_earlier_recording(selfie_onnx, tmp_path) -> None:
    """A service restarted after a crash or a watchdog reopens the same file:// path; what
    the earlier run recorded (video and mask) is moved aside, not truncated."""
    need_ffprobe()
    cmd = [sys.executable, "-m", "segcam", "run", "--output", "file://rec.mp4"]
    cmd += ["--set", f"model.path={selfie_onnx}", "--set", "output.record_mask=true"]
    cmd += ["--set", "input.width=320", "--set", "input.height=180"]
    for frames in ("6", "4"):
        done = subprocess.run(
            cmd + ["--frames", frames], cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    assert "kept the earlier recording" in done.stderr and "rec-1.mp4" in done.stderr
    assert probe_frames(tmp_path / "rec-1.mp4") == 6  # the first run's, whole
    assert probe_frames(tmp_path / "rec-1.mask.mp4") == 6
    assert probe_frames(tmp_path / "rec.mp4") == 4  # the latest run keeps the given name
    assert probe_frames(tmp_path / "rec.mask.mp4") == 4
