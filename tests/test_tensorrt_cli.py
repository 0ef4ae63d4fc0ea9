"""``segcam engine build / inspect / list`` through the ``tensorrt`` stand-in.

TensorRT and a GPU do not exist here: ``tests/fake_tensorrt`` (a TEST DOUBLE running the
ONNX with ONNX Runtime) plays ``tensorrt`` and ``segcam.gpu.probe`` reports an 'Orin'.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_tensorrt import module as fake_module
from fake_tensorrt.helpers import fake_gpu

import segcam.gpu
from segcam.cli import main
from segcam.inference.engine_meta import read_sidecar


@pytest.fixture
def device(monkeypatch: pytest.MonkeyPatch) -> Any:
    mod = fake_module("10.3.0")
    monkeypatch.setitem(sys.modules, "tensorrt", mod)
    monkeypatch.setattr(segcam.gpu, "probe", lambda *a: (fake_gpu(), "fake Orin (test)"))
    return mod


def test_build_inspect_list(device: Any, selfie_onnx: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "engines"
    rc = main(
        ["engine", "build", "--onnx", str(selfie_onnx), "--out-dir", str(out), "--workspace", "256"]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    engine = out / "mediapipe-selfie.fp16.trt10.3.sm87.engine"
    assert captured.out.strip() == str(engine)
    assert "segcam engine: building mediapipe-selfie.fp16.trt10.3.sm87.engine" in captured.err
    assert "Building engine (2 steps)" in captured.err  # IProgressMonitor on 10.x
    assert read_sidecar(engine).workspace_mib == 256

    assert main(["engine", "inspect", str(engine), "--onnx", str(selfie_onnx), "--check"]) == 0
    captured = capsys.readouterr()
    assert "TensorRT:     10.3.0" in captured.out
    assert "engine input: input_1 (1, 256, 256, 3) float32" in captured.out
    assert "fits here:    yes" in captured.err

    assert main(["engine", "inspect", str(engine), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sm"] == "87"

    assert main(["engine", "list", "--dir", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    name, info = line.split(": ", 1)
    assert name == "mediapipe-selfie.fp16.trt10.3.sm87.engine"
    assert info.startswith("mediapipe-selfie fp16 TensorRT 10.3.0 Orin SM 87, built 20")


def test_inspect_reports_a_misfit(
    device: Any, monkeypatch: Any, selfie_onnx: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "engines"
    assert main(["engine", "build", "--onnx", str(selfie_onnx), "--out-dir", str(out)]) == 0
    capsys.readouterr()
    engine = out / "mediapipe-selfie.fp16.trt10.3.sm87.engine"
    monkeypatch.setattr(segcam.gpu, "probe", lambda *a: (fake_gpu("Xavier", (7, 2)), "fake Xavier"))
    assert main(["engine", "inspect", str(engine), "--check"]) == 1
    err = capsys.readouterr().err
    assert "fits here:    NO: built for SM 87, this GPU is SM 72" in err


def test_inspect_without_tensorrt_shows_the_sidecar(
    device: Any, monkeypatch: Any, selfie_onnx: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "engines"
    assert main(["engine", "build", "--onnx", str(selfie_onnx), "--out-dir", str(out)]) == 0
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    engine = out / "mediapipe-selfie.fp16.trt10.3.sm87.engine"
    assert main(["engine", "inspect", str(engine)]) == 0
    captured = capsys.readouterr()
    assert "input:        input_1 (1, 256, 256, 3) float32" in captured.out
    assert "unknown (TensorRT not installed here)" in captured.err


def test_errors_are_one_line_with_a_hint(device: Any, tmp_path: Path, capsys: Any) -> None:
    assert main(["engine", "inspect", str(tmp_path / "none.engine")]) == 4
    assert "segcam: error: no engine file" in capsys.readouterr().err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"junk")
    rc = main(
        [
            "engine",
            "build",
            "--onnx",
            str(bad),
            "--profile",
            "mediapipe-selfie",
            "--out-dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 4
    assert "segcam: error: TensorRT 10.3.0 cannot parse bad.onnx" in err
    assert "segcam: hint:" in err and "Traceback" not in err
    assert main(["engine", "list", "--dir", str(tmp_path / "empty")]) == 0
    assert "no engines in" in capsys.readouterr().out
