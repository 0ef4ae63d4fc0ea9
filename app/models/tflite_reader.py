"""Read a TensorFlow Lite flatbuffer into plain dataclasses (tensors, operators, constants).

Parsing uses the ``tflite`` package (flatc-generated readers of the TFLite schema). The
result is decoupled from flatbuffers so the converter works on simple Python objects, and
every way a file can be broken (not a flatbuffer, truncated, buffer out of range) becomes
one :class:`~segcam.errors.ModelError` here instead of a stray ``IndexError`` later.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from segcam.errors import ModelError

# TensorType enum of the TFLite schema -> numpy dtype (only types a converter may meet).
_TENSOR_TYPES: Dict[int, Any] = {
    0: np.float32,
    1: np.float16,
    2: np.int32,
    3: np.uint8,
    4: np.int64,
    6: np.bool_,
    7: np.int16,
    9: np.int8,
    10: np.float64,
}

# builtin operator -> name of its options table class in the ``tflite`` package.
_OPTION_CLASSES: Dict[str, str] = {
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "ADD": "AddOptions",
    "MUL": "MulOptions",
    "SUB": "SubOptions",
    "DIV": "DivOptions",
    "MEAN": "ReducerOptions",
    "RESIZE_BILINEAR": "ResizeBilinearOptions",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions",
    "CONCATENATION": "ConcatenationOptions",
}

# Errors the generated readers raise on malformed or truncated input.
_PARSE_ERRORS = (struct.error, IndexError, ValueError, TypeError, UnicodeDecodeError, OverflowError)


@dataclass
class Quantization:
    """Affine quantization parameters of a tensor (per-tensor or per-axis)."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0


@dataclass
class TfTensor:
    """One tensor of the subgraph; ``data`` is set for constants (weights, sizes)."""

    index: int
    name: str
    shape: Tuple[int, ...]
    dtype: Any
    data: Optional[np.ndarray] = None
    quantization: Optional[Quantization] = None


@dataclass
class TfOperator:
    """One operator: its opcode name (``CONV_2D``; ``CUSTOM`` with ``custom_code``)."""

    index: int
    opcode: str
    inputs: List[int]
    outputs: List[int]
    options: Any = None
    custom_code: str = ""
    custom_options: bytes = b""
    version: int = 1

    @property
    def display_name(self) -> str:
        """The name a user recognises: the builtin name or the custom op's code."""
        return self.custom_code if self.opcode == "CUSTOM" else self.opcode


@dataclass
class TfGraph:
    """The model's (single) subgraph in plain form."""

    tensors: List[TfTensor]
    operators: List[TfOperator]
    inputs: List[int]
    outputs: List[int]
    schema_version: int = 3
    description: str = ""
    op_counts: Dict[str, int] = field(default_factory=dict)


def _builtin_names() -> Dict[int, str]:
    import tflite

    return {
        value: key
        for key, value in vars(tflite.BuiltinOperator).items()
        if not key.startswith("_") and isinstance(value, int)
    }


def _decode(raw: Optional[bytes]) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def _buffer_bytes(model: Any, index: int, data: bytes) -> Optional[bytes]:
    """Bytes of buffer ``index``: inline vector or (large models) offset/size into the file."""
    if index <= 0 or index >= model.BuffersLength():
        return None
    buf = model.Buffers(index)
    offset = buf.Offset() if hasattr(buf, "Offset") else 0
    if offset and offset > 1:
        size = buf.Size()
        if offset + size > len(data):
            raise ModelError("a weight buffer lies past the end of the file (truncated?)")
        return data[offset : offset + size]
    if buf.DataLength() == 0:
        return None
    return buf.DataAsNumpy().tobytes()


