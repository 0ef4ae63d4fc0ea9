"""GPU implementations of the pipeline's swappable stages (preprocess, infer, composite).

``build_gpu_stages(cfg, backend, profile, info)`` is the hook segcam.pipeline.stages calls;
the same runner drives these stages and the CPU ones. What makes them fast:

* **One stream per stage, events between.** Each stage records a start and an end event
  on its own stream per frame; the next stage's stream waits on the previous end event
  (``cuStreamWaitEvent``), so stage threads only enqueue. The host waits only where it
  needs data: CPU inference (ONNX Runtime on the CPU) and the composite stage, whose
  sinks need the frame and mask in host memory.
* **Slots own their GPU resources** (``slot.extra["gpu"]``): pinned capture buffer (mapped,
  zero-copy, on integrated GPUs), device frame/tensor/output/composite/mask buffers,
  pinned result buffers and six CUDA events. After the first frame the slot's
  ``slot.frame`` *is* the pinned buffer, so capture writes straight into it; nothing is
  allocated per frame.
* **Inference**: a backend with ``supports_device`` (TensorRT, ORT with CUDA I/O binding)
  reads and writes device buffers on the infer stream; otherwise the tensor is copied to
  pinned host memory and ``backend.infer`` runs on the host.

Every frame's stage spans go to a :class:`~segcam.gpu.timeline.Timeline`
(``StageSet.info["timeline"]``), which ``segcam bench --plot`` can draw.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from segcam.errors import GpuError
from segcam.gpu.composite import GpuCompositor
from segcam.gpu.device import GpuContext, GpuInfo
from segcam.gpu.memory import LEDGER, DeviceBuffer, Event, PinnedBuffer, Stream
from segcam.gpu.nvrtc import load_module
from segcam.gpu.preprocess import GpuPreprocessor
from segcam.gpu.timeline import STAGES, EventClock, Span, Timeline
from segcam.pipeline.slots import FrameSlot
from segcam.pipeline.stages import InferStage, Stage, StageSet
from segcam.refine import resolve_upsample

log = logging.getLogger("segcam.gpu")

DEVICE_OUTPUT_KINDS = ("probability", "matte", "logits")


def _output_spec(backend: Any, profile: Any) -> Optional[Any]:
    """The TensorSpec of the output the backend returns (for device-side output buffers)."""
    outputs = list(getattr(backend, "outputs", []) or [])
    if not outputs:
        return None
    for spec in outputs:
        if profile.output_name and spec.name == profile.output_name:
            return spec
    try:
        return outputs[profile.output_index]
    except IndexError:
        return outputs[-1]


class SlotGpu:
    """The GPU resources one frame slot owns (allocated once per frame size)."""

    def __init__(
        self, w: int, h: int, profile: Any, zero_copy: bool, host_infer: bool, out_nbytes: int
    ) -> None:
        self.size = (w, h)
        self.zero_copy = zero_copy
        self._owned: List[Any] = []
        n = w * h * 3
        self.frame_host = self._own(PinnedBuffer(n, mapped=zero_copy))
        self.frame_view = self.frame_host.array((h, w, 3))
        if zero_copy:
            self.frame_dev = None
            self.frame_ptr = self.frame_host.device_ptr
        else:
            self.frame_dev = self._own(DeviceBuffer(n))
            self.frame_ptr = self.frame_dev.ptr
        tensor_bytes = int(np.prod(profile.input_shape)) * profile.np_dtype.itemsize
        self.tensor_dev = self._own(DeviceBuffer(tensor_bytes))
        self.tensor_host: Optional[PinnedBuffer] = None
        self.tensor_view: Optional[np.ndarray] = None
        if host_infer:
            self.tensor_host = self._own(PinnedBuffer(tensor_bytes))
            self.tensor_view = self.tensor_host.array(profile.input_shape, profile.np_dtype)
        self.out_dev = self._own(DeviceBuffer(out_nbytes)) if out_nbytes else None
        self.comp_dev = self._own(DeviceBuffer(n))
        self.mask_dev = self._own(DeviceBuffer(w * h * 4))
        self.comp_host = self._own(PinnedBuffer(n))
        self.mask_host = self._own(PinnedBuffer(w * h * 4))
        self.comp_view = self.comp_host.array((h, w, 3))
        self.mask_view = self.mask_host.array((h, w), np.float32)
        self.events: Dict[str, Tuple[Event, Event]] = {
            name: (self._own(Event()), self._own(Event())) for name in STAGES
        }
        self.inferred_on_device = False
        self.host_infer_span: Optional[Tuple[float, float]] = None

    def _own(self, obj: Any) -> Any:
        self._owned.append(obj)
        return obj

    def close(self) -> None:
        """Free every resource of this slot."""
        for obj in reversed(self._owned):
            obj.close()
        self._owned.clear()


class GpuPipeline:
    """What the three GPU stages share: context, streams, kernels, slot resources, timeline."""

    def __init__(self, cfg: Any, backend: Any, profile: Any, info: GpuInfo) -> None:
        from segcam.config import model_cache_dir

        self.cfg = cfg
        self.profile = profile
        self.backend = backend
        self.info = info
        self.ctx = GpuContext.acquire(info.index)
        self._closed = False
        self._refs = len(STAGES)
        self._lock = threading.Lock()
        self._slots: Dict[int, SlotGpu] = {}
        self._modules: List[Any] = []
        try:
            cache = model_cache_dir(cfg)
            pre_mod, hit_a = load_module("preprocess", info.sm, cache)
            self._modules.append(pre_mod)
            cmp_mod, hit_b = load_module("composite", info.sm, cache)
            self._modules.append(cmp_mod)
            self.kernel_cache = "cached" if hit_a and hit_b else "compiled"
            self.streams = {name: Stream() for name in STAGES}
            self.pre = GpuPreprocessor(pre_mod, profile)
            refine = resolve_upsample(cfg.refine, gpu=True)
            self.comp = GpuCompositor(cmp_mod, refine, cfg.composite.background)
            if refine.upsample == "guided":
                from segcam.gpu.guided import GpuGuided

                gd_mod, _ = load_module("guided", info.sm, cache)
                self._modules.append(gd_mod)
                self.comp.guided = GpuGuided(gd_mod, refine.guided_radius, refine.guided_eps)
            self.device_infer = bool(getattr(backend, "supports_device", False))
            spec = _output_spec(backend, profile) if self.device_infer else None
            self.out_nbytes = 0
            self.out_shape: Tuple[int, ...] = ()
            self.out_fp16 = False
            if spec is not None:
                shape = tuple(int(d) for d in spec.shape)
                self.out_fp16 = np.dtype(spec.dtype) == np.float16
                self.out_nbytes = int(np.prod(shape)) * np.dtype(spec.dtype).itemsize
                self.out_shape = shape
            elif self.device_infer:
                self.device_infer = False  # no output spec: cannot size device buffers
            self.clock = EventClock(self.streams["composite"])
            self.timeline = Timeline()
        except BaseException:
            self._close_all()
            raise

    # ------------------------------------------------------------------ slots

    def slot(self, slot: FrameSlot, frame: np.ndarray) -> SlotGpu:
        """The slot's GPU resources for this frame size (allocated on first use)."""
        h, w = frame.shape[:2]
        res = slot.extra.get("gpu")
        if res is None or res.size != (w, h):
            with self._lock:
                if res is not None:
                    res.close()
                res = SlotGpu(
                    w,
                    h,
                    self.profile,
                    self.info.zero_copy,
                    not self.device_infer,
                    self.out_nbytes,
                )
                slot.extra["gpu"] = res
                self._slots[id(slot)] = res
        return res

    @property
    def slots_allocated(self) -> int:
        """How many slots hold GPU resources."""
        return len(self._slots)

    # ------------------------------------------------------------------ lifetime

    def release(self) -> None:
        """One stage is done; the last one frees everything."""
        with self._lock:
            self._refs -= 1
            last = self._refs <= 0
        if last:
            self._close_all()

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.ctx.make_current()
        try:
            self.ctx.synchronize()
        finally:
            for res in self._slots.values():
                res.close()
            self._slots.clear()
            for name in ("pre", "comp"):
                obj = getattr(self, name, None)
                if obj is not None:
                    obj.close()
            clock = getattr(self, "clock", None)
            if clock is not None:
                clock.close()
            for s in getattr(self, "streams", {}).values():
                s.close()
            for m in self._modules:
                m.close()
            self._modules.clear()
            self.ctx.release()
            log.debug("GPU pipeline closed; live CUDA resources: %s", LEDGER.snapshot())


