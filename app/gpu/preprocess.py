"""GPU preprocessing: the fused kernels ``kernels/preprocess.cu`` and their host-side tables.

A profile's ``resample`` convention picks the kernel: ``preprocess_bilinear_u8`` for
``bilinear_half_pixel`` (described below), ``preprocess_warp_u8`` for the warp conventions
(``bilinear_top_left``, ``bilinear_align_corners``), whose per-axis tables and 15-bit weight
table come from :mod:`segcam.inference.resample`, the arithmetic the CPU path runs; the
normalisation uses correctly rounded multiply, subtract and divide, so both kernels' float
output equals the CPU reference whenever their resized pixels do.

The kernel does resize + colour order + normalisation + layout + dtype in one pass and
writes straight into the model's input buffer. It matches the CPU reference
(:mod:`segcam.inference.preprocess`, ``cv2.resize`` INTER_LINEAR on uint8) bit for bit before
normalisation, because the sample positions and 11-bit fixed-point weights are computed
here on the host exactly as OpenCV computes them, and the kernel repeats OpenCV's integer
arithmetic. :func:`emulate_resize_u8` is the same arithmetic in numpy: the CPU tests check
it against ``cv2.resize``, the GPU tests check the kernel against both.
"""

from __future__ import annotations

import ctypes
from typing import Any, Dict, Optional, Tuple

import numpy as np

from segcam.gpu.memory import DeviceBuffer, Stream
from segcam.gpu.nvrtc import Module
from segcam.inference.resample import WARP_CONVENTIONS, bilinear_weight_table, warp_tables

COEF_BITS = 11
COEF_SCALE = 1 << COEF_BITS
BLOCK = (32, 8, 1)


def linear_positions(
    src: int, dst: int, clamp: bool, dtype: type = np.float32
) -> Tuple[np.ndarray, np.ndarray]:
    """Source index and fraction of each destination pixel, as cv2.resize INTER_LINEAR.

    ``dtype`` is the precision OpenCV keeps the position in: float32 on its uint8 path,
    double on its float path (OpenCV 5). ``clamp`` reproduces the horizontal axis, where a
    position left of the first or right of the last pixel gets weight (1, 0) on the border
    pixel; the vertical axis keeps its fraction and only clamps the row indices.
    """
    scale = src / dst  # OpenCV: 1 / inv_scale, computed in double
    d = np.arange(dst, dtype=np.float64)
    f = ((d + 0.5) * scale - 0.5).astype(dtype)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(dtype)).astype(dtype)
    if clamp:
        low = s < 0
        f[low] = 0.0
        s[low] = 0
        high = s >= src - 1
        f[high] = 0.0
        s[high] = src - 1
    return s, f


