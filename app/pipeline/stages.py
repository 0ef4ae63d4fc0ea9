"""Stage implementations and the factory that picks them (CPU here, GPU in app/gpu/stages.py).

A stage is an object with ``name``, ``process(slot)`` and ``close()``; it reads its inputs
from the :class:`~segcam.pipeline.slots.FrameSlot` and writes its results back into it, into
buffers it allocates once per slot and then reuses. The runner (and the sequential loop of
``segcam bench``) drive the same stage objects, so both measure the same work.

The three swappable stages are:

* ``preprocess``: frame -> model input tensor (``slot.tensor``).
* ``infer``: ``Backend.infer`` -> ``slot.output``; honours ``infer_every`` and ``paused``
  (on a skipped frame ``slot.inferred`` is False and the last mask is reused).
* ``composite``: postprocess -> :class:`~segcam.refine.MaskRefiner` ->
  :class:`~segcam.compose.Compositor` -> ``slot.mask`` and ``slot.composite``.

Sub-step timings go into ``slot.timings_ms`` as ``"<stage>/<step>"``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

import numpy as np

from segcam.coverage import BG, Coverage
from segcam.errors import GpuError
from segcam.pipeline.contracts import Backend
from segcam.pipeline.slots import FrameSlot, ensure_buffer, filled

if TYPE_CHECKING:  # pragma: no cover
    from segcam.config import Config
    from segcam.inference.profile import ModelProfile

log = logging.getLogger("segcam.pipeline")


class Stage:
    """Base of a pipeline stage (follows segcam.pipeline.contracts.Stage).

    ``process(slot)`` does one frame's work in place; ``reset`` and ``close`` do nothing
    unless a stage has state or resources.
    """

    name = "stage"

    def process(self, slot: FrameSlot) -> None:
        """Do this stage's work for ``slot`` (raise on failure; the runner reports it)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget per-stream state (frames went through another model profile)."""

    def close(self) -> None:
        """Release resources (called once, after the stage's thread ended)."""


class CpuPreprocess(Stage):
    """Resize + colour order + normalisation + layout on the CPU (OpenCV/numpy)."""

    name = "preprocess"

    def __init__(self, profile: ModelProfile) -> None:
        from segcam.inference.preprocess import Preprocessor

        self.profile = profile
        self._pre = Preprocessor(profile)

    def process(self, slot: FrameSlot) -> None:
        """Write the model input for ``slot.frame`` into ``slot.tensor``."""
        p = self.profile
        slot.tensor = ensure_buffer(slot.tensor, p.input_shape, p.np_dtype)
        self._pre(filled(slot.frame, "frame"), slot.tensor)


class InferStage(Stage):
    """Runs the backend on ``slot.tensor``; skips frames per ``infer_every`` / ``paused``.

    Works for any Backend with ``infer(tensor)`` (ONNX Runtime, TensorRT with host copies).
    """

    name = "infer"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._seen = 0
        self._have_output = False
        self._out_shape: Optional[Tuple[int, ...]] = None

    def should_infer(self, slot: FrameSlot) -> bool:
        """Whether the model runs for this frame (the first frame always does)."""
        k = slot.knobs
        self._seen += 1
        if k is None:
            return True
        if k.paused:
            return False
        every = max(1, int(k.infer_every))
        return not self._have_output or (self._seen - 1) % every == 0

    def process(self, slot: FrameSlot) -> None:
        """Set ``slot.output`` (and ``slot.inferred``) for this frame."""
        if not self.should_infer(slot):
            slot.inferred = False
            return
        # The first call allocates the slot's output buffer; later calls fill it in place.
        # A buffer shaped by another profile's stages (thermal light model) is replaced.
        out = slot.output
        if out is not None and out.shape != self._out_shape:
            out = None
        slot.output = self.backend.infer(filled(slot.tensor, "tensor"), out=out)
        self._out_shape = slot.output.shape
        slot.inferred = True
        self._have_output = True

    def reset(self) -> None:
        """Infer on the next frame again (after frames went through another profile)."""
        self._seen = 0
        self._have_output = False


