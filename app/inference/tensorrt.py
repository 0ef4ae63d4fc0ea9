"""TensorRT backend: a serialized engine run with the name-based tensor API.

Only calls present in both TensorRT 8.5 (JetPack 5.1) and 10.x (JetPack 6) are used:
``Runtime.deserialize_cuda_engine``, ``ICudaEngine.num_io_tensors`` / ``get_tensor_name``
/ ``get_tensor_mode`` / ``get_tensor_dtype`` / ``get_tensor_shape`` /
``get_tensor_profile_shape`` / ``create_execution_context``, and
``IExecutionContext.set_input_shape`` / ``get_tensor_shape`` / ``set_tensor_address`` /
``set_input_consumed_event`` / ``execute_async_v3``. Nothing that TensorRT 10 removed
(binding indices, ``execute_async_v2``, ``get_binding_*``) appears here.

Memory goes through a small seam, :class:`DeviceMemory`: on a GPU it is
:class:`CudaMemory` (``segcam.gpu``'s buffers and streams); the CPU-tier tests
hand in a host-memory implementation that only works with their TensorRT stand-in.

:func:`select_tensorrt` is the TensorRT branch of backend selection: it checks that
TensorRT imports, that a GPU is present and that a matching engine exists (its sidecar
agrees with the running TensorRT, GPU and ONNX) before loading it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

import numpy as np

from segcam.errors import BackendError, EngineError, GpuError
from segcam.inference.backend import TensorSpec, describe_specs
from segcam.inference.engine_meta import (
    EngineMeta,
    RuntimeFacts,
    check_engine,
    engine_filename,
    find_engines,
    rebuild_command,
    sha256_file,
    sm_string,
)
from segcam.inference.profile import ModelProfile

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Protocol

    from segcam.config import Config
else:
    try:
        from typing import Protocol
    except ImportError:  # pragma: no cover
        Protocol = object

log = logging.getLogger("segcam.tensorrt")

INSTALL_HINT = (
    "TensorRT comes with JetPack (python3-libnvinfer); create the venv with "
    "--system-site-packages so segcam sees it"
)

# TensorRT DataType member name -> numpy dtype name. BF16/FP8/INT4 have no numpy type.
_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}


def import_tensorrt() -> Any:
    """``import tensorrt`` or BackendError saying how to get it."""
    try:
        import tensorrt  # noqa: PLC0415 - optional, system package on Jetson
    except ImportError as exc:
        raise BackendError(f"TensorRT is not installed ({exc})", INSTALL_HINT) from None
    return tensorrt


def tensorrt_version(trt: Any) -> str:
    """The TensorRT version string of an imported module."""
    return str(getattr(trt, "__version__", "") or "")


def np_dtype(trt: Any, trt_dtype: Any) -> np.dtype:
    """numpy dtype of a TensorRT DataType (BackendError for types numpy lacks)."""
    for member, np_name in _DTYPES.items():
        value = getattr(trt.DataType, member, None)
        if value is not None and trt_dtype == value:
            return np.dtype(np_name)
    raise BackendError(
        f"engine tensor type {trt_dtype} has no numpy equivalent",
        "build the engine with float32 or float16 I/O",
    )


def dims_tuple(dims: Any) -> Tuple[int, ...]:
    """A tensorrt.Dims (len + index) as a tuple of ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def _make_logger(trt: Any) -> Any:
    """An ILogger subclass that routes TensorRT's messages into segcam's log.

    While ``quiet`` is set (loading), errors are only collected so that a refused engine
    becomes one clear EngineError instead of several raw TensorRT lines.
    """

    class SegcamTrtLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: List[str] = []
            self.quiet = False

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)  # 0 internal error, 1 error, 2 warning, 3 info, 4 verbose
            if level <= 1:
                self.errors.append(str(msg))
                if not self.quiet:
                    log.error("TensorRT: %s", msg)
            elif level == 2:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return SegcamTrtLogger()


# --------------------------------------------------------------------------- memory seam


