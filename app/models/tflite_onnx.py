"""Convert a float TensorFlow Lite model to ONNX (segcam's own converter).

TFLite computes in NHWC; ONNX Runtime and TensorRT are fastest in NCHW. The converter
therefore keeps every 4-D activation in NCHW inside the graph and changes layout only at
the edges: one Transpose after the NHWC input and one before the NHWC output (a Reshape
when the channel count is 1, which moves no data). Weights are rearranged once, at
conversion time, into ONNX's layouts, so the graph has no per-op transposes.

Covered: DEQUANTIZE (fp16/int8 constants folded into fp32 initialisers), CONV_2D,
DEPTHWISE_CONV_2D, TRANSPOSE_CONV, AVERAGE_POOL_2D, MAX_POOL_2D, MEAN, ADD, SUB, MUL, DIV,
RELU, RELU6, RELU_N1_TO_1, LOGISTIC, TANH, HARD_SWISH, RESIZE_BILINEAR and MediaPipe's
custom ``Convolution2DTransposeBias``; fused activations and TFLite's SAME padding
(asymmetric: the extra row/column goes at the bottom/right) are honoured. Anything else
raises :class:`~segcam.errors.ModelError` naming the operator.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from segcam.errors import ModelError
from segcam.models.tflite_reader import TfGraph, TfOperator, TfTensor, parse_tflite

if TYPE_CHECKING:
    import onnx

CONVERTER_VERSION = "1.0"
# Opset 17 / IR 8: the newest that TensorRT 8.5 (JetPack 5.1) and ORT >= 1.12 all read.
ONNX_OPSET = 17
ONNX_IR_VERSION = 8

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)

# TFLite schema enums
_PAD_SAME, _PAD_VALID = 0, 1
# TfLitePadding (C API enum) used inside MediaPipe's custom options
_C_PAD_SAME, _C_PAD_VALID = 1, 2
# Fused activations TFLite's kernels apply (as a clamp). TANH/SIGN_BIT exist in the schema
# but the float kernels ignore them, so a file using them is refused rather than guessed.
_ACTIVATIONS = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6"}
_ACTIVATION_NAMES = {4: "TANH", 5: "SIGN_BIT"}


def _onnx():
    import onnx

    return onnx


class _Emitter:
    """Collects ONNX nodes/initialisers while walking the TFLite operators in order."""

    def __init__(self, graph: TfGraph) -> None:
        self.tf = graph
        self.nodes: List[object] = []
        self.initializers: List[object] = []
        self.consts: Dict[int, np.ndarray] = {}
        self.values: Dict[int, str] = {}  # tflite tensor -> ONNX value holding it
        self.nchw: Set[int] = set()  # tensors stored channel-first inside the graph
        self.used: Set[str] = set()
        for t in graph.tensors:
            if t.data is not None:
                self.consts[t.index] = t.data

    # -- names, constants, nodes ------------------------------------------------------
    def unique(self, base: str) -> str:
        """A value/initialiser name not used before, derived from ``base``."""
        name = base or "v"
        n = 1
        while name in self.used:
            name = f"{base}_{n}"
            n += 1
        self.used.add(name)
        return name

    def initializer(self, array: np.ndarray, base: str) -> str:
        """Add a constant as an initialiser; returns its name."""
        onnx = _onnx()
        name = self.unique(base)
        self.initializers.append(onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: Sequence[str], output: str, **attrs: object) -> str:
        """Append one node with a single output; returns the output name."""
        onnx = _onnx()
        self.nodes.append(
            onnx.helper.make_node(op_type, list(inputs), [output], name=output, **attrs)
        )
        return output

    def tensor(self, index: int) -> TfTensor:
        """The TFLite tensor ``index``."""
        return self.tf.tensors[index]

    def const(self, op: TfOperator, slot: int, what: str) -> np.ndarray:
        """The constant at input ``slot`` of ``op``; a clear error if it is computed."""
        index = op.inputs[slot]
        if index < 0 or index not in self.consts:
            raise ModelError(
                f"{op.display_name} (operator {op.index}) has a non-constant {what}; "
                "only constant weights are supported"
            )
        return self.consts[index]

    def optional_const(self, op: TfOperator, slot: int) -> Optional[np.ndarray]:
        """The constant at ``slot`` or None when the input is absent (-1)."""
        if slot >= len(op.inputs) or op.inputs[slot] < 0:
            return None
        return self.const(op, slot, "bias")

    def value(self, op: TfOperator, slot: int) -> str:
        """The ONNX value of the activation at input ``slot``."""
        index = op.inputs[slot]
        if index in self.values:
            return self.values[index]
        if index in self.consts:
            return self.initializer(self.consts[index].astype(np.float32), self.tensor(index).name)
        raise ModelError(
            f"{op.display_name} (operator {op.index}) reads tensor "
            f"'{self.tensor(index).name}' before anything produces it"
        )

    def output_name(self, op: TfOperator, slot: int = 0) -> str:
        """A fresh ONNX name for output ``slot`` of ``op``."""
        return self.unique(self.tensor(op.outputs[slot]).name)

    def bind(self, op: TfOperator, name: str, nchw: bool, slot: int = 0) -> None:
        """Record that ONNX value ``name`` holds output ``slot`` of ``op``."""
        index = op.outputs[slot]
        self.values[index] = name
        if nchw:
            self.nchw.add(index)

    def is_nchw(self, op: TfOperator, slot: int) -> bool:
        """Whether input ``slot`` of ``op`` is stored channel-first."""
        return op.inputs[slot] in self.nchw

    def emit(
        self, op: TfOperator, code: int, op_type: str, inputs: Sequence[str], **attrs: object
    ) -> str:
        """Emit ``op``'s main node plus its fused activation ``code``; returns the result."""
        if code not in _ACTIVATIONS:
            name = _ACTIVATION_NAMES.get(code, str(code))
            raise ModelError(f"{op.display_name} uses fused activation {name}, not supported")
        final = self.output_name(op)
        kind = _ACTIVATIONS[code]
        if kind is None:
            return self.node(op_type, inputs, final, **attrs)
        pre = self.node(op_type, inputs, self.unique(final + "_preact"), **attrs)
        return self.unary(kind, pre, final)

    def unary(self, kind: str, value: str, out: str) -> str:
        """One elementwise activation by TFLite name."""
        if kind == "RELU":
            return self.node("Relu", [value], out)
        if kind in ("RELU6", "RELU_N1_TO_1"):
            lo, hi = (0.0, 6.0) if kind == "RELU6" else (-1.0, 1.0)
            lo_name = self.initializer(np.array(lo, np.float32), f"{out}_min")
            hi_name = self.initializer(np.array(hi, np.float32), f"{out}_max")
            return self.node("Clip", [value, lo_name, hi_name], out)
        if kind == "TANH":
            return self.node("Tanh", [value], out)
        if kind == "LOGISTIC":
            return self.node("Sigmoid", [value], out)
        if kind == "HARD_SWISH":
            return self.node("HardSwish", [value], out)
        raise ModelError(f"activation {kind} is not supported")


