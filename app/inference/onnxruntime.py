"""ONNX Runtime backend: runs a profile's ONNX model on whatever ORT build is installed.

Providers: ``auto`` picks TensorRT EP > CUDA EP > CPU among those this build has
(``onnxruntime`` from PyPI has only CPU; ``onnxruntime-gpu`` adds CUDA and TensorRT), or
name them (``cpu``, ``cuda``, ``tensorrt`` or ORT's full names). The session uses graph
optimisation level ALL and, by default, no spin-waiting of its worker threads, because in
a pipeline the other stages need those cores between inferences.

At load the model is checked against the profile (input name, shape, layout, dtype,
output name/index, output kind) and run once on zeros; any mismatch is a
:class:`~segcam.errors.ModelError` that says what the model has and what the profile says.

Buffers persist between calls: the chosen output is bound (I/O binding) to a buffer
allocated once, and the caller's input array is bound in place, so a call copies nothing
on the CPU provider.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from segcam.errors import BackendError, ModelError
from segcam.inference.backend import TensorSpec, describe_specs
from segcam.inference.postprocess import to_probability
from segcam.inference.profile import ModelProfile

log = logging.getLogger(__name__)

MAX_BATCH = 64  # the most frames one call carries on a dynamic-batch model
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendError(
            f"onnxruntime is not installed ({exc})",
            "pip install onnxruntime (or onnxruntime-gpu on a CUDA machine)",
        ) from None
    return ort


def _ort_errors(ort: Any) -> Tuple[type, ...]:
    """ORT's own exception classes (they derive from Exception, not RuntimeError)."""
    state = getattr(getattr(ort, "capi", None), "onnxruntime_pybind11_state", None)
    names = (
        "Fail",
        "InvalidArgument",
        "InvalidProtobuf",
        "InvalidGraph",
        "NoSuchFile",
        "NoModel",
        "EngineError",
        "RuntimeException",
        "ModelLoaded",
        "NotImplemented",
        "EPFail",
    )
    found = tuple(getattr(state, n) for n in names if state is not None and hasattr(state, n))
    return found + (RuntimeError, ValueError)


def available_providers() -> List[str]:
    """Execution providers of the installed ORT build (empty if ORT is missing)."""
    try:
        ort = _import_ort()
    except BackendError:
        return []
    return list(ort.get_available_providers())


def resolve_providers(requested: Sequence[str], available: Sequence[str]) -> List[str]:
    """Turn ``["auto"]`` or names/aliases into an ordered provider list ending in CPU."""
    req = [r.strip() for r in requested if r and r.strip()] or ["auto"]
    if any(r.lower() == "auto" for r in req):
        chosen = [p for p in AUTO_ORDER if p in available]
    else:
        chosen = []
        for r in req:
            full = ALIASES.get(r.lower(), r)
            if full not in available:
                raise BackendError(
                    f"ONNX Runtime provider {r!r} is not in this onnxruntime build "
                    f"(available: {', '.join(available)})",
                    "use providers: [auto], or install onnxruntime-gpu for CUDA/TensorRT",
                )
            if full not in chosen:
                chosen.append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # ORT falls back per node; keep it explicit
    return chosen


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


def _fits(out: Optional[np.ndarray], result: np.ndarray) -> bool:
    return out is not None and out.shape == result.shape and out.dtype == result.dtype


