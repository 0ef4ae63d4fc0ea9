"""Sources: URI parsing, real files, image folders, reconnect, the demo scene's truth."""

from __future__ import annotations

import os
import shutil
import threading
import time
import tracemalloc

import cv2
import numpy as np
import pytest

from segcam.config import InputConfig, ReconnectConfig
from segcam.demo_scene import DemoScene
from segcam.errors import SourceError
from segcam.sources import (
    CaptureSource,
    DemoSource,
    ImageSource,
    csi_pipeline,
    open_source,
    opencv_has_gstreamer,
    parse_uri,
)


@pytest.mark.parametrize(
    "uri,kind,target",
    [
        ("demo", "demo", "demo"),
        ("0", "camera", "0"),
        ("/dev/video2", "camera", "/dev/video2"),
        ("v4l2:///dev/video1", "camera", "/dev/video1"),
        ("v4l2://3", "camera", "/dev/video3"),
        ("csi://0", "csi", "0"),
        ("rtsp://cam.local:8554/live", "stream", "rtsp://cam.local:8554/live"),
        ("file://clip.mp4", "file", "clip.mp4"),
        ("clip.mkv", "file", "clip.mkv"),
        ("shots/*.jpg", "images", "shots/*.jpg"),
        ("gst:videotestsrc ! appsink", "gst", "videotestsrc ! appsink"),
    ],
)
def test_parse_uri(uri: str, kind: str, target: str) -> None:
    spec = parse_uri(uri)
    assert (spec.kind, spec.target) == (kind, target)


@pytest.mark.parametrize("uri", ["ftp://x/y", "foo://bar", ""])
def test_parse_uri_rejects_unknown(uri: str) -> None:
    with pytest.raises(SourceError) as err:
        parse_uri(uri)
    assert "scheme" in err.value.message or "empty" in err.value.message


def test_csi_uri_needs_numeric_sensor() -> None:
    with pytest.raises(SourceError, match="sensor id"):
        parse_uri("csi://left")


def test_csi_pipeline_names_sensor_size_and_rate() -> None:
    pipe = csi_pipeline("1", 1920, 1080, 30, "horizontal")
    assert "sensor-id=1" in pipe and "width=(int)1920" in pipe and "30/1" in pipe
    assert "flip-method=4" in pipe and pipe.endswith("sync=false")


def test_csi_without_gstreamer_is_a_clear_error() -> None:
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer; the error path cannot be reached")
    src = open_source(InputConfig(uri="csi://0"))
    with pytest.raises(SourceError, match="GStreamer"):
        src.open()


def test_missing_file_and_absent_camera() -> None:
    with pytest.raises(SourceError, match="does not exist"):
        open_source(InputConfig(uri="/nonexistent/clip.mp4"))
    src = open_source(InputConfig(uri="/dev/video97"))
    with pytest.raises(SourceError, match="no camera at /dev/video97"):
        src.open()


def _write_video(path: str, n: int, size=(96, 64), fps: float = 10.0) -> None:
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((size[1], size[0], 3), (i * 20) % 256, np.uint8)
        writer.write(frame)
    writer.release()


def test_file_source_reads_every_frame_and_loops(tmp_path) -> None:
    path = str(tmp_path / "clip.avi")
    _write_video(path, 12)
    src = open_source(InputConfig(uri=path))
    assert isinstance(src, CaptureSource) and not src.live
    src.open()
    assert src.size == (96, 64) and src.fps == pytest.approx(10.0)
    frames = []
    while True:
        item = src.read()
        if item is None:
            break
        frame, ts, mono = item
        assert frame.shape == (64, 96, 3) and ts > 1e18 and mono > 0
        frames.append(frame)
    src.close()
    assert len(frames) == 12 and src.stats()["frames"] == 12

    looped = open_source(InputConfig(uri="file://" + path, loop=True))
    looped.open()
    got = [looped.read() for _ in range(30)]
    looped.close()
    assert all(g is not None for g in got)


def test_image_folder_skips_bad_files_and_resizes(tmp_path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((40, 50, 3), i * 50, np.uint8))
    cv2.imwrite(str(tmp_path / "03.png"), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "04.png").write_bytes(b"not a png")
    src = open_source(InputConfig(uri=str(tmp_path)))
    assert isinstance(src, ImageSource)
    src.open()
    shapes = []
    while True:
        item = src.read()
        if item is None:
            break
        shapes.append(item[0].shape)
    assert shapes == [(40, 50, 3)] * 4
    assert src.stats()["skipped"] == 1


def test_source_lost_mid_stream_reconnects(tmp_path) -> None:
    """A looping image folder whose files vanish mid-stream, then come back (real files)."""
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((16, 16, 3), 100, np.uint8))
    cfg = InputConfig(uri=str(folder), loop=True, reconnect=ReconnectConfig(initial_s=0.05))
    src = open_source(cfg)
    src.open()
    assert src.read() is not None
    backup = tmp_path / "backup"
    shutil.move(str(folder), str(backup))

    def restore() -> None:
        time.sleep(0.4)
        shutil.move(str(backup), str(folder))

    t = threading.Thread(target=restore)
    t.start()
    frames = [src.read() for _ in range(4)]
    t.join()
    assert all(f is not None for f in frames)
    stats = src.stats()
    assert stats["losses"] >= 1 and stats["reconnects"] >= 1


