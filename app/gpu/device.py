"""Which GPU is there, what it can do, and the primary context segcam works in.

:func:`probe` answers "can the GPU path run here, and why (not)?" without ever raising,
for ``segcam doctor`` and ``segcam run``. :class:`GpuContext` retains the device's primary
context (the one the CUDA runtime, TensorRT and ONNX Runtime use too) and makes it current
on each thread that enqueues work.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from segcam.errors import GpuError
from segcam.gpu import cuda_api
from segcam.gpu.cuda_api import call


@dataclass(frozen=True)
class GpuInfo:
    """What segcam needs to know about one CUDA device."""

    index: int
    name: str
    sm: Tuple[int, int]  # compute capability (major, minor), e.g. (8, 7) on Orin
    integrated: bool  # shares DRAM with the CPU (Jetson): zero-copy mapped buffers pay
    can_map_host: bool
    total_memory: int  # bytes
    multiprocessors: int
    driver_version: int  # e.g. 13000 for CUDA 13.0
    cuda_python: str  # package version
    layout: str  # import layout of the bindings

    @property
    def sm_name(self) -> str:
        """The NVRTC architecture name, e.g. 'sm_87'."""
        return f"sm_{self.sm[0]}{self.sm[1]}"

    @property
    def zero_copy(self) -> bool:
        """True if capture buffers should be mapped pinned memory read by kernels directly."""
        return self.integrated and self.can_map_host

    def describe(self) -> str:
        """One line for logs and doctor: name, SM, memory, kind."""
        kind = "integrated" if self.integrated else "discrete"
        drv = f"{self.driver_version // 1000}.{(self.driver_version % 1000) // 10}"
        return (
            f"GPU {self.index}: {self.name} ({self.sm_name}, {kind}, "
            f"{self.total_memory / 2**30:.1f} GiB, CUDA driver {drv}, "
            f"cuda-python {self.cuda_python or '?'})"
        )

    def as_dict(self) -> Dict[str, Any]:
        """Plain dict for status/telemetry/doctor JSON."""
        return {
            "index": self.index,
            "name": self.name,
            "sm": self.sm_name,
            "integrated": self.integrated,
            "total_memory": self.total_memory,
            "multiprocessors": self.multiprocessors,
            "driver_version": self.driver_version,
            "cuda_python": self.cuda_python,
        }


def _attr(drv: Any, name: str, dev: Any) -> int:
    return int(call(drv.cuDeviceGetAttribute, getattr(drv.CUdevice_attribute, name), dev))


def query(index: int = 0) -> GpuInfo:
    """Read device ``index``'s properties (GpuError if there is none or CUDA fails)."""
    loaded = cuda_api.api()
    drv = loaded.driver
    count = int(call(drv.cuDeviceGetCount))
    if count <= index:
        raise GpuError(
            f"no CUDA device {index} (found {count})",
            "check nvidia-smi / the Jetson's GPU driver, or set inference.device: cpu",
        )
    dev = call(drv.cuDeviceGet, index)
    raw_name = call(drv.cuDeviceGetName, 256, dev)
    name = raw_name.split(b"\0", 1)[0].decode(errors="replace").strip()
    major = _attr(drv, "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR", dev)
    minor = _attr(drv, "CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR", dev)
    return GpuInfo(
        index=index,
        name=name,
        sm=(major, minor),
        integrated=bool(_attr(drv, "CU_DEVICE_ATTRIBUTE_INTEGRATED", dev)),
        can_map_host=bool(_attr(drv, "CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY", dev)),
        total_memory=int(call(drv.cuDeviceTotalMem, dev)),
        multiprocessors=_attr(drv, "CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT", dev),
        driver_version=int(call(drv.cuDriverGetVersion)),
        cuda_python=loaded.version,
        layout=loaded.layout,
    )


def probe(index: int = 0) -> Tuple[Optional[GpuInfo], str]:
    """(info, reason): the usable GPU and why it was chosen, or None and why not. Never raises."""
    try:
        info = query(index)
    except GpuError as exc:
        if "not installed" in exc.message:
            return None, "cuda-python not installed: pip install segcam[gpu]"
        return None, f"no usable GPU: {exc.message}"
    except Exception as exc:  # noqa: BLE001 - probe must never raise (doctor, run)
        return None, f"no usable GPU: {type(exc).__name__}: {exc}"
    return info, f"{info.describe()} via {info.layout}"


class GpuContext:
    """The retained primary context of one device; current on every thread that asks."""

    _instances: Dict[int, GpuContext] = {}
    _class_lock = threading.Lock()

    def __init__(self, index: int) -> None:
        drv = cuda_api.api().driver
        self.info = query(index)
        self._drv = drv
        self._device = call(drv.cuDeviceGet, index)
        self._ctx = call(drv.cuDevicePrimaryCtxRetain, self._device)
        self._refs = 0
        self._local = threading.local()
        self.make_current()

    @classmethod
    def acquire(cls, index: int = 0) -> GpuContext:
        """The shared context of device ``index`` (retained on first use; pair with release)."""
        with cls._class_lock:
            ctx = cls._instances.get(index)
            if ctx is None:
                ctx = cls(index)
                cls._instances[index] = ctx
            ctx._refs += 1
        ctx.make_current()
        return ctx

    def release(self) -> None:
        """Drop one reference; the last one releases the primary context."""
        with self._class_lock:
            self._refs -= 1
            if self._refs > 0:
                return
            self._instances.pop(self.info.index, None)
        call(self._drv.cuCtxSynchronize)
        call(self._drv.cuDevicePrimaryCtxRelease, self._device)

    def make_current(self) -> None:
        """Bind the context to the calling thread (cheap after the first time per thread)."""
        if getattr(self._local, "bound", False):
            return
        call(self._drv.cuCtxSetCurrent, self._ctx)
        self._local.bound = True

    def memory_info(self) -> Tuple[int, int]:
        """(free, total) device memory in bytes."""
        self.make_current()
        free, total = call(self._drv.cuMemGetInfo)
        return int(free), int(total)

    def synchronize(self) -> None:
        """Wait for all work on the device (shutdown and tests only)."""
        self.make_current()
        call(self._drv.cuCtxSynchronize)
