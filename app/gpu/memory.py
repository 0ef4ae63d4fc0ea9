"""Device buffers, pinned (and mapped) host buffers, streams and events.

Every object here owns exactly one CUDA resource, frees it in ``close()`` (idempotent) and
is counted in :data:`LEDGER` while alive, so tests can prove that a shutdown released
everything. Allocation happens when a pipeline starts (frame slots); the hot path only
enqueues copies, kernels and event records on streams.

Integrated GPUs (Jetson) share DRAM with the CPU: a *mapped* pinned buffer has a device
address too, and kernels read the captured frame in place (zero copy). Discrete GPUs get
plain pinned buffers and explicit asynchronous copies.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np

from segcam.errors import GpuError
from segcam.gpu import cuda_api
from segcam.gpu.cuda_api import call


class Ledger:
    """Counts live CUDA resources by kind (and bytes), for leak checks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: Dict[str, int] = {}
        self._bytes: Dict[str, int] = {}

    def add(self, kind: str, nbytes: int = 0) -> None:
        """Record one new resource."""
        with self._lock:
            self._count[kind] = self._count.get(kind, 0) + 1
            self._bytes[kind] = self._bytes.get(kind, 0) + nbytes

    def remove(self, kind: str, nbytes: int = 0) -> None:
        """Record that one resource was released."""
        with self._lock:
            self._count[kind] = self._count.get(kind, 0) - 1
            self._bytes[kind] = self._bytes.get(kind, 0) - nbytes

    def snapshot(self) -> Dict[str, Tuple[int, int]]:
        """{kind: (live count, live bytes)} for kinds with anything live."""
        with self._lock:
            return {
                k: (n, self._bytes.get(k, 0)) for k, n in self._count.items() if n or self._bytes[k]
            }

    def live(self) -> int:
        """Total number of live resources of every kind."""
        with self._lock:
            return sum(self._count.values())


LEDGER = Ledger()


def _drv() -> Any:
    return cuda_api.api().driver