class GpuPreprocess(Stage):
    """Frame -> model input on the preprocess stream (fused kernel)."""

    name = "preprocess"

    def __init__(self, gp: GpuPipeline) -> None:
        self.gp = gp

    def process(self, slot: FrameSlot) -> None:
        """Upload the frame (unless zero-copy) and enqueue the preprocess kernel."""
        gp = self.gp
        gp.ctx.make_current()
        frame = slot.frame
        res = gp.slot(slot, frame)
        if frame is not res.frame_view:
            np.copyto(res.frame_view, frame)
            slot.frame = res.frame_view  # from now on capture writes into pinned memory
        h, w = frame.shape[:2]
        s = gp.streams["preprocess"]
        start, end = res.events["preprocess"]
        start.record(s)
        if res.frame_dev is not None:
            s.copy_htod(res.frame_dev.ptr, res.frame_host.host_ptr, w * h * 3)
        gp.pre.launch(res.frame_ptr, w, h, w * 3, res.tensor_dev.ptr, s)
        if res.tensor_host is not None:
            s.copy_dtoh(res.tensor_host.host_ptr, res.tensor_dev.ptr, res.tensor_host.nbytes)
            slot.tensor = res.tensor_view
        end.record(s)

    def close(self) -> None:
        """Drop this stage's share of the GPU pipeline."""
        self.gp.release()


