"""The tflite->ONNX converter op by op, on small TFLite models built here.

Each test writes a real TFLite flatbuffer (with the ``tflite`` package's generated
builders), runs it in Google's LiteRT and the converted ONNX in ONNX Runtime, and
compares. The shapes are chosen to hit the cases the two MediaPipe models do not
exercise: odd sizes with SAME padding (asymmetric pads), dilation, depth multipliers,
fused activations, every resize coordinate mode, padded average pooling.
MediaPipe's custom ``Convolution2DTransposeBias`` is also checked against a numpy
transcription of MediaPipe's reference kernel, because stock LiteRT only runs it through
its XNNPACK delegate.
"""

from __future__ import annotations

import struct
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import pytest

flatbuffers = pytest.importorskip("flatbuffers")
tflite = pytest.importorskip("tflite")
ort = pytest.importorskip("onnxruntime")

from segcam.errors import ModelError  # noqa: E402
from segcam.models.tflite_onnx import convert_tflite, same_padding  # noqa: E402

BO = tflite.BuiltinOperator
BOpt = tflite.BuiltinOptions
SAME, VALID = 0, 1
NONE, RELU, RELU_N1_TO_1, RELU6, TANH = 0, 1, 2, 3, 4
_TYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1, np.dtype(np.int32): 2}

Options = Tuple[int, Callable[[object], int]]


class TinyModel:
    """Builds a single-subgraph TFLite flatbuffer from tensors and operators."""

    def __init__(self) -> None:
        self.tensors: List[Tuple[str, List[int], int, int]] = []
        self.buffers: List[bytes] = [b""]  # buffer 0 is the empty sentinel
        self.codes: List[Tuple[int, str]] = []
        self.ops: List[Tuple[int, List[int], List[int], Optional[Options], bytes]] = []

    def act(self, name: str, shape: Sequence[int]) -> int:
        """A float32 activation tensor."""
        self.tensors.append((name, list(shape), 0, 0))
        return len(self.tensors) - 1

    def const(self, name: str, array: np.ndarray) -> int:
        """A constant tensor holding ``array``."""
        array = np.ascontiguousarray(array)
        self.buffers.append(array.tobytes())
        self.tensors.append((name, list(array.shape), _TYPES[array.dtype], len(self.buffers) - 1))
        return len(self.tensors) - 1

    def op(
        self,
        code: int,
        inputs: Sequence[int],
        outputs: Sequence[int],
        options: Optional[Options] = None,
        custom: str = "",
        custom_options: bytes = b"",
    ) -> None:
        """Append an operator (builtin ``code``, or BO.CUSTOM with ``custom``)."""
        key = (code, custom)
        if key not in self.codes:
            self.codes.append(key)
        self.ops.append(
            (self.codes.index(key), list(inputs), list(outputs), options, custom_options)
        )

    def build(self, inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
        """Serialise to TFLite flatbuffer bytes (file identifier TFL3)."""
        b = flatbuffers.Builder(4096)

        def vec_i32(values: Sequence[int]) -> int:
            return b.CreateNumpyVector(np.asarray(values, np.int32))

        def vec_tables(start: Callable[[object, int], None], offsets: List[int]) -> int:
            start(b, len(offsets))
            for off in reversed(offsets):
                b.PrependUOffsetTRelative(off)
            return b.EndVector()

        buffers = []
        for data in self.buffers:
            vec = None
            if data:
                b.StartVector(1, len(data), 16)  # 16-byte aligned weights, as TFLite writes them
                b.head = b.head - len(data)
                b.Bytes[b.head : b.head + len(data)] = data
                vec = b.EndVector()
            tflite.BufferStart(b)
            if vec is not None:
                tflite.BufferAddData(b, vec)
            buffers.append(tflite.BufferEnd(b))
        tensors = []
        for name, shape, ttype, buf in self.tensors:
            n, s = b.CreateString(name), vec_i32(shape)
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, s)
            tflite.TensorAddType(b, ttype)
            tflite.TensorAddBuffer(b, buf)
            tflite.TensorAddName(b, n)
            tensors.append(tflite.TensorEnd(b))
        ops = []
        for code_index, ins, outs, options, copts in self.ops:
            iv, ov = vec_i32(ins), vec_i32(outs)
            opt = options[1](b) if options else None
            cv = b.CreateNumpyVector(np.frombuffer(copts, np.uint8)) if copts else None
            tflite.OperatorStart(b)
            tflite.OperatorAddOpcodeIndex(b, code_index)
            tflite.OperatorAddInputs(b, iv)
            tflite.OperatorAddOutputs(b, ov)
            if options:
                tflite.OperatorAddBuiltinOptionsType(b, options[0])
                tflite.OperatorAddBuiltinOptions(b, opt)
            if cv is not None:
                tflite.OperatorAddCustomOptions(b, cv)
            ops.append(tflite.OperatorEnd(b))
        codes = []
        for code, custom in self.codes:
            cs = b.CreateString(custom) if custom else None
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            if cs is not None:
                tflite.OperatorCodeAddCustomCode(b, cs)
            tflite.OperatorCodeAddVersion(b, 1)
            codes.append(tflite.OperatorCodeEnd(b))
        tv = vec_tables(tflite.SubGraphStartTensorsVector, tensors)
        opv = vec_tables(tflite.SubGraphStartOperatorsVector, ops)
        iv, ov, name = vec_i32(inputs), vec_i32(outputs), b.CreateString("main")
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tv)
        tflite.SubGraphAddInputs(b, iv)
        tflite.SubGraphAddOutputs(b, ov)
        tflite.SubGraphAddOperators(b, opv)
        tflite.SubGraphAddName(b, name)
        sg = tflite.SubGraphEnd(b)
        cv = vec_tables(tflite.ModelStartOperatorCodesVector, codes)
        sv = vec_tables(tflite.ModelStartSubgraphsVector, [sg])
        bv = vec_tables(tflite.ModelStartBuffersVector, buffers)
        desc = b.CreateString("segcam converter test")
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, cv)
        tflite.ModelAddSubgraphs(b, sv)
        tflite.ModelAddDescription(b, desc)
        tflite.ModelAddBuffers(b, bv)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())


