"""CPU preprocessing: a BGR uint8 frame -> the model's input tensor (the reference path).

The GPU preprocess kernel must reproduce this arithmetic; it is spelled out exactly here.

1. **Resize** in the profile's ``resample`` convention (:mod:`segcam.inference.resample`).
   ``bilinear_top_left`` and ``bilinear_align_corners`` use the integer warp arithmetic
   described there (:func:`~segcam.inference.resample.warp_resize_u8`; ``cv2.remap`` with
   fixed-point maps computes exactly that, fast). The default,
   ``bilinear_half_pixel``, is
   ``cv2.resize(frame, (W, H), interpolation=cv2.INTER_LINEAR)`` on the uint8
   BGR frame. Sample positions follow the half-pixel convention:
   ``sx = (dx + 0.5) * (src_w / W) - 0.5`` (same for y), clamped to the image (border
   replicate). For uint8 input OpenCV does *not* compute in float: the bilinear weights
   are 11-bit fixed point (``INTER_RESIZE_COEF_BITS = 11``, weights scaled by 2048 and
   rounded), the horizontal pass keeps integer sums, the vertical pass combines them and
   rounds back to uint8. A float implementation therefore differs from OpenCV by at most
   1 grey level on some pixels; kernels are compared with a tolerance of 1 level before
   normalisation (``scale/std`` after it). When the frame already has the model's size the
   resize is skipped (OpenCV would copy it unchanged).
2. **Colour order**: BGR -> RGB when the profile says RGB (a channel swap, no arithmetic).
3. **Normalise** in float32, per channel ``c`` in the model's colour order, with three
   separately rounded float32 operations (no fused multiply-add)::

       y = (float32(x) * float32(scale) - float32(mean[c])) / float32(std[c])

4. **Cast** to the profile dtype (float16: IEEE round-to-nearest-even of the float32 ``y``).
5. **Layout**: batch 1, ``NHWC`` ``[1, H, W, 3]`` or ``NCHW`` ``[1, 3, H, W]``, contiguous.
"""

from __future__ import annotations

import threading
from typing import Optional

import cv2
import numpy as np

from segcam.errors import PipelineError
from segcam.inference.profile import ModelProfile
from segcam.inference.resample import WARP_CONVENTIONS, WarpResizer

_local = threading.local()


class Preprocessor:
    """Reusable preprocessing for one profile: scratch buffers are allocated once.

    ``__call__(frame, out)`` writes the tensor into ``out`` (allocated once here when not
    given) and returns it. Not thread-safe: one per stage thread.
    """

    def __init__(self, profile: ModelProfile) -> None:
        self.profile = profile
        w, h = profile.width, profile.height
        self._scale = np.float32(profile.scale)
        self._mean = np.asarray(profile.mean, dtype=np.float32)
        self._std = np.asarray(profile.std, dtype=np.float32)
        self._sub = bool(np.any(self._mean != 0.0))
        self._div = bool(np.any(self._std != 1.0))
        self._resized = np.empty((h, w, 3), dtype=np.uint8)
        self._warp: Optional[WarpResizer] = None
        if profile.resample in WARP_CONVENTIONS:
            self._warp = WarpResizer(w, h, profile.resample)
        self._work = np.empty((h, w, 3), dtype=np.float32)
        self._plane = np.empty((h, w), dtype=np.float32)
        self._out = np.empty(profile.input_shape, dtype=profile.np_dtype)
        # Work straight in the output tensor when it is NHWC float32 (no extra copy).
        self._in_place = profile.layout == "NHWC" and profile.dtype == "float32"

    def __call__(self, frame_bgr: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Preprocess ``frame_bgr`` (HxWx3 uint8 BGR) into ``out`` (or an internal buffer)."""
        p = self.profile
        if frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            raise PipelineError(
                f"preprocess expects an HxWx3 uint8 BGR frame, got {frame_bgr.dtype} "
                f"{frame_bgr.shape}"
            )
        if out is None:
            out = self._out
        elif out.shape != p.input_shape or out.dtype != p.np_dtype:
            raise PipelineError(
                f"preprocess output buffer is {out.dtype} {out.shape}, the profile "
                f"{p.name!r} needs {p.np_dtype} {p.input_shape}"
            )
        if frame_bgr.shape[0] == p.height and frame_bgr.shape[1] == p.width:
            resized = frame_bgr
        elif self._warp is not None:
            resized = self._warp(frame_bgr, self._resized)
        else:
            resized = cv2.resize(
                frame_bgr, (p.width, p.height), dst=self._resized, interpolation=cv2.INTER_LINEAR
            )
        # The channel swap is a view with a negative stride: the multiply reads it directly.
        src = resized[:, :, ::-1] if p.color_order == "RGB" else resized
        if p.layout == "NCHW":
            self._planes(src, out)
            return out
        work = out[0] if self._in_place else self._work
        np.multiply(src, self._scale, out=work, dtype=np.float32)
        # Subtracting 0 and dividing by 1 are exact identities in IEEE arithmetic: skip them.
        if self._sub:
            np.subtract(work, self._mean, out=work)
        if self._div:
            np.divide(work, self._std, out=work)
        if not self._in_place:
            np.copyto(out[0], work, casting="same_kind")
        return out

    def _planes(self, src: np.ndarray, out: np.ndarray) -> None:
        """NCHW: one channel plane at a time, with scalar operands (faster than broadcasting
        over the channel axis, and no transpose copy). Same float32 operations as NHWC."""
        f32 = out.dtype == np.float32
        for c in range(3):
            plane = out[0, c] if f32 else self._plane
            np.multiply(src[:, :, c], self._scale, out=plane, dtype=np.float32)
            if self._sub:
                np.subtract(plane, self._mean[c], out=plane)
            if self._div:
                np.divide(plane, self._std[c], out=plane)
            if not f32:
                np.copyto(out[0, c], plane, casting="same_kind")


def preprocess(
    frame_bgr: np.ndarray, profile: ModelProfile, out: Optional[np.ndarray] = None
) -> np.ndarray:
    """Turn a BGR uint8 frame into the batch-1 input tensor of ``profile`` (see module doc).

    Writes into ``out`` when given (shape ``profile.input_shape``, dtype of the profile);
    otherwise returns a new array. Scratch buffers are kept per thread for the last profile
    used, so a per-frame loop with ``out`` allocates nothing.
    """
    pre = getattr(_local, "pre", None)
    if pre is None or pre.profile is not profile:
        pre = _local.pre = Preprocessor(profile)
    if out is None:
        out = np.empty(profile.input_shape, dtype=profile.np_dtype)
    return pre(frame_bgr, out)


__all__ = ["Preprocessor", "preprocess"]
