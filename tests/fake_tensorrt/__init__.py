"""TEST DOUBLE for the ``tensorrt`` Python module. Not TensorRT; never counts as verified.

TensorRT cannot be installed on the machines that run segcam's CI (its PyPI packages are
stubs that download from NVIDIA, and the lent GPU has no TensorRT). This stand-in lets the
CPU tier drive segcam's TensorRT code paths: engine build through the builder API, engine
loading, I/O discovery, shapes, tensor addresses, ``execute_async_v3`` and fp16 I/O.

What it copies from the real bindings (NVIDIA/TensorRT ``python/src/infer/pyCore.cpp``,
``pyFoundationalTypes.cpp``, ``pyGraph.cpp`` and ``python/src/parsers/pyOnnx.cpp`` on the
release/8.5 and release/10.3 branches): class, method, property and argument names and
their order, return types (``bool`` from setters and ``execute_async_v3``, ``None`` from a
failed ``deserialize_cuda_engine`` or ``build_serialized_network``, ``Dims`` from shape
getters, a list of three ``Dims`` from ``get_tensor_profile_shape``), and the members of
the ``DataType``, ``TensorIOMode``, ``BuilderFlag``, ``MemoryPoolType``,
``NetworkDefinitionCreationFlag`` and ``DeviceType`` enums of each version. API removed in
TensorRT 10 (binding indices, ``execute_async_v2``, ``max_workspace_size``,
``build_engine``) exists only in the 8.5 flavour, and there as a tripwire that fails the
test if segcam touches it.

What it does NOT do: compile anything, run on a GPU, use fp16 arithmetic inside the
network, or validate real plan files. A "serialized engine" is a small header plus the
ONNX bytes; "device pointers" are host addresses (see :class:`HostMemory`, the allocator
the tests hand to the backend); executing runs the ONNX with ONNX Runtime on the CPU and
converts I/O to the engine's declared dtypes. Use :func:`module` to get a fresh
``tensorrt``-like module of a given version, and put it in ``sys.modules`` for a test.
"""

from __future__ import annotations

import ctypes
import json
import types
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

MAGIC = b"SEGCAM-FAKE-TRT1"


# --------------------------------------------------------------------------- enums


class _EnumValue:
    """One member of a pybind11-style enum: ``.name``, ``.value``, ``int()``, hashable.

    Equality holds only with members of the same enum (pybind11's strict ``__eq__``), so
    code comparing a mode with a bare int fails here as it would on the real module.
    """

    def __init__(self, enum_name: str, name: str, value: int) -> None:
        self._enum = enum_name
        self.name = name
        self.value = value

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _EnumValue)
            and other._enum == self._enum
            and other.value == self.value
        )

    def __hash__(self) -> int:
        return hash((self._enum, self.value))

    def __repr__(self) -> str:
        return f"<{self._enum}.{self.name}: {self.value}>"

    __str__ = __repr__


def _enum(name: str, members: Sequence[str]) -> type:
    attrs: Dict[str, Any] = {}
    values = {}
    for i, m in enumerate(members):
        v = _EnumValue(name, m, i)
        attrs[m] = v
        values[m] = v
    attrs["__members__"] = values
    return type(name, (), attrs)


# --------------------------------------------------------------------------- Dims


class Dims:
    """Like tensorrt.Dims: ``len()``, indexing (IndexError past the end), ``==`` sequences."""

    def __init__(self, shape: Sequence[int] = ()) -> None:
        self._d = [int(x) for x in shape]

    def __len__(self) -> int:
        return len(self._d)

    def __getitem__(self, index: int) -> int:
        # No __iter__: like the binding, iteration goes through __getitem__ + IndexError.
        return self._d[index]

    def __eq__(self, other: object) -> bool:
        try:
            return list(other) == self._d  # type: ignore[call-overload]
        except TypeError:
            return False

    def __repr__(self) -> str:
        return repr(tuple(self._d))


def _dims(shape: Any) -> Dims:
    return shape if isinstance(shape, Dims) else Dims(list(shape))


def _as_list(shape: Any) -> List[int]:
    return [int(shape[i]) for i in range(len(shape))]


# --------------------------------------------------------------------------- module


