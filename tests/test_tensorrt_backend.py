"""The TensorRT backend and builder, driven through the test stand-in for ``tensorrt``.

TensorRT cannot be installed here, so every test in this file runs segcam's TensorRT code
against ``tests/fake_tensorrt`` (a TEST DOUBLE: the binding's API surface of 8.5 and 10.3,
executing the ONNX with ONNX Runtime; "device pointers" are host addresses). These tests
prove segcam's control flow (builder calls, I/O discovery, shapes, addresses, execute,
fp16 I/O, error paths), not that TensorRT accepts it: see test_tensorrt_real.py for that.
"""

from __future__ import annotations

import ast
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_tensorrt import HostMemory, host_array
from fake_tensorrt import module as fake_module
from fake_tensorrt.helpers import dynamic_profile, dynamic_two_output_onnx, fake_gpu

from segcam.errors import BackendError, EngineError
from segcam.inference.engine_build import BuildOptions, build_engine, inspect_engine, parse_shape
from segcam.inference.engine_meta import read_sidecar, sidecar_path
from segcam.inference.onnxruntime import OnnxRuntimeBackend
from segcam.inference.postprocess import to_probability
from segcam.inference.preprocess import preprocess
from segcam.inference.profile import load_profile
from segcam.inference.tensorrt import TensorRTBackend

VERSIONS = ["8.5.2.2", "10.3.0"]


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch, request: Any) -> Any:
    """Install the stand-in as ``tensorrt`` (version from the test's parameter, else 10.3)."""
    version = getattr(request, "param", "10.3.0")
    mod = fake_module(version)
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    return mod


def _build(onnx: Path, profile: Any, out_dir: Path, **kw: Any) -> Any:
    messages = []
    path, meta = build_engine(
        BuildOptions(onnx_path=onnx, profile=profile, out_dir=out_dir, **kw),
        gpu=fake_gpu(),
        progress=messages.append,
    )
    return path, meta, messages


@pytest.mark.parametrize("fake_trt", VERSIONS, indirect=True)
def test_selfie_through_the_stand_in_equals_onnxruntime(
    fake_trt: Any, selfie_onnx: Path, portrait_bgr: np.ndarray, tmp_path: Path
) -> None:
    profile = load_profile("mediapipe-selfie")
    path, meta, _ = _build(selfie_onnx, profile, tmp_path)
    short = ".".join(fake_trt.__version__.split(".")[:2])
    assert path.name == f"mediapipe-selfie.fp16.trt{short}.sm87.engine"
    assert read_sidecar(path) == meta
    mem = HostMemory()
    trt_backend = TensorRTBackend(profile, path, memory=mem, meta=meta)
    ort_backend = OnnxRuntimeBackend(profile, selfie_onnx)
    try:
        assert trt_backend.name == "tensorrt"
        assert trt_backend.provider == f"tensorrt:{fake_trt.__version__}:fp16"
        assert trt_backend.input_spec.shape == (1, 256, 256, 3)
        assert [o.name for o in trt_backend.outputs] == [o.name for o in ort_backend.outputs]
        tensor = preprocess(portrait_bgr, profile)
        got = trt_backend.infer(tensor)
        want = ort_backend.infer(tensor)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, atol=1e-6)
        prob = to_probability(got, profile)
        np.testing.assert_allclose(prob, to_probability(want, profile), atol=1e-6)
        assert 0.2 < float((prob > 0.5).mean()) < 0.9  # a person fills part of the frame
        out = np.empty_like(want)
        assert trt_backend.infer(tensor, out=out) is out
        np.testing.assert_allclose(out, want, atol=1e-6)
    finally:
        trt_backend.close()
        ort_backend.close()
    assert mem.live_blocks == 0


def test_fp16_engine_io(
    fake_trt: Any, selfie_onnx: Path, portrait_bgr: np.ndarray, tmp_path: Path
) -> None:
    profile = load_profile("mediapipe-selfie")
    path, meta, _ = _build(selfie_onnx, profile, tmp_path, io_fp16=True)
    assert meta.inputs[0].dtype == "float16" and meta.outputs[0].dtype == "float16"
    assert "io=fp16" in meta.build_flags
    backend = TensorRTBackend(profile, path, memory=HostMemory(), meta=meta)
    ort_backend = OnnxRuntimeBackend(profile, selfie_onnx)
    try:
        assert backend.input_spec.dtype == "float16"
        assert backend.output_spec.dtype == "float16"
        # the profile (and so the GPU preprocess kernel) says float32: host tensors only
        assert not backend.supports_device
        tensor = preprocess(portrait_bgr, profile)  # float32: infer() casts to the engine's fp16
        got = backend.infer(tensor)
        assert got.dtype == np.float16
        want = ort_backend.infer(tensor.astype(np.float16).astype(np.float32))
        np.testing.assert_allclose(got.astype(np.float32), want, atol=1e-3)
        np.testing.assert_allclose(
            to_probability(got, profile), to_probability(want, profile), atol=1e-3
        )
    finally:
        backend.close()
        ort_backend.close()