# -- option tables -------------------------------------------------------------------------
def conv_opts(padding: int, stride: int, act: int = NONE, dilation: int = 1) -> Options:
    def fn(b: object) -> int:
        tflite.Conv2DOptionsStart(b)
        tflite.Conv2DOptionsAddPadding(b, padding)
        tflite.Conv2DOptionsAddStrideW(b, stride)
        tflite.Conv2DOptionsAddStrideH(b, stride)
        tflite.Conv2DOptionsAddFusedActivationFunction(b, act)
        tflite.Conv2DOptionsAddDilationWFactor(b, dilation)
        tflite.Conv2DOptionsAddDilationHFactor(b, dilation)
        return tflite.Conv2DOptionsEnd(b)

    return BOpt.Conv2DOptions, fn


def dw_opts(padding: int, stride: int, multiplier: int, act: int = NONE) -> Options:
    def fn(b: object) -> int:
        tflite.DepthwiseConv2DOptionsStart(b)
        tflite.DepthwiseConv2DOptionsAddPadding(b, padding)
        tflite.DepthwiseConv2DOptionsAddStrideW(b, stride)
        tflite.DepthwiseConv2DOptionsAddStrideH(b, stride)
        tflite.DepthwiseConv2DOptionsAddDepthMultiplier(b, multiplier)
        tflite.DepthwiseConv2DOptionsAddFusedActivationFunction(b, act)
        tflite.DepthwiseConv2DOptionsAddDilationWFactor(b, 1)
        tflite.DepthwiseConv2DOptionsAddDilationHFactor(b, 1)
        return tflite.DepthwiseConv2DOptionsEnd(b)

    return BOpt.DepthwiseConv2DOptions, fn


def pool_opts(padding: int, stride: int, k: int, act: int = NONE) -> Options:
    def fn(b: object) -> int:
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, padding)
        tflite.Pool2DOptionsAddStrideW(b, stride)
        tflite.Pool2DOptionsAddStrideH(b, stride)
        tflite.Pool2DOptionsAddFilterWidth(b, k)
        tflite.Pool2DOptionsAddFilterHeight(b, k)
        tflite.Pool2DOptionsAddFusedActivationFunction(b, act)
        return tflite.Pool2DOptionsEnd(b)

    return BOpt.Pool2DOptions, fn


