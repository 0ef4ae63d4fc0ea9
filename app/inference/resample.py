"""Resampling conventions a model was trained with, and their exact uint8 arithmetic.

A model profile names one (``resample:``); the CPU preprocessing
(:mod:`segcam.inference.preprocess`) and the GPU kernel (``kernels/preprocess.cu``) both
follow it, the GPU one bit for bit. Where a destination pixel ``d`` of an axis samples the
source (``s`` source pixels, ``n`` destination pixels):

========================  ============================  ======================================
convention                sample position               used by
========================  ============================  ======================================
bilinear_half_pixel       ``(d + 0.5) * s / n - 0.5``   cv2.resize, PyTorch/TF2 bilinear with
                                                        align_corners=False / half-pixel
                                                        centres (the default)
bilinear_top_left         ``d * s / n``                 MediaPipe's ImageToTensorCalculator
                                                        (the image's outer corners map to the
                                                        tensor's: cv::warpPerspective), TF1
                                                        resize_bilinear
bilinear_align_corners    ``d * (s - 1) / (n - 1)``     PyTorch/TF1 align_corners=True (the
                                                        first and last pixel centres align)
========================  ============================  ======================================

``bilinear_half_pixel`` is ``cv2.resize(INTER_LINEAR)`` on uint8 (11-bit separable weights,
border replicate; see :mod:`segcam.gpu.preprocess`). The other two use the arithmetic of
OpenCV's ``warpPerspective(INTER_LINEAR)`` as MediaPipe 0.10.14 runs it (OpenCV 3.4, whose
fixed-point path later OpenCV releases replaced with float arithmetic):

1. the position is rounded to 1/32 pixel, ``X = rint(pos * 32)`` (round half to even),
   giving the tap ``x0 = X >> 5`` and the sub-pixel index ``tx = X & 31`` (same for y);
2. the four taps ``(y0, x0), (y0, x0+1), (y0+1, x0), (y0+1, x0+1)`` are weighted by OpenCV's
   15-bit table ``BilinearTab_i[ty*32 + tx]`` (:func:`bilinear_weight_table`);
3. ``v = (sum(S_k * w_k) + 2**14) >> 15`` per channel, clamped to 0..255; a tap outside the
   image contributes 0 (MediaPipe's ``border_mode: BORDER_ZERO``).

The position is computed from the exact ratio in double precision; OpenCV derives it from a
solved 3x3 perspective matrix, which can differ in the last bits and so only where ``pos*32``
falls exactly half-way between two integers (none of the common frame sizes does).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import cv2
import numpy as np

INTER_BITS = 5
INTER_TAB = 1 << INTER_BITS  # sub-pixel positions per pixel
REMAP_BITS = 15
REMAP_SCALE = 1 << REMAP_BITS

CONVENTIONS: Dict[str, str] = {
    "bilinear_half_pixel": "bilinear, half-pixel centres (cv2.resize; PyTorch align_corners=False)",
    "bilinear_top_left": "bilinear, outer corners aligned, x*src/dst (MediaPipe ImageToTensor)",
    "bilinear_align_corners": "bilinear, corner pixel centres aligned (align_corners=True)",
}
WARP_CONVENTIONS = ("bilinear_top_left", "bilinear_align_corners")

_weights_cache = None


def bilinear_weight_table() -> np.ndarray:
    """int32 [1024, 4]: OpenCV's ``BilinearTab_i`` (weights of taps 00, 01, 10, 11 x 2**15).

    Row ``ty * 32 + tx``. Computed as OpenCV's ``initInterTab2D`` does: float products of the
    1-D weights, saturated to int16, and the remainder of a sum that is not 2**15 put on the
    last weight. Only row 0 has one: its weight 32768 saturates to 32767 (+1 on tap 11).
    """
    global _weights_cache
    if _weights_cache is None:
        f = np.arange(INTER_TAB, dtype=np.float32) * np.float32(1.0 / INTER_TAB)
        one = (np.float32(1.0) - f).astype(np.float32)
        tab = np.empty((INTER_TAB, INTER_TAB, 4), np.int64)
        for k, (vy, vx) in enumerate(((one, one), (one, f), (f, one), (f, f))):
            v = (vy[:, None] * vx[None, :]).astype(np.float32) * np.float32(REMAP_SCALE)
            tab[:, :, k] = np.clip(np.rint(v), -32768, 32767)
        tab = tab.reshape(INTER_TAB * INTER_TAB, 4)
        tab[:, 3] -= tab.sum(axis=1) - REMAP_SCALE
        _weights_cache = np.ascontiguousarray(tab.astype(np.int32))
    return _weights_cache


def warp_positions(src: int, dst: int, convention: str) -> Tuple[np.ndarray, np.ndarray]:
    """First tap and sub-pixel index (0..31) of each destination pixel on one axis."""
    d = np.arange(dst, dtype=np.float64)
    if convention == "bilinear_top_left":
        pos = d * (src / dst)
    elif convention == "bilinear_align_corners":
        pos = d * ((src - 1) / (dst - 1)) if dst > 1 else np.zeros(dst)
    else:
        raise ValueError(f"{convention!r} is not a warp resampling convention")
    fixed = np.rint(pos * INTER_TAB).astype(np.int64)
    return fixed >> INTER_BITS, fixed & (INTER_TAB - 1)


def warp_tables(src_w: int, src_h: int, dst_w: int, dst_h: int, convention: str) -> np.ndarray:
    """int32 [dst_w + dst_h, 2]: rows (x0, tx) for x (first dst_w), then (y0, ty) for y."""
    x = np.stack(warp_positions(src_w, dst_w, convention), axis=1)
    y = np.stack(warp_positions(src_h, dst_h, convention), axis=1)
    return np.ascontiguousarray(np.concatenate([x, y]).astype(np.int32))


def warp_resize_u8(img: np.ndarray, dst_w: int, dst_h: int, convention: str) -> np.ndarray:
    """Resample a uint8 HxW or HxWxC image with a warp convention (module doc, steps 1-3)."""
    h, w = img.shape[:2]
    tab = warp_tables(w, h, dst_w, dst_h, convention).astype(np.int64)
    x0, tx = tab[:dst_w, 0], tab[:dst_w, 1]
    y0, ty = tab[dst_w:, 0], tab[dst_w:, 1]
    wts = bilinear_weight_table().astype(np.int64)[ty[:, None] * INTER_TAB + tx[None, :]]
    src = img if img.ndim == 3 else img[:, :, None]
    acc = np.full((dst_h, dst_w, src.shape[2]), 1 << (REMAP_BITS - 1), np.int64)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        ys, xs = y0 + dy, x0 + dx
        inside = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :]
        taps = src[np.clip(ys, 0, h - 1)[:, None], np.clip(xs, 0, w - 1)[None, :]]
        acc += taps.astype(np.int64) * (wts[:, :, k] * inside)[:, :, None]
    out = np.clip(acc >> REMAP_BITS, 0, 255).astype(np.uint8)
    return out if img.ndim == 3 else out[:, :, 0]


def remap_maps(
    src_w: int, src_h: int, dst_w: int, dst_h: int, convention: str
) -> Tuple[np.ndarray, np.ndarray]:
    """cv2.remap's fixed-point maps for a warp convention: int16 (x0, y0) and uint16 index.

    ``cv2.remap`` with these maps runs OpenCV's integer bilinear path (the table of
    :func:`bilinear_weight_table`), so it equals :func:`warp_resize_u8` exactly; the tests
    check that against the numpy arithmetic on every run.
    """
    if max(src_w, src_h) + 1 > 32767:
        raise ValueError(f"{src_w}x{src_h} is too large for 16-bit remap coordinates")
    tab = warp_tables(src_w, src_h, dst_w, dst_h, convention)
    x0, tx = tab[:dst_w, 0], tab[:dst_w, 1]
    y0, ty = tab[dst_w:, 0], tab[dst_w:, 1]
    xy = np.empty((dst_h, dst_w, 2), np.int16)
    xy[:, :, 0] = x0[None, :]
    xy[:, :, 1] = y0[:, None]
    idx = (ty[:, None] * INTER_TAB + tx[None, :]).astype(np.uint16)
    return xy, idx


class WarpResizer:
    """Resizes uint8 frames with one warp convention; maps are built once per frame size."""

    def __init__(self, dst_w: int, dst_h: int, convention: str) -> None:
        if convention not in WARP_CONVENTIONS:
            raise ValueError(f"{convention!r} is not a warp resampling convention")
        self.size = (dst_w, dst_h)
        self.convention = convention
        self._maps: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, img: np.ndarray, dst: Optional[np.ndarray] = None) -> np.ndarray:
        """The resized image (written into ``dst`` when given)."""
        h, w = img.shape[:2]
        maps = self._maps.get((w, h))
        if maps is None:
            if len(self._maps) >= 8:  # a source that keeps changing size: keep it bounded
                self._maps.clear()
            maps = self._maps[(w, h)] = remap_maps(w, h, *self.size, self.convention)
        return cv2.remap(
            img, maps[0], maps[1], cv2.INTER_LINEAR, dst=dst,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )  # fmt: skip


__all__ = [
    "WarpResizer",
    "remap_maps",
    "CONVENTIONS",
    "WARP_CONVENTIONS",
    "bilinear_weight_table",
    "warp_positions",
    "warp_tables",
    "warp_resize_u8",
]