def test_reconnect_gives_up_after_max_attempts(tmp_path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cfg = InputConfig(
        uri=str(folder), loop=True, reconnect=ReconnectConfig(initial_s=0.01, max_attempts=2)
    )
    src = open_source(cfg)
    src.open()
    os.remove(folder / "a.png")
    with pytest.raises(SourceError, match="not back after 2 attempts"):
        src.read()


def test_interrupt_stops_a_reconnecting_read(tmp_path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8, 3), np.uint8))
    src = open_source(InputConfig(uri=str(folder), loop=True))
    src.open()
    os.remove(folder / "a.png")
    threading.Timer(0.3, src.interrupt).start()
    assert src.read() is None  # returns instead of retrying forever


def test_demo_is_deterministic_and_knows_its_truth() -> None:
    scene = DemoScene(320, 180)
    a, ta = scene.render(5)
    b, tb = DemoScene(320, 180).render(5)
    assert np.array_equal(a, b) and np.array_equal(ta, tb)
    c, tc = scene.render(60)
    assert not np.array_equal(ta, tc)  # the person moves
    cover = ta.mean()
    assert 0.1 < cover < 0.6  # a person, not the whole frame and not nothing
    # The silhouette is one region whose pixels are the portrait's, not the landscape's.
    count, _ = cv2.connectedComponents(ta)
    assert count == 2


def test_demo_source_frames_match_scene() -> None:
    src = open_source(InputConfig(uri="demo", width=256, height=144))
    assert isinstance(src, DemoSource) and not src.live
    src.open()
    first = src.read()[0].copy()
    second = src.read()[0]
    assert np.array_equal(first, DemoScene(256, 144).render(0)[0])
    assert np.array_equal(second, src.scene.render(1)[0])
    assert np.array_equal(src.truth(1), DemoScene(256, 144).render(1)[1])
    assert src.index == 1


def test_demo_realtime_is_live_and_interruptible() -> None:
    src = open_source(InputConfig(uri="demo", width=128, height=72, realtime=True, fps=1.0))
    assert src.live
    src.open()
    assert src.read() is not None
    threading.Timer(0.2, src.interrupt).start()
    assert src.read() is None  # the 1 s pacing wait is cut short by interrupt()


@pytest.mark.parametrize("flip", ["none", "horizontal"])
def test_file_source_allocates_no_frame_per_read(tmp_path, flip: str) -> None:
    """The hot path allocates no frame-sized array: once warmed up, ``read()`` decodes
    (and flips) into buffers the source keeps (numpy and OpenCV's numpy-backed outputs
    report their allocations to tracemalloc)."""
    path = str(tmp_path / "clip.avi")
    size = (320, 240)
    _write_video(path, 12, size=size)
    src = open_source(InputConfig(uri=path, flip=flip))
    src.open()
    try:
        for _ in range(3):
            assert src.read() is not None
        tracemalloc.start()
        try:
            for _ in range(6):
                frame, _, _ = src.read()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        src.close()
    assert frame.shape == (240, 320, 3) and int(frame[0, 0, 0]) == pytest.approx(160, abs=3)
    assert peak < frame.nbytes // 4, f"{peak} bytes allocated by 6 reads"


def test_flipped_frames_stay_valid_until_the_read_after_next() -> None:
    """Flips write into two buffers in turn: each frame is the flipped source frame, and
    it stays intact while the next one is read (the demo's contract)."""
    cfg = dict(uri="demo", width=96, height=64, realtime=False)
    plain = open_source(InputConfig(**cfg))
    flipped = open_source(InputConfig(flip="horizontal", **cfg))
    plain.open()
    flipped.open()
    try:
        previous = None
        for _ in range(4):
            want = plain.read()[0].copy()
            got = flipped.read()[0]
            np.testing.assert_array_equal(got, cv2.flip(want, 1))
            if previous is not None:
                np.testing.assert_array_equal(previous[0], previous[1])
                assert previous[0] is not got
            previous = (got, cv2.flip(want, 1))
    finally:
        plain.close()
        flipped.close()


def test_gst_pipelines_that_read_a_file_or_count_buffers_end() -> None:
    from segcam.sources import gst_pipeline_ends

    assert gst_pipeline_ends("filesrc location=a.mp4 ! decodebin ! videoconvert ! appsink")
    assert gst_pipeline_ends("videotestsrc num-buffers=30 ! videoconvert ! appsink")
    assert gst_pipeline_ends("uridecodebin uri=file:///clip.mkv ! videoconvert ! appsink")
    # cameras and network streams are live: their end is a loss to reconnect to
    assert not gst_pipeline_ends("v4l2src device=/dev/video0 ! videoconvert ! appsink")
    assert not gst_pipeline_ends("videotestsrc num-buffers=-1 ! appsink")
    assert not gst_pipeline_ends("uridecodebin uri=rtsp://cam/1 ! videoconvert ! appsink")
    assert not gst_pipeline_ends("rtspsrc location=rtsp://cam/1 ! decodebin ! appsink")