def binary_opts(kind: str, act: int) -> Options:
    start, add_act, end = (
        getattr(tflite, f"{kind}OptionsStart"),
        getattr(tflite, f"{kind}OptionsAddFusedActivationFunction"),
        getattr(tflite, f"{kind}OptionsEnd"),
    )

    def fn(b: object) -> int:
        start(b)
        add_act(b, act)
        return end(b)

    return getattr(BOpt, f"{kind}Options"), fn


def resize_opts(align_corners: bool, half_pixel: bool) -> Options:
    def fn(b: object) -> int:
        tflite.ResizeBilinearOptionsStart(b)
        tflite.ResizeBilinearOptionsAddAlignCorners(b, align_corners)
        tflite.ResizeBilinearOptionsAddHalfPixelCenters(b, half_pixel)
        return tflite.ResizeBilinearOptionsEnd(b)

    return BOpt.ResizeBilinearOptions, fn


def mean_opts(keep: bool) -> Options:
    def fn(b: object) -> int:
        tflite.ReducerOptionsStart(b)
        tflite.ReducerOptionsAddKeepDims(b, keep)
        return tflite.ReducerOptionsEnd(b)

    return BOpt.ReducerOptions, fn


# -- running ------------------------------------------------------------------------------
def run_litert(data: bytes, x: np.ndarray, delegates: bool = True) -> np.ndarray:
    interp_mod = pytest.importorskip("ai_edge_litert.interpreter")
    kwargs = {}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = (
            interp_mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    interp = interp_mod.Interpreter(model_content=data, num_threads=1, **kwargs)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


def run_onnx(data: bytes, x: np.ndarray) -> Tuple[np.ndarray, object]:
    model = convert_tflite(data, "tiny.tflite")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0], model


def assert_matches_litert(data: bytes, x: np.ndarray, atol: float = 2e-5) -> object:
    """Converted ONNX output equals LiteRT's (reference kernels, no delegate) within atol."""
    ref = run_litert(data, x, delegates=False)
    got, model = run_onnx(data, x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=atol, rtol=1e-5)
    return model


RNG = np.random.default_rng(1234)


def rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def conv_out(size: int, k: int, s: int, padding: int, d: int = 1) -> int:
    eff = (k - 1) * d + 1
    return -(-size // s) if padding == SAME else (size - eff) // s + 1


# -- tests -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "size,k,s,expected",
    [
        (256, 3, 2, (0, 1)),
        (7, 3, 2, (1, 1)),
        (8, 3, 1, (1, 1)),
        (9, 4, 2, (1, 2)),
        (5, 1, 1, (0, 0)),
    ],
)
def test_same_padding_is_tensorflows(size: int, k: int, s: int, expected: Tuple[int, int]) -> None:
    assert same_padding(size, k, s) == expected


@pytest.mark.parametrize(
    "hw,k,stride,padding,act,dilation",
    [
        ((8, 8), 3, 2, SAME, RELU6, 1),  # even size: pad only bottom/right
        ((7, 10), 3, 2, SAME, RELU, 1),  # odd/even mix
        ((9, 9), 4, 2, SAME, RELU_N1_TO_1, 1),  # even kernel: pads (1, 2)
        ((9, 11), 3, 1, SAME, RELU, 2),  # dilation
        ((9, 11), 3, 2, VALID, NONE, 1),
    ],
)
def test_conv2d(hw, k, stride, padding, act, dilation) -> None:
    h, w = hw
    m = TinyModel()
    x = m.act("x", [1, h, w, 3])
    wt = m.const("w", rand(5, k, k, 3))
    bias = m.const("b", rand(5))
    oh, ow = (conv_out(h, k, stride, padding, dilation), conv_out(w, k, stride, padding, dilation))
    y = m.act("y", [1, oh, ow, 5])
    m.op(BO.CONV_2D, [x, wt, bias], [y], conv_opts(padding, stride, act, dilation))
    assert_matches_litert(m.build([x], [y]), rand(1, h, w, 3))