def test_dynamic_shapes_and_several_outputs(fake_trt: Any, tmp_path: Path) -> None:
    onnx = dynamic_two_output_onnx(tmp_path / "dyn2.onnx")
    profile = dynamic_profile(64, 48, output="prob")
    path, meta, _ = _build(
        onnx,
        profile,
        tmp_path,
        min_shape=parse_shape("1x3x32x32"),
        max_shape=parse_shape("1x3x128x128"),
    )
    assert meta.inputs[0].shape == [1, 3, -1, -1]
    assert meta.inputs[0].profile == [[1, 3, 32, 32], [1, 3, 48, 64], [1, 3, 128, 128]]
    assert [o.name for o in meta.outputs] == ["aux", "prob"]
    rng = np.random.default_rng(0)
    tensor = rng.standard_normal((1, 3, 48, 64)).astype(np.float32)
    ort_backend = OnnxRuntimeBackend(profile, onnx)
    for prof, expect in ((profile, "prob"), (dynamic_profile(64, 48, output=""), "prob")):
        # by name, and by output_index -1 (the last output)
        backend = TensorRTBackend(prof, path, memory=HostMemory(), meta=meta)
        try:
            assert backend.output_spec.name == expect
            assert {o.name: o.shape for o in backend.outputs} == {
                "aux": (1, 3, 48, 64),
                "prob": (1, 1, 48, 64),
            }
            np.testing.assert_allclose(backend.infer(tensor), ort_backend.infer(tensor), atol=1e-6)
            ctx = backend._context
            assert ctx.get_tensor_address("aux") != 0  # the other output got a scratch buffer
        finally:
            backend.close()
    aux = TensorRTBackend(dynamic_profile(64, 48, output="aux"), path, memory=HostMemory())
    try:
        np.testing.assert_allclose(aux.infer(tensor), np.maximum(tensor, 0), atol=1e-6)
    finally:
        aux.close()
    ort_backend.close()


def test_profile_shape_outside_the_engines_profile_is_refused(
    fake_trt: Any, tmp_path: Path
) -> None:
    onnx = dynamic_two_output_onnx(tmp_path / "dyn2.onnx")
    small = dynamic_profile(32, 32)
    path, _, _ = _build(onnx, small, tmp_path)  # min = opt = max = 1x3x32x32
    with pytest.raises(EngineError, match="outside the engine's optimisation profile"):
        TensorRTBackend(dynamic_profile(64, 48), path, memory=HostMemory())
    with pytest.raises(EngineError, match="do not include the profile's output 'nope'"):
        TensorRTBackend(dynamic_profile(32, 32, output="nope"), path, memory=HostMemory())


def test_infer_device_uses_the_callers_pointers_and_stream(
    fake_trt: Any, selfie_onnx: Path, tmp_path: Path
) -> None:
    profile = load_profile("mediapipe-selfie")
    path, meta, _ = _build(selfie_onnx, profile, tmp_path)
    mem = HostMemory()
    backend = TensorRTBackend(profile, path, memory=mem, meta=meta)
    ort_backend = OnnxRuntimeBackend(profile, selfie_onnx)
    try:
        assert backend.supports_device
        tensor = np.random.default_rng(1).random((1, 256, 256, 3), dtype=np.float32)
        in_ptr = mem.alloc(tensor.nbytes)
        out_ptr = mem.alloc(256 * 256 * 4)
        host_array(in_ptr, tensor.shape, np.float32)[...] = tensor
        backend.infer_device(in_ptr, out_ptr, stream=0xBEEF, input_consumed_event=0xE1)
        ctx = backend._context
        assert ctx.enqueued == [0xBEEF]
        assert ctx.consumed_event == 0xE1
        assert ctx.get_tensor_address("input_1") == in_ptr
        assert ctx.get_tensor_address("activation_10") == out_ptr
        got = host_array(out_ptr, (1, 256, 256, 1), np.float32)
        np.testing.assert_allclose(got, ort_backend.infer(tensor), atol=1e-6)
        backend.infer_device(in_ptr, out_ptr, stream=0xBEEF)
        assert ctx.consumed_event == 0  # cleared when the caller stops passing one
        assert ctx.enqueued == [0xBEEF, 0xBEEF]
    finally:
        backend.close()
        ort_backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.infer_device(1, 2, 3)
    with pytest.raises(BackendError, match="closed"):
        backend.infer(np.zeros((1, 256, 256, 3), np.float32))


