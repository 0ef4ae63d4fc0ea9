"""The governor's actions on the real pipeline: demo source, the real model on ONNX Runtime.

A fake sysfs tree (real files) says the device is warm (or critical); the governor is the
runner's extension as in ``segcam run``. Every frame still reaches the sink; only the
number of inferences changes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Dict, List

from thermal_tree import orin_tree, set_all

from segcam.config import load_config
from segcam.thermal import ThermalGovernor


class Collect:
    """A sink that keeps (frame_id, inferred, mask mean) of every result it gets."""

    name = "collect"

    def __init__(self) -> None:
        self.items: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        self.lossless = False

    def attach(self, host: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def submit(self, result) -> bool:
        with self.lock:
            self.items.append(
                {
                    "id": result.frame_id,
                    "inferred": result.inferred,
                    "mask": float(result.mask.mean()),
                    "frame_mean": float(result.frame.mean()),
                    "model": result.model_id,
                }
            )
        return True

    def stop(self, timeout: float = 2.0) -> None:
        pass

    def stats(self) -> Dict[str, Any]:
        return {"frames": len(self.items), "dropped": 0}


def _run(tmp_path: Path, selfie_onnx: Path, celsius: float, frames: int, *sets: str):
    from segcam.inference.onnxruntime import OnnxRuntimeBackend
    from segcam.inference.profile import load_profile
    from segcam.pipeline.runner import Runner
    from segcam.sources import open_source

    orin_tree(tmp_path, 40.0)
    set_all(tmp_path, celsius)
    cfg = load_config(
        None,
        [
            "input.uri=demo",
            "input.width=320",
            "input.height=240",
            "inference.device=cpu",
            "inference.threads=1",
            "pipeline.status_interval_s=0",
            f"thermal.sysfs_root={tmp_path}",
            "thermal.sensor=sysfs",
            "thermal.interval_s=0.05",
            *sets,
        ],
    )
    backend = OnnxRuntimeBackend(load_profile("mediapipe-selfie"), selfie_onnx, threads=1)
    sink = Collect()
    gov = ThermalGovernor(cfg)
    runner = Runner(cfg, open_source(cfg.input), backend, [sink], extensions=[gov])
    rc = runner.run(max_frames=frames, max_seconds=120)
    return rc, runner, sink, gov


def test_warm_infers_every_third_frame_and_outputs_every_frame(
    tmp_path: Path, selfie_onnx: Path
) -> None:
    n = 60
    rc, runner, sink, gov = _run(
        tmp_path,
        selfie_onnx,
        74.0,
        n,
        "thermal.actions.warm={infer_every: 3}",
    )
    assert rc == 0, runner.error
    assert gov.state == "warm"
    assert [i["id"] for i in sink.items] == list(range(n))  # every frame, in order
    snap = runner.metrics.snapshot()
    assert snap["frames_out"] == n
    inferred = [i["inferred"] for i in sink.items]
    assert snap["inferences"] == sum(inferred)
    # Frames captured before the governor's first reading may still run at stride 1;
    # from the first skipped frame on, exactly one frame in three is inferred.
    first_skip = inferred.index(False)
    assert first_skip <= 20  # frames captured before the first reading (load-dependent)
    settled = inferred.index(True, first_skip)  # first inference at the new stride
    assert settled - first_skip <= 2
    tail = inferred[settled:]
    assert all(sum(tail[i : i + 3]) == 1 for i in range(len(tail) - 2))
    assert len(tail) >= n - first_skip - 2
    assert abs(snap["inferences"] - n / 3) <= first_skip
    assert runner.status()["extensions"]["thermal"]["state"] == "warm"


def test_normal_infers_every_frame(tmp_path: Path, selfie_onnx: Path) -> None:
    rc, runner, sink, gov = _run(tmp_path, selfie_onnx, 45.0, 12)
    assert rc == 0, runner.error
    assert gov.state == "normal"
    assert all(i["inferred"] for i in sink.items) and len(sink.items) == 12


def test_critical_pauses_inference_with_plain_background(tmp_path: Path, selfie_onnx: Path) -> None:
    n = 20
    rc, runner, sink, gov = _run(
        tmp_path,
        selfie_onnx,
        97.0,
        n,
        "thermal.pause_mode=background",
        "thermal.actions.critical={pause: true}",
    )
    assert rc == 0, runner.error
    assert gov.state == "critical"
    assert len(sink.items) == n
    paused = [i for i in sink.items if not i["inferred"]]
    assert len(paused) >= n - 8  # all but the frames captured before the first reading
    assert all(i["mask"] == 0.0 for i in paused)  # plain background: no person kept


def test_hot_switches_to_the_light_model_and_back(
    tmp_path: Path, selfie_onnx: Path, selfie_landscape_onnx: Path, model_cache: Path
) -> None:
    """hot: the landscape model is built off the hot path, then frames run through it;
    cooling down returns to the main model. Every frame is output throughout."""
    from segcam.inference.onnxruntime import OnnxRuntimeBackend
    from segcam.inference.profile import load_profile
    from segcam.pipeline.runner import Runner
    from segcam.sources import open_source

    orin_tree(tmp_path, 83.0)
    cfg = load_config(
        None,
        [
            "input.uri=demo",
            "input.width=320",
            "input.height=240",
            "inference.device=cpu",
            "inference.threads=1",
            "pipeline.status_interval_s=0",
            f"model.cache_dir={model_cache}",
            "model.light_profile=mediapipe-selfie-landscape",
            f"thermal.sysfs_root={tmp_path}",
            "thermal.sensor=sysfs",
            "thermal.interval_s=0.05",
            "thermal.actions.hot={infer_every: 1, light_profile: true}",
        ],
    )
    main = load_profile("mediapipe-selfie")
    backend = OnnxRuntimeBackend(main, selfie_onnx, threads=1)
    sink = Collect()
    gov = ThermalGovernor(cfg)
    runner = Runner(cfg, open_source(cfg.input), backend, [sink], extensions=[gov])
    light_id = load_profile("mediapipe-selfie-landscape").identity()
    done = threading.Event()

    def drive() -> None:
        # wait for light frames, then cool the device down and wait for main frames again
        def seen(model_id: str, after: int = 0) -> bool:
            with sink.lock:
                return any(i["model"] == model_id for i in sink.items[after:])

        deadline = time.monotonic() + 60
        while not seen(light_id) and time.monotonic() < deadline:
            time.sleep(0.02)
        with sink.lock:
            mark = len(sink.items)
        set_all(tmp_path, 40.0)
        while not seen(main.identity(), mark) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        runner.request_stop("test done")
        done.set()

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    rc = runner.run(max_seconds=90)
    driver.join(5)
    assert rc == 0, runner.error
    models = [i["model"] for i in sink.items]
    assert [i["id"] for i in sink.items] == list(range(len(sink.items)))  # none lost
    assert models[0] == main.identity()
    first_light = models.index(light_id)
    back = [i for i, m in enumerate(models) if m == main.identity() and i > first_light]
    assert back, "never returned to the main model"
    # once switched, frames stay on the light model until the device cooled down
    assert set(models[first_light : back[0]]) == {light_id}
    assert all(i["inferred"] for i in sink.items[back[0] :][:1])  # fresh start, no stale mask
    assert gov.state == "normal"
    assert gov.status()["light_model"] == "ready"


def test_transition_is_published_on_the_telemetry_topic(tmp_path: Path, selfie_onnx: Path) -> None:
    """A real ZeroMQ subscriber on loopback sees the governor's state and last transition."""
    from segcam.inference.onnxruntime import OnnxRuntimeBackend
    from segcam.inference.profile import load_profile
    from segcam.outputs import build_sinks
    from segcam.pipeline.runner import Runner
    from segcam.publish.subscriber import MaskSubscriber
    from segcam.sources import open_source

    orin_tree(tmp_path, 74.0)
    cfg = load_config(
        None,
        [
            "input.uri=demo",
            "input.width=160",
            "input.height=120",
            "inference.device=cpu",
            "inference.threads=1",
            "pipeline.status_interval_s=0",
            "publish.enabled=true",
            "publish.bind=[tcp://127.0.0.1:*]",
            "publish.telemetry_interval_s=0.1",
            f"thermal.sysfs_root={tmp_path}",
            "thermal.sensor=sysfs",
            "thermal.interval_s=0.05",
        ],
    )
    backend = OnnxRuntimeBackend(load_profile("mediapipe-selfie"), selfie_onnx, threads=1)
    sinks = build_sinks(cfg)
    runner = Runner(cfg, open_source(cfg.input), backend, sinks, extensions=[ThermalGovernor(cfg)])
    worker = threading.Thread(target=runner.run, kwargs={"max_seconds": 60}, daemon=True)
    worker.start()
    try:
        assert runner.first_frame_event.wait(30)
        endpoint = sinks[0].endpoints[0]
        thermal = None
        with MaskSubscriber(endpoint, topics=("telemetry",), timeout=15) as sub:
            for msg in sub:
                thermal = msg.data.get("extensions", {}).get("thermal")
                if thermal and thermal.get("state") == "warm":
                    break
        assert thermal is not None and thermal["state"] == "warm"
        assert thermal["temp_c"] == 74.0
        assert thermal["last_transition"]["from"] == "normal"
        assert thermal["last_transition"]["threshold_c"] == 70.0
    finally:
        runner.request_stop("test done")
        worker.join(30)
    assert not worker.is_alive()