def test_fused_tanh_is_refused() -> None:
    """TFLite's float kernels ignore a fused TANH; the converter refuses instead of guessing."""
    m = TinyModel()
    x = m.act("x", [1, 4, 4, 2])
    wt, bias = m.const("w", rand(2, 1, 1, 2)), m.const("b", rand(2))
    y = m.act("y", [1, 4, 4, 2])
    m.op(BO.CONV_2D, [x, wt, bias], [y], conv_opts(SAME, 1, TANH))
    with pytest.raises(ModelError, match="fused activation TANH"):
        convert_tflite(m.build([x], [y]), "tiny.tflite")


@pytest.mark.parametrize("multiplier,stride,act", [(1, 2, RELU), (2, 1, RELU6), (3, 2, NONE)])
def test_depthwise_conv2d(multiplier: int, stride: int, act: int) -> None:
    h, w, c = 9, 8, 4
    m = TinyModel()
    x = m.act("x", [1, h, w, c])
    wt = m.const("w", rand(1, 3, 3, c * multiplier))
    bias = m.const("b", rand(c * multiplier))
    y = m.act("y", [1, conv_out(h, 3, stride, SAME), conv_out(w, 3, stride, SAME), c * multiplier])
    m.op(BO.DEPTHWISE_CONV_2D, [x, wt, bias], [y], dw_opts(SAME, stride, multiplier, act))
    assert_matches_litert(m.build([x], [y]), rand(1, h, w, c))


def test_fp16_weights_through_dequantize_are_folded() -> None:
    m = TinyModel()
    x = m.act("x", [1, 6, 6, 2])
    w16 = m.const("w16", rand(4, 1, 1, 2).astype(np.float16))
    b16 = m.const("b16", rand(4).astype(np.float16))
    wt, bias = m.act("w", [4, 1, 1, 2]), m.act("b", [4])
    y = m.act("y", [1, 6, 6, 4])
    m.op(BO.DEQUANTIZE, [w16], [wt])
    m.op(BO.DEQUANTIZE, [b16], [bias])
    m.op(BO.CONV_2D, [x, wt, bias], [y], conv_opts(SAME, 1))
    model = assert_matches_litert(m.build([x], [y]), rand(1, 6, 6, 2))
    assert [n.op_type for n in model.graph.node] == ["Transpose", "Conv", "Transpose"]
    assert all(i.data_type == 1 for i in model.graph.initializer if i.name in ("w", "b"))


@pytest.mark.parametrize("code", [BO.AVERAGE_POOL_2D, BO.MAX_POOL_2D])
@pytest.mark.parametrize("padding", [SAME, VALID])
def test_pools(code: int, padding: int) -> None:
    h, w = 7, 9
    m = TinyModel()
    x = m.act("x", [1, h, w, 3])
    y = m.act("y", [1, conv_out(h, 3, 2, padding), conv_out(w, 3, 2, padding), 3])
    m.op(code, [x], [y], pool_opts(padding, 2, 3, RELU))
    assert_matches_litert(m.build([x], [y]), rand(1, h, w, 3))


def test_global_average_pool_and_mean() -> None:
    """Full-map AVERAGE_POOL_2D and MEAN(keep_dims) over H,W both become GlobalAveragePool;
    the squeeze-excite pattern (x * sigmoid(pool)) broadcasts [1,C,1,1] inside."""
    m = TinyModel()
    x = m.act("x", [1, 9, 16, 4])
    pooled, meaned, both = (
        m.act("p", [1, 1, 1, 4]),
        m.act("q", [1, 1, 1, 4]),
        m.act("pq", [1, 1, 1, 4]),
    )
    axes = m.const("axes", np.array([1, 2], np.int32))
    scaled, y = m.act("s", [1, 9, 16, 4]), m.act("y", [1, 9, 16, 4])
    m.op(BO.AVERAGE_POOL_2D, [x], [pooled], _full_pool(9, 16))
    m.op(BO.MEAN, [x, axes], [meaned], mean_opts(True))
    m.op(BO.ADD, [pooled, meaned], [both], binary_opts("Add", NONE))
    m.op(BO.MUL, [x, both], [scaled], binary_opts("Mul", NONE))
    m.op(BO.LOGISTIC, [scaled], [y])
    model = assert_matches_litert(m.build([x], [y]), rand(1, 9, 16, 4))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GlobalAveragePool") == 2 and "ReduceMean" not in ops