class OnnxRuntimeBackend:
    """Runs an ONNX model with ONNX Runtime according to a :class:`ModelProfile`.

    ``providers``: ``["auto"]`` or provider names; ``threads``: intra-op threads (0 = ORT's
    default); ``spin``: let ORT's worker threads spin-wait (faster alone, but steals
    cores from the other pipeline stages); ``warmup``: run once at load (checks the
    output against the profile and pays first-run costs before the first frame).
    ``provider_options``: per-provider option dicts, e.g. TensorRT EP's cache path.
    """

    name = "onnxruntime"

    def __init__(
        self,
        profile: ModelProfile,
        onnx_path: Union[str, Path],
        providers: Sequence[str] = ("auto",),
        threads: int = 0,
        spin: bool = False,
        warmup: bool = True,
        provider_options: Optional[Dict[str, Dict[str, Any]]] = None,
    ) -> None:
        ort = _import_ort()
        self._errors = _ort_errors(ort)
        self.profile = profile
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise ModelError(
                f"model file {self.path} does not exist",
                f"run `segcam model fetch {profile.name}` or set model.path to your ONNX file",
            )
        chosen = resolve_providers(providers, ort.get_available_providers())
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = max(0, int(threads))
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4  # fatal only: errors reach the user as ModelError/BackendError
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        popts = provider_options or {}
        trt_cache = popts.get("TensorrtExecutionProvider", {}).get("trt_engine_cache_path")
        if trt_cache and "TensorrtExecutionProvider" in chosen:
            Path(trt_cache).mkdir(parents=True, exist_ok=True)
        prov_arg: List[Any] = [(p, popts[p]) if p in popts else p for p in chosen]
        try:
            self._sess = ort.InferenceSession(str(self.path), sess_options=opts, providers=prov_arg)
        except self._errors as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if type(exc).__name__ in ("InvalidProtobuf", "NoSuchFile"):
                hint = "the file is corrupt, truncated or not ONNX: fetch or convert it again"
            else:
                hint = (
                    f"the file is damaged, or the model needs something onnxruntime "
                    f"{ort.__version__} lacks (operator, opset): re-export or upgrade onnxruntime"
                )
            raise ModelError(f"cannot load ONNX model {self.path}: {first}", hint) from None
        active = self._sess.get_providers()
        self.providers = list(active)
        self.provider = f"onnxruntime:{active[0]}"
        self.supports_device = active[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        self.inputs = [_spec(a) for a in self._sess.get_inputs()]
        self.outputs = [_spec(a) for a in self._sess.get_outputs()]
        self._check_inputs()
        self._out_spec = self._pick_output()
        self._states: Dict[str, np.ndarray] = {
            s.name: np.full(s.shape, s.value, dtype=s.dtype) for s in profile.state_inputs
        }
        self._state_feeds = {s.output: s.name for s in profile.state_inputs if s.output}
        self._binding = self._sess.io_binding() if not profile.state_inputs else None
        self._out_buf: Optional[np.ndarray] = None
        one = self._out_shape(1)
        if one is not None:
            self._out_buf = np.empty(one, dtype=self._out_spec.dtype)
        if warmup:
            self._warmup()
        log.info("onnxruntime: %s on %s (%s)", self.path.name, self.provider, ", ".join(active))

    # ------------------------------------------------------------------ load-time checks

    def _mismatch(self, what: str, hint: str) -> ModelError:
        return ModelError(
            f"model {self.path.name} does not match profile {self.profile.name!r}: {what}",
            hint,
        )

    def _check_inputs(self) -> None:
        p = self.profile
        by_name = {s.name: s for s in self.inputs}
        state_names = [s.name for s in p.state_inputs]
        for name in state_names:
            if name not in by_name:
                raise self._mismatch(
                    f"state input {name!r} is not an input of the model "
                    f"(model inputs: {describe_specs(self.inputs)})",
                    "fix state_inputs in the profile",
                )
        candidates = [s for s in self.inputs if s.name not in state_names]
        if p.input_name:
            if p.input_name not in by_name:
                raise self._mismatch(
                    f"the profile's input_name is {p.input_name!r}, the model's inputs are "
                    f"{describe_specs(self.inputs)}",
                    "set input_name in the profile to the model's image input",
                )
            spec = by_name[p.input_name]
        elif len(candidates) == 1:
            spec = candidates[0]
        else:
            raise self._mismatch(
                f"the profile names no input_name and the model has several inputs: "
                f"{describe_specs(candidates)}",
                "set input_name (and declare the others under state_inputs)",
            )
        extra = [s for s in candidates if s.name != spec.name]
        if extra:
            raise self._mismatch(
                f"the model has inputs the profile does not feed: {describe_specs(extra)}",
                "declare them under state_inputs in the profile",
            )
        self.input_spec = spec
        want = p.input_shape
        shape = spec.shape
        if len(shape) != 4 or any(d >= 0 and d != w for d, w in zip(shape, want)):
            other = (1, 3, p.height, p.width) if p.layout == "NHWC" else (1, p.height, p.width, 3)
            other_layout = "NCHW" if p.layout == "NHWC" else "NHWC"
            if len(shape) == 4 and all(d < 0 or d == w for d, w in zip(shape, other)):
                hint = f"the model is {other_layout}: set layout: {other_layout} in the profile"
            else:
                hint = "set layout, width and height in the profile to the model's input"
            raise self._mismatch(
                f"input {spec.describe()} but the profile says {p.layout} "
                f"[{','.join(str(d) for d in want)}] ({p.width}x{p.height})",
                hint,
            )
        if spec.dtype != p.dtype:
            raise self._mismatch(
                f"input {spec.name} is {spec.dtype} but the profile says dtype {p.dtype}",
                f"set dtype: {spec.dtype} in the profile"
                if spec.dtype in ("float32", "float16")
                else "segcam feeds float32 or float16 images; re-export the model",
            )

    def _pick_output(self) -> TensorSpec:
        p = self.profile
        if p.output_name:
            for s in self.outputs:
                if s.name == p.output_name:
                    break
            else:
                raise self._mismatch(
                    f"the profile's output_name is {p.output_name!r}, the model's outputs "
                    f"are {describe_specs(self.outputs)}",
                    "set output_name (or output_index) in the profile",
                )
        else:
            n = len(self.outputs)
            if not -n <= p.output_index < n:
                raise self._mismatch(
                    f"output_index {p.output_index} but the model has {n} output(s): "
                    f"{describe_specs(self.outputs)}",
                    "set output_index or output_name in the profile",
                )
            s = self.outputs[p.output_index]
        if s.dtype not in ("float32", "float16"):
            raise self._mismatch(
                f"output {s.describe()} is not a float score map (an argmax label map?)",
                "export the model with its probabilities or logits as output",
            )
        return s

    def _warmup(self) -> None:
        zeros = np.zeros(self.profile.input_shape, dtype=self.profile.np_dtype)
        try:
            raw = self.infer(zeros)
        except BackendError as exc:
            raise self._mismatch(
                f"the model fails on a {list(self.profile.input_shape)} input: {exc.message}",
                "check width, height and layout in the profile against the model",
            ) from None
        try:
            to_probability(raw, self.profile)
        except ModelError as exc:
            raise self._mismatch(f"output {self._out_spec.name}: {exc.message}", exc.hint) from None
        self.reset_state()

    # ------------------------------------------------------------------ running

    @property
    def output_spec(self) -> TensorSpec:
        """The chosen output."""
        return self._out_spec

    @property
    def max_batch(self) -> int:
        """Frames one :meth:`infer_batch` call may carry: 1 unless the batch is dynamic.

        A recurrent model (``state_inputs``) keeps one state per call sequence, so it
        runs one frame per call whatever its shape.
        """
        if self.profile.state_inputs or self.input_spec.shape[0] >= 0:
            return 1
        return MAX_BATCH

    def _out_shape(self, n: int) -> Optional[Tuple[int, ...]]:
        """The chosen output's shape for a batch of ``n`` (None if it has other unknowns)."""
        dims = list(self._out_spec.shape)
        if dims and dims[0] < 0:
            dims[0] = n
        if any(d < 0 for d in dims):
            return None
        return tuple(dims)

    def infer_batch(self, tensors: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Run once on ``tensors`` stacked along the batch axis; returns the stacked outputs.

        ``tensors`` is ``[N, ...]`` with N <= :attr:`max_batch` and each item of the
        profile's input shape. With ``out`` of the right shape the result goes there.
        """
        p = self.profile
        n = int(tensors.shape[0]) if tensors.ndim == len(p.input_shape) else 0
        if (
            n < 1
            or n > self.max_batch
            or tensors.shape[1:] != p.input_shape[1:]
            or tensors.dtype != p.np_dtype
            or not tensors.flags.c_contiguous
        ):
            raise BackendError(
                f"batched input is {tensors.dtype} {tensors.shape}, the model takes up to "
                f"{self.max_batch} contiguous {p.np_dtype} {p.input_shape[1:]} per call",
                "stack preprocessed tensors of the same profile",
            )
        if n == 1 and self.max_batch == 1:
            result = self.infer(tensors[0:1].reshape(p.input_shape), out=out)
            return result
        b = self._binding
        assert b is not None  # stateless (max_batch > 1)
        spec = self._out_spec
        shape = self._out_shape(n)
        target = None
        if (
            out is not None
            and out.shape == shape
            and out.dtype == np.dtype(spec.dtype)
            and out.flags.c_contiguous
        ):
            target = out
        if target is None and shape is not None:
            target = np.empty(shape, dtype=spec.dtype)
        try:
            b.bind_input(
                self.input_spec.name,
                "cpu",
                0,
                tensors.dtype,
                list(tensors.shape),
                tensors.ctypes.data,
            )
            if target is not None:
                b.bind_output(
                    spec.name, "cpu", 0, target.dtype, list(target.shape), target.ctypes.data
                )
            else:
                b.bind_output(spec.name, "cpu")
            self._sess.run_with_iobinding(b)
        except self._errors as exc:
            raise BackendError(
                f"onnxruntime batched inference failed on {self.provider}: "
                f"{str(exc).strip()[:300]}",
                "check that the model runs with `segcam model info` and the profile matches",
            ) from None
        if target is None:
            result = b.copy_outputs_to_cpu()[0]
            return result
        return target

    def get_state(self) -> Dict[str, np.ndarray]:
        """The recurrent state now fed back (empty for a model without state inputs)."""
        return dict(self._states)

    def set_state(self, states: Dict[str, np.ndarray]) -> None:
        """Feed ``states`` (from :meth:`get_state`) next: streams sharing one session each
        keep their own recurrent state and swap it in for their frames."""
        self._states = dict(states)

    def reset_state(self) -> None:
        """Reset recurrent state inputs to their initial values."""
        for s in self.profile.state_inputs:
            self._states[s.name] = np.full(s.shape, s.value, dtype=s.dtype)

    def _check_tensor(self, tensor: np.ndarray) -> None:
        p = self.profile
        if (
            tensor.shape != p.input_shape
            or tensor.dtype != p.np_dtype
            or not tensor.flags.c_contiguous
        ):
            raise BackendError(
                f"input tensor is {tensor.dtype} {tensor.shape}"
                f"{'' if tensor.flags.c_contiguous else ' (not contiguous)'}, the model "
                f"needs contiguous {p.np_dtype} {p.input_shape}",
                "preprocess with the same profile",
            )

    def infer(self, tensor: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Run once on a host tensor; return the chosen raw output (into ``out`` if given).

        Without ``out``, or when ``out`` does not have the output's shape and dtype (e.g.
        a buffer from before a model switch), the result is a new array the caller may
        keep.
        """
        self._check_tensor(tensor)
        try:
            if self._binding is None:
                return self._run_stateful(tensor, out)
            return self._run_bound(tensor, out)
        except self._errors as exc:
            raise BackendError(
                f"onnxruntime inference failed on {self.provider}: {str(exc).strip()[:300]}",
                "check that the model runs with `segcam model info` and the profile matches",
            ) from None

    def _run_bound(self, tensor: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
        b = self._binding
        spec = self._out_spec
        b.bind_input(
            self.input_spec.name, "cpu", 0, tensor.dtype, list(tensor.shape), tensor.ctypes.data
        )
        target = None
        if self._out_buf is not None:
            direct = (
                out is not None
                and out.shape == self._out_buf.shape
                and out.dtype == self._out_buf.dtype
                and out.flags.c_contiguous
            )
            target = out if direct else self._out_buf
            b.bind_output(spec.name, "cpu", 0, target.dtype, list(target.shape), target.ctypes.data)
        else:
            b.bind_output(spec.name, "cpu")
        self._sess.run_with_iobinding(b)
        if target is None:
            result = b.copy_outputs_to_cpu()[0]
        elif target is out:
            return out
        else:
            result = target
        if _fits(out, result):
            np.copyto(out, result)
            return out
        return result.copy() if result is self._out_buf else result

    def _run_stateful(self, tensor: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
        names = [self._out_spec.name] + [n for n in self._state_feeds if n != self._out_spec.name]
        feeds = dict(self._states)
        feeds[self.input_spec.name] = tensor
        results = self._sess.run(names, feeds)
        for name, value in zip(names, results):
            if name in self._state_feeds:
                self._states[self._state_feeds[name]] = value
        result = results[0]
        if _fits(out, result):
            np.copyto(out, result)
            return out
        return result

    def infer_device(self, in_ptr: int, out_ptr: int, stream: int) -> None:
        """Run on CUDA device buffers (CUDA/TensorRT EP only).

        ORT enqueues on its own CUDA stream and returns when the outputs are ready, so
        ``stream`` is not used for ordering: the caller must have finished writing
        ``in_ptr`` (synchronise its stream or event) before calling.
        """
        if not self.supports_device or self._binding is None or self._out_buf is None:
            raise BackendError(
                f"{self.provider} cannot run on device buffers",
                "use infer() with host tensors, or install onnxruntime-gpu",
            )
        p = self.profile
        b = self._binding
        b.bind_input(self.input_spec.name, "cuda", 0, p.np_dtype, list(p.input_shape), in_ptr)
        spec = self._out_spec
        b.bind_output(spec.name, "cuda", 0, np.dtype(spec.dtype), list(spec.shape), out_ptr)
        try:
            self._sess.run_with_iobinding(b)
        except self._errors as exc:
            raise BackendError(f"onnxruntime device inference failed: {exc}") from None

    def close(self) -> None:
        """Drop the session and buffers."""
        self._binding = None
        self._sess = None
        self._out_buf = None


__all__ = ["OnnxRuntimeBackend", "available_providers", "resolve_providers", "AUTO_ORDER"]
