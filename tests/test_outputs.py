"""Output sinks: URI parsing, the recorder, the display check, the contact sheet."""

from __future__ import annotations

import os
import threading
import time

import cv2
import numpy as np
import pytest
from pipeline_helpers import count_video_frames

from segcam.config import load_config
from segcam.errors import OutputError
from segcam.outputs import (
    ContactSheetSink,
    DisplaySink,
    FileSink,
    build_sinks,
    check_writable,
    display_available,
    mask_video_path,
    parse_output,
)
from segcam.pipeline.types import FrameResult


def _result(i: int, w: int = 64, h: int = 48) -> FrameResult:
    frame = np.full((h, w, 3), (i * 7) % 256, np.uint8)
    mask = np.zeros((h, w), np.float32)
    mask[:, : w // 2] = 1.0
    return FrameResult(
        frame_id=i,
        capture_ts_ns=time.time_ns(),
        capture_mono_ns=time.monotonic_ns(),
        frame=frame,
        mask=mask,
        source=frame.copy(),
    )


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("none", ("none", "")),
        ("", ("none", "")),
        ("display://0", ("display", "0")),
        ("display://", ("display", "0")),
        ("file://out.mp4", ("file", "out.mp4")),
        ("file:///tmp/x/out.avi", ("file", "/tmp/x/out.avi")),
        ("clip.mp4", ("file", "clip.mp4")),
    ],
)
def test_parse_output(uri, expected) -> None:
    assert parse_output(uri) == expected


@pytest.mark.parametrize("uri", ["rtp://1.2.3.4:5000", "webrtc://x", "out.txt", "display://x"])
def test_unknown_outputs_are_clear_errors(uri) -> None:
    with pytest.raises(OutputError) as info:
        parse_output(uri)
    assert "display://0" in str(info.value) or "display://<number>" in str(info.value)


def test_build_sinks_several_at_once_and_none() -> None:
    cfg = load_config(None, ["output.uris=[none, file://a.mp4, b.avi, file://a.mp4]"])
    sinks = build_sinks(cfg)
    assert [type(s) for s in sinks] == [FileSink, FileSink]  # duplicates collapse
    assert build_sinks(load_config(None, ["output.uris=[none]"])) == []


def test_display_without_a_display_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    ok, why = display_available()
    assert not ok and why
    cfg = load_config(None, ["output.uris=[display://0]"])
    with pytest.raises(OutputError, match="display://0 cannot open a window"):
        build_sinks(cfg)
    with pytest.raises(OutputError):
        DisplaySink("display://0").start()


def test_unwritable_path_fails_at_start_and_leaves_nothing(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        FileSink(str(blocker / "out.mp4")).start()
    check_writable(tmp_path / "ok.mp4")
    assert not (tmp_path / "ok.mp4").exists()  # the check leaves no empty file
    with pytest.raises(OutputError, match="four-character"):
        FileSink(str(tmp_path / "x.mp4"), codec="h264x").preflight()


def test_file_sink_records_every_frame_it_is_given_when_lossless(tmp_path) -> None:
    out = tmp_path / "rec.mp4"
    sink = FileSink(str(out), record_mask=True, fps=25.0)
    sink.lossless = True
    sink.start()
    for i in range(30):
        assert sink.submit(_result(i))
    sink.stop(5.0)
    assert sink.stats()["written"] == 30 and sink.dropped == 0
    assert count_video_frames(out) == (30, 30)
    assert mask_video_path(out).name == "rec.mask.mp4"
    cap = cv2.VideoCapture(str(mask_video_path(out)))
    ok, first = cap.read()
    cap.release()
    assert ok and first[:, :20].mean() > 200 and first[:, -20:].mean() < 50


def test_busy_sink_replaces_the_waiting_frame_and_never_blocks(tmp_path) -> None:
    release = threading.Event()

    class Stuck(FileSink):
        def _write(self, item) -> None:
            release.wait(5)
            super()._write(item)

    out = tmp_path / "stuck.mp4"
    sink = Stuck(str(out))
    sink.start()
    t0 = time.monotonic()
    for i in range(20):
        sink.submit(_result(i))
        time.sleep(0.002)
    assert time.monotonic() - t0 < 4.0  # submit returned each time although the sink hung
    assert sink.dropped >= 15
    release.set()
    sink.stop(5.0)
    assert sink.written + sink.dropped == 20
    assert count_video_frames(out)[1] == sink.written


def test_submit_copies_so_the_slot_can_be_reused(tmp_path) -> None:
    out = tmp_path / "copy.mp4"
    sink = FileSink(str(out), record_mask=True)
    hold = threading.Event()
    seen = []

    def slow_write(item) -> None:
        hold.wait(5)
        seen.append((int(item.frame[0, 0, 0]), int(item.mask[0, 0])))

    sink._write = slow_write
    sink.start()
    r = _result(3)
    sink.submit(r)
    r.frame[:] = 0  # the pipeline reuses the slot right after submit
    r.mask[:] = 0
    hold.set()
    sink.stop(5.0)
    assert seen == [(21, 255)]


def test_contact_sheet_has_frame_mask_and_composite(tmp_path) -> None:
    path = tmp_path / "sheet.png"
    sheet = ContactSheetSink(str(path), rows=3, every_s=0.0, width=120)
    sheet.lossless = True
    sheet.start()
    for i in range(5):
        sheet.submit(_result(i))
    sheet.stop(5.0)
    img = cv2.imread(str(path))
    assert img is not None
    assert img.shape[1] == 3 * 120 and img.shape[0] == 3 * 90  # 3 instants, 3 columns


@pytest.mark.skipif(not display_available()[0], reason="needs a display and OpenCV with GUI")
def test_display_sink_shows_frames() -> None:
    sink = DisplaySink("display://0", title="segcam-test")
    sink.start()
    for i in range(3):
        sink.submit(_result(i))
    sink.stop(2.0)
    assert sink.written >= 1
    assert os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")


def test_a_recording_without_frames_leaves_no_file(tmp_path) -> None:
    out = tmp_path / "empty.mp4"
    sink = FileSink(str(out), record_mask=True)

    class Source:  # the runner's source, whose size is known at start
        size = (64, 48)
        fps = 25.0

    class Runner:
        source = Source()

    sink.attach(Runner())
    sink.start()
    assert out.exists() and mask_video_path(out).exists()
    sink.stop(2.0)
    assert not out.exists() and not mask_video_path(out).exists()
