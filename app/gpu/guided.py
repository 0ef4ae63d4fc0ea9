"""GPU guided upsampling (``kernels/guided.cu``): the arithmetic of :mod:`segcam.guided`.

:class:`GpuGuided` turns the smoothed model-resolution mask on the device and the frame on
the device into the refined frame-size mask (guided upsample, threshold when hard,
feather up to :data:`~segcam.refine.FULL_RES_FEATHER_MAX`), on one stream. The footprint
sums of the low-resolution guide are integers and its division is correctly rounded, so the
guide equals the CPU's exactly; the local model runs in double precision like the CPU's; the
enlargement uses the same float tables as cv2.resize. The result matches the CPU within
float rounding (the tests hold it to 1e-4).
"""

from __future__ import annotations

import ctypes
from typing import Dict, Optional, Tuple

import numpy as np

from segcam.gpu.composite import feather_weights, mask_tables
from segcam.gpu.memory import DeviceBuffer, Stream
from segcam.gpu.nvrtc import Module
from segcam.guided import guide_tables
from segcam.refine import FULL_RES_FEATHER_MAX

BLOCK = (32, 8, 1)


def _grid(w: int, h: int) -> Tuple[int, int, int]:
    return ((w + BLOCK[0] - 1) // BLOCK[0], (h + BLOCK[1] - 1) // BLOCK[1], 1)


def _ptr(v: int) -> ctypes.c_uint64:
    return ctypes.c_uint64(v)


class GpuGuided:
    """Launches the guided-upsampling kernels; buffers are kept per geometry."""

    def __init__(self, module: Module, radius: int, eps: float) -> None:
        self.radius = int(radius)
        self.eps = float(eps)
        self._k_guide = module.kernel("guided_guide")
        self._k_coef = module.kernel("guided_coef")
        self._k_mean = module.kernel("guided_mean")
        self._k_apply = module.kernel("guided_apply")
        self._k_rows = module.kernel("gauss_rows_f32")
        self._k_cols = module.kernel("gauss_cols_f32")
        self._bufs: Dict[Tuple[object, ...], DeviceBuffer] = {}

    def _buf(self, key: Tuple[object, ...], nbytes: int) -> DeviceBuffer:
        buf = self._bufs.get(key)
        if buf is None:
            buf = self._bufs[key] = DeviceBuffer(nbytes)
        return buf

    def _table(self, key: Tuple[object, ...], make) -> DeviceBuffer:  # type: ignore[no-untyped-def]
        buf = self._bufs.get(key)
        if buf is None:
            arr = np.ascontiguousarray(make())
            buf = self._bufs[key] = DeviceBuffer(arr.nbytes)
            buf.upload(arr)
        return buf

    def launch(
        self,
        low_ptr: int,
        lw: int,
        lh: int,
        frame_ptr: int,
        pitch: int,
        w: int,
        h: int,
        stream: Stream,
        soft: bool = True,
        threshold: float = 0.5,
        feather: int = 0,
        out_ptr: Optional[int] = None,
    ) -> int:
        """Enqueue: mask (lw x lh float32) + frame (BGR uint8) -> refined mask; its pointer.

        ``feather`` must be at most FULL_RES_FEATHER_MAX (larger ones refine on the CPU).
        """
        if feather > FULL_RES_FEATHER_MAX:
            raise ValueError(f"feather {feather} > {FULL_RES_FEATHER_MAX} is not on the GPU")
        if len(self._bufs) > 32:  # geometry keeps changing: start over, stay bounded
            stream.synchronize()
            self.close()
        n = lw * lh
        gtab = self._table(("gtab", w, h, lw, lh), lambda: guide_tables(w, h, lw, lh))
        mtab = self._table(("mtab", lw, lh, w, h), lambda: mask_tables(lw, lh, w, h))
        guide = self._buf(("guide", lw, lh), 3 * n * 4)
        coef = self._buf(("coef", lw, lh), 4 * n * 8)
        ab = self._buf(("ab", lw, lh), 4 * n * 4)
        if out_ptr is None:
            out_ptr = self._buf(("out", w, h), w * h * 4).ptr
        low_grid = _grid(lw, lh)
        self._k_guide.launch(
            low_grid, BLOCK, stream,
            (_ptr(frame_ptr), ctypes.c_int(pitch), _ptr(gtab.ptr), ctypes.c_int(lw),
             ctypes.c_int(lh), _ptr(guide.ptr)),
        )  # fmt: skip
        self._k_coef.launch(
            low_grid, BLOCK, stream,
            (_ptr(guide.ptr), _ptr(low_ptr), ctypes.c_int(lw), ctypes.c_int(lh),
             ctypes.c_int(self.radius), ctypes.c_double(self.eps), _ptr(coef.ptr)),
        )  # fmt: skip
        self._k_mean.launch(
            low_grid, BLOCK, stream,
            (_ptr(coef.ptr), ctypes.c_int(lw), ctypes.c_int(lh), ctypes.c_int(self.radius),
             _ptr(ab.ptr)),
        )  # fmt: skip
        target = out_ptr if feather <= 0 else self._buf(("up", w, h), w * h * 4).ptr
        self._k_apply.launch(
            _grid(w, h), BLOCK, stream,
            (_ptr(ab.ptr), ctypes.c_int(lw), ctypes.c_int(lh), _ptr(mtab.ptr),
             _ptr(mtab.ptr + 16 * w), _ptr(frame_ptr), ctypes.c_int(pitch), ctypes.c_int(w),
             ctypes.c_int(h), ctypes.c_int(1 if soft else 0), ctypes.c_float(threshold),
             _ptr(target)),
        )  # fmt: skip
        if feather > 0:
            taps = self._table(("taps", feather), lambda: feather_weights(feather))
            tmp = self._buf(("tmp", w, h), w * h * 4)
            for kernel, src, dst in (
                (self._k_rows, target, tmp.ptr),
                (self._k_cols, tmp.ptr, out_ptr),
            ):
                kernel.launch(
                    _grid(w, h), BLOCK, stream,
                    (_ptr(src), ctypes.c_int(w), ctypes.c_int(h), _ptr(taps.ptr),
                     ctypes.c_int(feather), _ptr(dst)),
                )  # fmt: skip
        return out_ptr

    def close(self) -> None:
        """Free every buffer and table."""
        for buf in self._bufs.values():
            buf.close()
        self._bufs.clear()


__all__ = ["GpuGuided"]
