"""The ONNX Runtime backend with real ONNX graphs (built here with onnx.helper) and the real
default model.

Each user-model convention (BiRefNet, MODNet, DeepLabV3, PP-HumanSeg) gets a small graph
that follows it: a 1x1 convolution over the normalised image, then the convention's
output (logits, sigmoid matte, 21-class scores, 2-class softmax). The pipeline (profile ->
preprocess -> ORT -> postprocess) must agree with a numpy computation written from the
convention itself, not from the profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from segcam.config import load_config
from segcam.errors import BackendError, ModelError
from segcam.inference.onnxruntime import OnnxRuntimeBackend, resolve_providers
from segcam.inference.postprocess import to_probability
from segcam.inference.preprocess import Preprocessor, preprocess
from segcam.inference.profile import StateInput, load_profile, replace
from segcam.inference.select import select_backend

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


def _save(path: Path, nodes, inputs, outputs, inits=(), opset: int = 17) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _vi(name: str, shape: Sequence, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, list(shape))


def conv1x1_model(
    path: Path,
    in_name: str,
    out_name: str,
    h: int,
    w: int,
    weights: np.ndarray,
    bias: np.ndarray,
    tail: Optional[str] = None,
    extra_outputs: Sequence[str] = (),
    elem=TensorProto.FLOAT,
) -> Path:
    """NCHW image -> 1x1 Conv (C_out x 3) -> optional Sigmoid/Softmax -> out_name."""
    c = weights.shape[0]
    inits = [
        numpy_helper.from_array(weights.reshape(c, 3, 1, 1).astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "B"),
    ]
    nodes = []
    src = in_name
    if elem == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", [in_name], ["x32"], to=TensorProto.FLOAT))
        src = "x32"
    conv_out = "conv" if tail or elem == TensorProto.FLOAT16 else out_name
    nodes.append(helper.make_node("Conv", [src, "W", "B"], [conv_out]))
    if tail == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["conv"], [out_name]))
    elif tail == "softmax":
        nodes.append(helper.make_node("Softmax", ["conv"], [out_name], axis=1))
    elif elem == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", ["conv"], [out_name], to=TensorProto.FLOAT16))
    outputs = [_vi(n, [1, 3, h, w]) for n in extra_outputs]
    for n in extra_outputs:
        nodes.append(helper.make_node("Identity", [src], [n]))
    outputs.append(_vi(out_name, [1, c, h, w], elem))
    return _save(path, nodes, [_vi(in_name, [1, 3, h, w], elem)], outputs, inits)


def rgb_unit(frame_bgr: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resized frame as RGB floats in [0, 1] (float64), HxWx3."""
    return cv2.resize(frame_bgr, (w, h), interpolation=cv2.INTER_LINEAR)[:, :, ::-1] / 255.0