# -- geometry helpers ------------------------------------------------------------------
def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> Tuple[int, int]:
    """TFLite/TensorFlow SAME padding (before, after) for one spatial axis."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _pads(padding: int, hw: Tuple[int, int], kernel: Tuple[int, int], strides, dilations):
    """ONNX ``pads`` [top, left, bottom, right] for TFLite padding ``padding``."""
    if padding == _PAD_VALID:
        return [0, 0, 0, 0]
    if padding != _PAD_SAME:
        raise ModelError(f"unknown TFLite padding mode {padding}")
    top, bottom = same_padding(hw[0], kernel[0], strides[0], dilations[0])
    left, right = same_padding(hw[1], kernel[1], strides[1], dilations[1])
    return [top, left, bottom, right]


def _spatial(tensor: TfTensor, op: TfOperator) -> Tuple[int, int, int, int]:
    if len(tensor.shape) != 4:
        raise ModelError(
            f"{op.display_name} (operator {op.index}) expects a 4-D NHWC input, "
            f"got shape {list(tensor.shape)}"
        )
    n, h, w, c = tensor.shape
    return n, h, w, c


def _require_nchw(e: _Emitter, op: TfOperator, slot: int = 0) -> None:
    if not e.is_nchw(op, slot):
        raise ModelError(
            f"{op.display_name} (operator {op.index}) input is not a 4-D activation; "
            "this layout is not supported"
        )


# -- operator handlers -------------------------------------------------------------------
def _emit_conv(
    e: _Emitter,
    op: TfOperator,
    inputs: List[str],
    hw: Tuple[int, int],
    k: Tuple[int, int],
    group: int,
) -> None:
    """Emit an ONNX Conv for a TFLite (depthwise) convolution: TF padding -> explicit pads."""
    o = op.options
    strides = [o.StrideH(), o.StrideW()]
    dilations = [o.DilationHFactor(), o.DilationWFactor()]
    out = e.emit(
        op,
        o.FusedActivationFunction(),
        "Conv",
        inputs,
        kernel_shape=list(k),
        strides=strides,
        dilations=dilations,
        pads=_pads(o.Padding(), hw, k, strides, dilations),
        group=group,
    )
    e.bind(op, out, True)


def _conv2d(e: _Emitter, op: TfOperator) -> None:
    _require_nchw(e, op)
    _n, h, w, c = _spatial(e.tensor(op.inputs[0]), op)
    weights = e.const(op, 1, "filter").astype(np.float32)  # OHWI
    out_c, kh, kw, in_c = weights.shape
    if c % in_c:
        raise ModelError(f"CONV_2D (operator {op.index}): {c} channels vs filter depth {in_c}")
    bias = e.optional_const(op, 2)
    inputs = [
        e.value(op, 0),
        e.initializer(weights.transpose(0, 3, 1, 2), e.tensor(op.inputs[1]).name),
    ]
    if bias is not None:
        inputs.append(e.initializer(bias.astype(np.float32), e.tensor(op.inputs[2]).name))
    _emit_conv(e, op, inputs, (h, w), (kh, kw), group=c // in_c)


def _depthwise(e: _Emitter, op: TfOperator) -> None:
    _require_nchw(e, op)
    _n, h, w, c = _spatial(e.tensor(op.inputs[0]), op)
    weights = e.const(op, 1, "filter").astype(np.float32)  # 1, KH, KW, C*multiplier
    _one, kh, kw, out_c = weights.shape
    if out_c % c:
        raise ModelError(f"DEPTHWISE_CONV_2D (operator {op.index}): bad filter shape")
    bias = e.optional_const(op, 2)
    # TFLite output channel ic*m + j is group ic's j-th output: ONNX grouped-conv order.
    onnx_w = weights[0].transpose(2, 0, 1)[:, None, :, :]
    inputs = [e.value(op, 0), e.initializer(onnx_w, e.tensor(op.inputs[1]).name)]
    if bias is not None:
        inputs.append(e.initializer(bias.astype(np.float32), e.tensor(op.inputs[2]).name))
    _emit_conv(e, op, inputs, (h, w), (kh, kw), group=c)


def _transpose_conv_node(
    e: _Emitter,
    op: TfOperator,
    slots: Tuple[int, int, int],
    strides: List[int],
    pads: List[int],
    activation: int,
) -> str:
    """ConvTranspose from input/filter(OHWI)/bias slots; bias slot -1 or absent = none."""
    x_slot, w_slot, b_slot = slots
    weights = e.const(op, w_slot, "filter").astype(np.float32)
    inputs = [
        e.value(op, x_slot),
        e.initializer(weights.transpose(3, 0, 1, 2), e.tensor(op.inputs[w_slot]).name),
    ]
    bias = e.optional_const(op, b_slot)
    if bias is not None:
        inputs.append(e.initializer(bias.astype(np.float32), e.tensor(op.inputs[b_slot]).name))
    return e.emit(
        op,
        activation,
        "ConvTranspose",
        inputs,
        kernel_shape=[int(weights.shape[1]), int(weights.shape[2])],
        strides=strides,
        pads=pads,
    )


def _mediapipe_transpose_conv(e: _Emitter, op: TfOperator) -> None:
    """MediaPipe's Convolution2DTransposeBias: transposed conv + bias.

    custom_options is a raw TfLiteTransposeConvParams {padding, stride_w, stride_h}
    (int32 each); SAME trims max(0, k - (in-1) % s - 1) rows, the first half at the top.
    """
    _require_nchw(e, op)
    if len(op.custom_options) < 12:
        raise ModelError(
            f"Convolution2DTransposeBias (operator {op.index}) has malformed custom options"
        )
    padding, stride_w, stride_h = struct.unpack("<iii", op.custom_options[:12])
    _n, h, w, _c = _spatial(e.tensor(op.inputs[0]), op)
    weights = e.const(op, 1, "filter")
    kh, kw = int(weights.shape[1]), int(weights.shape[2])
    pads = [0, 0, 0, 0]
    if padding == _C_PAD_SAME:
        th = max(0, kh - (h - 1) % stride_h - 1)
        tw = max(0, kw - (w - 1) % stride_w - 1)
        pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
    elif padding != _C_PAD_VALID:
        raise ModelError(f"Convolution2DTransposeBias: unknown padding {padding}")
    e.const(op, 2, "bias")  # the op always has one; fail clearly if it is computed
    out = _transpose_conv_node(e, op, (0, 1, 2), [stride_h, stride_w], pads, 0)
    e.bind(op, out, True)


def _transpose_conv(e: _Emitter, op: TfOperator) -> None:
    """Builtin TRANSPOSE_CONV: inputs (output_shape, weights OHWI, input[, bias])."""
    _require_nchw(e, op, 2)
    o = op.options
    _n, h, w, _c = _spatial(e.tensor(op.inputs[2]), op)
    out_shape = [int(v) for v in e.const(op, 0, "output shape")]
    weights = e.const(op, 1, "filter")
    kh, kw = int(weights.shape[1]), int(weights.shape[2])
    strides = [o.StrideH(), o.StrideW()]
    th = (h - 1) * strides[0] + kh - out_shape[1]
    tw = (w - 1) * strides[1] + kw - out_shape[2]
    if th < 0 or tw < 0:
        raise ModelError(f"TRANSPOSE_CONV (operator {op.index}): output padding not supported")
    pads = [th // 2, tw // 2, th - th // 2, tw - tw // 2]
    act = o.FusedActivationFunction() if hasattr(o, "FusedActivationFunction") else 0
    out = _transpose_conv_node(e, op, (2, 1, 3), strides, pads, act)
    e.bind(op, out, True)


def _pool(e: _Emitter, op: TfOperator) -> None:
    _require_nchw(e, op)
    o = op.options
    _n, h, w, _c = _spatial(e.tensor(op.inputs[0]), op)
    kh, kw = o.FilterHeight(), o.FilterWidth()
    strides = [o.StrideH(), o.StrideW()]
    is_avg = op.opcode == "AVERAGE_POOL_2D"
    act = o.FusedActivationFunction()
    # A window covering the whole map with one output is a global pool (no padding counts).
    single = o.Padding() == _PAD_VALID or (strides[0] >= h and strides[1] >= w)
    if (kh, kw) == (h, w) and single:
        op_type = "GlobalAveragePool" if is_avg else "GlobalMaxPool"
        out = e.emit(op, act, op_type, [e.value(op, 0)])
    else:
        pads = _pads(o.Padding(), (h, w), (kh, kw), strides, (1, 1))
        attrs: Dict[str, object] = {"kernel_shape": [kh, kw], "strides": strides, "pads": pads}
        if is_avg:
            attrs["count_include_pad"] = 0  # TFLite averages over the valid pixels only
        out = e.emit(op, act, "AveragePool" if is_avg else "MaxPool", [e.value(op, 0)], **attrs)
    e.bind(op, out, True)


def _mean(e: _Emitter, op: TfOperator) -> None:
    axes = sorted(
        int(a) % max(len(e.tensor(op.inputs[0]).shape), 1)
        for a in np.atleast_1d(e.const(op, 1, "axes"))
    )
    keep = bool(op.options.KeepDims()) if op.options is not None else False
    out = e.output_name(op)
    if e.is_nchw(op, 0):
        onnx_axes = sorted(NHWC_TO_NCHW.index(a) for a in axes)
        if keep and onnx_axes == [2, 3]:
            e.node("GlobalAveragePool", [e.value(op, 0)], out)
            e.bind(op, out, True)
            return
        if not keep:
            # Dropping axes leaves the kept ones in NCHW order; TFLite leaves them in NHWC
            # order. Only when both orders agree is the (now plain) result the same tensor.
            kept_as_nhwc = [NHWC_TO_NCHW[p] for p in range(4) if p not in onnx_axes]
            if kept_as_nhwc != sorted(kept_as_nhwc):
                raise ModelError(f"MEAN (operator {op.index}) over axes {axes} is not supported")
        e.node("ReduceMean", [e.value(op, 0)], out, axes=onnx_axes, keepdims=int(keep))
        e.bind(op, out, keep)
        return
    e.node("ReduceMean", [e.value(op, 0)], out, axes=axes, keepdims=int(keep))
    e.bind(op, out, False)


def _binary(e: _Emitter, op: TfOperator) -> None:
    onnx_op = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul", "DIV": "Div"}[op.opcode]
    out_nchw = len(e.tensor(op.outputs[0]).shape) == 4
    names = []
    for slot in (0, 1):
        index = op.inputs[slot]
        if index in e.consts and index not in e.values:
            c = e.consts[index].astype(np.float32)
            if out_nchw and c.ndim > 0:
                c = c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(NHWC_TO_NCHW)
            names.append(e.initializer(c, e.tensor(index).name))
        else:
            if out_nchw and not e.is_nchw(op, slot):
                raise ModelError(
                    f"{op.opcode} (operator {op.index}) broadcasts a non-4-D activation "
                    "against a 4-D one; not supported"
                )
            names.append(e.value(op, slot))
    code = op.options.FusedActivationFunction() if op.options is not None else 0
    e.bind(op, e.emit(op, code, onnx_op, names), out_nchw)


def _unary(e: _Emitter, op: TfOperator) -> None:
    out = e.output_name(op)
    e.unary(op.opcode, e.value(op, 0), out)
    e.bind(op, out, e.is_nchw(op, 0))


def _resize_bilinear(e: _Emitter, op: TfOperator) -> None:
    _require_nchw(e, op)
    o = op.options
    n, _h, _w, c = _spatial(e.tensor(op.inputs[0]), op)
    new_h, new_w = (int(v) for v in e.const(op, 1, "size"))
    if o is not None and o.AlignCorners():
        mode = "align_corners"
    elif o is not None and o.HalfPixelCenters():
        mode = "half_pixel"  # TF's half_pixel_centers: src = (dst + 0.5) / scale - 0.5
    else:
        mode = "asymmetric"  # TF's legacy default: src = dst / scale
    sizes = e.initializer(
        np.array([n, c, new_h, new_w], np.int64), f"{e.tensor(op.outputs[0]).name}_sizes"
    )
    out = e.output_name(op)
    e.node(
        "Resize",
        [e.value(op, 0), "", "", sizes],
        out,
        mode="linear",
        coordinate_transformation_mode=mode,
    )
    e.bind(op, out, True)


def _dequantize(e: _Emitter, op: TfOperator) -> None:
    index = op.inputs[0]
    src = e.tensor(index)
    if index in e.consts and index not in e.values:
        data = e.consts[index]
        if data.dtype == np.float16:
            e.consts[op.outputs[0]] = data.astype(np.float32)
            return
        q = src.quantization
        if q is None:
            raise ModelError(f"DEQUANTIZE (operator {op.index}) of '{src.name}' has no scale")
        shape = [1] * data.ndim
        if q.scale.size > 1:
            shape[q.axis] = q.scale.size
        scale = q.scale.reshape(shape)
        zero = q.zero_point.reshape(shape) if q.zero_point.size == q.scale.size else q.zero_point
        e.consts[op.outputs[0]] = ((data.astype(np.float32) - zero) * scale).astype(np.float32)
        return
    if src.dtype != np.float16:
        raise ModelError(
            f"DEQUANTIZE (operator {op.index}) of a computed {np.dtype(src.dtype).name} "
            "tensor: quantized models are not supported"
        )
    out = e.output_name(op)
    e.node("Cast", [e.value(op, 0)], out, to=1)
    e.bind(op, out, e.is_nchw(op, 0))


_HANDLERS: Dict[str, Callable[[_Emitter, TfOperator], None]] = {
    "CONV_2D": _conv2d,
    "DEPTHWISE_CONV_2D": _depthwise,
    "TRANSPOSE_CONV": _transpose_conv,
    "Convolution2DTransposeBias": _mediapipe_transpose_conv,
    "AVERAGE_POOL_2D": _pool,
    "MAX_POOL_2D": _pool,
    "MEAN": _mean,
    "ADD": _binary,
    "SUB": _binary,
    "MUL": _binary,
    "DIV": _binary,
    "RELU": _unary,
    "RELU6": _unary,
    "RELU_N1_TO_1": _unary,
    "LOGISTIC": _unary,
    "TANH": _unary,
    "HARD_SWISH": _unary,
    "RESIZE_BILINEAR": _resize_bilinear,
    "DEQUANTIZE": _dequantize,
}

SUPPORTED_OPS = tuple(sorted(_HANDLERS))


def _dims(shape: Sequence[int]) -> List[int]:
    return [int(d) for d in shape]


def _check_supported(graph: TfGraph) -> None:
    unsupported = sorted({op.display_name for op in graph.operators} - set(_HANDLERS))
    if unsupported:
        raise ModelError(
            f"unsupported TFLite operator(s): {', '.join(unsupported)}",
            f"the converter covers {', '.join(SUPPORTED_OPS)}",
        )
    for t in graph.tensors:
        if t.data is None and t.dtype is not None and np.dtype(t.dtype).kind in "iu":
            if t.quantization is not None:
                raise ModelError(
                    f"tensor '{t.name}' is a quantized activation: integer-quantized "
                    "models are not supported (use the float model)"
                )


def convert_graph(graph: TfGraph, doc: str = "") -> onnx.ModelProto:
    """Build and check the ONNX ModelProto for a parsed TFLite graph."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    _check_supported(graph)
    e = _Emitter(graph)
    io_names = {graph.tensors[i].name for i in graph.inputs + graph.outputs}
    e.used.update(io_names)
    graph_inputs = []
    for index in graph.inputs:
        t = graph.tensors[index]
        if t.dtype != np.float32:
            raise ModelError(
                f"input '{t.name}' is {np.dtype(t.dtype).name}; only float32 inputs are supported"
            )
        graph_inputs.append(
            helper.make_tensor_value_info(t.name, TensorProto.FLOAT, _dims(t.shape))
        )
        if len(t.shape) == 4:
            internal = e.unique(t.name + "_nchw")
            if t.shape[3] == 1:
                shape = e.initializer(
                    np.array([t.shape[0], 1, t.shape[1], t.shape[2]], np.int64),
                    t.name + "_nchw_shape",
                )
                e.node("Reshape", [t.name, shape], internal)
            else:
                e.node("Transpose", [t.name], internal, perm=list(NHWC_TO_NCHW))
            e.values[index] = internal
            e.nchw.add(index)
        else:
            e.values[index] = t.name
    for op in graph.operators:
        _HANDLERS[op.display_name](e, op)
    graph_outputs = []
    for index in graph.outputs:
        t = graph.tensors[index]
        if index not in e.values:
            raise ModelError(f"output '{t.name}' is never computed")
        graph_outputs.append(
            helper.make_tensor_value_info(t.name, TensorProto.FLOAT, _dims(t.shape))
        )
        value = e.values[index]
        if index in e.nchw:
            if t.shape[3] == 1:
                shape = e.initializer(np.array(_dims(t.shape), np.int64), t.name + "_nhwc_shape")
                e.node("Reshape", [value, shape], t.name)
            else:
                e.node("Transpose", [value], t.name, perm=list(NCHW_TO_NHWC))
        else:
            e.node("Identity", [value], t.name)
    g = helper.make_graph(e.nodes, "segcam_tflite", graph_inputs, graph_outputs, e.initializers)
    model = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="segcam-tflite2onnx",
        producer_version=CONVERTER_VERSION,
        doc_string=doc,
    )
    model.ir_version = ONNX_IR_VERSION
    try:
        onnx.checker.check_model(model, full_check=True)
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"converted graph failed ONNX validation: {exc}") from None
    _check_shapes(e, model)
    return model


