"""The GPU stages in the real runner: same results as the CPU stages, no leaks, clean exit.

Uses the real default model through ONNX Runtime (on the CPU: inference on host buffers)
and the real demo source.
"""

from __future__ import annotations

import dataclasses
import resource
import threading
from typing import Any, Dict, List

import numpy as np
import pytest

from segcam.config import load_config
from segcam.coverage import SNAP
from segcam.gpu.memory import LEDGER
from segcam.gpu.stages import build_gpu_stages
from segcam.inference.onnxruntime import OnnxRuntimeBackend
from segcam.inference.profile import load_profile
from segcam.pipeline.contracts import drive_stage
from segcam.pipeline.knobs import knobs_from_config
from segcam.pipeline.runner import Runner
from segcam.pipeline.slots import FrameSlot
from segcam.pipeline.stages import build_cpu_stages
from segcam.sources import open_source

pytestmark = pytest.mark.gpu


def _config(tmp_path, **sets: Any):
    overrides = [f"{k}={v}" for k, v in sets.items()]
    overrides.append(f"model.cache_dir={tmp_path}")
    return load_config(None, overrides)


@pytest.fixture(scope="module")
def backend(selfie_onnx):
    profile = load_profile("mediapipe-selfie")
    be = OnnxRuntimeBackend(profile, selfie_onnx, threads=4)
    yield be
    be.close()


def _rss_kib() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _masks_agree(a: np.ndarray, b: np.ndarray) -> bool:
    """Within 1e-4, or on either side of the snap bound (1/512 of 0 or 1) within that."""
    d = np.abs(a - b)
    snapped = (np.minimum(a, b) == 0.0) | (np.maximum(a, b) == 1.0)
    return bool(((d < 1e-4) | (snapped & (d <= SNAP + 1e-4))).all())


@pytest.mark.parametrize("upsample", ["bilinear", "guided"])
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copies", "mapped-zero-copy"])
def test_gpu_stages_equal_cpu_stages(gpu_ctx, backend, tmp_path, zero_copy, upsample):
    """Frame by frame, the GPU stage set produces the CPU stage set's composite and mask.

    ``mapped-zero-copy`` runs the integrated-GPU (Jetson) path on this GPU: the kernels
    read the frame from mapped pinned host memory, with no copy. ``guided``: the
    edge-aware upsampling (kernels/guided.cu) instead of the bilinear one.
    """
    cfg = _config(
        tmp_path, **{"input.width": 643, "input.height": 361, "refine.upsample": upsample}
    )
    live_before = LEDGER.live()
    source = open_source(cfg.input)
    source.open()
    info = dataclasses.replace(gpu_ctx.info, integrated=zero_copy or gpu_ctx.info.integrated)
    assert info.zero_copy == (zero_copy or gpu_ctx.info.zero_copy)
    gpu = build_gpu_stages(cfg, backend, backend.profile, info)
    cpu = build_cpu_stages(cfg, backend, backend.profile)
    knobs = knobs_from_config(cfg)
    slots = (FrameSlot(0), FrameSlot(1))
    try:
        for i in range(6):
            frame = source.read()[0].copy()
            for slot in slots:
                slot.reset()
                slot.frame = frame.copy()
                slot.frame_id = i
                slot.knobs = knobs
            for stages, slot in zip((gpu, cpu), slots):
                for stage in stages.all():
                    drive_stage(stage, slot)
            g, c = slots
            assert _masks_agree(g.mask, c.mask)
            assert np.abs(g.composite.astype(int) - c.composite).max() <= 1
    finally:
        gpu.close()
        cpu.close()
        source.close()
    assert LEDGER.live() == live_before, LEDGER.snapshot()