def module(version: str = "10.3.0") -> types.ModuleType:
    """A fresh fake ``tensorrt`` module whose API surface is that of ``version``'s bindings."""
    major = int(version.split(".")[0])
    v10 = major >= 10
    m = types.ModuleType("tensorrt")
    m.__doc__ = "TEST DOUBLE of tensorrt " + version + " (tests/fake_tensorrt); not TensorRT."
    m.__version__ = version
    m.__file__ = __file__
    m.IS_FAKE = True
    m.RECORD = {"networks": [], "configs": []}

    dt_names = ["FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8"]
    if v10:
        dt_names = [
            "FLOAT",
            "HALF",
            "BF16",
            "INT8",
            "INT32",
            "INT64",
            "BOOL",
            "UINT8",
            "FP8",
            "INT4",
        ]
    DataType = _enum("DataType", dt_names)
    m.DataType = DataType
    for alias, member in (
        ("float32", "FLOAT"),
        ("float16", "HALF"),
        ("int8", "INT8"),
        ("int32", "INT32"),
        ("bool", "BOOL"),
        ("uint8", "UINT8"),
    ):
        setattr(m, alias, getattr(DataType, member))
    if v10:
        m.bfloat16, m.int64 = DataType.BF16, DataType.INT64
    np_of = {
        DataType.FLOAT: np.float32,
        DataType.HALF: np.float16,
        DataType.INT8: np.int8,
        DataType.INT32: np.int32,
        DataType.BOOL: np.bool_,
        DataType.UINT8: np.uint8,
    }
    if v10:
        np_of[DataType.INT64] = np.int64
    trt_of_np = {np.dtype(v): k for k, v in np_of.items()}

    TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    m.TensorIOMode = TensorIOMode
    m.TensorLocation = _enum("TensorLocation", ["DEVICE", "HOST"])
    m.MemoryPoolType = _enum(
        "MemoryPoolType",
        ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM", "DLA_GLOBAL_DRAM"]
        + (["TACTIC_DRAM", "TACTIC_SHARED_MEMORY"] if v10 else []),
    )
    flags = ["FP16", "INT8", "DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "TF32"]
    flags += ["BF16", "FP8", "VERSION_COMPATIBLE"] if v10 else ["STRICT_TYPES"]
    m.BuilderFlag = _enum("BuilderFlag", flags)
    m.NetworkDefinitionCreationFlag = _enum(
        "NetworkDefinitionCreationFlag",
        ["EXPLICIT_BATCH", "STRONGLY_TYPED"] if v10 else ["EXPLICIT_BATCH", "EXPLICIT_PRECISION"],
    )
    m.DeviceType = _enum("DeviceType", ["GPU", "DLA"])
    m.Dims = Dims

    severity = _enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

    class ILogger:
        """Subclassable base (the binding's PyLogger trampoline): ``__init__()``, ``log()``."""

        Severity = severity

        def __init__(self) -> None:
            pass

        def log(self, severity: Any, msg: str) -> None:
            raise NotImplementedError

    class Logger(ILogger):
        def __init__(self, min_severity: Any = severity.WARNING) -> None:
            self.min_severity = min_severity
            self.messages: List[Tuple[Any, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            self.messages.append((severity, msg))

    for name, val in severity.__members__.items():
        setattr(ILogger, name, val)  # .export_values() in the binding
        setattr(Logger, name, val)
    m.ILogger, m.Logger = ILogger, Logger

    class IHostMemory(bytes):
        """bytes with the binding's ``nbytes`` and ``dtype`` (the real one: buffer protocol)."""

        @property
        def nbytes(self) -> int:
            return len(self)

        @property
        def dtype(self) -> Any:
            return DataType.UINT8

    m.IHostMemory = IHostMemory

    # ----------------------------------------------------------------- network + parser

    class ITensor:
        def __init__(self, name: str, shape: List[int], dtype: Any) -> None:
            self.name = name
            self._shape = Dims(shape)
            self.dtype = dtype  # settable, as in the binding (sets the engine I/O type)

        @property
        def shape(self) -> Dims:
            return self._shape

        @shape.setter
        def shape(self, value: Any) -> None:
            self._shape = _dims(value)

    class INetworkDefinition:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self._inputs: List[ITensor] = []
            self._outputs: List[ITensor] = []
            self.onnx: bytes = b""
            self.onnx_types: Dict[str, Any] = {}

        @property
        def num_inputs(self) -> int:
            return len(self._inputs)

        @property
        def num_outputs(self) -> int:
            return len(self._outputs)

        def get_input(self, index: int) -> ITensor:
            return self._inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self._outputs[index]

    class ParserError:
        def __init__(self, text: str) -> None:
            self._text = text

        def desc(self) -> str:
            return self._text

        def __str__(self) -> str:
            return self._text

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: Any) -> None:
            self.network = network
            self.logger = logger
            self._errors: List[ParserError] = []

        @property
        def num_errors(self) -> int:
            return len(self._errors)

        def get_error(self, index: int) -> ParserError:
            return self._errors[index]

        def clear_errors(self) -> None:
            self._errors = []

        def parse_from_file(self, model: str) -> bool:
            try:
                data = Path(model).read_bytes()
            except OSError as exc:
                self._errors.append(ParserError(f"cannot read {model}: {exc}"))
                return False
            return self.parse(data, str(Path(model).parent))

        def parse(self, model: bytes, path: Optional[str] = None) -> bool:
            import onnx

            try:
                proto = onnx.load_from_string(bytes(model))
            except Exception as exc:  # noqa: BLE001 - the real parser reports, never raises
                self._errors.append(ParserError(f"ONNX parse failed: {exc}"))
                return False
            init_names = {i.name for i in proto.graph.initializer}
            net = self.network
            net.onnx = bytes(model)
            for vi, dest in ((proto.graph.input, net._inputs), (proto.graph.output, net._outputs)):
                for v in vi:
                    if v.name in init_names:
                        continue
                    tt = v.type.tensor_type
                    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
                    npdt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
                    trt_dt = trt_of_np.get(npdt)
                    if trt_dt is None:
                        self._errors.append(ParserError(f"{v.name}: unsupported type {npdt}"))
                        return False
                    dest.append(ITensor(v.name, shape, trt_dt))
                    net.onnx_types[v.name] = trt_dt
            return True

    m.INetworkDefinition, m.ITensor, m.OnnxParser, m.ParserError = (
        INetworkDefinition,
        ITensor,
        OnnxParser,
        ParserError,
    )

    # ----------------------------------------------------------------- builder

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: Dict[str, List[Dims]] = {}

        def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002
            lo, mid, hi = _as_list(min), _as_list(opt), _as_list(max)
            if not (len(lo) == len(mid) == len(hi)) or not all(
                a <= b <= c for a, b, c in zip(lo, mid, hi)
            ):
                raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
            self.shapes[input] = [Dims(lo), Dims(mid), Dims(hi)]

        def get_shape(self, input: str) -> List[Dims]:  # noqa: A002
            return self.shapes.get(input, [])

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self.entries = json.loads(data.decode()) if data else {"builds": 0}

        def serialize(self) -> IHostMemory:
            return IHostMemory(json.dumps(self.entries).encode())

        def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self.entries["builds"] += input_cache.entries.get("builds", 0)
            return True

        def reset(self) -> bool:
            self.entries = {"builds": 0}
            return True

    class IBuilderConfig:
        def __init__(self) -> None:
            self.pools: Dict[Any, int] = {}
            self.flags: set = set()
            self.profiles: List[IOptimizationProfile] = []
            self._timing_cache: Optional[ITimingCache] = None
            self.DLA_core = -1
            self.default_device_type = m.DeviceType.GPU
            if v10:
                self.progress_monitor = None

        def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
            self.pools[pool] = int(pool_size)

        def get_memory_pool_limit(self, pool: Any) -> int:
            return self.pools.get(pool, 0)

        def set_flag(self, flag: Any) -> None:
            self.flags.add(flag)

        def clear_flag(self, flag: Any) -> None:
            self.flags.discard(flag)

        def get_flag(self, flag: Any) -> bool:
            return flag in self.flags

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        @property
        def num_optimization_profiles(self) -> int:
            return len(self.profiles)

        def create_timing_cache(self, serialized_timing_cache: bytes) -> ITimingCache:
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self._timing_cache = cache
            return True

        def get_timing_cache(self) -> Optional[ITimingCache]:
            return self._timing_cache

    class Builder:
        platform_has_fast_fp16 = True
        num_DLA_cores = 0

        def __init__(self, logger: Any) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            net = INetworkDefinition(flags)
            m.RECORD["networks"].append(net)  # test instrumentation, not in the binding
            return net

        def create_builder_config(self) -> IBuilderConfig:
            config = IBuilderConfig()
            m.RECORD["configs"].append(config)
            return config

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(
            self, network: INetworkDefinition, config: IBuilderConfig
        ) -> Optional[IHostMemory]:
            monitor = getattr(config, "progress_monitor", None)
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                for step in range(2):
                    if not monitor.step_complete("Building engine", step):
                        self.logger.log(severity.ERROR, "build cancelled by the progress monitor")
                        return None
                monitor.phase_finish("Building engine")
            profile_shapes: Dict[str, List[List[int]]] = {}
            for t in network._inputs:
                shape = _as_list(t.shape)
                if -1 in shape:
                    prof = config.profiles[0].shapes.get(t.name) if config.profiles else None
                    if prof is None:
                        self.logger.log(
                            severity.ERROR,
                            f"Network has dynamic or shape inputs, but no optimization profile "
                            f"has been defined (input {t.name}).",
                        )
                        return None
                    profile_shapes[t.name] = [_as_list(d) for d in prof]
                else:
                    profile_shapes[t.name] = [shape, shape, shape]
            if config._timing_cache is not None:
                config._timing_cache.entries["builds"] = (
                    config._timing_cache.entries.get("builds", 0) + 1
                )
            header = {
                "version": version,
                "fp16": m.BuilderFlag.FP16 in config.flags,
                "inputs": [
                    {"name": t.name, "shape": _as_list(t.shape), "dtype": t.dtype.name}
                    for t in network._inputs
                ],
                "outputs": [
                    {"name": t.name, "shape": _as_list(t.shape), "dtype": t.dtype.name}
                    for t in network._outputs
                ],
                "onnx_types": {k: v.name for k, v in network.onnx_types.items()},
                "profile": profile_shapes,
            }
            raw = json.dumps(header).encode()
            return IHostMemory(MAGIC + len(raw).to_bytes(8, "little") + raw + network.onnx)

    m.Builder, m.IBuilderConfig, m.IOptimizationProfile, m.ITimingCache = (
        Builder,
        IBuilderConfig,
        IOptimizationProfile,
        ITimingCache,
    )

    if v10:

        class IProgressMonitor:
            """Base class the user subclasses (trampoline in pyCore.cpp)."""

            def __init__(self) -> None:
                pass

            def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int):
                raise NotImplementedError

            def step_complete(self, phase_name: str, step: int) -> bool:
                raise NotImplementedError

            def phase_finish(self, phase_name: str) -> None:
                raise NotImplementedError

        m.IProgressMonitor = IProgressMonitor

    # ----------------------------------------------------------------- runtime

    class ICudaEngine:
        def __init__(self, header: Dict[str, Any], onnx_bytes: bytes, logger: Any) -> None:
            self._h = header
            self._onnx = onnx_bytes
            self._logger = logger
            self._io = [(t, TensorIOMode.INPUT) for t in header["inputs"]] + [
                (t, TensorIOMode.OUTPUT) for t in header["outputs"]
            ]
            self._by_name = {t["name"]: (t, mode) for t, mode in self._io}
            self._session: Any = None
            self.name = "fake-engine"
            self.num_optimization_profiles = 1
            self.device_memory_size = 0

        @property
        def num_io_tensors(self) -> int:
            return len(self._io)

        def get_tensor_name(self, index: int) -> str:
            return self._io[index][0]["name"]

        def _lookup(self, name: str) -> Optional[Tuple[Dict[str, Any], Any]]:
            return self._by_name.get(name)

        def get_tensor_mode(self, name: str) -> Any:
            found = self._lookup(name)
            return found[1] if found else TensorIOMode.NONE

        def get_tensor_dtype(self, name: str) -> Any:
            found = self._lookup(name)
            if found is None:
                raise RuntimeError(f"no tensor {name}")  # real: logs an error, returns FLOAT
            return getattr(DataType, found[0]["dtype"])

        def get_tensor_shape(self, name: str) -> Dims:
            found = self._lookup(name)
            if found is None:
                return Dims([])  # the real engine returns nbDims = -1 for an unknown name
            return Dims(found[0]["shape"])

        def get_tensor_profile_shape(self, name: str, profile_index: int) -> List[Dims]:
            prof = self._h["profile"].get(name)
            if prof is None or profile_index != 0:
                return []
            return [Dims(s) for s in prof]

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self)

        def serialize(self) -> IHostMemory:
            raw = json.dumps(self._h).encode()
            return IHostMemory(MAGIC + len(raw).to_bytes(8, "little") + raw + self._onnx)

        def _run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
            import onnxruntime as ort

            if self._session is None:
                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                self._session = ort.InferenceSession(
                    self._onnx, opts, providers=["CPUExecutionProvider"]
                )
            names = [t["name"] for t in self._h["outputs"]]
            return dict(zip(names, self._session.run(names, feeds)))

        if not v10:
            # Tripwires: present in 8.5 (deprecated), removed in 10.x; segcam must not use them.
            @property
            def num_bindings(self) -> int:
                raise AssertionError("ICudaEngine.num_bindings is gone in TensorRT 10")

            def get_binding_index(self, name: str) -> int:
                raise AssertionError("get_binding_index is gone in TensorRT 10")

            def get_binding_shape(self, *a: Any) -> Any:
                raise AssertionError("get_binding_shape is gone in TensorRT 10")

            def get_binding_dtype(self, *a: Any) -> Any:
                raise AssertionError("get_binding_dtype is gone in TensorRT 10")

    class IExecutionContext:
        def __init__(self, engine: ICudaEngine) -> None:
            self.engine = engine
            self._addr: Dict[str, int] = {}
            self._in_shapes: Dict[str, List[int]] = {}
            self._out_shapes: Dict[Tuple, Dict[str, List[int]]] = {}
            self.enqueued: List[int] = []  # stream handles, for tests
            self.consumed_event = 0

        def _error(self, msg: str) -> bool:
            self.engine._logger.log(severity.ERROR, msg)
            return False

        def set_input_shape(self, name: str, shape: Any) -> bool:
            found = self.engine._lookup(name)
            if found is None or found[1] != TensorIOMode.INPUT:
                return self._error(f"set_input_shape: {name} is not an input")
            dims = _as_list(shape)
            lo, _, hi = self.engine._h["profile"][name]
            if len(dims) != len(lo) or not all(a <= d <= b for a, d, b in zip(lo, dims, hi)):
                return self._error(f"set_input_shape: {dims} outside profile {lo}..{hi}")
            self._in_shapes[name] = dims
            return True

        def _input_shape(self, t: Dict[str, Any]) -> Optional[List[int]]:
            if t["name"] in self._in_shapes:
                return self._in_shapes[t["name"]]
            return None if -1 in t["shape"] else list(t["shape"])

        def _output_shapes(self) -> Optional[Dict[str, List[int]]]:
            shapes = {}
            for t in self.engine._h["inputs"]:
                s = self._input_shape(t)
                if s is None:
                    return None
                shapes[t["name"]] = s
            key = tuple(sorted((k, tuple(v)) for k, v in shapes.items()))
            if key not in self._out_shapes:
                feeds = {
                    n: np.zeros(s, dtype=np_of[getattr(DataType, self.engine._h["onnx_types"][n])])
                    for n, s in shapes.items()
                }
                outs = self.engine._run(feeds)
                self._out_shapes[key] = {k: list(v.shape) for k, v in outs.items()}
            return self._out_shapes[key]

        def get_tensor_shape(self, name: str) -> Dims:
            found = self.engine._lookup(name)
            if found is None:
                return Dims([])
            t, mode = found
            if mode == TensorIOMode.INPUT:
                s = self._input_shape(t)
                return Dims(s if s is not None else t["shape"])
            outs = self._output_shapes()
            return Dims(outs[name] if outs else t["shape"])

        def set_tensor_address(self, name: str, memory: int) -> bool:
            if self.engine._lookup(name) is None:
                return self._error(f"set_tensor_address: no tensor {name}")
            self._addr[name] = int(memory)
            return True

        def get_tensor_address(self, name: str) -> int:
            return self._addr.get(name, 0)

        def set_input_consumed_event(self, event: int) -> bool:
            self.consumed_event = int(event)
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            self.enqueued.append(int(stream_handle))
            h = self.engine._h
            outs_shape = self._output_shapes()
            if outs_shape is None:
                return self._error("execute_async_v3: input shapes not specified")
            for t in h["inputs"] + h["outputs"]:
                if not self._addr.get(t["name"]):
                    return self._error(f"execute_async_v3: no address for {t['name']}")
            feeds = {}
            for t in h["inputs"]:
                shape = self._input_shape(t)
                eng_dt = np.dtype(np_of[getattr(DataType, t["dtype"])])
                src = host_array(self._addr[t["name"]], shape, eng_dt)
                feeds[t["name"]] = src.astype(np_of[getattr(DataType, h["onnx_types"][t["name"]])])
            results = self.engine._run(feeds)
            for t in h["outputs"]:
                eng_dt = np.dtype(np_of[getattr(DataType, t["dtype"])])
                val = results[t["name"]].astype(eng_dt)
                dst = host_array(self._addr[t["name"]], list(val.shape), eng_dt)
                dst[...] = val
            return True

        if not v10:

            def execute_async_v2(self, bindings: Any, stream_handle: int) -> bool:
                raise AssertionError("execute_async_v2 is gone in TensorRT 10")

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.DLA_core = -1

        def deserialize_cuda_engine(self, serialized_engine: Any) -> Optional[ICudaEngine]:
            data = bytes(serialized_engine)
            if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
                self.logger.log(
                    severity.ERROR, "1: [stdArchiveReader.cpp] Magic tag does not match"
                )
                return None
            n = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
            try:
                header = json.loads(data[len(MAGIC) + 8 : len(MAGIC) + 8 + n].decode())
            except ValueError:
                self.logger.log(severity.ERROR, "engine header corrupt")
                return None
            if header.get("version") != version:
                self.logger.log(
                    severity.ERROR,
                    "The engine plan file is not compatible with this version of TensorRT, "
                    f"expecting library version {version} got {header.get('version')}",
                )
                return None
            return ICudaEngine(header, data[len(MAGIC) + 8 + n :], self.logger)

    m.Runtime, m.ICudaEngine, m.IExecutionContext = Runtime, ICudaEngine, IExecutionContext
    if not v10:

        def _removed_build_engine(self: Any, network: Any, config: Any) -> Any:
            raise AssertionError("Builder.build_engine is gone in TensorRT 10")

        Builder.build_engine = _removed_build_engine  # type: ignore[attr-defined]
        IBuilderConfig.max_workspace_size = property(  # type: ignore[attr-defined]
            lambda self: (_ for _ in ()).throw(
                AssertionError("max_workspace_size is gone in TensorRT 10")
            )
        )
    return m


