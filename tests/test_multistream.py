"""Several inputs in one process: config, shared batched inference, the supervisor.

Real model, real ONNX Runtime, real files and image folders, a real MJPEG camera on
loopback HTTP (tests/mjpeg_camera.py), real ZeroMQ subscribers, `segcam run` as a
subprocess for the signal tests. Frames are small (320x240) to keep this quick.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest
import yaml
from mjpeg_camera import MjpegCamera
from pipeline_helpers import count_video_frames, iou, pipeline_config, write_demo_video

from segcam.config import load_config, stream_configs
from segcam.demo_scene import DemoScene
from segcam.errors import ConfigError, PipelineError
from segcam.inference.onnxruntime import OnnxRuntimeBackend
from segcam.inference.profile import load_profile
from segcam.models.batch import batch_dim, batched_model, with_dynamic_batch
from segcam.pipeline.batching import SharedInference
from segcam.pipeline.supervisor import Supervisor, build_streams

SIZE = (320, 240)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- config


def test_inputs_fall_back_to_top_level_and_take_their_own_settings(tmp_path: Path) -> None:
    path = tmp_path / "multi.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "refine": {"threshold": 0.4},
                "output": {"uris": ["file://rec-{id}.mp4"]},
                "inputs": [
                    {"uri": "demo", "id": "door"},
                    {
                        "uri": "demo",
                        "refine": {"threshold": 0.7},
                        "background": {"mode": "color"},
                        "input": {"width": 160, "height": 120},
                        "outputs": ["none"],
                        "priority": 2,
                    },
                ],
            }
        )
    )
    door, other = stream_configs(load_config(path))
    assert (door.id, other.id) == ("door", "stream1")
    assert door.cfg.refine.threshold == 0.4 and other.cfg.refine.threshold == 0.7
    assert door.cfg.refine.feather == other.cfg.refine.feather  # not given: top level
    assert other.cfg.composite.background.mode == "color"
    assert door.cfg.composite.background.mode == "blur"
    assert (other.cfg.input.width, door.cfg.input.width) == (160, 1280)
    assert door.cfg.output.uris == ["file://rec-door.mp4"] and other.cfg.output.uris == ["none"]
    assert (door.cfg.publish.stream_id, other.cfg.publish.stream_id) == ("door", "stream1")
    assert other.priority == 2


@pytest.mark.parametrize(
    "inputs, top, expect",
    [
        ([{"uri": "demo", "refine": {"threshold": 7}}, {"uri": "demo"}], {}, "inputs[0].refine"),
        ([{"uri": "demo", "refine": {"thresold": 0.5}}, {"uri": "demo"}], {}, "thresold"),
        ([{"uri": "demo", "id": "x"}, {"uri": "demo", "id": "x"}], {}, "stream id 'x'"),
        ([{"id": "x"}, {"uri": "demo"}], {}, "needs a uri"),
        (
            [{"uri": "demo"}, {"uri": "demo"}],
            {"output": {"uris": ["file://same.mp4"]}},
            "{id}",
        ),
        ([{"uri": "demo", "background": {"mode": "image"}}, {"uri": "demo"}], {}, "inputs[0]"),
    ],
)
def test_bad_inputs_are_refused_with_the_entry_named(tmp_path, inputs, top, expect) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(dict(top, inputs=inputs)))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expect in str(err.value)


def test_one_input_is_todays_config() -> None:
    cfg = load_config(None, ["input.uri=demo"])
    (only,) = stream_configs(cfg)
    assert only.cfg is cfg


# ------------------------------------------------------------------ batched inference


def test_converter_and_rewrite_give_a_dynamic_batch_with_the_same_masks(
    selfie_onnx: Path, model_cache: Path
) -> None:
    import onnx

    from segcam.models.registry import tflite_file
    from segcam.models.tflite_onnx import convert_tflite

    fixed = onnx.load(str(selfie_onnx))
    assert batch_dim(fixed) == 1
    assert batch_dim(with_dynamic_batch(fixed)) == -1
    tfl = tflite_file("mediapipe-selfie", model_cache)
    converted = convert_tflite(tfl.read_bytes(), tfl.name, dynamic_batch=True)
    assert batch_dim(converted) == -1
    import onnxruntime as ort

    x = np.random.default_rng(3).random((3, 256, 256, 3), dtype=np.float32)
    one = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"])
    many = ort.InferenceSession(converted.SerializeToString(), providers=["CPUExecutionProvider"])
    name = fixed.graph.input[0].name
    want = np.concatenate([one.run(None, {name: x[i : i + 1]})[0] for i in range(3)])
    got = many.run(None, {name: x})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5


def _frames_as_tensors(profile: Any, n: int) -> List[np.ndarray]:
    from segcam.inference.preprocess import Preprocessor

    pre = Preprocessor(profile)
    scene = DemoScene(*SIZE, 30.0)
    out = []
    for i in range(n):
        t = np.empty(profile.input_shape, profile.np_dtype)
        pre(scene.render(i * 7)[0], t)
        out.append(t)
    return out


@pytest.mark.parametrize("dynamic", [True, False])
def test_shared_inference_batches_streams_and_matches_unbatched(
    selfie_onnx: Path, tmp_path: Path, dynamic: bool
) -> None:
    """Four streams' frames meet in one call (or one call each on a fixed-batch model)."""
    profile = load_profile("mediapipe-selfie")
    ref = OnnxRuntimeBackend(profile, selfie_onnx)
    path = batched_model(selfie_onnx, tmp_path) if dynamic else selfie_onnx
    backend = OnnxRuntimeBackend(profile, path)
    assert backend.max_batch == (64 if dynamic else 1)
    tensors = _frames_as_tensors(profile, 4)
    want = [ref.infer(t).copy() for t in tensors]
    shared = SharedInference(backend, batch_max=4, batch_wait_ms=50)
    clients = [shared.client(f"s{i}") for i in range(4)]
    for c in clients:
        c.activate()
    shared.start()
    got: Dict[int, List[np.ndarray]] = {i: [] for i in range(4)}
    errors: List[BaseException] = []

    def stream(i: int) -> None:
        try:
            for _ in range(5):
                got[i].append(clients[i].infer(tensors[i]).copy())
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    shared.stop()
    assert not errors
    for i in range(4):
        for out in got[i]:  # each stream got its own frame's mask back, never another's
            assert np.abs(out - want[i]).max() < 1e-5
    stats = shared.stats()
    assert stats["frames"] == 20
    if dynamic:
        assert stats["frames_per_call"] > 1.5, stats
    else:
        assert stats["calls"] == 20 and not stats["batched"]