def _full_pool(h: int, w: int) -> Options:
    def fn(b: object) -> int:
        tflite.Pool2DOptionsStart(b)
        tflite.Pool2DOptionsAddPadding(b, VALID)
        tflite.Pool2DOptionsAddStrideW(b, 1)
        tflite.Pool2DOptionsAddStrideH(b, 1)
        tflite.Pool2DOptionsAddFilterWidth(b, w)
        tflite.Pool2DOptionsAddFilterHeight(b, h)
        return tflite.Pool2DOptionsEnd(b)

    return BOpt.Pool2DOptions, fn


@pytest.mark.parametrize("axes,out_shape", [([1, 2], [1, 3]), ([3], [1, 5, 6]), ([-1], [1, 5, 6])])
def test_mean_without_keep_dims_gives_plain_output(axes: List[int], out_shape: List[int]) -> None:
    m = TinyModel()
    x = m.act("x", [1, 5, 6, 3])
    ax = m.const("axes", np.array(axes, np.int32))
    y = m.act("y", out_shape)
    m.op(BO.MEAN, [x, ax], [y], mean_opts(False))
    assert_matches_litert(m.build([x], [y]), rand(1, 5, 6, 3))


def test_mean_whose_result_order_differs_is_refused() -> None:
    """MEAN over H alone without keep_dims leaves (N, W, C): not expressible without a
    transpose, so the converter says so instead of producing a wrong layout."""
    m = TinyModel()
    x = m.act("x", [1, 5, 6, 3])
    ax = m.const("axes", np.array([1], np.int32))
    y = m.act("y", [1, 6, 3])
    m.op(BO.MEAN, [x, ax], [y], mean_opts(False))
    with pytest.raises(ModelError, match="MEAN"):
        convert_tflite(m.build([x], [y]), "tiny.tflite")


@pytest.mark.parametrize(
    "kind,code,act",
    [("Add", BO.ADD, RELU), ("Mul", BO.MUL, RELU6), ("Sub", BO.SUB, NONE), ("Div", BO.DIV, NONE)],
)
def test_binary_with_broadcast_constant(kind: str, code: int, act: int) -> None:
    """A per-channel [C] constant broadcasts over NHWC; inside it must become [1,C,1,1]."""
    m = TinyModel()
    x = m.act("x", [1, 4, 5, 3])
    c = m.const("c", np.array([0.5, -1.5, 2.0], np.float32))
    y = m.act("y", [1, 4, 5, 3])
    m.op(code, [x, c], [y], binary_opts(kind, act))
    assert_matches_litert(m.build([x], [y]), rand(1, 4, 5, 3))


@pytest.mark.parametrize("code", [BO.HARD_SWISH, BO.LOGISTIC, BO.RELU, BO.RELU6, BO.TANH])
def test_unary(code: int) -> None:
    m = TinyModel()
    x = m.act("x", [1, 4, 4, 2])
    y = m.act("y", [1, 4, 4, 2])
    m.op(code, [x], [y])
    assert_matches_litert(m.build([x], [y]), rand(1, 4, 4, 2) * 4)


@pytest.mark.parametrize(
    "align,half",
    [(False, True), (True, False), (False, False)],
    ids=["half_pixel", "align", "asym"],
)
@pytest.mark.parametrize("out_hw", [(10, 14), (11, 13), (3, 4)], ids=["x2", "odd", "down"])
def test_resize_bilinear_coordinate_modes(align: bool, half: bool, out_hw: Tuple[int, int]) -> None:
    m = TinyModel()
    x = m.act("x", [1, 5, 7, 2])
    size = m.const("size", np.array(out_hw, np.int32))
    y = m.act("y", [1, out_hw[0], out_hw[1], 2])
    m.op(BO.RESIZE_BILINEAR, [x, size], [y], resize_opts(align, half))
    assert_matches_litert(m.build([x], [y]), rand(1, 5, 7, 2))


