"""The runner end to end on the real default model through ONNX Runtime.

Sources are real (the demo scene, mp4 files, image folders), sinks are real threaded sinks
(a file recorder and a sink that keeps the masks it receives).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pipeline_helpers import (
    RecordingSink,
    count_video_frames,
    iou,
    pipeline_config,
    write_demo_video,
)

from segcam.demo_scene import DemoScene
from segcam.errors import PipelineError, SourceError
from segcam.outputs import FileSink
from segcam.pipeline.assemble import open_backend
from segcam.pipeline.runner import Runner
from segcam.pipeline.stages import build_cpu_stages
from segcam.sources import open_source


@pytest.fixture(scope="module")
def backend(selfie_onnx: Path):
    """One ONNX Runtime session of the real model, shared by the tests here."""
    be, _ = open_backend(pipeline_config(selfie_onnx))
    yield be
    be.close()


def _runner(cfg, backend, sinks=(), **kw) -> Runner:
    return Runner(cfg, open_source(cfg.input), backend, list(sinks), **kw)


def _no_pipeline_threads_left() -> bool:
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        alive = [t.name for t in threading.enumerate() if t.name.startswith("segcam-")]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def test_demo_masks_cover_the_person_and_not_the_background(selfie_onnx, backend) -> None:
    cfg = pipeline_config(selfie_onnx, size=(640, 360))
    rec = RecordingSink()
    runner = _runner(cfg, backend, [rec])
    assert runner.run(max_frames=24) == 0
    assert rec.frame_ids == list(range(24))
    scene = DemoScene(640, 360, cfg.input.fps)
    scores, leaks = [], []
    for fid, mask in zip(rec.frame_ids, rec.masks):
        truth = scene.render(fid)[1] > 0
        pred = mask > 127
        scores.append(iou(pred, truth))
        leaks.append(pred[~truth].mean())  # background wrongly called person
    # Measured 0.93-0.96 per frame at this size (threshold chosen with margin); the
    # worst frame calls ~3% of the background person (the ball, a roof), smoothing on.
    assert min(scores) >= 0.85, scores
    assert np.mean(scores) >= 0.9
    assert max(leaks) < 0.05, leaks
    snap = runner.metrics.snapshot()
    assert snap["inferences"] == 24 and snap["frames_out"] == 24


def test_file_source_without_realtime_processes_every_frame(selfie_onnx, backend, tmp_path):
    video = write_demo_video(tmp_path / "in.mp4", 25)
    out = tmp_path / "out.mp4"
    cfg = pipeline_config(selfie_onnx, f"input.uri={video}", "input.realtime=false")
    rec = RecordingSink()
    rec.keep_masks = False
    runner = _runner(cfg, backend, [rec, FileSink(str(out), record_mask=True)])
    assert runner.run() == 0
    assert runner.backpressure and runner.eos_event.is_set()
    assert runner.frames_completed == 25
    assert rec.frame_ids == list(range(25)) and rec.dropped == 0
    assert all(v == 0 for v in runner.metrics.snapshot()["drops"].values())
    assert count_video_frames(out) == (25, 25)
    assert count_video_frames(tmp_path / "out.mask.mp4") == (25, 25)


def test_slow_sink_drops_frames_while_latency_stays_bounded(selfie_onnx, backend) -> None:
    """A live demo source with a sink that needs 0.4 s per frame (a slow disk or link)."""
    cfg = pipeline_config(selfie_onnx, "input.realtime=true", "input.fps=30")
    slow = RecordingSink("slow", delay_s=0.4)
    slow.keep_masks = False
    fast = RecordingSink("fast")
    fast.keep_masks = False
    runner = _runner(cfg, backend, [slow, fast])
    assert not runner.backpressure
    assert runner.run(max_seconds=3.0) == 0
    snap = runner.metrics.snapshot()
    assert slow.dropped > 0
    assert snap["drops"]["sink:slow"] == slow.dropped
    # The slow sink did not hold the pipeline back to its own pace.
    assert snap["frames_out"] > slow.written + 1
    # Bounded: a generous multiple of the work per frame, not a speed figure.
    assert snap["glass_to_glass_ms"]["p95"] < 2000
    assert slow.stats()["glass_to_glass_ms"]["p95"] < 3 * 400 + 2000


def test_a_stage_that_raises_stops_the_pipeline_with_an_error(selfie_onnx, backend, tmp_path):
    cfg = pipeline_config(selfie_onnx)
    stages = build_cpu_stages(cfg, backend, backend.profile)
    real = stages.composite.process
    calls = []

    def failing(slot) -> None:
        calls.append(slot.frame_id)
        if len(calls) == 4:
            raise ValueError("boom in the compositor")
        real(slot)

    stages.composite.process = failing
    out = tmp_path / "partial.mp4"
    runner = _runner(cfg, backend, [FileSink(str(out))], stages=stages)
    code = runner.run(max_frames=100)
    assert code == PipelineError.exit_code
    assert isinstance(runner.error, PipelineError)
    assert "composite" in runner.error.message and "boom" in runner.error.message
    assert runner.frames_completed == 3
    assert _no_pipeline_threads_left()
    assert count_video_frames(out) == (3, 3)  # what was written is a finished file


def test_source_lost_mid_stream_is_reconnected(selfie_onnx, backend, tmp_path) -> None:
    """An image folder that vanishes for a moment (the lead's real reconnect path)."""
    folder = tmp_path / "shots"
    folder.mkdir()
    scene = DemoScene(160, 120, 30.0)
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), scene.render(i)[0])
    cfg = pipeline_config(
        selfie_onnx,
        f"input.uri={folder}",
        "input.loop=true",
        "input.reconnect.initial_s=0.05",
        size=(160, 120),
    )
    rec = RecordingSink()
    rec.keep_masks = False
    runner = _runner(cfg, backend, [rec])
    backup = tmp_path / "away"
    seen_before = []

    def unplug_and_replug() -> None:
        runner.first_frame_event.wait(10)
        shutil.move(str(folder), str(backup))
        seen_before.append(runner.frames_completed)
        time.sleep(0.5)
        shutil.move(str(backup), str(folder))
        deadline = time.monotonic() + 10
        while runner.frames_completed < seen_before[0] + 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.request_stop("test done")

    t = threading.Thread(target=unplug_and_replug)
    t.start()
    code = runner.run(max_seconds=20)
    t.join(5)
    assert code == 0 and runner.error is None
    stats = runner.source.stats()
    assert stats["losses"] >= 1 and stats["reconnects"] >= 1
    assert runner.frames_completed >= seen_before[0] + 10