# --------------------------------------------------------------- streams in one process


def _image_folder(path: Path, n: int) -> Path:
    """Frames of an empty room: nobody in them, so their masks must stay empty."""
    path.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        img = np.full((SIZE[1], SIZE[0], 3), (90, 110, 130), np.uint8)
        img += rng.integers(0, 12, img.shape, dtype=np.uint8)
        cv2.imwrite(str(path / f"{i:03d}.png"), img)
    return path


def _env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env["SEGCAM_CACHE"] = str(tmp_path / "cache")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Collector:
    """Subscribes to the mask stream in a thread and keeps every message by stream id."""

    def __init__(self, url: str) -> None:
        self.by_stream: Dict[str, List[Any]] = {}
        self.telemetry: List[Any] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._t.start()

    def _run(self, url: str) -> None:
        from segcam.publish.subscriber import MaskSubscriber

        # Retry the connection every 100 ms (the publisher binds only once the model is
        # loaded) and queue every message: the finite streams' masks come in a burst.
        with MaskSubscriber(
            url,
            ["mask", "telemetry"],
            timeout=0.2,
            reconnect_ivl_max_ms=100,
            rcvhwm=10000,
        ) as sub:
            while not self._stop.is_set():
                msg = sub.recv(0.2)
                if msg is None:
                    continue
                with self._lock:
                    if msg.topic == "telemetry":
                        self.telemetry.append(msg)
                    else:
                        self.by_stream.setdefault(msg.header["stream"], []).append(msg)

    def masks(self, sid: str) -> List[Any]:
        with self._lock:
            return list(self.by_stream.get(sid, []))

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)