class GpuInfer(InferStage):
    """Inference on device buffers (TensorRT / ORT CUDA) or on the host (ORT CPU)."""

    def __init__(self, gp: GpuPipeline, backend: Any) -> None:
        super().__init__(backend)
        self.gp = gp
        # TensorRT enqueues on the stream it is given; other backends do not order
        # themselves after our stream's work.
        self._stream_ordered = getattr(backend, "name", "") == "tensorrt"

    def process(self, slot: FrameSlot) -> None:
        """Run (or skip, per infer_every / paused) the model for this frame."""
        gp = self.gp
        res: SlotGpu = slot.extra["gpu"]
        res.host_infer_span = None
        res.inferred_on_device = False
        if not self.should_infer(slot):
            slot.inferred = False
            slot.output = None
            return
        gp.ctx.make_current()
        if gp.device_infer:
            s = gp.streams["infer"]
            start, end = res.events["infer"]
            s.wait(res.events["preprocess"][1])
            if not self._stream_ordered:
                # ONNX Runtime runs on its own CUDA stream: the input must be complete
                # before the call (it returns with the output ready).
                res.events["preprocess"][1].wait()
            start.record(s)
            self.backend.infer_device(res.tensor_dev.ptr, res.out_dev.ptr, s.ptr)
            end.record(s)
            slot.output = None
            res.inferred_on_device = True
        else:
            res.events["preprocess"][1].wait()  # the host tensor copy has landed
            t0 = time.perf_counter()
            slot.output = self.backend.infer(slot.tensor)
            res.host_infer_span = (t0, time.perf_counter())
        slot.inferred = True
        self._have_output = True

    def close(self) -> None:
        """Drop this stage's share of the GPU pipeline."""
        self.gp.release()