class DeviceMemory(Protocol):
    """Where the backend gets device buffers and streams (GPU: CudaMemory; CI: host memory)."""

    def alloc(self, nbytes: int) -> int:
        """Allocate device memory; return its address."""

    def free(self, ptr: int) -> None:
        """Free memory from :meth:`alloc`."""

    def host(self, nbytes: int) -> np.ndarray:
        """A host staging buffer (uint8, pinned where possible) for host<->device copies."""

    def create_stream(self) -> int:
        """A stream for :meth:`TensorRTBackend.infer` (the host convenience path)."""

    def destroy_stream(self, stream: int) -> None:
        """Destroy a stream from :meth:`create_stream`."""

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        """Enqueue a host->device copy of a contiguous array."""

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        """Enqueue a device->host copy into a contiguous array."""

    def synchronize(self, stream: int) -> None:
        """Wait for a stream."""

    def close(self) -> None:
        """Release everything still allocated."""


class CudaMemory:
    """:class:`DeviceMemory` on ``segcam.gpu``'s buffers, streams and context."""

    def __init__(self, device_index: int = 0) -> None:
        from segcam.gpu.device import GpuContext
        from segcam.gpu.memory import DeviceBuffer, PinnedBuffer, Stream

        self._DeviceBuffer, self._PinnedBuffer, self._Stream = DeviceBuffer, PinnedBuffer, Stream
        self._ctx = GpuContext.acquire(device_index)
        self._buffers: Dict[int, Any] = {}
        self._pinned: List[Any] = []
        self._streams: Dict[int, Any] = {}

    def alloc(self, nbytes: int) -> int:
        self._ctx.make_current()
        buf = self._DeviceBuffer(nbytes)
        self._buffers[buf.ptr] = buf
        return buf.ptr

    def free(self, ptr: int) -> None:
        buf = self._buffers.pop(ptr, None)
        if buf is not None:
            buf.close()

    def host(self, nbytes: int) -> np.ndarray:
        self._ctx.make_current()
        pinned = self._PinnedBuffer(nbytes)
        self._pinned.append(pinned)
        return pinned.array((nbytes,), np.uint8)

    def create_stream(self) -> int:
        self._ctx.make_current()
        stream = self._Stream()
        self._streams[stream.ptr] = stream
        return stream.ptr

    def destroy_stream(self, stream: int) -> None:
        s = self._streams.pop(stream, None)
        if s is not None:
            s.close()

    def _stream(self, stream: int) -> Any:
        s = self._streams.get(stream)
        if s is None:
            raise BackendError("copy on a stream this allocator did not create")
        return s

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._ctx.make_current()
        self._stream(stream).copy_htod(dst, src.ctypes.data, src.nbytes)

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._ctx.make_current()
        self._stream(stream).copy_dtoh(dst.ctypes.data, src, dst.nbytes)

    def synchronize(self, stream: int) -> None:
        self._ctx.make_current()
        self._stream(stream).synchronize()

    def close(self) -> None:
        for s in list(self._streams.values()):
            s.close()
        for b in list(self._buffers.values()):
            b.close()
        for p in self._pinned:
            p.close()
        self._streams.clear()
        self._buffers.clear()
        self._pinned = []
        self._ctx.release()


# --------------------------------------------------------------------------- backend