def _check_shapes(e: _Emitter, model: onnx.ModelProto) -> None:
    """Compare every inferred ONNX shape with the TFLite declared one (converter self-check)."""
    inferred: Dict[str, List[int]] = {}
    graph = model.graph
    for vi in list(graph.value_info) + list(graph.output):
        dims = vi.type.tensor_type.shape.dim
        inferred[vi.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for name, dims in inferred.items():
        if -1 in dims:
            raise ModelError(f"converter self-check failed: '{name}' has a dynamic shape {dims}")
    for index, name in e.values.items():
        if name not in inferred:
            continue
        expected = _dims(e.tensor(index).shape)
        if index in e.nchw:
            expected = [expected[i] for i in NHWC_TO_NCHW]
        if inferred[name] != expected:
            raise ModelError(
                f"converter self-check failed: '{e.tensor(index).name}' has shape "
                f"{inferred[name]} in ONNX but {expected} in TFLite"
            )


def convert_tflite(
    data: bytes, source: str = "model.tflite", dynamic_batch: bool = False
) -> onnx.ModelProto:
    """Parse TFLite bytes and return a checked, shape-inferred ONNX ModelProto.

    The graph is built and self-checked at batch 1; ``dynamic_batch`` then makes its
    batch dimension a symbol (segcam.models.batch), so one call can run several frames.
    """
    graph = parse_tflite(data, source)
    model = convert_graph(graph, doc=f"converted from {source} by segcam {CONVERTER_VERSION}")
    if dynamic_batch:
        from segcam.models.batch import with_dynamic_batch

        model = with_dynamic_batch(model)
    return model