class GpuComposite(Stage):
    """Refine + blend on the composite stream; results land in the slot's pinned buffers."""

    name = "composite"

    def __init__(self, gp: GpuPipeline) -> None:
        from segcam.inference.postprocess import to_probability

        self.gp = gp
        self._to_probability = to_probability
        self._spans: List[Span] = []

    def _feed(self, slot: FrameSlot, res: SlotGpu, smoothing: float, s: Stream) -> None:
        gp = self.gp
        profile = gp.profile
        comp = gp.comp
        if slot.inferred and res.inferred_on_device:
            s.wait(res.events["infer"][1])
            shape = gp.out_shape
            hw = _single_channel_hw(shape)
            if profile.output_kind in DEVICE_OUTPUT_KINDS and hw is not None:
                comp.update_from_device(
                    res.out_dev.ptr,
                    hw,
                    gp.out_fp16,
                    profile.output_kind == "logits",
                    smoothing,
                    s,
                )
                return
            # multi-class (or unusual shapes): postprocess on the host
            host = np.empty(shape, np.float16 if gp.out_fp16 else np.float32)
            s.synchronize()
            res.out_dev.download(host)
            slot.output = host
        if slot.inferred and slot.output is not None:
            prob = self._to_probability(slot.output, profile)
            slot.prob = prob
            comp.update_from_host(prob, smoothing, s)
        elif not comp.has_state:  # paused before any inference: nothing is person
            zeros = np.zeros((profile.height, profile.width), np.float32)
            comp.update_from_host(zeros, 0.0, s)

    def process(self, slot: FrameSlot) -> None:
        """Write ``slot.mask`` and ``slot.composite`` (host views of pinned buffers)."""
        from segcam.refine import params_from

        gp = self.gp
        gp.ctx.make_current()
        res: SlotGpu = slot.extra["gpu"]
        knobs = slot.knobs
        s = gp.streams["composite"]
        start, end = res.events["composite"]
        s.wait(res.events["preprocess"][1])  # the frame is on the device
        start.record(s)
        smoothing = params_from(gp.cfg.refine, knobs).smoothing
        self._feed(slot, res, smoothing, s)
        blank = bool(knobs is not None and knobs.paused and knobs.pause_mode == "background")
        w, h = res.size
        overlay = gp.comp.compose(
            res.frame_ptr,
            w * 3,
            res.frame_view,
            knobs,
            s,
            res.comp_dev.ptr,
            res.mask_dev.ptr,
            blank,
        )
        s.copy_dtoh(res.mask_host.host_ptr, res.mask_dev.ptr, w * h * 4)
        if not overlay:
            s.copy_dtoh(res.comp_host.host_ptr, res.comp_dev.ptr, w * h * 3)
        end.record(s)
        end.wait()
        slot.mask = res.mask_view
        if overlay:
            slot.composite = gp.comp.cpu.compose(
                res.frame_view, res.mask_view, knobs, out=res.comp_view
            )
        else:
            slot.composite = res.comp_view
        self._record(slot, res)

    def _record(self, slot: FrameSlot, res: SlotGpu) -> None:
        clock = self.gp.clock
        fid = slot.frame_id
        spans = []
        for stage in STAGES:
            if stage == "infer":
                if res.host_infer_span is not None:
                    a, b = res.host_infer_span
                    spans.append(Span(fid, stage, clock.host_ms(a), clock.host_ms(b), "host"))
                    continue
                if not res.inferred_on_device:
                    continue
            a_ev, b_ev = res.events[stage]
            spans.append(Span(fid, stage, clock.event_ms(a_ev), clock.event_ms(b_ev)))
        self.gp.timeline.extend(spans)

    def reset(self) -> None:
        """Forget temporal state."""
        self.gp.comp.reset()

    def close(self) -> None:
        """Drop this stage's share of the GPU pipeline."""
        self.gp.release()


def _single_channel_hw(shape: Tuple[int, ...]) -> Optional[Tuple[int, int]]:
    """(H, W) of a one-channel output shape ([1,1,H,W], [1,H,W,1], [1,H,W], [H,W])."""
    dims = list(shape)
    if len(dims) == 4 and dims[0] == 1 and dims[1] == 1:
        return dims[2], dims[3]
    if len(dims) == 4 and dims[0] == 1 and dims[3] == 1:
        return dims[1], dims[2]
    if len(dims) == 3 and dims[0] == 1:
        return dims[1], dims[2]
    if len(dims) == 2:
        return dims[0], dims[1]
    return None


def build_gpu_stages(cfg: Any, backend: Any, profile: Any, info: Optional[GpuInfo]) -> StageSet:
    """The GPU stage set for the pipeline factory (GpuError if the GPU cannot be used)."""
    if info is None:
        from segcam.gpu.device import probe

        info, reason = probe()
        if info is None:
            raise GpuError(reason, "set inference.device: cpu")
    gp = GpuPipeline(cfg, backend, profile, info)
    where = "device buffers" if gp.device_infer else "host (CPU inference)"
    reason = (
        f"GPU stages on {info.name} ({info.sm_name}, "
        f"{'integrated, zero-copy' if info.zero_copy else 'discrete'}; kernels "
        f"{gp.kernel_cache}; inference on {where}; cuda-python {info.cuda_python})"
    )
    return StageSet(
        preprocess=GpuPreprocess(gp),
        infer=GpuInfer(gp, backend),
        composite=GpuComposite(gp),
        device="gpu",
        reason=reason,
        info={"gpu": info.as_dict(), "timeline": gp.timeline, "pipeline": gp},
    )