def _read_tensor(model: Any, sg: Any, index: int, data: bytes) -> TfTensor:
    t = sg.Tensors(index)
    shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    ttype = t.Type()
    if ttype not in _TENSOR_TYPES:
        dtype: Any = None
    else:
        dtype = _TENSOR_TYPES[ttype]
    name = _decode(t.Name()) or f"tensor_{index}"
    raw = _buffer_bytes(model, t.Buffer(), data)
    array = None
    if raw is not None and dtype is not None:
        array = np.frombuffer(raw, dtype=dtype)
        expected = int(np.prod(shape)) if shape else 1
        if array.size != expected:
            raise ModelError(
                f"constant tensor '{name}' holds {array.size} values, its shape {list(shape)} "
                f"needs {expected} (corrupt file?)"
            )
        array = array.reshape(shape).copy()
    quant = None
    q = t.Quantization()
    if q is not None and q.ScaleLength() > 0:
        quant = Quantization(
            scale=q.ScaleAsNumpy().astype(np.float32),
            zero_point=q.ZeroPointAsNumpy().astype(np.int64)
            if q.ZeroPointLength()
            else np.zeros(q.ScaleLength(), np.int64),
            axis=int(q.QuantizedDimension()),
        )
    return TfTensor(index, name, shape, dtype, array, quant)


def _read_options(op: Any, opcode: str) -> Any:
    class_name = _OPTION_CLASSES.get(opcode)
    table = op.BuiltinOptions()
    if class_name is None or table is None:
        return None
    import tflite

    options = getattr(tflite, class_name)()
    options.Init(table.Bytes, table.Pos)
    return options


def parse_tflite(data: bytes, source: str = "model") -> TfGraph:
    """Parse TFLite flatbuffer bytes; raises ModelError if the file is not a valid model."""
    hint = "fetch it again with `segcam model fetch`, or check the file you passed"
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelError(f"{source} is not a TensorFlow Lite model (no TFL3 identifier)", hint)
    try:
        return _parse(data)
    except ModelError as exc:
        raise ModelError(f"{source} is corrupt: {exc.message}", hint) from None
    except _PARSE_ERRORS as exc:
        raise ModelError(
            f"{source} is corrupt or truncated ({len(data)} bytes; {exc})", hint
        ) from None


def _parse(data: bytes) -> TfGraph:
    import tflite

    model = tflite.Model.GetRootAsModel(data, 0)
    if model.SubgraphsLength() != 1:
        raise ModelError(f"expected 1 subgraph, found {model.SubgraphsLength()}")
    names = _builtin_names()
    codes: List[Tuple[str, str, int]] = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        # Schema v3a moved codes > 127 to BuiltinCode; older files only fill the deprecated one.
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        codes.append((names.get(code, f"BUILTIN_{code}"), _decode(oc.CustomCode()), oc.Version()))
    sg = model.Subgraphs(0)
    tensors = [_read_tensor(model, sg, i, data) for i in range(sg.TensorsLength())]
    operators: List[TfOperator] = []
    counts: Dict[str, int] = {}
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        if op.OpcodeIndex() >= len(codes):
            raise ModelError(f"operator {i} refers to opcode {op.OpcodeIndex()} that is absent")
        opcode, custom, version = codes[op.OpcodeIndex()]
        ins = [int(x) for x in op.InputsAsNumpy()] if op.InputsLength() else []
        outs = [int(x) for x in op.OutputsAsNumpy()] if op.OutputsLength() else []
        for t in ins + outs:
            if t >= len(tensors):
                raise ModelError(f"operator {i} refers to tensor {t} that is absent")
        custom_opts = op.CustomOptionsAsNumpy().tobytes() if op.CustomOptionsLength() else b""
        tf_op = TfOperator(
            index=i,
            opcode=opcode,
            inputs=ins,
            outputs=outs,
            options=_read_options(op, opcode),
            custom_code=custom,
            custom_options=custom_opts,
            version=version,
        )
        operators.append(tf_op)
        counts[tf_op.display_name] = counts.get(tf_op.display_name, 0) + 1
    inputs = [int(x) for x in sg.InputsAsNumpy()] if sg.InputsLength() else []
    outputs = [int(x) for x in sg.OutputsAsNumpy()] if sg.OutputsLength() else []
    return TfGraph(
        tensors=tensors,
        operators=operators,
        inputs=inputs,
        outputs=outputs,
        schema_version=int(model.Version()),
        description=_decode(model.Description()),
        op_counts=counts,
    )