def test_a_source_that_never_comes_back_ends_with_its_error(selfie_onnx, backend, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), DemoScene(160, 120, 30.0).render(0)[0])
    cfg = pipeline_config(
        selfie_onnx,
        f"input.uri={folder}",
        "input.loop=true",
        "input.reconnect.initial_s=0.01",
        "input.reconnect.max_attempts=2",
        size=(160, 120),
    )
    runner = _runner(cfg, backend)
    runner.source.open()
    (folder / "a.png").unlink()
    code = runner.run(max_seconds=20)
    assert code == SourceError.exit_code
    assert isinstance(runner.error, SourceError) and "not back" in runner.error.message


def test_infer_every_reuses_the_mask_between_inferences(selfie_onnx, backend, tmp_path):
    video = write_demo_video(tmp_path / "in.mp4", 12)
    cfg = pipeline_config(selfie_onnx, f"input.uri={video}", "refine.infer_every=3")
    rec = RecordingSink()
    runner = _runner(cfg, backend, [rec])
    assert runner.run() == 0
    snap = runner.metrics.snapshot()
    assert snap["frames_out"] == 12 and snap["inferences"] == 4
    assert snap["stages"]["infer"]["count"] == 4
    assert all(m.max() > 200 for m in rec.masks)  # every frame still has a person mask


def test_paused_runs_no_inference(selfie_onnx, backend, tmp_path) -> None:
    video = write_demo_video(tmp_path / "in.mp4", 6)
    cfg = pipeline_config(selfie_onnx, f"input.uri={video}")
    rec = RecordingSink()
    runner = _runner(cfg, backend, [rec])
    runner.knobs.update(paused=True, pause_mode="background")
    assert runner.run() == 0
    assert runner.metrics.snapshot()["inferences"] == 0
    assert len(rec.masks) == 6 and all(m.max() == 0 for m in rec.masks)