def linear_coeffs(
    src: int, dst: int, clamp: bool
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR sample table for one axis: (i0, i1, w0, w1), weights x 2048.

    ``clamp=False`` is the vertical axis: OpenCV's rounding then differs on the border
    rows, and so must ours (see :func:`linear_positions`).
    """
    s, f = linear_positions(src, dst, clamp, np.float32)
    # saturate_cast<short>(float) rounds half to even, like np.rint
    w1 = np.rint(f * np.float32(COEF_SCALE)).astype(np.int64)
    w0 = np.rint((np.float32(1.0) - f) * np.float32(COEF_SCALE)).astype(np.int64)
    i0 = np.clip(s, 0, src - 1)
    i1 = np.clip(s + 1, 0, src - 1)
    return i0, i1, w0, w1


def resize_tables(src_w: int, src_h: int, dst_w: int, dst_h: int) -> np.ndarray:
    """int32 [dst_w + dst_h, 4]: rows (i0, i1, w0, w1) for x (first dst_w) then y."""
    x = np.stack(linear_coeffs(src_w, dst_w, clamp=True), axis=1)
    y = np.stack(linear_coeffs(src_h, dst_h, clamp=False), axis=1)
    return np.ascontiguousarray(np.concatenate([x, y]).astype(np.int32))


def emulate_resize_u8(img: np.ndarray, dst_w: int, dst_h: int) -> np.ndarray:
    """The kernel's resize arithmetic in numpy (equals cv2.resize INTER_LINEAR on uint8)."""
    h, w = img.shape[:2]
    tab = resize_tables(w, h, dst_w, dst_h).astype(np.int64)
    xt, yt = tab[:dst_w], tab[dst_w:]
    src = img.astype(np.int64)
    if src.ndim == 2:
        src = src[:, :, None]
    hor = src[:, xt[:, 0]] * xt[None, :, 2, None] + src[:, xt[:, 1]] * xt[None, :, 3, None]
    h0, h1 = hor[yt[:, 0]], hor[yt[:, 1]]
    b0, b1 = yt[:, 2, None, None], yt[:, 3, None, None]
    out = (((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2 >> 2
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out.reshape((dst_h, dst_w) + img.shape[2:])


def _per_channel(values: Any) -> Tuple[float, float, float]:
    vals = [float(v) for v in values]
    if len(vals) == 1:
        vals = vals * 3
    return vals[0], vals[1], vals[2]


class GpuPreprocessor:
    """Launches the fused preprocess kernel for one model profile.

    Resize tables are uploaded once per source frame size and cached; launching allocates
    nothing but the ctypes argument pack.
    """

    def __init__(self, module: Module, profile: Any) -> None:
        self.profile = profile
        self._warp = getattr(profile, "resample", "bilinear_half_pixel") in WARP_CONVENTIONS
        name = "preprocess_warp_u8" if self._warp else "preprocess_bilinear_u8"
        self._kernel = module.kernel(name)
        self._tables: Dict[Tuple[int, int], DeviceBuffer] = {}
        self._weights: Optional[DeviceBuffer] = None
        self._mean = _per_channel(profile.mean)
        self._std = _per_channel(profile.std)
        if self._warp:
            wtab = bilinear_weight_table()
            self._weights = DeviceBuffer(wtab.nbytes)
            self._weights.upload(wtab)

    def tables(self, src_w: int, src_h: int) -> DeviceBuffer:
        """Device copy of the resize tables for a source size (uploaded on first use)."""
        buf = self._tables.get((src_w, src_h))
        if buf is None:
            p = self.profile
            if self._warp:
                tab = warp_tables(src_w, src_h, p.width, p.height, p.resample)
            else:
                tab = resize_tables(src_w, src_h, p.width, p.height)
            if len(self._tables) >= 8:  # a source that keeps changing size: stay bounded
                self.close_tables()
            buf = DeviceBuffer(tab.nbytes)
            buf.upload(tab)
            self._tables[(src_w, src_h)] = buf
        return buf

    def launch(
        self, src_ptr: int, src_w: int, src_h: int, src_pitch: int, dst_ptr: int, stream: Stream
    ) -> None:
        """Enqueue: BGR uint8 frame at ``src_ptr`` -> model input tensor at ``dst_ptr``."""
        p = self.profile
        tab = self.tables(src_w, src_h)
        if self._warp:
            assert self._weights is not None
            head: Tuple[Any, ...] = (
                ctypes.c_uint64(src_ptr),
                ctypes.c_int(src_pitch),
                ctypes.c_int(src_w),
                ctypes.c_int(src_h),
                ctypes.c_uint64(tab.ptr),
                ctypes.c_uint64(tab.ptr + 8 * p.width),
                ctypes.c_uint64(self._weights.ptr),
            )
        else:
            head = (
                ctypes.c_uint64(src_ptr),
                ctypes.c_int(src_pitch),
                ctypes.c_uint64(tab.ptr),
                ctypes.c_uint64(tab.ptr + 16 * p.width),
            )
        args = head + (
            ctypes.c_uint64(dst_ptr),
            ctypes.c_int(p.width),
            ctypes.c_int(p.height),
            ctypes.c_int(1 if p.color_order == "RGB" else 0),
            ctypes.c_int(1 if p.layout == "NCHW" else 0),
            ctypes.c_int(1 if p.dtype == "float16" else 0),
            ctypes.c_float(p.scale),
            ctypes.c_float(self._mean[0]),
            ctypes.c_float(self._mean[1]),
            ctypes.c_float(self._mean[2]),
            ctypes.c_float(self._std[0]),
            ctypes.c_float(self._std[1]),
            ctypes.c_float(self._std[2]),
        )
        grid = ((p.width + BLOCK[0] - 1) // BLOCK[0], (p.height + BLOCK[1] - 1) // BLOCK[1], 1)
        self._kernel.launch(grid, BLOCK, stream, args)

    def close_tables(self) -> None:
        """Free the per-size tables (they are rebuilt on the next launch)."""
        for buf in self._tables.values():
            buf.close()
        self._tables.clear()

    def close(self) -> None:
        """Free the cached tables."""
        self.close_tables()
        if self._weights is not None:
            self._weights.close()
            self._weights = None
