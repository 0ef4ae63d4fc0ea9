"""Give an ONNX model a dynamic batch dimension, so one call can serve several streams.

Models converted by segcam (and many exported ones) are fixed at batch 1: the batch
appears in the graph's input and output shapes and in a few constant shape tensors
(``Reshape`` targets, ``Resize`` sizes). :func:`with_dynamic_batch` rewrites exactly those:
the first input/output dimension becomes the symbol ``N``, a Reshape target's leading 1
becomes 0 ("copy the input's dimension"), and a Resize by ``sizes`` becomes a Resize by
the equivalent ``scales`` (the same coordinate mapping: ONNX derives the scale from the
sizes the same way). Anything else that depends on the batch (a Reshape to a computed
shape, an Expand, ...) raises ModelError naming the node: such a model then runs one
frame per call.

:func:`batched_model` caches the rewritten model next to the model cache, named by the
source's sha256, so it is made once per model and is never stale.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

import numpy as np

from segcam.errors import ModelError
from segcam.fileio import write_atomic

if TYPE_CHECKING:  # pragma: no cover
    import onnx

log = logging.getLogger("segcam.models")

BATCH_SYMBOL = "N"
_SHAPE_FREE_OPS = {
    # element-wise or per-sample ops: nothing in them names the batch size
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Relu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "HardSwish",
    "HardSigmoid",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "Transpose",
    "Identity",
    "BatchNormalization",
    "Softmax",
    "Concat",
    "Pad",
    "LeakyRelu",
    "PRelu",
    "Max",
    "Min",
    "Pow",
    "Sqrt",
    "Exp",
    "Neg",
    "Abs",
    "Cast",
    "Upsample",
}


def batch_dim(model: onnx.ModelProto) -> int:
    """The first input's leading dimension: 1 (fixed), another number, or -1 (dynamic)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if not dims:
        return 1
    d = dims[0]
    return int(d.dim_value) if d.HasField("dim_value") else -1


def with_dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` (fixed batch 1) whose batch dimension is dynamic.

    Raises ModelError if some node depends on the batch in a way this cannot rewrite.
    """
    import onnx
    from onnx import numpy_helper, shape_inference

    if batch_dim(model) == -1:
        return model
    if batch_dim(model) != 1:
        raise ModelError(f"the model's batch dimension is {batch_dim(model)}, not 1")
    inferred = shape_inference.infer_shapes(model)
    shapes: Dict[str, List[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    inits = {t.name: t for t in g.initializer}
    uses: Dict[str, int] = {}
    for node in g.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1

    def const(name: str, node: onnx.NodeProto) -> np.ndarray:
        if name not in inits:
            raise ModelError(
                f"node {node.name or node.op_type} ({node.op_type}) takes a computed shape",
                "export the model with a dynamic batch (dynamic_axes) to batch it",
            )
        if uses.get(name, 0) > 1:
            raise ModelError(f"shape constant {name} is shared by several nodes")
        return numpy_helper.to_array(inits[name])

    for node in g.node:
        if node.op_type == "Reshape":
            shape = const(node.input[1], node).copy()
            if shape.size == 0 or shape[0] != 1:
                raise ModelError(f"Reshape {node.name} does not keep the batch first")
            shape[0] = 0  # copy the input's batch
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
        elif node.op_type == "Resize":
            if len(node.input) < 4 or not node.input[3]:
                continue  # scales only: nothing names the batch
            sizes = const(node.input[3], node)
            src = shapes.get(node.input[0])
            if not src or len(src) != len(sizes) or 0 in src:
                raise ModelError(f"Resize {node.name}: input shape unknown")
            scales = np.array([s / i for s, i in zip(sizes, src)], np.float32)
            scales[0] = 1.0
            name = node.input[3] + "_scales"
            g.initializer.append(numpy_helper.from_array(scales, name))
            g.initializer.remove(inits.pop(node.input[3]))
            node.input[2] = name
            del node.input[3]
        elif node.op_type not in _SHAPE_FREE_OPS:
            raise ModelError(
                f"node {node.name or node.op_type} ({node.op_type}) may depend on the batch size",
                "export the model with a dynamic batch (dynamic_axes) to batch it",
            )
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = BATCH_SYMBOL
    del g.value_info[:]  # stale batch-1 shapes
    try:
        onnx.checker.check_model(out)
        out = shape_inference.infer_shapes(out, strict_mode=True)
    except (onnx.checker.ValidationError, shape_inference.InferenceError) as exc:
        raise ModelError(f"dynamic-batch rewrite failed ONNX validation: {exc}") from None
    return out


def batched_model(onnx_path: Path, cache_dir: Path) -> Path:
    """The dynamic-batch variant of ``onnx_path`` (the file itself if already dynamic).

    Written once to ``<cache_dir>/batch/<stem>-<sha256[:16]>.onnx``; ModelError if the
    model cannot be rewritten.
    """
    import hashlib

    import onnx

    data = Path(onnx_path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    target = Path(cache_dir).expanduser() / "batch" / f"{Path(onnx_path).stem}-{digest}.onnx"
    if target.is_file():
        return target
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - a protobuf error names nothing useful
        raise ModelError(f"cannot read {onnx_path}: {exc}") from None
    if batch_dim(model) == -1:
        return Path(onnx_path)
    batched = with_dynamic_batch(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, batched.SerializeToString())
    log.info("model %s: dynamic-batch variant written to %s", Path(onnx_path).name, target)
    return target


__all__ = ["BATCH_SYMBOL", "batch_dim", "batched_model", "with_dynamic_batch"]