def host_array(address: int, shape: Sequence[int], dtype: Any) -> np.ndarray:
    """A numpy view of host memory at ``address`` (float16 via bytes: ctypes has no half)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize if len(shape) else dt.itemsize
    raw = (ctypes.c_uint8 * n).from_address(int(address))
    return np.frombuffer(raw, dtype=np.uint8).view(dt).reshape(tuple(shape))


class HostMemory:
    """The backend's memory seam implemented on host memory: 'device pointers' are host addresses.

    Only meaningful with the fake module above (a real TensorRT would fault on them).
    """

    def __init__(self) -> None:
        self._blocks: Dict[int, np.ndarray] = {}
        self.streams_created = 0
        self.syncs = 0

    def alloc(self, nbytes: int) -> int:
        block = np.zeros(max(int(nbytes), 1), dtype=np.uint8)
        addr = int(block.ctypes.data)
        self._blocks[addr] = block
        return addr

    def free(self, ptr: int) -> None:
        self._blocks.pop(int(ptr), None)

    def host(self, nbytes: int) -> np.ndarray:
        return np.zeros(max(int(nbytes), 1), dtype=np.uint8)

    def create_stream(self) -> int:
        self.streams_created += 1
        return 0x5000 + self.streams_created

    def destroy_stream(self, stream: int) -> None:
        pass

    def htod(self, dst: int, src: np.ndarray, stream: int) -> None:
        arr = np.ascontiguousarray(src)
        ctypes.memmove(int(dst), arr.ctypes.data, arr.nbytes)

    def dtoh(self, dst: np.ndarray, src: int, stream: int) -> None:
        ctypes.memmove(dst.ctypes.data, int(src), dst.nbytes)

    def synchronize(self, stream: int) -> None:
        self.syncs += 1

    def close(self) -> None:
        self._blocks.clear()

    @property
    def live_blocks(self) -> int:
        return len(self._blocks)
