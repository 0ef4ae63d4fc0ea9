"""The synchronous baseline: capture -> preprocess -> infer -> postprocess -> composite per frame.

This is the loop of common TensorRT/ONNX recipes, one frame at a time in one thread. It
drives the same stage objects as the runner, so ``segcam bench`` compares like with like.
"""

from __future__ import annotations

import time
from typing import Any, Dict

import numpy as np

from segcam.config import Config
from segcam.pipeline.contracts import STAGE_NAMES, Source, drive_stage
from segcam.pipeline.knobs import knobs_from_config
from segcam.pipeline.metrics import PipelineMetrics
from segcam.pipeline.slots import FrameSlot, ensure_buffer
from segcam.pipeline.stages import StageSet


def run_sequential(
    cfg: Config, source: Source, stages: StageSet, frames: int, warmup: int = 5
) -> Dict[str, Any]:
    """Process ``warmup + frames`` frames in one loop; metrics cover the last ``frames``.

    Returns the metrics snapshot plus ``fps`` (frames / seconds over the measured frames),
    ``seconds``, ``cpu_ms_per_frame`` and ``cores_used`` (process CPU time / wall time).
    """
    metrics = PipelineMetrics(list(STAGE_NAMES))
    slot = FrameSlot(0)
    knobs = knobs_from_config(cfg)
    steps = stages.all()
    measured = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    for i in range(warmup + frames):
        if i == warmup:
            start = time.perf_counter()
            cpu_start = time.process_time()
        t0 = time.perf_counter()
        got = source.read()
        if got is None:
            break
        frame, ts_ns, mono_ns = got
        slot.reset()
        slot.frame = ensure_buffer(slot.frame, frame.shape, np.uint8)
        np.copyto(slot.frame, frame)
        slot.frame_id, slot.capture_ts_ns, slot.capture_mono_ns = i, ts_ns, mono_ns
        slot.knobs = knobs
        read_ms = (time.perf_counter() - t0) * 1e3
        measured_now = i >= warmup
        for stage in steps:
            drive_stage(stage, slot, metrics if measured_now else None)
        if not measured_now:
            continue
        measured += 1
        metrics.record("capture", read_ms)
        metrics.count_in()
        metrics.frame_done(mono_ns)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    snap = metrics.snapshot()
    # CPU seconds of the whole process (all threads) per frame, and how many cores that
    # kept busy on average: on a shared machine this shows how much CPU the run really got.
    snap["cpu_ms_per_frame"] = round(cpu / measured * 1e3, 2) if measured else None
    snap["cores_used"] = round(cpu / seconds, 2) if seconds > 0 else None
    snap["fps"] = round(measured / seconds, 3) if seconds > 0 and measured else 0.0
    snap["seconds"] = round(seconds, 3)
    return snap