def test_wrong_host_tensor_shape_is_refused(
    fake_trt: Any, selfie_onnx: Path, tmp_path: Path
) -> None:
    profile = load_profile("mediapipe-selfie")
    path, meta, _ = _build(selfie_onnx, profile, tmp_path)
    backend = TensorRTBackend(profile, path, memory=HostMemory(), meta=meta)
    try:
        with pytest.raises(BackendError, match="does not match the engine's input_1"):
            backend.infer(np.zeros((1, 3, 256, 256), np.float32))
    finally:
        backend.close()


def test_corrupt_or_foreign_engines_are_refused(
    monkeypatch: pytest.MonkeyPatch, selfie_onnx: Path, tmp_path: Path
) -> None:
    profile = load_profile("mediapipe-selfie")
    garbage = tmp_path / "garbage.engine"
    garbage.write_bytes(b"\x00" * 64)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_module("10.3.0"))
    with pytest.raises(EngineError, match="refused engine garbage.engine: .*Magic tag"):
        TensorRTBackend(profile, garbage, memory=HostMemory())
    monkeypatch.setitem(sys.modules, "tensorrt", fake_module("8.5.2.2"))
    old, _, _ = _build(selfie_onnx, profile, tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_module("10.3.0"))
    with pytest.raises(EngineError, match="expecting library version 10.3.0 got 8.5.2.2") as info:
        TensorRTBackend(profile, old, memory=HostMemory(), rebuild="build_engine.sh x.onnx")
    assert "build_engine.sh x.onnx" in info.value.hint