def _demo_truth_iou(msgs: List[Any]) -> float:
    scene = DemoScene(*SIZE, 30.0)
    return float(np.mean([iou(m.data, scene.render(m.header["frame_id"])[1]) for m in msgs]))


def test_four_streams_of_different_kinds_each_get_their_own_outputs(
    selfie_onnx: Path, tmp_path: Path
) -> None:
    frames = 24
    clip = write_demo_video(tmp_path / "clip.mp4", frames, SIZE)
    room = _image_folder(tmp_path / "room", frames)
    # Paced so that its frames outlast the subscriber joining (PUB/SUB delivers only once
    # the subscription reached the publisher). The camera's socket fills while the model
    # loads, so its first frames come at once from that backlog: those may go unseen.
    cam = MjpegCamera(SIZE, fps=4)
    url = f"tcp://127.0.0.1:{_free_port()}"
    cfg = {
        "model": {"path": str(selfie_onnx)},
        "input": {"width": SIZE[0], "height": SIZE[1]},
        "output": {"uris": ["file://out-{id}.mp4"], "record_mask": True},
        "pipeline": {"status_interval_s": 0},
        "thermal": {"enabled": False},
        "publish": {"enabled": True, "bind": [url], "sndhwm": 1000},
        "streams": {"batch_max": 4, "batch_wait_ms": 10},
        "inputs": [
            {"uri": "demo", "id": "demo"},
            {"uri": str(clip), "id": "clip"},
            {"uri": str(room), "id": "room"},
            {"uri": cam.url, "id": "cam"},
        ],
    }
    (tmp_path / "multi.yaml").write_text(yaml.safe_dump(cfg))
    sub = _Collector(url)
    time.sleep(0.3)  # the subscriber connects and retries until the publisher binds
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "segcam", "run", "--config", "multi.yaml"]
            + ["--frames", str(frames), "--stats-json", "stats.json"],
            cwd=tmp_path,
            env=_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=240,
        )
        time.sleep(0.3)
    finally:
        sub.close()
        cam.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert set(stats["streams"]) == {"demo", "clip", "room", "cam"}
    assert stats["stop_reason"] == f"{frames} frames done (--frames)"  # not "end of input"
    assert stats["frames_out"] == sum(s["frames_out"] for s in stats["streams"].values())
    assert stats["inference"]["frames_per_call"] > 1.0, stats["inference"]
    for sid in ("demo", "clip", "room"):  # finite inputs: lossless, every frame recorded
        assert stats["streams"][sid]["frames_out"] == frames
        assert count_video_frames(tmp_path / f"out-{sid}.mp4")[1] == frames
        assert count_video_frames(tmp_path / f"out-{sid}.mask.mp4")[1] == frames
    assert count_video_frames(tmp_path / "out-cam.mp4")[1] >= 1
    # Each stream's masks arrive under its own stream id and are its own frames' masks.
    for sid in ("demo", "clip", "room", "cam"):
        assert sub.masks(sid), f"no masks from {sid}: {list(sub.by_stream)}"
    assert _demo_truth_iou(sub.masks("demo")) > 0.8
    assert _demo_truth_iou(sub.masks("clip")) > 0.7  # the same scene, through mp4v
    assert max(float(m.data.mean()) for m in sub.masks("room")) < 0.02  # nobody there
    assert float(np.mean([m.data.mean() for m in sub.masks("cam")])) > 0.02  # a person
    seqs = [m.header["seq"] for m in sub.masks("demo")]
    assert seqs == sorted(seqs)  # each stream numbers its own messages


def _live_specs(selfie_onnx: Path, cam: MjpegCamera, *extra: str):
    cfg = pipeline_config(
        selfie_onnx,
        "input.reconnect.initial_s=0.2",
        "input.reconnect.max_s=0.5",
        "streams.batch_wait_ms=5",
        *extra,
        size=SIZE,
    )
    cfg.inputs = load_config(
        None,
        [
            "inputs="
            + json.dumps(
                [
                    {"uri": "demo", "id": "steady", "input": {"realtime": True}},
                    {"uri": cam.url, "id": "cam"},
                ]
            )
        ],
    ).inputs
    return cfg


