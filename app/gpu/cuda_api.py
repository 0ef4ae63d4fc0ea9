"""The one place that knows cuda-python's import layout and its error convention.

cuda-python changed layout across versions: 12.6+ and 13.x have
``from cuda.bindings import driver, nvrtc``; 11.x and 12.x up to 12.5 (the only choice on
JetPack 5 / Python 3.8) have ``from cuda import cuda, nvrtc``; 13.x removed the old names.
Every binding returns ``(status, *values)``; :func:`call` checks the status and raises
:class:`~segcam.errors.GpuError` naming the CUDA error, so no caller ever ignores one.

segcam uses the driver API only, on the device's *primary* context, which the CUDA runtime
(and so TensorRT and ONNX Runtime's CUDA provider) shares.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from segcam.errors import GpuError

INSTALL_HINT = "pip install segcam[gpu] (cuda-python matching your CUDA driver)"
# cuda-python releases before this hold the GIL during every binding call.
GIL_RELEASE_VERSION = (12, 9, 1)


@dataclass(frozen=True)
class CudaApi:
    """The imported binding modules and what we know about them."""

    driver: Any
    nvrtc: Any
    layout: str  # "cuda.bindings" (12.6+/13.x) or "cuda" (<= 12.x)
    version: str  # cuda-python / cuda-bindings package version, "" if unknown

    @property
    def version_tuple(self) -> Tuple[int, ...]:
        """The package version as a tuple of ints (missing parts are 0)."""
        return parse_version(self.version)

    @property
    def holds_gil(self) -> bool:
        """True when blocking calls (synchronise) would stall every other Python thread."""
        vt = self.version_tuple
        return not vt or vt < GIL_RELEASE_VERSION


_lock = threading.Lock()
_api: Optional[CudaApi] = None
_import_error: Optional[str] = None


def parse_version(text: str) -> Tuple[int, ...]:
    """'12.9.1' -> (12, 9, 1); non-numeric suffixes ('13.0.0rc1') are cut off."""
    parts = []
    for piece in text.split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _package_version() -> str:
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover - Python 3.8 has importlib.metadata
        return ""
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return ""


def import_layout() -> CudaApi:
    """Import the bindings in whichever layout is installed (raises GpuError if none)."""
    try:
        from cuda.bindings import driver, nvrtc

        return CudaApi(driver, nvrtc, "cuda.bindings", _package_version())
    except ImportError as new_exc:
        try:
            from cuda import cuda as driver  # type: ignore[no-redef]
            from cuda import nvrtc  # type: ignore[no-redef]
        except ImportError:
            raise GpuError(f"cuda-python not installed ({new_exc})", INSTALL_HINT) from None
        return CudaApi(driver, nvrtc, "cuda", _package_version())


def api() -> CudaApi:
    """The bindings, imported once and ``cuInit``-ed (GpuError if unusable)."""
    global _api, _import_error
    with _lock:
        if _api is not None:
            return _api
        if _import_error is not None:
            raise GpuError(_import_error, INSTALL_HINT)
        try:
            loaded = import_layout()
        except GpuError as exc:
            _import_error = exc.message
            raise
        _api = loaded
    call(loaded.driver.cuInit, 0)
    return loaded


def _status_name(status: Any) -> str:
    """Human name of a CUresult / nvrtcResult (falls back to repr)."""
    loaded = _api
    name = getattr(status, "name", "") or repr(status)
    if loaded is None:
        return name
    try:
        if isinstance(status, loaded.driver.CUresult):
            err, text = loaded.driver.cuGetErrorName(status)
            if int(err) == 0 and text:
                return text.decode() if isinstance(text, bytes) else str(text)
        elif isinstance(status, loaded.nvrtc.nvrtcResult):
            err, text = loaded.nvrtc.nvrtcGetErrorString(status)
            if int(err) == 0 and text:
                return text.decode() if isinstance(text, bytes) else str(text)
    except (TypeError, ValueError, AttributeError):
        pass  # an odd binding version: the enum's own name is still informative
    return name


def check(result: Any, what: str = "CUDA call") -> Any:
    """Check a binding's ``(status, *values)`` result; return the values (GpuError if failed).

    Returns None for no value, the value itself for one, a tuple for several.
    """
    if isinstance(result, tuple):
        status, values = result[0], result[1:]
    else:
        status, values = result, ()
    if int(status) != 0:
        raise GpuError(
            f"{what} failed: {_status_name(status)}",
            "check the GPU driver (nvidia-smi) and that no other process holds the GPU; "
            "or run with --set inference.device=cpu",
        )
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return values


def call(fn: Any, *args: Any) -> Any:
    """Call a binding and :func:`check` its status, naming the function in any error.

    A binding that raises instead of returning a status (a library such as libnvrtc that
    cannot be loaded, a function the driver lacks) becomes a GpuError too.
    """
    name = getattr(fn, "__name__", "CUDA call")
    try:
        result = fn(*args)
    except GpuError:
        raise
    except Exception as exc:  # noqa: BLE001 - the bindings raise RuntimeError, TypeError, ...
        raise GpuError(
            f"{name} unavailable: {type(exc).__name__}: {exc}",
            "install NVRTC/driver libraries matching cuda-python (x86 without a CUDA "
            'toolkit: pip install "cuda-python[all]"), or run with --set inference.device=cpu',
        ) from None
    return check(result, name)


def is_not_ready(status: Any) -> bool:
    """True if a cuEventQuery/cuStreamQuery status means 'still running' (not an error)."""
    drv = api().driver
    return status == drv.CUresult.CUDA_ERROR_NOT_READY


def reset_for_tests() -> None:
    """Forget the imported bindings (tests that fake an import failure use this)."""
    global _api, _import_error
    with _lock:
        _api = None
        _import_error = None
