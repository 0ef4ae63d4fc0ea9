"""Mask refinement between inference and compositing (the CPU reference path).

``MaskRefiner.refine(prob, frame_hw, knobs)`` takes the model's person probability
(HxW float32 in [0, 1] at model resolution) and returns the mask the compositor blends
with: HxW float32 in [0, 1] at frame size. Steps, in order (the GPU path reproduces them):

1. **Temporal smoothing** (model resolution, ``smoothing`` = s in [0, 1]; 0 = off), in
   the manner of MediaPipe's SegmentationSmoothingCalculator: the new value is blended
   with the previous smoothed value only where the new one is uncertain. With ``p`` the
   new probability and ``H(p) = -(p log2 p + (1-p) log2(1-p))`` its binary entropy
   (1 at p = 0.5, 0 at p in {0, 1}), the uncertainty is ``u = 1 - (1 - H(p))**2`` and::

       state = p + (prev - p) * (u * s)

   computed in float32 with ``p`` clamped to [1e-6, 1 - 1e-6] inside the logarithms. A
   confident pixel follows the model at once; an uncertain one (edges, flicker) leans on
   its history. The first mask, or one after :meth:`MaskRefiner.reset` or a change of
   model resolution, passes through. ``refine(None, ...)`` (no new inference this frame:
   ``infer_every`` > 1, paused) re-emits the last state.
2. **Small-blob removal** (``min_blob_area`` = fraction of the frame, 0 = off), on a copy
   of the state (the history is not altered): pixels ``> threshold`` form 8-connected
   components (``cv2.connectedComponentsWithStats``); components whose area is below
   ``min_blob_area * h * w`` are removed by setting their pixels, dilated by one pixel
   (3x3), to 0. Done at model resolution: the area fraction does not depend on the
   resolution, and it costs microseconds instead of ~15 ms at 1080p.
3. **Upsample** to the frame (``upsample`` in the refine config): ``bilinear`` is
   ``cv2.resize(m, (W, H), interpolation=cv2.INTER_LINEAR)`` on float32 (half-pixel
   centres, border replicate, float weights); ``guided`` is the edge-aware upsampling of
   :mod:`segcam.guided` (``guided_radius``, ``guided_eps``), which needs the frame itself
   (``refine(..., guide=frame)``).
4. **Threshold** unless ``soft``: ``m = 1.0 if m > threshold else 0.0``.
5. **Feather** (``feather`` = r pixels at frame size, 0 = off): Gaussian blur with
   ``sigma = r / 2`` and kernel size ``2 * r + 1``, ``cv2.BORDER_REPLICATE``. For r up to
   :data:`FULL_RES_FEATHER_MAX` this runs at frame size. Above it, to keep the cost flat,
   it runs at a reduced resolution: ``d = ceil(r / FULL_RES_FEATHER_MAX)``; the mask is
   shrunk to ``(ceil(W / d), ceil(H / d))`` with ``INTER_AREA``, blurred with kernel
   ``2 * ceil(r / d) + 1`` and ``sigma = sqrt(max((r / (2 d))**2 - 1/4, 0.09))``, and
   enlarged back with ``INTER_LINEAR``. The ``- 1/4`` takes out the variance (in reduced
   pixels squared) that the box shrink (1/12) and the bilinear enlargement (1/6) add, so
   the result stays within a few percent of the full-size blur.

Knob values (``threshold``, ``soft``, ``feather``, ``smoothing``, ``min_blob_area`` of
:class:`segcam.pipeline.knobs.KnobValues`) override the config per call, so reload and the
thermal governor act on the next frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import cv2
import numpy as np

from segcam.errors import PipelineError
from segcam.guided import GuidedUpsampler

FULL_RES_FEATHER_MAX = 6  # feather radius (px) above which the blur runs at reduced size
_EPS = np.float32(1e-6)
_INV_LN2 = np.float32(1.0 / math.log(2.0))


@dataclass(frozen=True)
class RefineParams:
    """The refinement settings in force for one call."""

    threshold: float = 0.5
    soft: bool = True
    feather: int = 0
    smoothing: float = 0.0
    min_blob_area: float = 0.0


def params_from(refine_cfg: Any, knobs: Any = None) -> RefineParams:
    """Settings from ``knobs`` (a KnobValues) when given, else from the refine config."""
    src = knobs if knobs is not None else refine_cfg
    return RefineParams(
        threshold=float(src.threshold),
        soft=bool(src.soft),
        feather=max(0, int(src.feather)),
        smoothing=min(1.0, max(0.0, float(src.smoothing))),
        min_blob_area=max(0.0, float(src.min_blob_area)),
    )


def uncertainty(
    p: np.ndarray,
    out: Optional[np.ndarray] = None,
    scratch: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> np.ndarray:
    """``1 - (1 - H(p))**2`` with H the binary entropy in bits (float32; see module doc).

    ``scratch`` (two float32 arrays shaped like ``p``) and ``out`` let a per-frame caller
    allocate nothing.
    """
    if scratch is None:
        scratch = (np.empty(p.shape, np.float32), np.empty(p.shape, np.float32))
    q, t = scratch
    h = out if out is not None else np.empty(p.shape, np.float32)
    np.clip(p, _EPS, np.float32(1.0) - _EPS, out=q)
    np.log(q, out=t)
    np.multiply(q, t, out=h)  # q log q
    np.subtract(np.float32(1.0), q, out=q)  # q now holds r = 1 - q
    np.log(q, out=t)
    t *= q
    h += t  # + r log r
    h *= -_INV_LN2  # entropy in bits, in [0, 1]
    np.subtract(np.float32(1.0), h, out=h)
    np.multiply(h, h, out=h)
    return np.subtract(np.float32(1.0), h, out=h)


def smooth(
    prev: np.ndarray,
    new: np.ndarray,
    strength: float,
    out: np.ndarray,
    scratch: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None,
) -> np.ndarray:
    """One smoothing step: ``new + (prev - new) * (uncertainty(new) * strength)``.

    ``scratch`` (three float32 arrays shaped like ``new``) avoids per-call allocation.
    """
    if scratch is None:
        u = uncertainty(new)
    else:
        u = uncertainty(new, out=scratch[0], scratch=(scratch[1], scratch[2]))
    u *= np.float32(strength)
    np.subtract(prev, new, out=out)
    out *= u
    out += new
    return out


def remove_small_blobs(mask: np.ndarray, threshold: float, min_fraction: float) -> np.ndarray:
    """Zero (in place) the foreground components smaller than ``min_fraction`` of the mask."""
    if min_fraction <= 0.0:
        return mask
    binary = (mask > np.float32(threshold)).view(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if n <= 1:
        return mask
    min_area = min_fraction * mask.shape[0] * mask.shape[1]
    small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_area) + 1
    if small.size == 0:
        return mask
    drop = np.isin(labels, small).view(np.uint8)
    drop = cv2.dilate(drop, np.ones((3, 3), np.uint8))
    mask[drop.astype(bool)] = 0.0
    return mask


def feather(mask: np.ndarray, radius: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Gaussian edge blur of ``radius`` px (see module doc for the reduced-size path)."""
    if out is None:
        out = np.empty_like(mask)
    if radius <= 0:
        np.copyto(out, mask)
        return out
    if radius <= FULL_RES_FEATHER_MAX:
        k = 2 * radius + 1
        return cv2.GaussianBlur(
            mask, (k, k), radius / 2.0, dst=out, borderType=cv2.BORDER_REPLICATE
        )
    h, w = mask.shape
    d = math.ceil(radius / FULL_RES_FEATHER_MAX)
    small = cv2.resize(mask, (math.ceil(w / d), math.ceil(h / d)), interpolation=cv2.INTER_AREA)
    k = 2 * math.ceil(radius / d) + 1
    sigma = math.sqrt(max((radius / (2.0 * d)) ** 2 - 0.25, 0.09))
    small = cv2.GaussianBlur(small, (k, k), sigma, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)


