"""The governor's actions on the real pipeline: demo source, the real model on ONNX Runtime.

A fake sysfs tree (real files) says the device is warm (or critical); the governor is the
runner's extension as in ``segcam run``. Every frame still reaches the sink; only the
number of inferences changes.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Dict, List

import pytest
from thermal_tree import orin_tree, set_all

from app.config import load_config
from app.thermal import ThermalGovernor

pytest.importorskip("app.pipeline.runner", reason="the pipeline runner is not in this tree yet")


class Collect:
    """A sink that keeps (frame_id, inferred, mask mean) of every result it gets."""

    name = "collect"

    def __init__(self) -> None:
        self.items: List[Dict[str, Any]] = []
        self.lock = threading.Lock()

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
                }
            )
        return True

    def stop(self, timeout: float = 2.0) -> None:
        pass

    def stats(self) -> Dict[str, Any]:
        return {"frames": len(self.items), "dropped": 0}


def _run(tmp_path: Path, selfie_onnx: Path, celsius: float, frames: int, *sets: str):
    from app.inference.onnxruntime import OnnxRuntimeBackend
    from app.inference.profile import load_profile
    from app.pipeline.runner import Runner
    from app.sources import open_source

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
    assert first_skip <= 8
    tail = inferred[first_skip - 1 :]
    assert all(sum(tail[i : i + 3]) == 1 for i in range(len(tail) - 2))
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
