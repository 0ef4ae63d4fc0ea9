"""Helpers for tests that drive segcam's TensorRT code through the stand-in (a test double).

A GPU that is not there (:func:`fake_gpu`), a small ONNX model with a dynamic input and two
outputs (:func:`dynamic_two_output_onnx`) and its profile.
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Tuple

from segcam.inference.profile import ModelProfile, parse_profile


def fake_gpu(name: str = "Orin", sm: Tuple[int, int] = (8, 7)) -> Any:
    """An object with the fields of segcam.gpu.GpuInfo that TensorRT code reads."""
    return types.SimpleNamespace(name=name, sm=sm, index=0, integrated=True)


def dynamic_two_output_onnx(path: Path) -> Path:
    """ONNX: image [1,3,H,W] -> outputs aux = Relu(image) and prob = Sigmoid(mean over C)."""
    import onnx
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "H", "W"])
    aux = helper.make_tensor_value_info("aux", TensorProto.FLOAT, [1, 3, "H", "W"])
    prob = helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 1, "H", "W"])
    nodes = [
        helper.make_node("Relu", ["image"], ["aux"]),
        helper.make_node("ReduceMean", ["image"], ["score"], axes=[1], keepdims=1),
        helper.make_node("Sigmoid", ["score"], ["prob"]),
    ]
    graph = helper.make_graph(nodes, "dyn2", [image], [aux, prob])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def dynamic_profile(width: int = 64, height: int = 48, output: str = "prob") -> ModelProfile:
    """Profile of :func:`dynamic_two_output_onnx` at ``width`` x ``height``."""
    text = (
        "name: dyn2\ninput_name: image\nlayout: NCHW\n"
        f"width: {width}\nheight: {height}\n"
        "color_order: RGB\nscale: 1/255\ndtype: float32\n"
        f"output_name: '{output}'\noutput_index: -1\noutput_kind: probability\n"
    )
    return parse_profile(text, name="dyn2")