def conv(x_hwc: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """1x1 conv in float64: HxWx3 -> CxHxW."""
    return np.einsum("hwc,kc->khw", x_hwc, weights) + bias[:, None, None]


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A real photograph (scikit-image's astronaut), BGR, not square."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[40:440, :, ::-1])


def run(backend, profile, frame_bgr) -> np.ndarray:
    return to_probability(backend.infer(preprocess(frame_bgr, profile)), profile)


# ------------------------------------------------------------------ the four conventions


def test_birefnet_like_nchw_logits_imagenet(tmp_path: Path, frame: np.ndarray) -> None:
    prof = load_profile("birefnet")  # the shipped profile, 1024x1024
    rng = np.random.default_rng(1)
    wgt, b = rng.normal(size=(1, 3)), rng.normal(size=1)
    path = conv1x1_model(
        tmp_path / "biref.onnx", "input_image", "output_image", 1024, 1024, wgt, b,
        extra_outputs=["aux"],
    )  # fmt: skip
    backend = OnnxRuntimeBackend(prof, path)
    assert backend.output_spec.name == "output_image"  # output_index -1 = last
    x = (rgb_unit(frame, 1024, 1024) - IMAGENET_MEAN) / IMAGENET_STD
    expect = 1.0 / (1.0 + np.exp(-conv(x, wgt, b)[0]))
    got = run(backend, prof, frame)
    assert got.shape == (1024, 1024) and got.dtype == np.float32
    np.testing.assert_allclose(got, expect, atol=2e-5)


def test_modnet_like_minus1_1_matte(tmp_path: Path, frame: np.ndarray) -> None:
    prof = load_profile("modnet")  # the shipped profile, 512x512
    rng = np.random.default_rng(2)
    wgt, b = rng.normal(size=(1, 3)), rng.normal(size=1)
    path = conv1x1_model(tmp_path / "modnet.onnx", "input", "output", 512, 512, wgt, b, "sigmoid")
    backend = OnnxRuntimeBackend(prof, path)
    x = rgb_unit(frame, 512, 512) * 2.0 - 1.0
    expect = 1.0 / (1.0 + np.exp(-conv(x, wgt, b)[0]))
    np.testing.assert_allclose(run(backend, prof, frame), expect, atol=2e-5)


def test_deeplabv3_like_21_classes_person_15(tmp_path: Path, frame: np.ndarray) -> None:
    prof = replace(load_profile("deeplabv3"), width=65, height=65)
    assert prof.foreground_classes == [15] and prof.num_classes == 21
    rng = np.random.default_rng(3)
    wgt, b = rng.normal(size=(21, 3)) * 3, rng.normal(size=21)
    path = conv1x1_model(tmp_path / "dl.onnx", "input", "out", 65, 65, wgt, b)
    backend = OnnxRuntimeBackend(prof, path)
    x = (rgb_unit(frame, 65, 65) - IMAGENET_MEAN) / IMAGENET_STD
    scores = conv(x, wgt, b)
    e = np.exp(scores - scores.max(axis=0))
    expect = e[15] / e.sum(axis=0)
    got = run(backend, prof, frame)
    np.testing.assert_allclose(got, expect, atol=2e-5)
    # A different class would give a different answer: the profile's class matters.
    assert np.abs(expect - e[14] / e.sum(axis=0)).max() > 0.1


def test_pp_humanseg_like_two_class_softmax(tmp_path: Path, frame: np.ndarray) -> None:
    prof = load_profile("pp-humanseg")
    assert (prof.width, prof.height) == (256, 144)
    rng = np.random.default_rng(4)
    wgt, b = rng.normal(size=(2, 3)) * 2, rng.normal(size=2)
    path = conv1x1_model(tmp_path / "pp.onnx", "x", "softmax_out", 144, 256, wgt, b, "softmax")
    backend = OnnxRuntimeBackend(prof, path)
    x = rgb_unit(frame, 256, 144) * 2.0 - 1.0
    s = conv(x, wgt, b)
    expect = 1.0 / (1.0 + np.exp(s[0] - s[1]))  # softmax of two = sigmoid of the difference
    got = run(backend, prof, frame)
    assert got.shape == (144, 256)
    np.testing.assert_allclose(got, expect, atol=2e-5)


def test_float16_model(tmp_path: Path, frame: np.ndarray) -> None:
    prof = replace(load_profile("modnet"), width=32, height=32, dtype="float16")
    rng = np.random.default_rng(5)
    wgt, b = rng.normal(size=(1, 3)), rng.normal(size=1)
    path = conv1x1_model(
        tmp_path / "fp16.onnx", "input", "output", 32, 32, wgt, b, elem=TensorProto.FLOAT16
    )
    backend = OnnxRuntimeBackend(replace(prof, output_kind="logits"), path)
    tensor = preprocess(frame, backend.profile)
    assert tensor.dtype == np.float16
    raw = backend.infer(tensor)
    assert raw.dtype == np.float16
    x = rgb_unit(frame, 32, 32) * 2.0 - 1.0
    expect = 1.0 / (1.0 + np.exp(-conv(x, wgt, b)[0]))
    np.testing.assert_allclose(to_probability(raw, backend.profile), expect, atol=5e-3)


def test_infer_into_out_and_buffers_reused(tmp_path: Path, frame: np.ndarray) -> None:
    prof = replace(load_profile("modnet"), width=32, height=32)
    path = conv1x1_model(
        tmp_path / "m.onnx", "input", "output", 32, 32, np.ones((1, 3)), np.zeros(1)
    )
    backend = OnnxRuntimeBackend(prof, path)
    pre = Preprocessor(prof)
    t1 = pre(frame)
    out = np.empty((1, 1, 32, 32), np.float32)
    r1 = backend.infer(t1, out=out)
    assert r1 is out
    keep = backend.infer(t1)
    assert keep is not out
    r2 = backend.infer(pre(frame[::-1].copy()))
    assert not np.array_equal(keep, r2)  # an earlier result is not overwritten
    np.testing.assert_array_equal(keep, out)


# ------------------------------------------------------------------ mismatches at load


@pytest.fixture()
def nchw64(tmp_path: Path) -> Path:
    return conv1x1_model(
        tmp_path / "n.onnx", "input", "output", 64, 64, np.ones((1, 3)), np.zeros(1), "sigmoid"
    )


def _modnet(**changes):
    return replace(load_profile("modnet"), width=64, height=64, **changes)


def test_wrong_input_name(nchw64: Path) -> None:
    with pytest.raises(ModelError) as err:
        OnnxRuntimeBackend(_modnet(input_name="image"), nchw64)
    assert "'image'" in err.value.message and "input[1,3,64,64] float32" in err.value.message


def test_wrong_layout_is_named(tmp_path: Path, nchw64: Path) -> None:
    with pytest.raises(ModelError) as err:
        OnnxRuntimeBackend(_modnet(layout="NHWC"), nchw64)
    assert "NHWC" in err.value.message and "layout: NCHW" in err.value.hint


def test_wrong_size(nchw64: Path) -> None:
    with pytest.raises(ModelError) as err:
        OnnxRuntimeBackend(replace(load_profile("modnet")), nchw64)
    assert "512x512" in err.value.message and "[1,3,64,64]" in err.value.message


def test_wrong_dtype(nchw64: Path) -> None:
    with pytest.raises(ModelError) as err:
        OnnxRuntimeBackend(_modnet(dtype="float16"), nchw64)
    assert "float32" in err.value.message and "dtype: float32" in err.value.hint


def test_wrong_output_name_and_index(nchw64: Path) -> None:
    with pytest.raises(ModelError, match="output_name is 'alpha'.*output\\[1,1,64,64\\]"):
        OnnxRuntimeBackend(_modnet(output_name="alpha"), nchw64)
    with pytest.raises(ModelError, match="output_index 3"):
        OnnxRuntimeBackend(_modnet(output_name="", output_index=3), nchw64)


def test_multiclass_profile_on_single_channel_model(nchw64: Path) -> None:
    with pytest.raises(ModelError, match="1 classes.*num_classes 21"):
        OnnxRuntimeBackend(replace(load_profile("deeplabv3"), input_name="input",
                                   output_name="output", width=64, height=64), nchw64)  # fmt: skip


def test_argmax_output_rejected(tmp_path: Path) -> None:
    nodes = [helper.make_node("ArgMax", ["x"], ["labels"], axis=1, keepdims=1)]
    path = _save(
        tmp_path / "argmax.onnx", nodes, [_vi("x", [1, 3, 144, 256])],
        [_vi("labels", [1, 1, 144, 256], TensorProto.INT64)],
    )  # fmt: skip
    with pytest.raises(ModelError, match="argmax"):
        OnnxRuntimeBackend(load_profile("pp-humanseg"), path)


def test_undeclared_extra_input(tmp_path: Path) -> None:
    nodes = [helper.make_node("Add", ["input", "r1i"], ["output"])]
    path = _save(
        tmp_path / "two.onnx", nodes,
        [_vi("input", [1, 3, 64, 64]), _vi("r1i", [1, 3, 64, 64])], [_vi("output", [1, 3, 64, 64])],
    )  # fmt: skip
    with pytest.raises(ModelError, match="does not feed: r1i"):
        OnnxRuntimeBackend(_modnet(), path)


def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist") as err:
        OnnxRuntimeBackend(load_profile("modnet"), tmp_path / "nope.onnx")
    assert "segcam model fetch" in err.value.hint
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelError, match="cannot load ONNX model"):
        OnnxRuntimeBackend(load_profile("modnet"), bad)


def test_wrong_tensor_at_run_time(nchw64: Path) -> None:
    backend = OnnxRuntimeBackend(_modnet(), nchw64)
    with pytest.raises(BackendError, match="float32 \\(1, 3, 64, 64\\)"):
        backend.infer(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(BackendError):
        backend.infer_device(0, 0, 0)  # CPU provider: no device path


# ------------------------------------------------------------------ recurrent state


def test_state_inputs_carried_between_calls(tmp_path: Path) -> None:
    """An RVM-like graph: r1o = r1i + 1 feeds r1i next call; ratio is constant."""
    nodes = [
        helper.make_node("ReduceMean", ["src"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["m", "ratio"], ["m2"]),
        helper.make_node("Add", ["m2", "r1i"], ["pha"]),
        helper.make_node("Add", ["r1i", "one"], ["r1o"]),
    ]
    inits = [numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "one")]
    path = _save(
        tmp_path / "rvm.onnx", nodes,
        [_vi("src", [1, 3, 16, 16]), _vi("r1i", [1, 1, 1, 1]), _vi("ratio", [1])],
        [_vi("pha", [1, 1, 16, 16]), _vi("r1o", [1, 1, 1, 1])], inits,
    )  # fmt: skip
    prof = replace(
        load_profile("modnet"), input_name="src", output_name="pha", width=16, height=16,
        state_inputs=[StateInput("r1i", [1, 1, 1, 1], "float32", 0.0, "r1o"),
                      StateInput("ratio", [1], "float32", 0.0, "")],
    )  # fmt: skip
    backend = OnnxRuntimeBackend(prof, path)
    zeros = np.zeros(prof.input_shape, np.float32)
    results: List[float] = [float(backend.infer(zeros).max()) for _ in range(3)]
    assert results == [0.0, 1.0, 2.0]
    backend.reset_state()
    assert float(backend.infer(zeros).max()) == 0.0


# ------------------------------------------------------------------ providers and selection


def test_resolve_providers() -> None:
    cpu_only = ["CPUExecutionProvider"]
    assert resolve_providers(["auto"], cpu_only) == ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(["auto"], gpu[::-1]) == gpu
    assert resolve_providers(["cuda"], gpu) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(BackendError, match="'cuda' is not in this onnxruntime build"):
        resolve_providers(["cuda"], cpu_only)


def test_select_backend_falls_back_to_onnxruntime(nchw64: Path) -> None:
    cfg = load_config()
    backend, reason = select_backend(cfg, _modnet(), nchw64)
    assert backend.name == "onnxruntime"
    assert reason.startswith("onnxruntime:CPU") and "tensorrt" in reason
    cfg = load_config(overrides=["inference.require_tensorrt=true"])
    with pytest.raises(BackendError, match="require_tensorrt"):
        select_backend(cfg, _modnet(), nchw64)


# ------------------------------------------------------------------ the real default model


@pytest.mark.parametrize("name", ["mediapipe-selfie", "mediapipe-selfie-landscape"])
def test_real_model_segments_the_portrait(name: str, request, portrait_bgr: np.ndarray) -> None:
    """MediaPipe Selfie Segmentation on a real photo of a person (512x512 astronaut)."""
    onnx_path = request.getfixturevalue(
        "selfie_onnx" if name == "mediapipe-selfie" else "selfie_landscape_onnx"
    )
    prof = load_profile(name)
    backend = OnnxRuntimeBackend(prof, onnx_path)
    prob = to_probability(backend.infer(preprocess(portrait_bgr, prof)), prof)
    assert prob.shape == (prof.height, prof.width)
    m = cv2.resize(prob, (512, 512), interpolation=cv2.INTER_LINEAR)
    assert m[50:150, 180:270].mean() > 0.8  # face
    assert m[260:440, 80:320].mean() > 0.8  # torso (orange suit)
    assert m[0:60, 0:60].mean() < 0.2  # flag, top-left corner
    assert m[0:60, 452:512].mean() < 0.2  # backdrop, top-right corner


def test_out_of_another_shape_gets_a_new_array(nchw64: Path) -> None:
    """After a model switch the pipeline may still hold the old model's output buffer."""
    backend = OnnxRuntimeBackend(_modnet(), nchw64)
    stale = np.empty((1, 1, 32, 32), np.float32)
    res = backend.infer(np.zeros((1, 3, 64, 64), np.float32), out=stale)
    assert res is not stale and res.shape == (1, 1, 64, 64)


def test_dynamic_model_that_fails_on_the_profile_size(tmp_path: Path) -> None:
    """Dynamic input dims pass the shape check; the warm-up run catches the mismatch."""
    shape = numpy_helper.from_array(np.array([1, 1, 64, 192], np.int64), "s")
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Reshape", ["m", "s"], ["output"]),
    ]
    path = _save(
        tmp_path / "dyn.onnx", nodes, [_vi("input", [1, 3, "h", "w"])],
        [_vi("output", [1, 1, 64, 192])], [shape], opset=13,
    )  # fmt: skip
    good = replace(load_profile("modnet"), width=192, height=64)
    assert OnnxRuntimeBackend(good, path).inputs[0].shape == (1, 3, -1, -1)
    with pytest.raises(ModelError, match="fails on a \\[1, 3, 64, 64\\] input"):
        OnnxRuntimeBackend(replace(good, width=64), path)


def test_unknown_operator_names_onnxruntime(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("FooOp", ["input"], ["output"], domain="com.example")], "g",
        [_vi("input", [1, 3, 64, 64])], [_vi("output", [1, 1, 64, 64])],
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]
    )
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "foo.onnx"))
    with pytest.raises(ModelError, match="FooOp") as err:
        OnnxRuntimeBackend(_modnet(), tmp_path / "foo.onnx")
    assert "onnxruntime" in err.value.hint