@pytest.mark.parametrize("fake_trt", VERSIONS, indirect=True)
def test_builder_uses_the_version_appropriate_api(
    fake_trt: Any, selfie_onnx: Path, tmp_path: Path
) -> None:
    profile = load_profile("mediapipe-selfie")
    _, meta, messages = _build(
        selfie_onnx, profile, tmp_path, workspace_mib=512, progress_interval_s=0
    )
    (network,) = fake_trt.RECORD["networks"]
    (config,) = fake_trt.RECORD["configs"]
    explicit = 1 << int(fake_trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if fake_trt.__version__.startswith("8."):
        assert network.flags == explicit  # needed before 10
        assert not hasattr(config, "progress_monitor")
    else:
        assert network.flags == 0  # deprecated and ignored in 10
        assert config.progress_monitor is not None
        assert any("Building engine (2 steps)" in m for m in messages)
    assert config.get_memory_pool_limit(fake_trt.MemoryPoolType.WORKSPACE) == 512 << 20
    assert config.get_flag(fake_trt.BuilderFlag.FP16)
    assert config.num_optimization_profiles == 0  # static model: no profile needed
    assert meta.builder == "python" and "fp16" in meta.build_flags
    assert any(m.startswith("wrote ") for m in messages)


def test_timing_cache_persists_between_builds(
    fake_trt: Any, selfie_onnx: Path, tmp_path: Path
) -> None:
    profile = load_profile("mediapipe-selfie")
    _build(selfie_onnx, profile, tmp_path)
    cache = tmp_path / "trt10.3.sm87.timing.cache"
    assert cache.is_file()
    _, _, messages = _build(selfie_onnx, profile, tmp_path, precision="fp32")
    assert any(m.startswith(f"timing cache {cache}") for m in messages)
    assert b'"builds": 2' in cache.read_bytes()
    assert not fake_trt.RECORD["configs"][-1].get_flag(fake_trt.BuilderFlag.FP16)


def test_build_errors_are_explained(fake_trt: Any, selfie_onnx: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    profile = load_profile("mediapipe-selfie")
    with pytest.raises(EngineError, match="cannot parse bad.onnx") as info:
        _build(bad, profile, tmp_path)
    assert "docs/byom.md" in info.value.hint
    with pytest.raises(EngineError, match=r"fixed at \(1, 256, 256, 3\)"):
        _build(selfie_onnx, load_profile("mediapipe-selfie-landscape"), tmp_path)
    with pytest.raises(EngineError, match="DLA core 0 requested, this device has 0"):
        _build(selfie_onnx, profile, tmp_path, dla_core=0)
    with pytest.raises(EngineError, match="no ONNX model at"):
        _build(tmp_path / "absent.onnx", profile, tmp_path)


def test_inspect_engine_reads_the_io(fake_trt: Any, selfie_onnx: Path, tmp_path: Path) -> None:
    path, meta, _ = _build(selfie_onnx, load_profile("mediapipe-selfie"), tmp_path)
    ins, outs = inspect_engine(path)
    assert ins == meta.inputs and outs == meta.outputs
    assert sidecar_path(path).is_file()


def test_sources_use_no_api_that_tensorrt_10_removed() -> None:
    """Static check of segcam's TensorRT modules: no attribute access to removed API."""
    root = Path(__file__).resolve().parent.parent / "app"
    removed = {
        "execute_async_v2",
        "execute_async",
        "execute_v2",
        "execute",
        "get_binding_index",
        "get_binding_name",
        "get_binding_shape",
        "get_binding_dtype",
        "binding_is_input",
        "num_bindings",
        "set_binding_shape",
        "max_workspace_size",
        "build_engine",  # Builder.build_engine (segcam's own build_engine is a plain name)
        "get_profile_shape",
    }
    for name in ("inference/tensorrt.py", "inference/engine_build.py", "commands/engine.py"):
        tree = ast.parse((root / name).read_text())
        used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        assert not used & removed, f"{name} uses {sorted(used & removed)}"
        assert "execute_async_v3" in used or name != "inference/tensorrt.py"


def test_dynamic_batch_engine_runs_several_streams_in_one_execution(
    fake_trt: Any, selfie_onnx: Path, tmp_path: Path
) -> None:
    """An engine with a 1..4 batch profile: batches on their own context, equal to ORT."""
    import onnx

    from segcam.models.batch import with_dynamic_batch
    from segcam.pipeline.batching import SharedInference

    profile = load_profile("mediapipe-selfie")
    dyn = tmp_path / "dyn" / "mediapipe-selfie.onnx"
    dyn.parent.mkdir()
    onnx.save(with_dynamic_batch(onnx.load(str(selfie_onnx))), str(dyn))
    item = tuple(profile.input_shape[1:])
    path, meta, _ = _build(
        dyn,
        profile,
        tmp_path,
        min_shape=(1,) + item,
        opt_shape=(4,) + item,
        max_shape=(4,) + item,
    )
    mem = HostMemory()
    trt_backend = TensorRTBackend(profile, path, memory=mem, meta=meta)
    ort_backend = OnnxRuntimeBackend(profile, selfie_onnx)
    rng = np.random.default_rng(5)
    x = rng.random((3,) + item, dtype=np.float32)
    try:
        assert trt_backend.max_batch == 4
        assert trt_backend.input_spec.shape == profile.input_shape  # batch-1 context as before
        want = np.concatenate([ort_backend.infer(x[i : i + 1].copy()) for i in range(3)])
        got = trt_backend.infer_batch(x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)
        # The batch-1 path still works after a batch (its own context and buffers).
        np.testing.assert_allclose(trt_backend.infer(x[1:2].copy()), want[1:2], atol=1e-5)
        with pytest.raises(BackendError, match="1 to 4 frames"):
            trt_backend.infer_batch(np.zeros((5,) + item, np.float32))
        shared = SharedInference(trt_backend, batch_max=4, batch_wait_ms=50)
        clients = [shared.client(f"s{i}") for i in range(3)]
        for c in clients:
            c.activate()
        shared.start()
        results: dict = {}
        threads = [
            threading.Thread(
                target=lambda i=i: results.__setitem__(i, clients[i].infer(x[i : i + 1].copy()))
            )
            for i in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        shared.stop()
        for i in range(3):
            np.testing.assert_allclose(results[i], want[i : i + 1], atol=1e-5)
        assert shared.stats()["frames_per_call"] > 1
    finally:
        trt_backend.close()
        ort_backend.close()
    assert mem.live_blocks == 0
