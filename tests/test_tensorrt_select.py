"""Backend selection with TensorRT: auto, fallback with one warning, require_tensorrt.

TensorRT and a GPU do not exist here: the tests install the ``tensorrt`` stand-in
(``tests/fake_tensorrt``, a TEST DOUBLE that runs the ONNX with ONNX Runtime), report a
GPU that is not there through ``segcam.gpu.probe``, and give the backend host memory in place
of CUDA memory. ONNX Runtime, the model, the engine files and sidecars are real.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any, List

import pytest
from fake_tensorrt import HostMemory
from fake_tensorrt import module as fake_module
from fake_tensorrt.helpers import fake_gpu

import segcam.gpu
import segcam.inference.tensorrt as trt_backend
from segcam.cli import main
from segcam.config import load_config
from segcam.errors import EngineError
from segcam.inference.engine_build import BuildOptions, build_engine
from segcam.inference.profile import load_profile
from segcam.inference.select import select_backend


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> Any:
    """TensorRT 10.3 stand-in + an 'Orin' GPU + host memory in place of CUDA memory."""
    mod = fake_module("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    monkeypatch.setattr(segcam.gpu, "probe", lambda *a: (fake_gpu(), "fake Orin (test)"))
    monkeypatch.setattr(trt_backend, "CudaMemory", HostMemory)
    return mod


@pytest.fixture
def model(selfie_onnx: Path, tmp_path: Path) -> Path:
    """A private copy of the real default model (tests may change it)."""
    return Path(shutil.copy(selfie_onnx, tmp_path / "selfie.onnx"))


def _cfg(tmp_path: Path, *overrides: str) -> Any:
    return load_config(None, [f"inference.engine_dir={tmp_path / 'engines'}", *overrides])


def _engine(model: Path, tmp_path: Path) -> Path:
    path, _ = build_engine(
        BuildOptions(
            onnx_path=model, profile=load_profile("mediapipe-selfie"), out_dir=tmp_path / "engines"
        ),
        gpu=fake_gpu(),
        progress=lambda _m: None,
    )
    return path


def _warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_matching_engine_is_chosen(device: Any, model: Path, tmp_path: Path, caplog: Any) -> None:
    engine = _engine(model, tmp_path)
    backend, reason = select_backend(_cfg(tmp_path), load_profile("mediapipe-selfie"), model)
    try:
        assert backend.name == "tensorrt"
        assert reason.startswith("tensorrt:fp16 (engine mediapipe-selfie.fp16.trt10.3.sm87.engine")
        assert "Orin SM 87" in reason
        assert backend.engine_path == engine
    finally:
        backend.close()
    assert _warnings(caplog) == []


def test_no_tensorrt_means_onnxruntime_quietly(
    monkeypatch: Any, model: Path, tmp_path: Path, caplog: Any
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    backend, reason = select_backend(_cfg(tmp_path), load_profile("mediapipe-selfie"), model)
    try:
        assert backend.name == "onnxruntime"
        assert reason == "onnxruntime:CPU (tensorrt: not installed)"
    finally:
        backend.close()
    assert _warnings(caplog) == []  # normal on a PC: nothing to warn about


def test_no_gpu_means_onnxruntime(
    device: Any, monkeypatch: Any, model: Path, tmp_path: Path
) -> None:
    monkeypatch.setattr(segcam.gpu, "probe", lambda *a: (None, "no usable GPU: no CUDA device"))
    backend, reason = select_backend(_cfg(tmp_path), load_profile("mediapipe-selfie"), model)
    backend.close()
    assert backend.name == "onnxruntime"
    assert "GPU unavailable (no usable GPU: no CUDA device)" in reason


def test_missing_engine_warns_once_with_the_rebuild_command(
    device: Any, model: Path, tmp_path: Path, caplog: Any
) -> None:
    backend, reason = select_backend(_cfg(tmp_path), load_profile("mediapipe-selfie"), model)
    backend.close()
    assert backend.name == "onnxruntime"
    (line,) = _warnings(caplog)
    assert "no TensorRT engine at" in line and "mediapipe-selfie.fp16.trt10.3.sm87.engine" in line
    assert f"build_engine.sh {model} --profile mediapipe-selfie --out-dir" in line
    assert "Falling back to ONNX Runtime" in line
    assert "\n" not in line
    assert "build_engine.sh" in reason


def test_changed_onnx_is_refused_with_what_differs(
    device: Any, model: Path, tmp_path: Path, caplog: Any
) -> None:
    _engine(model, tmp_path)
    import onnx  # the model changed after the engine was built (re-exported, say)

    proto = onnx.load(str(model))
    onnx.helper.set_model_props(proto, {"exported_by": "someone else"})
    onnx.save(proto, str(model))
    backend, _ = select_backend(_cfg(tmp_path), load_profile("mediapipe-selfie"), model)
    backend.close()
    assert backend.name == "onnxruntime"
    (line,) = _warnings(caplog)
    assert "does not match: built from ONNX sha256" in line
    assert "rebuild it: build_engine.sh" in line


def test_missing_engine_names_the_engines_that_are_there(
    device: Any, monkeypatch: Any, model: Path, tmp_path: Path, caplog: Any
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_module("8.5.2.2"))
    _engine(model, tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", device)
    backend, _ = select_backend(_cfg(tmp_path), load_profile("mediapipe-selfie"), model)
    backend.close()
    (line,) = _warnings(caplog)
    assert "mediapipe-selfie.fp16.trt10.3.sm87.engine; the directory has" in line
    assert "mediapipe-selfie.fp16.trt8.5.sm87.engine (another TensorRT, GPU or precision)" in line


def test_engine_of_another_tensorrt_is_refused(
    device: Any, monkeypatch: Any, model: Path, tmp_path: Path, caplog: Any
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", fake_module("8.5.2.2"))
    old = _engine(model, tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt", device)
    cfg = _cfg(tmp_path, f"inference.engine={old}")
    backend, _ = select_backend(cfg, load_profile("mediapipe-selfie"), model)
    backend.close()
    assert backend.name == "onnxruntime"
    (line,) = _warnings(caplog)
    assert "built with TensorRT 8.5.2.2, running TensorRT 10.3.0" in line


def test_corrupt_engine_is_refused(device: Any, model: Path, tmp_path: Path, caplog: Any) -> None:
    engine = _engine(model, tmp_path)
    engine.write_bytes(b"x" * engine.stat().st_size)  # same size, garbage
    backend, _ = select_backend(_cfg(tmp_path), load_profile("mediapipe-selfie"), model)
    backend.close()
    assert backend.name == "onnxruntime"
    (line,) = _warnings(caplog)
    assert "is corrupt: its sha256 differs" in line


def test_require_tensorrt_turns_every_refusal_into_an_error(
    device: Any, monkeypatch: Any, model: Path, tmp_path: Path
) -> None:
    profile = load_profile("mediapipe-selfie")
    cfg = _cfg(tmp_path, "inference.require_tensorrt=true")
    with pytest.raises(EngineError, match="TensorRT unavailable: no TensorRT engine at") as info:
        select_backend(cfg, profile, model)
    assert "build_engine.sh" in info.value.hint
    assert info.value.exit_code != 0
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineError, match="TensorRT unavailable: not installed"):
        select_backend(cfg, profile, model)


def test_backend_tensorrt_without_engine_falls_back_with_one_warning(
    device: Any, model: Path, tmp_path: Path, caplog: Any
) -> None:
    cfg = _cfg(tmp_path, "inference.backend=tensorrt")
    backend, reason = select_backend(cfg, load_profile("mediapipe-selfie"), model)
    backend.close()
    assert backend.name == "onnxruntime"
    (line,) = _warnings(caplog)
    assert "no TensorRT engine" in line and "build_engine.sh" in line


def test_engine_is_built_at_start_only_when_configured(
    device: Any, model: Path, tmp_path: Path, caplog: Any
) -> None:
    profile = load_profile("mediapipe-selfie")
    backend, _ = select_backend(_cfg(tmp_path), profile, model)
    backend.close()
    assert not (tmp_path / "engines").exists()  # never implicitly
    cfg = _cfg(tmp_path, "inference.build_engine_on_start=true")
    backend, reason = select_backend(cfg, profile, model)
    try:
        assert backend.name == "tensorrt"
        assert (tmp_path / "engines" / "mediapipe-selfie.fp16.trt10.3.sm87.engine.json").is_file()
    finally:
        backend.close()


def test_segcam_run_exits_non_zero_when_tensorrt_is_required(
    device: Any, model: Path, tmp_path: Path, capsys: Any
) -> None:
    args = ["run", "--frames", "2", "--set", f"model.path={model}"]
    args += ["--set", f"inference.engine_dir={tmp_path / 'engines'}"]
    rc = main(args + ["--set", "inference.require_tensorrt=true"])
    err = capsys.readouterr().err
    assert rc == EngineError.exit_code != 0
    assert "segcam: error: TensorRT unavailable: no TensorRT engine at" in err
    assert "segcam: hint: build one: build_engine.sh" in err
    assert "Traceback" not in err


def test_segcam_run_uses_a_matching_engine(
    device: Any, model: Path, tmp_path: Path, caplog: Any
) -> None:
    _engine(model, tmp_path)
    caplog.set_level(logging.INFO, logger="segcam")
    args = ["run", "--frames", "3", "--set", f"model.path={model}"]
    args += ["--set", f"inference.engine_dir={tmp_path / 'engines'}"]
    assert main(args) == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("inference: tensorrt:fp16 (engine mediapipe-selfie") for m in lines)


def test_gpu_failure_while_loading_falls_back(
    device: Any, monkeypatch: Any, model: Path, tmp_path: Path, caplog: Any
) -> None:
    from segcam.errors import GpuError

    def no_memory() -> Any:
        raise GpuError("cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY", "free GPU memory")

    _engine(model, tmp_path)
    monkeypatch.setattr(trt_backend, "CudaMemory", no_memory)
    backend, _ = select_backend(_cfg(tmp_path), load_profile("mediapipe-selfie"), model)
    backend.close()
    assert backend.name == "onnxruntime"
    (line,) = _warnings(caplog)
    assert "cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY; free GPU memory" in line