class _MemorySink:
    """Notes device memory, live CUDA resources and RSS at chosen frame counts."""

    name = "memory-probe"

    def __init__(self, ctx: Any, at: List[int]) -> None:
        self.ctx = ctx
        self.at = set(at)
        self.samples: Dict[int, Dict[str, int]] = {}
        self.count = 0
        self.done = threading.Event()
        self.lossless = False

    def attach(self, host: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def submit(self, result: Any) -> bool:
        self.count += 1
        assert result.frame.dtype == np.uint8 and result.mask.dtype == np.float32
        if self.count in self.at:
            free, _ = self.ctx.memory_info()
            self.samples[self.count] = {
                "device_free": free,
                "live": LEDGER.live(),
                "rss_kib": _rss_kib(),
            }
        return True

    def stop(self, timeout: float = 2.0) -> None:
        pass

    def stats(self) -> Dict[str, Any]:
        return {"frames": self.count}


def test_ten_thousand_frames_no_growth_and_clean_shutdown(gpu_ctx, backend, tmp_path):
    """10k frames through the 4-slot ring: no device/host growth; stop frees everything."""
    cfg = _config(
        tmp_path,
        **{"input.width": 320, "input.height": 240, "refine.infer_every": 4, "pipeline.slots": 4},
    )
    free_before, _ = gpu_ctx.memory_info()
    live_before = LEDGER.live()
    source = open_source(cfg.input)
    stages = build_gpu_stages(cfg, backend, backend.profile, None)
    sink = _MemorySink(gpu_ctx, [500, 10000])
    runner = Runner(cfg, source, backend, [sink], stages=stages, backpressure=True)
    rc = runner.run(max_frames=10000)
    assert rc == 0, runner.error
    assert sink.count == 10000
    a, b = sink.samples[500], sink.samples[10000]
    assert b["live"] == a["live"], (a, b)
    assert b["device_free"] == a["device_free"], (a, b)
    assert b["rss_kib"] - a["rss_kib"] < 32 * 1024, (a, b)  # 9.5k frames of 230 KB each
    # clean shutdown: every CUDA object freed, device memory back where it was
    assert LEDGER.live() == live_before, LEDGER.snapshot()
    free_after, _ = gpu_ctx.memory_info()
    assert abs(free_after - free_before) <= 2 * 2**20, (free_before, free_after)
    spans = stages.info["timeline"].spans()
    assert {s.stage for s in spans} == {"preprocess", "infer", "composite"}
    assert all(s.end_ms >= s.start_ms for s in spans)


def test_timeline_orders_dependent_stages(gpu_ctx, backend, tmp_path):
    """Per frame, composite starts after that frame's preprocess ended (stream-event wait)."""
    cfg = _config(tmp_path, **{"input.width": 1280, "input.height": 720})
    live_before = LEDGER.live()
    source = open_source(cfg.input)
    stages = build_gpu_stages(cfg, backend, backend.profile, None)
    runner = Runner(cfg, source, backend, [], stages=stages, backpressure=True)
    assert runner.run(max_frames=60) == 0, runner.error
    by_frame: Dict[int, Dict[str, Any]] = {}
    for s in stages.info["timeline"].spans():
        by_frame.setdefault(s.frame_id, {})[s.stage] = s
    assert len(by_frame) == 60
    for spans in by_frame.values():
        assert spans["composite"].start_ms >= spans["preprocess"].end_ms - 1e-3
    assert LEDGER.live() == live_before, LEDGER.snapshot()


def test_build_reports_reason(gpu_ctx, backend, tmp_path):
    cfg = _config(tmp_path)
    stages = build_gpu_stages(cfg, backend, backend.profile, None)
    try:
        assert stages.device == "gpu"
        assert gpu_ctx.info.sm_name in stages.reason and "host (CPU inference)" in stages.reason
    finally:
        stages.close()
    assert dataclasses.is_dataclass(gpu_ctx.info)


class _DeviceEchoBackend:
    """Stand-in for the TensorRT backend, which cannot be installed on the test GPU machine.

    Its "model" outputs the first H*W floats of the input tensor as a [1, H, W, 1]
    probability: ``infer_device`` enqueues that copy on the stream it is given (as TensorRT
    enqueues on the caller's stream), ``infer`` computes the same on the host.
    """

    name = "tensorrt"
    provider = "tensorrt:stand-in"
    supports_device = True

    def __init__(self, profile: Any) -> None:
        from segcam.inference.backend import TensorSpec

        self.profile = profile
        self.n = profile.width * profile.height
        self.inputs = [TensorSpec("input", profile.input_shape, "float32")]
        self.outputs = [TensorSpec("prob", (1, profile.height, profile.width, 1), "float32")]

    def infer(self, tensor: np.ndarray, out: Any = None) -> np.ndarray:
        flat = np.ascontiguousarray(tensor).reshape(-1)[: self.n]
        return flat.reshape(1, self.profile.height, self.profile.width, 1).copy()

    def infer_device(self, in_ptr: int, out_ptr: int, stream: int) -> None:
        from segcam.gpu import cuda_api

        drv = cuda_api.api().driver
        cuda_api.call(
            drv.cuMemcpyDtoDAsync,
            drv.CUdeviceptr(out_ptr),
            drv.CUdeviceptr(in_ptr),
            self.n * 4,
            drv.CUstream(stream),
        )

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "gpu_upsample, cpu_upsample",
    [("bilinear", "bilinear"), ("guided", "guided"), ("auto", "guided")],
    ids=["bilinear", "guided", "auto-is-guided-on-a-gpu"],
)
def test_device_inference_path_equals_cpu_stages(gpu_ctx, tmp_path, gpu_upsample, cpu_upsample):
    """A backend that works on device buffers (TensorRT's way): output stays on the GPU.

    ``refine.upsample: auto`` is guided on GPU stages (bilinear on CPU stages), so the GPU
    stages with ``auto`` must equal the CPU stages told ``guided``.
    """
    profile = load_profile("mediapipe-selfie")
    backend = _DeviceEchoBackend(profile)
    size = {"input.width": 480, "input.height": 272}
    cfg = _config(tmp_path, **size, **{"refine.upsample": gpu_upsample})
    cpu_cfg = _config(tmp_path, **size, **{"refine.upsample": cpu_upsample})
    live_before = LEDGER.live()
    source = open_source(cfg.input)
    source.open()
    gpu = build_gpu_stages(cfg, backend, profile, None)
    cpu = build_cpu_stages(cpu_cfg, backend, profile)
    assert "inference on device buffers" in gpu.reason
    knobs = knobs_from_config(cfg)
    slots = (FrameSlot(0), FrameSlot(1))
    try:
        for i in range(4):
            frame = source.read()[0].copy()
            for slot in slots:
                slot.reset()
                slot.frame = frame.copy()
                slot.frame_id = i
                slot.knobs = knobs
            for stages, slot in zip((gpu, cpu), slots):
                for stage in stages.all():
                    drive_stage(stage, slot)
            g, c = slots
            assert g.output is None  # never left the device
            assert _masks_agree(g.mask, c.mask)
            assert np.abs(g.composite.astype(int) - c.composite).max() <= 1
    finally:
        gpu.close()
        cpu.close()
        source.close()
    assert LEDGER.live() == live_before, LEDGER.snapshot()