class TensorRTBackend:
    """A TensorRT engine behind the :class:`~segcam.inference.backend.Backend` protocol.

    ``infer_device`` enqueues on the caller's stream with the caller's device pointers
    (the GPU pipeline's inference stage); ``infer`` is the host convenience path (own
    stream, staging copies, synchronous). Outputs other than the profile's chosen one get
    scratch buffers owned by the backend.
    """

    name = "tensorrt"
    supports_device = True

    def __init__(
        self,
        profile: ModelProfile,
        engine_path: Union[str, Path],
        memory: Optional[DeviceMemory] = None,
        meta: Optional[EngineMeta] = None,
        rebuild: str = "",
    ) -> None:
        self.profile = profile
        self.engine_path = Path(engine_path)
        self.meta = meta
        self._rebuild = rebuild or "build_engine.sh MODEL.onnx --profile " + profile.name
        self._trt = import_tensorrt()
        self._lock = threading.Lock()
        self._memory: Optional[DeviceMemory] = None
        self._owned: List[int] = []
        self._stream = 0
        self._host_in: Optional[np.ndarray] = None
        self._host_out: Optional[np.ndarray] = None
        self._dev_in = 0
        self._dev_out = 0
        self._bound: Dict[str, int] = {}
        self._event = 0
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        self._max_batch = 1
        self._batch_ctx: Any = None  # a second execution context, for batches of streams
        self._batch_buf: Dict[str, int] = {}  # tensor name -> device buffer of max_batch items
        self._batch_host: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self._batch_stream = 0
        if profile.state_inputs:
            raise BackendError(
                f"model profile {profile.name} has recurrent state inputs, which the TensorRT "
                "backend does not carry",
                "use --set inference.backend=onnxruntime for this model",
            )
        try:
            self._load()
            self._memory = memory if memory is not None else CudaMemory()
            self._bind_scratch()
        except BaseException:
            self.close()
            raise
        version = tensorrt_version(self._trt)
        precision = meta.precision if meta else "?"
        self.provider = f"tensorrt:{version}:{precision}"
        if self.input_spec.dtype != profile.dtype:
            # The GPU preprocess kernel writes the profile's dtype; an engine built with
            # float16 I/O from a float32 ONNX (--io-fp16) then takes host tensors only
            # (infer() casts), so the GPU path must not hand it device pointers.
            self.supports_device = False
            log.info(
                "engine input %s is %s but profile %s says %s: host inference only",
                self.input_spec.name,
                self.input_spec.dtype,
                profile.name,
                profile.dtype,
            )

    # -- loading -------------------------------------------------------------

    def _load(self) -> None:
        trt = self._trt
        hint = f"rebuild it: {self._rebuild}"
        try:
            data = self.engine_path.read_bytes()
        except OSError as exc:
            raise EngineError(f"cannot read engine {self.engine_path}: {exc}", hint) from None
        self._logger = _make_logger(trt)
        self._logger.quiet = True
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        del data
        if self._engine is None:
            why = self._logger.errors[-1] if self._logger.errors else "no reason given"
            raise EngineError(
                f"TensorRT {tensorrt_version(trt)} refused engine {self.engine_path.name}: {why}",
                hint,
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            why = self._logger.errors[-1] if self._logger.errors else "out of device memory?"
            raise EngineError(f"cannot create a TensorRT execution context: {why}", hint)
        self._logger.quiet = False
        self._discover()

    def _discover(self) -> None:
        trt, engine, p = self._trt, self._engine, self.profile
        ins: List[Tuple[str, Tuple[int, ...], np.dtype]] = []
        outs: List[Tuple[str, np.dtype]] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            dtype = np_dtype(trt, engine.get_tensor_dtype(name))
            if mode == trt.TensorIOMode.INPUT:
                ins.append((name, dims_tuple(engine.get_tensor_shape(name)), dtype))
            elif mode == trt.TensorIOMode.OUTPUT:
                outs.append((name, dtype))
        if not outs:
            raise EngineError(f"engine {self.engine_path.name} has no outputs")
        in_names = [n for n, _, _ in ins]
        if p.input_name:
            chosen = [t for t in ins if t[0] == p.input_name]
            if not chosen:
                raise EngineError(
                    f"engine inputs {in_names} do not include the profile's input {p.input_name!r}",
                    f"fix input_name in the profile or rebuild: {self._rebuild}",
                )
        else:
            chosen = ins
        if len(ins) != 1 or len(chosen) != 1:
            raise EngineError(
                f"engine has inputs {in_names}; segcam feeds exactly one image input",
                "export the model with a single image input",
            )
        in_name, engine_shape, in_dtype = chosen[0]
        want = tuple(p.input_shape)
        if len(engine_shape) != len(want):
            raise EngineError(
                f"engine input {in_name} has shape {engine_shape}, the profile feeds {want} "
                f"({p.layout})",
                "fix layout/width/height in the profile or rebuild the engine",
            )
        if -1 in engine_shape:
            prof = [dims_tuple(d) for d in engine.get_tensor_profile_shape(in_name, 0)]
            if len(prof) != 3 or not all(
                lo <= w <= hi for lo, w, hi in zip(prof[0], want, prof[2])
            ):
                span = f"{prof[0]}..{prof[2]}" if len(prof) == 3 else "none"
                raise EngineError(
                    f"profile input shape {want} is outside the engine's optimisation "
                    f"profile {span} for {in_name}",
                    f"rebuild with matching shapes: {self._rebuild}",
                )
            if engine_shape[0] == -1:  # a dynamic batch: frames of several streams per call
                self._max_batch = max(1, min(int(prof[2][0]), MAX_BATCH))
        elif engine_shape != want:
            raise EngineError(
                f"engine input {in_name} is fixed at {engine_shape}, the profile feeds {want}",
                "fix width/height/layout in the profile or rebuild the engine",
            )
        if not self._context.set_input_shape(in_name, want):
            raise EngineError(f"TensorRT refused input shape {want} for {in_name}")
        self.inputs = [TensorSpec(in_name, want, in_dtype.name)]
        self.outputs = []
        for name, dtype in outs:
            shape = dims_tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(
                    f"engine output {name} has a data-dependent shape {shape}",
                    "segmentation outputs must have a shape fixed by the input",
                )
            self.outputs.append(TensorSpec(name, shape, dtype.name))
        self.output_spec = self._choose_output()
        self.input_spec = self.inputs[0]
        if self.output_spec.dtype not in ("float32", "float16"):
            raise EngineError(
                f"engine output {self.output_spec.describe()} is not a float score map "
                "(an argmax label map?)",
                "export the model with its probabilities or logits as output",
            )

    def _choose_output(self) -> TensorSpec:
        p = self.profile
        if p.output_name:
            for spec in self.outputs:
                if spec.name == p.output_name:
                    return spec
            raise EngineError(
                f"engine outputs ({describe_specs(self.outputs)}) do not include the profile's "
                f"output {p.output_name!r}",
                "fix output_name in the profile, or leave it empty and set output_index",
            )
        try:
            return self.outputs[p.output_index]
        except IndexError:
            raise EngineError(
                f"profile output_index {p.output_index} but the engine has "
                f"{len(self.outputs)} outputs ({describe_specs(self.outputs)})",
                "fix output_index in the profile",
            ) from None

    def _bind_scratch(self) -> None:
        assert self._memory is not None
        for spec in self.outputs:
            if spec.name == self.output_spec.name:
                continue
            ptr = self._alloc(_nbytes(spec))
            self._set_address(spec.name, ptr)

    def _alloc(self, nbytes: int) -> int:
        assert self._memory is not None
        ptr = self._memory.alloc(nbytes)
        self._owned.append(ptr)
        return ptr

    def _set_address(self, name: str, ptr: int) -> None:
        if self._bound.get(name) == ptr:
            return
        if not self._context.set_tensor_address(name, int(ptr)):
            raise BackendError(f"TensorRT refused the address of tensor {name}")
        self._bound[name] = ptr

    # -- running ---------------------------------------------------------------

    def infer_device(
        self, in_ptr: int, out_ptr: int, stream: int, input_consumed_event: int = 0
    ) -> None:
        """Enqueue one inference on ``stream``: input at ``in_ptr``, chosen output at ``out_ptr``.

        The buffers must hold :attr:`input_spec` / :attr:`output_spec` (their shape and
        dtype; fp16 engine I/O is float16). ``input_consumed_event`` (a CUevent handle), if
        given, is recorded when TensorRT no longer reads the input, so it may be refilled early.
        """
        with self._lock:
            self._enqueue(in_ptr, out_ptr, stream, input_consumed_event)

    def _enqueue(self, in_ptr: int, out_ptr: int, stream: int, event: int) -> None:
        if self._context is None:
            raise BackendError("the TensorRT backend is closed")
        self._set_address(self.input_spec.name, in_ptr)
        self._set_address(self.output_spec.name, out_ptr)
        if event != self._event:  # 0 clears it: TensorRT keeps recording a set event
            if not self._context.set_input_consumed_event(int(event)):
                raise BackendError("TensorRT refused the input-consumed event")
            self._event = event
        if not self._context.execute_async_v3(int(stream)):
            why = self._logger.errors[-1] if self._logger.errors else "see the TensorRT log"
            raise BackendError(f"TensorRT execute_async_v3 failed: {why}")

    def get_state(self) -> Dict[str, np.ndarray]:
        """No recurrent state (profiles with state inputs are refused at load)."""
        return {}

    def set_state(self, states: Dict[str, np.ndarray]) -> None:
        """Nothing to restore (see :meth:`get_state`)."""

    @property
    def max_batch(self) -> int:
        """Frames one :meth:`infer_batch` call may carry: the batch the engine's
        optimisation profile allows (``build_engine.sh --max-batch N``), else 1."""
        return self._max_batch

    def infer_batch(self, tensors: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Host in, host out for ``[N, ...]`` stacked inputs, N <= :attr:`max_batch`.

        Batches run on an execution context of their own, sized once for max_batch
        frames, so the batch-1 context of :meth:`infer` and :meth:`infer_device` keeps
        its shapes and addresses.
        """
        spec_in, spec_out = self.input_spec, self.output_spec
        n = int(tensors.shape[0]) if tensors.ndim == len(spec_in.shape) else 0
        if n < 1 or n > self._max_batch or tuple(tensors.shape[1:]) != spec_in.shape[1:]:
            raise BackendError(
                f"batched input {tuple(tensors.shape)}: this engine takes 1 to "
                f"{self._max_batch} frames of {spec_in.shape[1:]}",
                "rebuild with build_engine.sh --max-batch N for larger batches",
            )
        if n == 1:
            return self.infer(tensors.reshape(spec_in.shape), out=out)
        with self._lock:
            mem = self._memory
            if mem is None or self._engine is None:
                raise BackendError("the TensorRT backend is closed")
            ctx = self._batch_context()
            shape = (n,) + tuple(spec_in.shape[1:])
            if not ctx.set_input_shape(spec_in.name, shape):
                raise BackendError(f"TensorRT refused input shape {shape} for {spec_in.name}")
            host_in, host_out = self._batch_host  # type: ignore[misc]
            in_bytes, out_bytes = n * _nbytes(spec_in), n * _nbytes(spec_out)
            staged = host_in[:in_bytes].view(spec_in.dtype).reshape(shape)
            np.copyto(
                staged, tensors, casting="same_kind" if tensors.dtype.kind == "f" else "unsafe"
            )
            stream = self._batch_stream
            mem.htod(self._batch_buf[spec_in.name], host_in[:in_bytes], stream)
            if not ctx.execute_async_v3(int(stream)):
                why = self._logger.errors[-1] if self._logger.errors else "see the TensorRT log"
                raise BackendError(f"TensorRT execute_async_v3 (batch of {n}) failed: {why}")
            mem.dtoh(host_out[:out_bytes], self._batch_buf[spec_out.name], stream)
            mem.synchronize(stream)
            oshape = (n,) + tuple(spec_out.shape[1:])
            result = host_out[:out_bytes].view(spec_out.dtype).reshape(oshape)
            if out is not None and out.shape == oshape:
                np.copyto(out, result, casting="same_kind")
                return out
            return result.copy()

    def _batch_context(self) -> Any:
        """The batch execution context and its max_batch-sized buffers (made once)."""
        if self._batch_ctx is not None:
            return self._batch_ctx
        mem = self._memory
        assert mem is not None
        ctx = self._engine.create_execution_context()
        if ctx is None:
            raise BackendError("cannot create a second TensorRT execution context for batches")
        self._batch_stream = mem.create_stream()
        k = self._max_batch
        for spec in [self.input_spec] + list(self.outputs):
            ptr = self._alloc(k * _nbytes(spec))
            self._batch_buf[spec.name] = ptr
            if not ctx.set_tensor_address(spec.name, int(ptr)):
                raise BackendError(f"TensorRT refused the address of tensor {spec.name}")
        self._batch_host = (
            mem.host(k * _nbytes(self.input_spec)),
            mem.host(k * _nbytes(self.output_spec)),
        )
        self._batch_ctx = ctx
        return ctx

    def infer(self, tensor: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Host in, host out (own stream; synchronous). Returns the chosen output, raw."""
        spec_in, spec_out = self.input_spec, self.output_spec
        if tuple(tensor.shape) != spec_in.shape:
            raise BackendError(
                f"input shape {tuple(tensor.shape)} does not match the engine's "
                f"{spec_in.describe()}",
                "preprocess with the model profile",
            )
        with self._lock:
            mem = self._memory
            if mem is None or self._context is None:
                raise BackendError("the TensorRT backend is closed")
            if not self._stream:
                self._stream = mem.create_stream()
                self._dev_in = self._alloc(_nbytes(spec_in))
                self._dev_out = self._alloc(_nbytes(spec_out))
                self._host_in = mem.host(_nbytes(spec_in))
                self._host_out = mem.host(_nbytes(spec_out))
            assert self._host_in is not None and self._host_out is not None
            # Stage through uint8 views: ctypes has no float16, bytes are bytes.
            staged_in = self._host_in[: _nbytes(spec_in)].view(spec_in.dtype).reshape(spec_in.shape)
            np.copyto(
                staged_in, tensor, casting="same_kind" if tensor.dtype.kind == "f" else "unsafe"
            )
            mem.htod(self._dev_in, self._host_in[: _nbytes(spec_in)], self._stream)
            self._enqueue(self._dev_in, self._dev_out, self._stream, 0)
            mem.dtoh(self._host_out[: _nbytes(spec_out)], self._dev_out, self._stream)
            mem.synchronize(self._stream)
            result = (
                self._host_out[: _nbytes(spec_out)].view(spec_out.dtype).reshape(spec_out.shape)
            )
            if out is not None:
                np.copyto(out, result, casting="same_kind")
                return out
            return result.copy()

    def close(self) -> None:
        """Free buffers and stream, then the context, engine and runtime (in that order)."""
        with self._lock:
            mem, self._memory = self._memory, None
            if mem is not None:
                for stream in (self._stream, self._batch_stream):
                    if stream:
                        mem.synchronize(stream)
                        mem.destroy_stream(stream)
                for ptr in self._owned:
                    mem.free(ptr)
                mem.close()
            self._stream = self._batch_stream = 0
            self._owned = []
            self._bound = {}
            self._host_in = self._host_out = None
            self._batch_ctx = None
            self._batch_buf = {}
            self._batch_host = None
            self._context = None
            self._engine = None
            self._runtime = None

    def describe(self) -> str:
        """One line: engine, precision, I/O."""
        return (
            f"{self.provider} {self.engine_path.name}: in {describe_specs(self.inputs)}; "
            f"out {self.output_spec.describe()}"
        )


MAX_BATCH = 64  # the most frames one call carries, whatever the engine's profile allows


def _nbytes(spec: TensorSpec) -> int:
    n = 1
    for d in spec.shape:
        n *= int(d)
    return n * np.dtype(spec.dtype).itemsize


# --------------------------------------------------------------------------- selection


def engine_dir(cfg: Config) -> Path:
    """The engine directory of a config (relative paths are taken from the working dir)."""
    return Path(cfg.inference.engine_dir).expanduser()


def expected_engine_path(cfg: Config, profile: ModelProfile, trt_version: str, sm: str) -> Path:
    """``inference.engine`` if set, else the canonical name inside ``inference.engine_dir``."""
    if cfg.inference.engine:
        return Path(cfg.inference.engine).expanduser()
    name = engine_filename(profile.name, cfg.inference.engine_precision, trt_version, sm)
    return engine_dir(cfg) / name


def runtime_facts(
    trt_version: str, gpu: Any, profile: ModelProfile, precision: str, onnx_path: Optional[Path]
) -> RuntimeFacts:
    """What an engine must match now (the ONNX hash only if the ONNX file exists)."""
    onnx_sha = ""
    if onnx_path is not None and Path(onnx_path).is_file():
        onnx_sha = sha256_file(onnx_path)
    return RuntimeFacts(
        tensorrt_version=trt_version,
        device_name=str(getattr(gpu, "name", "")),
        sm=sm_string(gpu.sm) if getattr(gpu, "sm", None) else "",
        onnx_sha256=onnx_sha,
        precision=precision,
        model=profile.name,
        input_name=profile.input_name,
        output_name=profile.output_name,
        input_shape=tuple(profile.input_shape),
    )


def select_tensorrt(
    cfg: Config,
    profile: ModelProfile,
    onnx_path: Optional[Union[str, Path]],
    gpu_probe: Any = None,
    memory: Optional[DeviceMemory] = None,
) -> Tuple[Optional[TensorRTBackend], str]:
    """The TensorRT branch of backend selection: (backend, reason) or (None, why not).

    Never builds an engine unless ``inference.build_engine_on_start``. When TensorRT is
    wanted but unusable it logs one warning line (what is wrong + the rebuild command) and
    returns None so the caller falls back to ONNX Runtime; with
    ``inference.require_tensorrt`` it raises :class:`EngineError` instead.
    """
    inf = cfg.inference
    required = inf.require_tensorrt
    onnx = Path(onnx_path) if onnx_path else None
    rebuild = rebuild_command(
        onnx or "MODEL.onnx", profile.name, inf.engine_precision, inf.engine_dir
    )

    def refuse(message: str, hint: str, quiet: bool = False) -> Tuple[None, str]:
        if required:
            raise EngineError(
                f"TensorRT unavailable: {message} (inference.require_tensorrt is set)", hint
            )
        if quiet:
            return None, message
        # backend: auto warns here; backend: tensorrt is warned about by select_backend,
        # which prints this reason: either way exactly one line, with the fix in it.
        if inf.backend == "auto":
            log.warning("TensorRT not used: %s; %s. Falling back to ONNX Runtime.", message, hint)
        return None, f"{message}; {hint}"

    try:
        trt = import_tensorrt()
    except BackendError as exc:
        # Normal on a PC: only a warning when TensorRT was asked for by name.
        return refuse("not installed", exc.hint, quiet=inf.backend == "auto")
    if gpu_probe is None:
        from segcam.gpu import probe as gpu_probe  # noqa: PLC0415 - optional GPU stack
    gpu, gpu_reason = gpu_probe()
    if gpu is None:
        return refuse(f"GPU unavailable ({gpu_reason})", "TensorRT needs the GPU path", quiet=True)
    version = tensorrt_version(trt)
    sm = sm_string(gpu.sm)
    path = expected_engine_path(cfg, profile, version, sm)
    facts = runtime_facts(version, gpu, profile, inf.engine_precision, onnx)
    if not path.is_file() and not inf.engine and inf.build_engine_on_start:
        if onnx is None or not onnx.is_file():
            return refuse(f"no engine at {path} and no ONNX to build one from", rebuild)
        from segcam.inference.engine_build import BuildOptions, build_engine  # noqa: PLC0415

        log.warning("building TensorRT engine %s (inference.build_engine_on_start)", path)
        build_engine(
            BuildOptions(
                onnx_path=onnx,
                profile=profile,
                precision=inf.engine_precision,
                workspace_mib=inf.engine_workspace_mib,
                out_dir=engine_dir(cfg),
            ),
            gpu=gpu,
        )
    if not path.is_file():
        others = [p.name for p in find_engines(path.parent, profile.name)]
        if others:
            return refuse(
                f"no TensorRT engine at {path}; the directory has {', '.join(others[:3])} "
                "(another TensorRT, GPU or precision)",
                f"build one: {rebuild}",
            )
    try:
        meta = check_engine(path, facts, rebuild)
        backend = TensorRTBackend(profile, path, memory=memory, meta=meta, rebuild=rebuild)
    except (BackendError, GpuError) as exc:  # EngineError is a BackendError
        return refuse(exc.message, exc.hint or f"rebuild it: {rebuild}")
    reason = (
        f"tensorrt:{meta.precision} (engine {path.name} matches TensorRT {version}, "
        f"{gpu.name} SM {sm}, ONNX)"
    )
    return backend, reason