class MaskRefiner:
    """Stateful refinement of a stream of masks (see the module docstring).

    One per pipeline (it holds the smoothing history). Not thread-safe: call it from the
    stage thread that owns it. The result is written into ``out`` when given (the hot
    path: a slot's preallocated mask), else into a new array.
    """

    def __init__(self, refine_cfg: Any) -> None:
        self.cfg = refine_cfg
        self._state: Optional[np.ndarray] = None
        self._tmp: Optional[np.ndarray] = None
        self._up: Optional[np.ndarray] = None
        self._scratch: Tuple[np.ndarray, ...] = ()
        self._guided: Optional[GuidedUpsampler] = None
        if refine_cfg.upsample == "guided":
            self._guided = GuidedUpsampler(refine_cfg.guided_radius, refine_cfg.guided_eps)

    def reset(self) -> None:
        """Forget the history (new scene, new model, source reconnected)."""
        self._state = None

    @property
    def last(self) -> Optional[np.ndarray]:
        """The current smoothed mask at model resolution (None before the first)."""
        return self._state

    def load_state(self, state: np.ndarray) -> None:
        """Continue from ``state`` (HxW float32 at model resolution), e.g. a GPU's history."""
        self._state = np.array(state, dtype=np.float32, copy=True)
        self._tmp = np.empty_like(self._state)
        self._scratch = tuple(np.empty_like(self._state) for _ in range(3))

    def smooth_only(self, prob: np.ndarray, smoothing: float) -> np.ndarray:
        """Step 1 alone: update and return the history (model resolution)."""
        prob = np.asarray(prob, dtype=np.float32)
        if prob.ndim != 2:
            raise PipelineError(f"refine expects an HxW probability map, got shape {prob.shape}")
        if self._state is None or self._state.shape != prob.shape or smoothing <= 0.0:
            if self._state is None or self._state.shape != prob.shape:
                self._state = np.empty_like(prob)
                self._tmp = np.empty_like(prob)
                self._scratch = tuple(np.empty_like(prob) for _ in range(3))
            np.clip(prob, 0.0, 1.0, out=self._state)
        else:
            new = np.clip(prob, 0.0, 1.0, out=self._tmp)
            smooth(self._state, new, smoothing, out=self._state, scratch=self._scratch)
        return self._state

    def refine(
        self,
        prob_lowres: Optional[np.ndarray],
        frame_hw: Tuple[int, int],
        knobs: Any = None,
        out: Optional[np.ndarray] = None,
        guide: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Refine a new probability map (or re-emit the last one when ``None``).

        ``frame_hw`` is (height, width) of the frame; ``knobs`` a KnobValues (or None for
        the config); ``guide`` the BGR frame itself (needed by ``upsample: guided``).
        Returns HxW float32 in [0, 1] at frame size.
        """
        p = params_from(self.cfg, knobs)
        if prob_lowres is not None:
            self.smooth_only(prob_lowres, p.smoothing)
        elif self._state is None:
            raise PipelineError("refine called with no mask yet (the first frame needs one)")
        h, w = int(frame_hw[0]), int(frame_hw[1])
        if out is None:
            out = np.empty((h, w), dtype=np.float32)
        elif out.shape != (h, w) or out.dtype != np.float32:
            raise PipelineError(
                f"refine output buffer is {out.dtype} {out.shape}, expected float32 {(h, w)}"
            )
        if self._guided is not None:
            if guide is None or guide.shape[:2] != (h, w):
                raise PipelineError(
                    "refine.upsample: guided needs the frame as guide "
                    f"(got {None if guide is None else guide.shape}, frame {(h, w)})"
                )
        return self._compute(p, out, guide)

    def _compute(
        self, p: RefineParams, out: np.ndarray, guide: Optional[np.ndarray] = None
    ) -> np.ndarray:
        h, w = out.shape
        low = self._state
        if p.min_blob_area > 0.0:
            low = remove_small_blobs(low.copy(), p.threshold, p.min_blob_area)
        if p.feather > 0:
            if self._up is None or self._up.shape != (h, w):
                self._up = np.empty((h, w), dtype=np.float32)
            up = self._up
        else:
            up = out
        if self._guided is not None and guide is not None:
            self._guided(low, guide, out=up)
        elif low.shape == (h, w):
            np.copyto(up, low)
        else:
            cv2.resize(low, (w, h), dst=up, interpolation=cv2.INTER_LINEAR)
        if not p.soft:
            cv2.threshold(up, p.threshold, 1.0, cv2.THRESH_BINARY, dst=up)
        if p.feather > 0:
            feather(up, p.feather, out=out)
        # Bilinear weights and the blur are convex: values stay in [0, 1] up to rounding.
        return np.clip(out, 0.0, 1.0, out=out)


__all__ = ["MaskRefiner", "RefineParams", "params_from", "uncertainty", "smooth", "feather"]
