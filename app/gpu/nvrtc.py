"""Run-time compilation of ``app/gpu/kernels/*.cu`` with NVRTC, cached on disk as cubins.

A kernel file is compiled for the exact SM of the device (``--gpu-architecture=sm_XY``,
machine code via ``nvrtcGetCUBIN``: no PTX JIT at load time) and stored under
``<cache>/kernels/`` with a name keyed by the source hash, the SM, the NVRTC version and
the options, so an edited kernel, another GPU or another CUDA never reuses a stale binary.
A compile error raises :class:`~segcam.errors.GpuError` carrying NVRTC's log.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from segcam.errors import GpuError
from segcam.fileio import write_atomic
from segcam.gpu import cuda_api
from segcam.gpu.cuda_api import call
from segcam.gpu.memory import LEDGER

log = logging.getLogger("segcam.gpu")

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
BASE_OPTIONS: Tuple[str, ...] = ("--std=c++14", "-default-device")


def kernel_source(name: str) -> str:
    """Text of ``app/gpu/kernels/<name>.cu`` (GpuError if missing)."""
    path = KERNEL_DIR / f"{name}.cu"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GpuError(
            f"kernel source {path} unreadable: {exc}", "reinstall segcam (package data missing)"
        ) from None


def cache_key(
    source: str, sm: Tuple[int, int], nvrtc_version: Tuple[int, int], options: Sequence[str]
) -> str:
    """Stable key of one compilation: source hash + SM + NVRTC version + options."""
    h = hashlib.sha256()
    h.update(source.encode("utf-8"))
    h.update(b"\0sm_%d%d\0nvrtc %d.%d\0" % (sm[0], sm[1], nvrtc_version[0], nvrtc_version[1]))
    h.update("\0".join(options).encode("utf-8"))
    return h.hexdigest()[:24]


def cubin_path(
    cache_dir: Path,
    name: str,
    source: str,
    sm: Tuple[int, int],
    nvrtc_version: Tuple[int, int],
    options: Sequence[str],
) -> Path:
    """Where the cubin of this compilation lives in the cache."""
    key = cache_key(source, sm, nvrtc_version, options)
    return cache_dir / "kernels" / f"{name}-sm_{sm[0]}{sm[1]}-{key}.cubin"


def default_cache_dir() -> Path:
    """The kernel cache root: the model cache ($SEGCAM_CACHE or ~/.cache/segcam)."""
    from segcam.config import default_cache_dir as model_cache

    return model_cache()


def nvrtc_version() -> Tuple[int, int]:
    """(major, minor) of the NVRTC library the bindings load."""
    major, minor = call(cuda_api.api().nvrtc.nvrtcVersion)
    return int(major), int(minor)


def _nvrtc_log(nv: Any, prog: Any) -> str:
    size = int(call(nv.nvrtcGetProgramLogSize, prog))
    buf = b" " * size
    call(nv.nvrtcGetProgramLog, prog, buf)
    return buf.rstrip(b"\0 ").decode(errors="replace")


def compile_cubin(source: str, name: str, sm: Tuple[int, int], options: Sequence[str]) -> bytes:
    """Compile CUDA C ``source`` to a cubin for ``sm`` (GpuError with NVRTC's log on error)."""
    nv = cuda_api.api().nvrtc
    prog = call(nv.nvrtcCreateProgram, source.encode("utf-8"), f"{name}.cu".encode(), 0, [], [])
    try:
        opts = [o.encode() for o in options] + [f"--gpu-architecture=sm_{sm[0]}{sm[1]}".encode()]
        (status,) = nv.nvrtcCompileProgram(prog, len(opts), opts)
        if int(status) != 0:
            raise GpuError(
                f"NVRTC could not compile kernels/{name}.cu for sm_{sm[0]}{sm[1]}:\n"
                + _nvrtc_log(nv, prog),
                "a kernel source or NVRTC/driver mismatch; run with --set inference.device=cpu",
            )
        size = int(call(nv.nvrtcGetCUBINSize, prog))
        cubin = b" " * size
        call(nv.nvrtcGetCUBIN, prog, cubin)
        return cubin
    finally:
        call(nv.nvrtcDestroyProgram, prog)


class Kernel:
    """One ``extern "C" __global__`` function of a loaded module."""

    def __init__(self, module: Module, name: str, handle: Any) -> None:
        self.module = module
        self.name = name
        self.handle = handle

    def launch(
        self,
        grid: Tuple[int, int, int],
        block: Tuple[int, int, int],
        stream: Any,
        args: Sequence[Any],
        shared_bytes: int = 0,
    ) -> None:
        """Enqueue the kernel on ``stream`` (a :class:`~segcam.gpu.memory.Stream`).

        ``args`` are ctypes scalars in the kernel's parameter order (pointers as
        ``ctypes.c_uint64``); cuLaunchKernel copies them before returning.
        """
        ptrs = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        call(
            cuda_api.api().driver.cuLaunchKernel,
            self.handle,
            grid[0],
            grid[1],
            grid[2],
            block[0],
            block[1],
            block[2],
            shared_bytes,
            stream.handle,
            ctypes.addressof(ptrs),
            0,
        )


class Module:
    """A cubin loaded into the current context; functions are looked up once."""

    def __init__(self, name: str, cubin: bytes) -> None:
        self.name = name
        image = np.frombuffer(cubin, dtype=np.uint8).copy()
        self.handle: Any = call(cuda_api.api().driver.cuModuleLoadData, image.ctypes.data)
        LEDGER.add("module")
        self._kernels: Dict[str, Kernel] = {}

    def kernel(self, name: str) -> Kernel:
        """The named ``extern "C"`` kernel (GpuError if the module has none)."""
        if self.handle is None:
            raise GpuError(f"module {self.name} is closed")
        k = self._kernels.get(name)
        if k is None:
            fn = call(cuda_api.api().driver.cuModuleGetFunction, self.handle, name.encode())
            k = self._kernels[name] = Kernel(self, name, fn)
        return k

    def close(self) -> None:
        """Unload the module (idempotent)."""
        if self.handle is None:
            return
        handle, self.handle = self.handle, None
        self._kernels.clear()
        call(cuda_api.api().driver.cuModuleUnload, handle)
        LEDGER.remove("module")


def load_module(
    name: str,
    sm: Tuple[int, int],
    cache_dir: Optional[Path] = None,
    options: Sequence[str] = BASE_OPTIONS,
    source: Optional[str] = None,
) -> Tuple[Module, bool]:
    """Load kernels/<name>.cu for ``sm``, compiling on a cache miss. Returns (module, cache hit)."""
    src = kernel_source(name) if source is None else source
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cubin_path(root, name, src, sm, nvrtc_version(), options)
    cubin: Optional[bytes] = None
    if path.is_file():
        try:
            cubin = path.read_bytes()
        except OSError as exc:
            log.warning("kernel cache %s unreadable (%s): recompiling", path, exc)
    hit = cubin is not None
    if cubin is None:
        cubin = compile_cubin(src, name, sm, options)
        try:
            write_atomic(path, cubin)
        except OSError as exc:  # a read-only cache costs a compile per start, nothing more
            log.warning("cannot write kernel cache %s: %s", path, exc)
    try:
        return Module(name, cubin), hit
    except GpuError:
        if not hit:
            raise
        # A corrupt or foreign cubin in the cache: rebuild it once.
        log.warning("cached kernel %s failed to load: recompiling", path)
        cubin = compile_cubin(src, name, sm, options)
        write_atomic(path, cubin)
        return Module(name, cubin), False
