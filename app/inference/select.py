"""Pick the inference backend for a config: TensorRT when it can run, else ONNX Runtime.

``select_backend(cfg, profile, onnx_path)`` returns the backend and a one-line reason
that the CLI prints and the metrics carry, e.g. ``onnxruntime:CPUExecutionProvider
(tensorrt: not installed)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from segcam.errors import BackendError
from segcam.inference.backend import Backend
from segcam.inference.onnxruntime import OnnxRuntimeBackend
from segcam.inference.profile import ModelProfile

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- TensorRT branch
# app/inference/tensorrt.py implements it. Contract:
#   return (backend, reason) when a TensorRT engine for this model/profile/device can run,
#   or (None, why_not) otherwise, e.g. (None, "not installed"), (None, "no engine for
#   sm_87 / TensorRT 8.5 in engines/"). Raise only for a broken engine the user asked
#   for explicitly (EngineError); select_backend decides about falling back.
def _try_tensorrt(
    cfg: Any, profile: ModelProfile, onnx_path: Optional[Path]
) -> Tuple[Optional[Backend], str]:
    """TensorRT branch of :func:`select_backend`: engine checks, fallback warning, build."""
    from segcam.inference.tensorrt import select_tensorrt

    return select_tensorrt(cfg, profile, onnx_path)


# ----------------------------------------------------------------- selection


def ort_provider_options(cfg: Any) -> Dict[str, Dict[str, Any]]:
    """Options for ORT's GPU providers (used only when the build has them).

    TensorRT EP: FP16 as ``engine_precision`` says, and its engines cached under
    ``<engine_dir>/ort-trt-cache`` so only the first start pays the build.
    """
    inf = cfg.inference
    cache = Path(inf.engine_dir).expanduser() / "ort-trt-cache"
    return {
        "TensorrtExecutionProvider": {
            "trt_fp16_enable": inf.engine_precision == "fp16",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
        }
    }


def select_backend(
    cfg: Any, profile: ModelProfile, onnx_path: Optional[Union[str, Path]]
) -> Tuple[Backend, str]:
    """Build the backend that ``cfg.inference`` asks for; return it and why it was chosen.

    ``backend: auto`` tries TensorRT, then ONNX Runtime. ``backend: tensorrt`` tries
    TensorRT and falls back to ONNX Runtime with the reason, unless
    ``require_tensorrt`` is set (then :class:`BackendError`). ``backend: onnxruntime``
    skips TensorRT.
    """
    inf = cfg.inference
    path = Path(onnx_path) if onnx_path else None
    why_not_trt = "not requested"
    if inf.backend in ("auto", "tensorrt") or inf.require_tensorrt:
        backend, why = _try_tensorrt(cfg, profile, path)
        if backend is not None:
            return backend, why or backend.provider
        why_not_trt = why
        if inf.require_tensorrt:
            raise BackendError(
                f"TensorRT is required (inference.require_tensorrt) but unavailable: {why}",
                "build an engine with build_engine.sh, or set inference.require_tensorrt: false",
            )
        if inf.backend == "tensorrt":
            log.warning("tensorrt unavailable (%s); falling back to onnxruntime", why)
    if path is None:
        raise BackendError(
            f"no ONNX model for profile {profile.name!r} to run with onnxruntime",
            f"run `segcam model fetch {profile.name}` or set model.path",
        )
    ort = OnnxRuntimeBackend(
        profile,
        path,
        providers=inf.providers,
        threads=inf.threads,
        provider_options=ort_provider_options(cfg),
    )
    short = ort.provider.replace("ExecutionProvider", "")
    return ort, f"{short} (tensorrt: {why_not_trt})"


__all__ = ["select_backend"]
