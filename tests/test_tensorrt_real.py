"""Real TensorRT on a real GPU (a Jetson, or an x86 box with TensorRT): skipped elsewhere.

These are the only tests that prove the TensorRT code against TensorRT itself; the CPU
tier drives the same code through a stand-in (test_tensorrt_backend.py). Run on the
device with ``pytest -m tensorrt``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Tuple

import numpy as np
import pytest

from segcam.inference.profile import load_profile

pytestmark = pytest.mark.tensorrt

REPO = Path(__file__).resolve().parent.parent


def _real_tensorrt() -> Tuple[Any, Any]:
    """(tensorrt, GpuInfo) or skip with the reason."""
    try:
        import tensorrt
    except ImportError as exc:
        pytest.skip(f"TensorRT is not installed ({exc}); on JetPack: python3-libnvinfer")
    if getattr(tensorrt, "IS_FAKE", False):
        pytest.skip("the tensorrt module is the test stand-in, not TensorRT")
    from segcam.gpu import probe

    gpu, why = probe()
    if gpu is None:
        pytest.skip(f"TensorRT needs the GPU path: {why}")
    return tensorrt, gpu


def _build(onnx: Path, out: Path, **kw: Any) -> Any:
    from segcam.inference.engine_build import BuildOptions, build_engine

    profile = load_profile("mediapipe-selfie")
    return build_engine(BuildOptions(onnx_path=onnx, profile=profile, out_dir=out, **kw))


@pytest.mark.slow
def test_fp16_engine_matches_onnxruntime(
    selfie_onnx: Path, portrait_bgr: np.ndarray, tmp_path: Path
) -> None:
    trt, gpu = _real_tensorrt()
    from segcam.inference.onnxruntime import OnnxRuntimeBackend
    from segcam.inference.postprocess import to_probability
    from segcam.inference.preprocess import preprocess
    from segcam.inference.tensorrt import TensorRTBackend

    profile = load_profile("mediapipe-selfie")
    path, meta = _build(selfie_onnx, tmp_path)
    assert meta.tensorrt_version == trt.__version__ and meta.device_name == gpu.name
    backend = TensorRTBackend(profile, path, meta=meta)
    ort_backend = OnnxRuntimeBackend(profile, selfie_onnx, providers=["CPUExecutionProvider"])
    try:
        tensor = preprocess(portrait_bgr, profile)
        got = to_probability(backend.infer(tensor), profile)
        want = to_probability(ort_backend.infer(tensor), profile)
        assert float(np.abs(got - want).mean()) < 5e-3  # FP16 inside the engine
        assert float(((got > 0.5) != (want > 0.5)).mean()) < 0.01
    finally:
        backend.close()
        ort_backend.close()


@pytest.mark.slow
def test_infer_device_on_a_stream_equals_infer(selfie_onnx: Path, tmp_path: Path) -> None:
    _real_tensorrt()
    from segcam.gpu.device import GpuContext
    from segcam.gpu.memory import DeviceBuffer, Stream
    from segcam.inference.tensorrt import TensorRTBackend

    profile = load_profile("mediapipe-selfie")
    path, meta = _build(selfie_onnx, tmp_path, io_fp16=True)
    ctx = GpuContext.acquire()
    backend = TensorRTBackend(profile, path, meta=meta)
    try:
        assert backend.input_spec.dtype == "float16"
        x = np.random.default_rng(0).random(profile.input_shape).astype(np.float16)
        want = backend.infer(x)
        d_in, d_out = DeviceBuffer(x.nbytes), DeviceBuffer(want.nbytes)
        stream = Stream()
        try:
            d_in.upload(x)
            backend.infer_device(d_in.ptr, d_out.ptr, stream.ptr)
            stream.synchronize()
            got = d_out.download(np.empty_like(want))
        finally:
            stream.close()
            d_in.close()
            d_out.close()
        np.testing.assert_array_equal(got, want)
    finally:
        backend.close()
        ctx.release()


@pytest.mark.slow
def test_build_engine_sh_with_real_trtexec(selfie_onnx: Path, tmp_path: Path) -> None:
    _real_tensorrt()
    trtexec = os.environ.get("TRTEXEC") or "/usr/src/tensorrt/bin/trtexec"
    if not os.access(trtexec, os.X_OK):
        trtexec = shutil.which("trtexec") or ""
    if not trtexec:
        pytest.skip("trtexec not found (JetPack: /usr/src/tensorrt/bin/trtexec)")
    env = dict(os.environ, SEGCAM_PYTHON=sys.executable, TRTEXEC=trtexec)
    result = subprocess.run(
        ["bash", str(REPO / "build_engine.sh"), str(selfie_onnx), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from segcam.config import load_config
    from segcam.inference.select import select_backend

    cfg = load_config(None, [f"inference.engine_dir={tmp_path}", "inference.require_tensorrt=true"])
    backend, reason = select_backend(cfg, load_profile("mediapipe-selfie"), selfie_onnx)
    try:
        assert backend.name == "tensorrt", reason
    finally:
        backend.close()