class _CountingExtension:
    """A minimal control-plane extension: records its lifecycle and reads metrics."""

    name = "counting"

    def __init__(self) -> None:
        self.events = []
        self.runner = None

    def start(self, runner) -> None:
        self.events.append("start")
        self.runner = runner

    def stop(self) -> None:
        self.events.append("stop")

    def status(self):
        return {"frames": self.runner.frames_completed if self.runner else 0}


def test_stop_from_another_thread_and_extension_lifecycle(selfie_onnx, backend) -> None:
    cfg = pipeline_config(selfie_onnx, "input.realtime=true")
    ext = _CountingExtension()
    runner = _runner(cfg, backend, extensions=[ext])
    result = []
    t = threading.Thread(target=lambda: result.append(runner.run()))
    t.start()
    assert runner.first_frame_event.wait(30)
    status = runner.status()
    assert status["extensions"]["counting"]["frames"] >= 1
    assert status["mode"] == "latest-frame" and "knobs" in status
    t0 = time.monotonic()
    runner.request_stop("test")
    t.join(10)
    assert not t.is_alive() and result == [0]
    assert time.monotonic() - t0 < cfg.pipeline.stop_timeout_s + 1.0
    assert ext.events == ["start", "stop"]
    assert runner.stop_reason == "test"


def test_fps_cap_limits_a_live_source(selfie_onnx, backend) -> None:
    """The governor's fps cap: a live 30 fps source capped at 4 fps skips frames."""
    cfg = pipeline_config(selfie_onnx, "input.realtime=true", "input.fps=30")
    runner = _runner(cfg, backend)
    runner.knobs.update(fps_cap=4.0)
    assert runner.run(max_seconds=2.0) == 0
    snap = runner.metrics.snapshot()
    assert 1 <= snap["frames_in"] <= 4 * 2 + 2  # the cap's bound, with one frame of slack
    assert runner.source.stats()["frames"] > snap["frames_in"]  # the rest were skipped


def test_profile_stages_handed_over_after_shutdown_are_closed(selfie_onnx, backend) -> None:
    """The thermal governor's light model is built on a thread of its own and may arrive
    while (or after) the runner shuts down: stages and backend handed over then must be
    closed at once, not left open (the runner closes its profile stages only once)."""
    cfg = pipeline_config(selfie_onnx)
    runner = _runner(cfg, backend)
    assert runner.run(max_frames=2) == 0
    light, _ = open_backend(pipeline_config(selfie_onnx))
    stages = build_cpu_stages(cfg, light, light.profile)
    closed = []
    real_close = stages.composite.close

    def close() -> None:  # the real close, observed
        closed.append("composite")
        real_close()

    stages.composite.close = close  # type: ignore[method-assign]
    runner.add_profile_stages("light", stages, light)
    assert closed == ["composite"]
    assert light._sess is None  # the ONNX Runtime session was dropped
    assert "light" not in runner.profile_stages


def test_an_output_failing_as_it_finalises_is_the_runs_error(selfie_onnx, backend, tmp_path):
    """A sink whose last step fails (the contact sheet's directory vanished, a full disk)
    fails in its thread's cleanup, after the last frame: that must still reach the runner
    (an error and a non-zero exit), not only a warning under an exit code of 0."""
    from segcam.outputs import ContactSheetSink

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    sheet = ContactSheetSink(str(out_dir / "sheet.png"), rows=2, every_s=0.0, width=64)
    cfg = pipeline_config(selfie_onnx)
    runner = _runner(cfg, backend, [sheet])

    def vanish() -> None:
        if runner.first_frame_event.wait(30):
            shutil.rmtree(out_dir)
        runner.request_stop("test")

    t = threading.Thread(target=vanish)
    t.start()
    code = runner.run(max_seconds=30)
    t.join(5)
    assert code != 0
    assert runner.error is not None and "contact sheet" in str(runner.error.message)
