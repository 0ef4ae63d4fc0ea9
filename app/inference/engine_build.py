"""Build a TensorRT engine from ONNX with the Python builder API (``segcam engine build``).

The same recipe as ``build_engine.sh`` (trtexec) and for the same TensorRT releases,
8.5 (JetPack 5.1) and 10.x (JetPack 6): ``Builder.create_network`` (the
``EXPLICIT_BATCH`` flag only before 10, where the enum still needs it), ``OnnxParser``,
``IBuilderConfig.set_memory_pool_limit(WORKSPACE)``, the FP16 flag, one optimisation
profile for dynamic inputs (min = opt = max = the model profile's shape unless told),
a persistent timing cache, optional DLA with GPU fallback, and
``build_serialized_network``. Progress: an ``IProgressMonitor`` where the bindings have it
(10.x), else a ticker that reports elapsed time (8.5). The engine is deserialised once
after the build to record its real I/O in the sidecar.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from segcam import __version__
from segcam.errors import BackendError, EngineError
from segcam.fileio import write_atomic
from segcam.inference.engine_meta import (
    EngineMeta,
    TensorMeta,
    engine_filename,
    sha256_file,
    sm_string,
    timing_cache_path,
    utc_now,
    version_tuple,
    write_sidecar,
)
from segcam.inference.profile import ModelProfile
from segcam.inference.tensorrt import _make_logger, dims_tuple, import_tensorrt, np_dtype

log = logging.getLogger("segcam.engine")

Progress = Callable[[str], None]


@dataclass
class BuildOptions:
    """What to build (defaults: FP16, 1 GiB workspace, shapes from the model profile)."""

    onnx_path: Path
    profile: ModelProfile
    precision: str = "fp16"
    workspace_mib: int = 1024
    out_dir: Path = Path("engines")
    output: Optional[Path] = None  # explicit engine path; default out_dir/<canonical name>
    timing_cache: Optional[Path] = None  # default out_dir/trt<ver>.sm<SM>.timing.cache
    dla_core: int = -1
    io_fp16: bool = False  # engine I/O tensors in float16 (the GPU stages then write fp16)
    min_shape: Optional[Tuple[int, ...]] = None
    opt_shape: Optional[Tuple[int, ...]] = None
    max_shape: Optional[Tuple[int, ...]] = None
    progress_interval_s: float = 10.0


def parse_shape(text: str) -> Tuple[int, ...]:
    """'1x3x256x256' -> (1, 3, 256, 256) (EngineError if malformed)."""
    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise EngineError(f"bad shape {text!r}", "write shapes like 1x3x256x256") from None
    if not dims or any(d <= 0 for d in dims):
        raise EngineError(f"bad shape {text!r}", "dimensions must be positive")
    return dims


def _progress_monitor(trt: Any, say: Progress, t0: float, interval: float) -> Any:
    """An IProgressMonitor (TensorRT >= 10) reporting top-level phases and step counts."""

    class BuildProgress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps = {}
            self._parents = {}
            self._last = 0.0

        def phase_start(self, phase_name: str, parent_phase: Any, num_steps: int) -> None:
            self._steps[phase_name] = num_steps
            self._parents[phase_name] = parent_phase
            if parent_phase is None:
                say(f"[{time.monotonic() - t0:6.0f} s] {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            now = time.monotonic()
            if now - self._last >= interval:
                self._last = now
                total = self._steps.get(phase_name, 0)
                say(f"[{now - t0:6.0f} s] {phase_name}: step {step + 1}/{total}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            if self._parents.get(phase_name) is None:
                say(f"[{time.monotonic() - t0:6.0f} s] {phase_name} done")

    return BuildProgress()


class _Ticker:
    """Elapsed-time reports while a build without a progress monitor runs (TensorRT 8.5)."""

    def __init__(self, say: Progress, t0: float, interval: float) -> None:
        self._say, self._t0, self._interval = say, t0, max(interval, 0.05)  # never spin
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-build-ticker", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._say(f"[{time.monotonic() - self._t0:6.0f} s] still building...")

    def __enter__(self) -> _Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def _engine_io(trt: Any, engine: Any) -> Tuple[List[TensorMeta], List[TensorMeta]]:
    ins: List[TensorMeta] = []
    outs: List[TensorMeta] = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        mode = engine.get_tensor_mode(name)
        shape = list(dims_tuple(engine.get_tensor_shape(name)))
        try:
            dtype = np_dtype(trt, engine.get_tensor_dtype(name)).name
        except BackendError:
            dtype = str(engine.get_tensor_dtype(name))
        if mode == trt.TensorIOMode.INPUT:
            prof: List[List[int]] = []
            if -1 in shape:
                prof = [list(dims_tuple(d)) for d in engine.get_tensor_profile_shape(name, 0)]
            ins.append(TensorMeta(name, "input", shape, dtype, prof))
        elif mode == trt.TensorIOMode.OUTPUT:
            outs.append(TensorMeta(name, "output", shape, dtype))
    return ins, outs


def inspect_engine(path: Path, trt: Any = None) -> Tuple[List[TensorMeta], List[TensorMeta]]:
    """Deserialise an engine and list its I/O (needs TensorRT and the GPU it was built for)."""
    trt = trt or import_tensorrt()
    logger = _make_logger(trt)
    logger.quiet = True
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        why = logger.errors[-1] if logger.errors else "no reason given"
        raise EngineError(f"TensorRT cannot deserialise {path}: {why}")
    return _engine_io(trt, engine)


def _parser_errors(parser: Any) -> str:
    errs = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
    return "; ".join(errs[:3]) + (f" (+{len(errs) - 3} more)" if len(errs) > 3 else "")


def build_engine(
    opts: BuildOptions,
    gpu: Any = None,
    progress: Optional[Progress] = None,
) -> Tuple[Path, EngineMeta]:
    """Build, write engine + sidecar + timing cache; return (engine path, sidecar).

    ``gpu`` is an :class:`segcam.gpu.GpuInfo` (probed if None). Raises EngineError with a
    hint when the ONNX does not parse, shapes do not fit, or the build fails.
    """
    say = progress or log.info
    trt = import_tensorrt()
    version = str(trt.__version__)
    if gpu is None:
        from segcam.gpu import probe

        gpu, why = probe()
        if gpu is None:
            raise EngineError(f"cannot build a TensorRT engine: {why}", "build on the device")
    sm = sm_string(gpu.sm)
    p = opts.profile
    onnx = Path(opts.onnx_path)
    if not onnx.is_file():
        raise EngineError(f"no ONNX model at {onnx}", "pass the model with --onnx")
    out = opts.output or Path(opts.out_dir) / engine_filename(p.name, opts.precision, version, sm)
    cache_file = opts.timing_cache or timing_cache_path(out.parent, version, sm)

    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    if version_tuple(version)[:1] < (10,) and hasattr(creation, "EXPLICIT_BATCH"):
        flags = 1 << int(creation.EXPLICIT_BATCH)  # implicit in 10.x (flag deprecated, ignored)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    say(f"parsing {onnx}")
    if not parser.parse_from_file(str(onnx)):
        raise EngineError(
            f"TensorRT {version} cannot parse {onnx.name}: {_parser_errors(parser)}",
            "unsupported operator or opset: re-export (docs/byom.md) or try another opset",
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mib) << 20)
    build_flags = [f"workspace={opts.workspace_mib}MiB"]
    if opts.precision == "fp16":
        if not builder.platform_has_fast_fp16:
            log.warning("this GPU has no fast FP16; the FP16 engine may not be faster")
        config.set_flag(trt.BuilderFlag.FP16)
        build_flags.append("fp16")

    want = tuple(p.input_shape)
    shapes = (opts.min_shape or want, opts.opt_shape or want, opts.max_shape or want)
    opt_profile = None
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = dims_tuple(tensor.shape)
        is_image = (not p.input_name and network.num_inputs == 1) or tensor.name == p.input_name
        if -1 in shape:
            if not is_image:
                raise EngineError(
                    f"ONNX input {tensor.name} {shape} is dynamic and not the profile's image "
                    "input: segcam cannot choose its shapes",
                    "export with fixed shapes for the other inputs",
                )
            if opt_profile is None:
                opt_profile = builder.create_optimization_profile()
            try:
                opt_profile.set_shape(tensor.name, *shapes)
            except (RuntimeError, TypeError) as exc:
                raise EngineError(f"bad shapes for {tensor.name}: {exc}") from None
            build_flags.append(
                f"shapes={tensor.name}:" + "/".join("x".join(map(str, s)) for s in shapes)
            )
        elif is_image and shape != want:
            raise EngineError(
                f"ONNX input {tensor.name} is fixed at {shape}, the profile {p.name} feeds {want}",
                "fix layout/width/height in the profile (or re-export with dynamic axes)",
            )
        if opts.io_fp16 and np_dtype(trt, tensor.dtype).kind == "f":
            tensor.dtype = trt.float16
    if opts.io_fp16:
        for i in range(network.num_outputs):
            tensor = network.get_output(i)
            if np_dtype(trt, tensor.dtype).kind == "f":
                tensor.dtype = trt.float16
        build_flags.append("io=fp16")
    if opt_profile is not None:
        config.add_optimization_profile(opt_profile)

    if opts.dla_core >= 0:
        if builder.num_DLA_cores <= opts.dla_core:
            raise EngineError(
                f"DLA core {opts.dla_core} requested, this device has {builder.num_DLA_cores}",
                "drop --dla-core (Orin Nano has no DLA)",
            )
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = opts.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        build_flags += [f"dla={opts.dla_core}", "gpu_fallback"]

    cache_bytes = b""
    if cache_file.is_file():
        cache_bytes = cache_file.read_bytes()
        say(f"timing cache {cache_file} ({len(cache_bytes)} bytes)")
    cache = config.create_timing_cache(cache_bytes)
    if cache is None and cache_bytes:
        log.warning("timing cache %s is unusable; starting a new one", cache_file)
        cache = config.create_timing_cache(b"")
    if cache is not None:
        config.set_timing_cache(cache, False)
        build_flags.append("timing_cache")

    t0 = time.monotonic()
    say(f"building {out.name} with TensorRT {version} on {gpu.name} (SM {sm}); this takes minutes")
    if hasattr(trt, "IProgressMonitor"):
        config.progress_monitor = _progress_monitor(trt, say, t0, opts.progress_interval_s)
        serialized = builder.build_serialized_network(network, config)
    else:
        with _Ticker(say, t0, opts.progress_interval_s):
            serialized = builder.build_serialized_network(network, config)
    seconds = time.monotonic() - t0
    if serialized is None:
        why = logger.errors[-1] if logger.errors else "see the TensorRT messages above"
        raise EngineError(
            f"TensorRT could not build the engine after {seconds:.0f} s: {why}",
            "more workspace (--workspace), free GPU memory, or check the model (docs/byom.md)",
        )
    data = bytes(memoryview(serialized))
    write_atomic(out, data)
    new_cache = config.get_timing_cache()
    if new_cache is not None:
        write_atomic(cache_file, bytes(memoryview(new_cache.serialize())))
    inputs, outputs = inspect_engine(out, trt)
    meta = EngineMeta(
        model=p.name,
        precision=opts.precision,
        tensorrt_version=version,
        device_name=str(gpu.name),
        sm=sm,
        onnx_sha256=sha256_file(onnx),
        onnx_path=str(onnx),
        inputs=inputs,
        outputs=outputs,
        builder="python",
        build_flags=build_flags,
        workspace_mib=int(opts.workspace_mib),
        dla_core=int(opts.dla_core),
        built_at=utc_now(),
        build_seconds=round(seconds, 2),
        engine_bytes=len(data),
        engine_sha256=sha256_file(out),
        segcam_version=__version__,
    )
    write_sidecar(meta, out)
    say(f"wrote {out} ({len(data) / 2**20:.1f} MiB) in {seconds:.1f} s")
    return out, meta