class CpuComposite(Stage):
    """Postprocess, refine (stateful) and compose on the CPU.

    On frames without a fresh inference the refiner re-emits its last (smoothed) mask.
    """

    name = "composite"

    def __init__(self, cfg: Config, profile: ModelProfile) -> None:
        from segcam.compose import Compositor
        from segcam.inference.postprocess import to_probability
        from segcam.refine import MaskRefiner

        self.profile = profile
        self._to_probability = to_probability
        self.refiner = MaskRefiner(cfg.refine)
        self.compositor = Compositor(cfg.composite.background)
        self._prob: Optional[np.ndarray] = None

    def _probability(self, slot: FrameSlot) -> Optional[np.ndarray]:
        """This frame's probability map, or None to re-use the refiner's last mask."""
        if slot.inferred and slot.output is not None:
            self._prob = self._to_probability(slot.output, self.profile, out=self._prob)
            return self._prob
        if self.refiner.last is None:  # paused before the first inference: nobody there
            self._prob = ensure_buffer(
                self._prob, (self.profile.height, self.profile.width), np.float32
            )
            self._prob.fill(0.0)
            return self._prob
        return None

    def process(self, slot: FrameSlot) -> None:
        """Write ``slot.prob``, ``slot.mask`` and ``slot.composite``."""
        knobs = slot.knobs
        frame = filled(slot.frame, "frame")
        hw = frame.shape[:2]
        t0 = time.perf_counter()
        prob = self._probability(slot)
        slot.prob = prob if prob is not None else self.refiner.last
        t1 = time.perf_counter()
        mask = slot.mask = ensure_buffer(slot.mask, hw, np.float32)
        self.refiner.refine(prob, hw, knobs, out=mask, guide=frame)
        coverage = self.refiner.coverage
        if knobs is not None and knobs.paused and knobs.pause_mode == "background":
            mask.fill(0.0)
            coverage = Coverage.uniform(hw, BG)
        t2 = time.perf_counter()
        slot.composite = ensure_buffer(slot.composite, frame.shape, np.uint8)
        self.compositor.compose(frame, mask, knobs, out=slot.composite, coverage=coverage)
        t3 = time.perf_counter()
        timings = slot.timings_ms
        timings["composite/postprocess"] = (t1 - t0) * 1e3
        timings["composite/refine"] = (t2 - t1) * 1e3
        timings["composite/compose"] = (t3 - t2) * 1e3
        for part in (self.refiner.timings_ms, self.compositor.timings_ms):
            for step, ms in part.items():
                timings["composite/" + step] = ms

    def reset(self) -> None:
        """Forget temporal state (new scene, reloaded model)."""
        self.refiner.reset()

    def close(self) -> None:
        """Release the compositor's background video, if any."""
        self.compositor.close()


@dataclass
class StageSet:
    """The swappable stages of one pipeline and where they run."""

    preprocess: Stage
    infer: Stage
    composite: Stage
    device: str = "cpu"  # "cpu" or "gpu"
    reason: str = ""  # one line: why this device was chosen
    info: Dict[str, Any] = field(default_factory=dict)

    def all(self) -> Tuple[Stage, Stage, Stage]:
        """The stages in pipeline order."""
        return (self.preprocess, self.infer, self.composite)

    def stage(self, name: str) -> Stage:
        """The stage called ``name`` (one of contracts.DEVICE_STAGES)."""
        for stage in self.all():
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r} in this stage set")

    def close(self) -> None:
        """Close every stage."""
        for stage in self.all():
            stage.close()


def select_device(cfg: Config) -> Tuple[str, str, Any]:
    """Where pre/post-processing runs: ("cpu" | "gpu", reason, GpuInfo or None).

    ``inference.device: gpu`` without a usable GPU raises GpuError; ``auto`` falls back
    to the CPU with the probe's reason.
    """
    want = cfg.inference.device
    if want == "cpu":
        return "cpu", "inference.device is cpu", None
    try:
        from segcam.gpu import probe
    except ImportError as exc:  # the GPU package is optional
        reason = f"GPU support not available ({exc})"
        info = None
    else:
        info, reason = probe()
    if info is None:
        if want == "gpu":
            raise GpuError(
                f"inference.device is gpu but no GPU can be used: {reason}",
                "set inference.device to auto or cpu, or install cuda-python and a driver",
            )
        return "cpu", f"CPU stages ({reason})", None
    return "gpu", f"GPU stages on {getattr(info, 'name', 'GPU')}", info


def build_cpu_stages(cfg: Config, backend: Backend, profile: ModelProfile) -> StageSet:
    """The OpenCV/numpy stages (the reference path)."""
    return StageSet(
        preprocess=CpuPreprocess(profile),
        infer=InferStage(backend),
        composite=CpuComposite(cfg, profile),
        device="cpu",
    )


def build_stages(
    cfg: Config, backend: Backend, profile: ModelProfile, device: Optional[str] = None
) -> StageSet:
    """Pick stage implementations for ``cfg.inference.device`` (or ``device`` if given).

    One runner drives either set; only the stages differ.
    """
    if device is None or device == "auto":
        device, reason, info = select_device(cfg)
    else:
        reason, info = f"device {device} requested", None
    if device == "gpu":
        # app/gpu/stages.py provides build_gpu_stages(cfg, backend, profile, info) ->
        # StageSet (fused preprocess / composite kernels, CUDA streams + events between
        # stages). Where it cannot be imported, or declines (GpuError), the CPU stages run.
        try:
            from segcam.gpu.stages import build_gpu_stages
        except ImportError as exc:
            reason = f"CPU stages (GPU stages not available: {exc})"
        else:
            try:
                stages = build_gpu_stages(cfg, backend, profile, info)
            except GpuError as exc:
                if cfg.inference.device == "gpu":
                    raise
                reason = f"CPU stages (GPU stages failed: {exc.message})"
            else:
                stages.device = "gpu"
                stages.reason = stages.reason or reason
                return stages
        # ------------------------------------------------------------- end GPU stage hook
    stages = build_cpu_stages(cfg, backend, profile)
    stages.reason = reason
    log.debug("stages: %s", reason)
    return stages