def mediapipe_transpose_conv_reference(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: Tuple[int, int], same: bool
) -> np.ndarray:
    """Numpy transcription of MediaPipe's reference TransposeConvBias loop (NHWC, OHWI)."""
    _n, ih, iw, _c = x.shape
    oc, kh, kw, _ic = w.shape
    sh, sw = stride
    ph = max(0, kh - (ih - 1) % sh - 1) if same else 0
    pw = max(0, kw - (iw - 1) % sw - 1) if same else 0
    oh, ow = sh * (ih - 1) + kh - ph, sw * (iw - 1) + kw - pw
    out = np.broadcast_to(b, (1, oh, ow, oc)).astype(np.float64).copy()
    for y in range(ih):
        for xx in range(iw):
            for fy in range(kh):
                for fx in range(kw):
                    oy, ox = y * sh - ph // 2 + fy, xx * sw - pw // 2 + fx
                    if 0 <= oy < oh and 0 <= ox < ow:
                        out[0, oy, ox] += w[:, fy, fx, :] @ x[0, y, xx]
    return out.astype(np.float32)


@pytest.mark.parametrize(
    "hw,k,stride,same", [((8, 8), 2, 2, True), ((5, 6), 3, 2, True), ((4, 5), 3, 2, False)]
)
def test_mediapipe_transpose_conv_bias(hw, k: int, stride: int, same: bool) -> None:
    h, w = hw
    x_np = rand(1, h, w, 4)
    wt_np, b_np = rand(2, k, k, 4), rand(2)
    ref = mediapipe_transpose_conv_reference(x_np, wt_np, b_np, (stride, stride), same)
    m = TinyModel()
    x = m.act("x", [1, h, w, 4])
    wt, bias = m.const("w", wt_np), m.const("b", b_np)
    y = m.act("y", list(ref.shape))
    padding = 1 if same else 2  # TfLitePadding: kTfLitePaddingSame=1, kTfLitePaddingValid=2
    opts = struct.pack("<iii", padding, stride, stride)
    m.op(BO.CUSTOM, [x, wt, bias], [y], custom="Convolution2DTransposeBias", custom_options=opts)
    data = m.build([x], [y])
    got, _model = run_onnx(data, x_np)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)
    if same:  # LiteRT's XNNPACK delegate implements the op (its SAME flavour)
        np.testing.assert_allclose(run_litert(data, x_np), ref, atol=1e-4, rtol=1e-4)


def test_unsupported_op_is_named() -> None:
    m = TinyModel()
    x = m.act("x", [1, 4, 4, 2])
    y = m.act("y", [1, 4, 4, 2])
    m.op(BO.SOFTMAX, [x], [y])
    with pytest.raises(ModelError, match="unsupported TFLite operator.*SOFTMAX"):
        convert_tflite(m.build([x], [y]), "tiny.tflite")


def test_unsupported_custom_op_is_named() -> None:
    m = TinyModel()
    x = m.act("x", [1, 4, 4, 2])
    y = m.act("y", [1, 4, 4, 2])
    m.op(BO.CUSTOM, [x], [y], custom="MaxPoolingWithArgmax2D")
    with pytest.raises(ModelError, match="MaxPoolingWithArgmax2D"):
        convert_tflite(m.build([x], [y]), "tiny.tflite")


def test_real_model_graph_is_lean(selfie_onnx) -> None:
    """One layout change at each edge, nothing per op; NHWC I/O; static shapes everywhere."""
    import onnx

    model = onnx.load(str(selfie_onnx))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Transpose") == 1 and ops[0] == "Transpose"
    assert ops[-1] == "Reshape"  # NCHW [1,1,H,W] -> NHWC [1,H,W,1] moves no data
    assert "Identity" not in ops and "Cast" not in ops
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "input_1" and out.name == "activation_10"
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 256, 256, 3]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 256, 256, 1]
    for vi in model.graph.value_info:
        assert all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim), vi.name
    onnx.checker.check_model(model, full_check=True)