def _start(sup: Supervisor, seconds: float) -> threading.Thread:
    t = threading.Thread(target=lambda: setattr(sup, "rc", sup.run(max_seconds=seconds)))
    t.start()
    return t


def _wait(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_a_lost_camera_reconnects_while_the_other_stream_continues(
    selfie_onnx: Path,
) -> None:
    from segcam.outputs import build_sinks
    from segcam.pipeline.assemble import open_shared_backend
    from segcam.sources import open_source

    cam = MjpegCamera(SIZE, fps=15)
    cfg = _live_specs(selfie_onnx, cam)
    specs = build_streams(cfg, build_sinks, open_source, None)
    backend, _ = open_shared_backend(cfg, len(specs))
    sup = Supervisor(cfg, specs, backend)
    steady, camr = sup.runners
    t = _start(sup, 60)
    try:
        assert _wait(lambda: camr.frames_completed >= 5, 30), sup.status()
        cam.unplug()
        time.sleep(0.5)  # the reader notices
        before = (steady.frames_completed, camr.frames_completed)
        time.sleep(1.5)
        during = (steady.frames_completed, camr.frames_completed)
        cam.plug()
        assert _wait(lambda: camr.frames_completed > during[1] + 5, 30), sup.status()
    finally:
        sup.request_stop("test done")
        t.join(10)
        cam.close()
        backend.close()
    assert during[0] > before[0] + 5  # the other stream never waited for the camera
    assert during[1] <= before[1] + 2  # the camera really was gone
    src = camr.source.stats()
    assert src["losses"] >= 1 and src["reconnects"] >= 1, src
    assert camr.error is None and sup.rc == 0


class _FailingComposite:
    """Test double of a composite stage that breaks on its fourth frame (a stage fault
    cannot be provoked on demand in the real stages); everything around it is real."""

    name = "composite"

    def __init__(self, real: Any) -> None:
        self.real = real
        self.n = 0

    def process(self, slot: Any) -> None:
        self.n += 1
        if self.n == 4:
            raise RuntimeError("composite exploded")
        self.real.process(slot)

    def reset(self) -> None:
        self.real.reset()

    def close(self) -> None:
        self.real.close()


@pytest.mark.parametrize("on_error", ["continue", "stop"])
def test_a_stage_error_stops_that_stream_and_is_reported(
    selfie_onnx: Path, tmp_path: Path, on_error: str
) -> None:
    from segcam.outputs import build_sinks
    from segcam.pipeline.assemble import open_shared_backend
    from segcam.sources import open_source

    frames = 40
    clip = write_demo_video(tmp_path / "clip.mp4", frames, SIZE)
    cfg = pipeline_config(selfie_onnx, f"streams.on_error={on_error}", size=SIZE)
    cfg.inputs = load_config(
        None,
        ["inputs=" + json.dumps([{"uri": str(clip), "id": "good"}, {"uri": "demo", "id": "bad"}])],
    ).inputs
    specs = build_streams(cfg, build_sinks, open_source, None)
    backend, _ = open_shared_backend(cfg, len(specs))
    sup = Supervisor(cfg, specs, backend)
    good, bad = sup.runners
    bad.stages.composite = _FailingComposite(bad.stages.composite)
    try:
        rc = sup.run(max_frames=frames)
    finally:
        backend.close()
    assert rc == PipelineError.exit_code != 0
    assert bad.state == "failed" and "composite exploded" in str(bad.error)
    status = sup.status()
    assert status["streams"]["bad"]["state"] == "failed"
    assert "bad" in status["source"]["failed"]
    if on_error == "continue":
        assert good.frames_completed == frames and good.state == "ended"
    else:
        assert good.frames_completed < frames


def test_reload_applies_to_every_stream_and_sigterm_stops_them_all(
    selfie_onnx: Path, tmp_path: Path
) -> None:
    cam = MjpegCamera(SIZE, fps=15)
    url = f"tcp://127.0.0.1:{_free_port()}"

    def write(top: float, cam_threshold: float) -> None:
        cfg = {
            "model": {"path": str(selfie_onnx)},
            "input": {"width": SIZE[0], "height": SIZE[1]},
            "refine": {"threshold": top},
            "output": {"uris": ["file://rec-{id}.mp4"]},
            "pipeline": {"status_interval_s": 0},
            "thermal": {"enabled": False},
            "publish": {"enabled": True, "bind": [url]},
            "inputs": [
                {"uri": "demo", "id": "a", "input": {"realtime": True}},
                {"uri": cam.url, "id": "b", "refine": {"threshold": cam_threshold}},
            ],
        }
        (tmp_path / "multi.yaml").write_text(yaml.safe_dump(cfg))

    write(0.5, 0.35)
    sub = _Collector(url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "segcam", "run", "--config", "multi.yaml"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait(lambda: sub.masks("a") and sub.masks("b"), 120), list(sub.by_stream)
        assert sub.masks("a")[-1].header["threshold"] == pytest.approx(0.5)
        assert sub.masks("b")[-1].header["threshold"] == pytest.approx(0.35)
        write(0.7, 0.25)
        proc.send_signal(signal.SIGHUP)
        assert _wait(
            lambda: (
                sub.masks("a")[-1].header["threshold"] == pytest.approx(0.7)
                and sub.masks("b")[-1].header["threshold"] == pytest.approx(0.25)
            ),
            30,
        ), (sub.masks("a")[-1].header, sub.masks("b")[-1].header)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sub.close()
        cam.close()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    # pipeline.stop_timeout_s is 2 s for every stream together; the rest is Python exiting.
    assert elapsed < 3.0, (elapsed, err[-2000:])
    assert "reloaded" in err
    for sid in ("a", "b"):  # both recordings finalised and playable
        assert count_video_frames(tmp_path / f"rec-{sid}.mp4")[1] > 0


@pytest.mark.parametrize("shed", ["all", "priority"])
def test_the_governor_steers_every_stream_or_spares_the_important_one(
    selfie_onnx: Path, tmp_path: Path, shed: str
) -> None:
    """A real governor on an emulated Orin sysfs tree at 74 C (warm: infer every 3rd)."""
    from thermal_tree import orin_tree

    from segcam.outputs import build_sinks
    from segcam.pipeline.assemble import open_shared_backend
    from segcam.sources import open_source
    from segcam.thermal import ThermalGovernor

    orin_tree(tmp_path, 74.0)
    frames = 45
    cfg = pipeline_config(
        selfie_onnx,
        "thermal.enabled=true",
        f"thermal.sysfs_root={tmp_path}",
        "thermal.sensor=sysfs",
        "thermal.interval_s=0.05",
        "thermal.actions.warm={infer_every: 3}",
        f"streams.shed={shed}",
        size=SIZE,
    )
    entries = [
        {"uri": "demo", "id": "lobby", "priority": 0},
        {"uri": "demo", "id": "vault", "priority": 5, "refine": {"infer_every": 2}},
    ]
    cfg.inputs = load_config(None, ["inputs=" + json.dumps(entries)]).inputs
    specs = build_streams(cfg, build_sinks, open_source, None)
    backend, _ = open_shared_backend(cfg, len(specs))
    gov = ThermalGovernor(cfg)
    sup = Supervisor(cfg, specs, backend, [gov])
    try:
        assert sup.run(max_frames=frames) == 0
    finally:
        backend.close()
    lobby, vault = sup.runners
    assert gov.state == "warm"
    assert lobby.knobs.snapshot().infer_every == 3  # the device is warm for everyone
    # vault's own stride is 2: heat makes it 3 unless priority shedding spares it.
    assert vault.knobs.snapshot().infer_every == (2 if shed == "priority" else 3)
    assert sup.status()["extensions"]["thermal"]["state"] == "warm"
    assert lobby.metrics.inferences < frames * 0.6