class DeviceBuffer:
    """``nbytes`` of device memory (cuMemAlloc)."""

    def __init__(self, nbytes: int) -> None:
        if nbytes <= 0:
            raise GpuError(f"cannot allocate {nbytes} bytes of device memory")
        self.nbytes = int(nbytes)
        self._handle: Any = call(_drv().cuMemAlloc, self.nbytes)
        self.ptr = int(self._handle)
        LEDGER.add("device", self.nbytes)

    @property
    def handle(self) -> Any:
        """The binding's CUdeviceptr (for binding calls)."""
        return self._handle

    def upload(self, array: np.ndarray, stream: Optional[Stream] = None) -> None:
        """Copy a host array in (async on ``stream`` if given; the array must stay alive)."""
        arr = np.ascontiguousarray(array)
        if arr.nbytes > self.nbytes:
            raise GpuError(f"upload of {arr.nbytes} bytes into a {self.nbytes}-byte buffer")
        if stream is None:
            call(_drv().cuMemcpyHtoD, self._handle, arr.ctypes.data, arr.nbytes)
        else:
            call(_drv().cuMemcpyHtoDAsync, self._handle, arr.ctypes.data, arr.nbytes, stream.handle)

    def download(self, out: np.ndarray) -> np.ndarray:
        """Copy into ``out`` synchronously (tests and tools; the pipeline uses async copies)."""
        if not out.flags.c_contiguous or out.nbytes > self.nbytes:
            raise GpuError("download target must be C-contiguous and fit the buffer")
        call(_drv().cuMemcpyDtoH, out.ctypes.data, self._handle, out.nbytes)
        return out

    def close(self) -> None:
        """Free the memory (idempotent)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        call(_drv().cuMemFree, handle)
        LEDGER.remove("device", self.nbytes)


class PinnedBuffer:
    """Page-locked host memory; ``mapped=True`` also gives it a device address (zero copy)."""

    def __init__(self, nbytes: int, mapped: bool = False) -> None:
        drv = _drv()
        if nbytes <= 0:
            raise GpuError(f"cannot allocate {nbytes} bytes of pinned memory")
        self.nbytes = int(nbytes)
        self.mapped = mapped
        flags = 0x1  # CU_MEMHOSTALLOC_PORTABLE: usable from every context
        if mapped:
            flags |= 0x2  # CU_MEMHOSTALLOC_DEVICEMAP
        self.host_ptr: Optional[int] = int(call(drv.cuMemHostAlloc, self.nbytes, flags))
        LEDGER.add("pinned", self.nbytes)
        self.device_ptr = 0
        if mapped:
            try:
                self.device_ptr = int(call(drv.cuMemHostGetDevicePointer, self.host_ptr, 0))
            except GpuError:
                self.close()
                raise
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self.host_ptr)
        self._bytes = np.frombuffer(raw, dtype=np.uint8)

    def array(self, shape: Tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
        """A numpy view of the buffer (no copy); valid until ``close()``."""
        dt = np.dtype(dtype)
        n = int(np.prod(shape)) * dt.itemsize
        if n > self.nbytes:
            raise GpuError(f"view of {n} bytes over a {self.nbytes}-byte pinned buffer")
        return self._bytes[:n].view(dt).reshape(shape)

    def close(self) -> None:
        """Free the memory (idempotent). Views from :meth:`array` become invalid."""
        if self.host_ptr is None:
            return
        ptr, self.host_ptr = self.host_ptr, None
        self._bytes = np.empty(0, np.uint8)
        call(_drv().cuMemFreeHost, ptr)
        LEDGER.remove("pinned", self.nbytes)


class Stream:
    """A non-blocking CUDA stream (one per pipeline stage)."""

    def __init__(self) -> None:
        self.handle: Any = call(_drv().cuStreamCreate, 0x1)  # CU_STREAM_NON_BLOCKING
        LEDGER.add("stream")

    @property
    def ptr(self) -> int:
        """The stream as an int (for TensorRT / ONNX Runtime)."""
        return int(self.handle)

    def wait(self, event: Event) -> None:
        """Make later work on this stream wait for ``event`` (cuStreamWaitEvent; no host wait)."""
        call(_drv().cuStreamWaitEvent, self.handle, event.handle, 0)

    def copy_htod(self, dst_ptr: int, src_host_ptr: int, nbytes: int) -> None:
        """Enqueue a host→device copy (the host memory must be pinned to be asynchronous)."""
        drv = _drv()
        call(drv.cuMemcpyHtoDAsync, drv.CUdeviceptr(dst_ptr), src_host_ptr, nbytes, self.handle)

    def copy_dtoh(self, dst_host_ptr: int, src_ptr: int, nbytes: int) -> None:
        """Enqueue a device→host copy."""
        drv = _drv()
        call(drv.cuMemcpyDtoHAsync, dst_host_ptr, drv.CUdeviceptr(src_ptr), nbytes, self.handle)

    def copy_dtod(self, dst_ptr: int, src_ptr: int, nbytes: int) -> None:
        """Enqueue a device→device copy."""
        drv = _drv()
        call(
            drv.cuMemcpyDtoDAsync,
            drv.CUdeviceptr(dst_ptr),
            drv.CUdeviceptr(src_ptr),
            nbytes,
            self.handle,
        )

    def memset(self, ptr: int, value: int, nbytes: int) -> None:
        """Enqueue a byte fill."""
        drv = _drv()
        call(drv.cuMemsetD8Async, drv.CUdeviceptr(ptr), value, nbytes, self.handle)

    def synchronize(self) -> None:
        """Wait for everything enqueued so far."""
        call(_drv().cuStreamSynchronize, self.handle)

    def close(self) -> None:
        """Destroy the stream after its work finished (idempotent)."""
        if self.handle is None:
            return
        handle, self.handle = self.handle, None
        drv = _drv()
        call(drv.cuStreamSynchronize, handle)
        call(drv.cuStreamDestroy, handle)
        LEDGER.remove("stream")


class Event:
    """A CUDA event: a marker on a stream that other streams and the host can wait on."""

    def __init__(self, timing: bool = True) -> None:
        flags = 0x0 if timing else 0x2  # CU_EVENT_DISABLE_TIMING
        self.handle: Any = call(_drv().cuEventCreate, flags)
        self.timing = timing
        LEDGER.add("event")

    def record(self, stream: Stream) -> None:
        """Mark the point after the work enqueued on ``stream`` so far."""
        call(_drv().cuEventRecord, self.handle, stream.handle)

    def done(self) -> bool:
        """True if the recorded work has finished (never blocks)."""
        drv = _drv()
        (status,) = drv.cuEventQuery(self.handle)
        if int(status) == 0:
            return True
        if status == drv.CUresult.CUDA_ERROR_NOT_READY:
            return False
        cuda_api.check((status,), "cuEventQuery")
        return False  # pragma: no cover - check raised

    def wait(self, timeout: float = 10.0, poll_s: float = 0.0002) -> None:
        """Block the calling thread until the event completes.

        On cuda-python that holds the GIL in calls (< 12.9.1), a blocking
        cuEventSynchronize would freeze every other Python thread, so poll instead.
        """
        if not cuda_api.api().holds_gil:
            call(_drv().cuEventSynchronize, self.handle)
            return
        deadline = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > deadline:
                raise GpuError(f"GPU work did not finish within {timeout:.1f} s")
            time.sleep(poll_s)

    def elapsed_ms(self, end: Event) -> float:
        """Milliseconds from this event to ``end`` (both recorded and completed)."""
        return float(call(_drv().cuEventElapsedTime, self.handle, end.handle))

    def close(self) -> None:
        """Destroy the event (idempotent)."""
        if self.handle is None:
            return
        handle, self.handle = self.handle, None
        call(_drv().cuEventDestroy, handle)
        LEDGER.remove("event")
