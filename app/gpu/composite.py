"""GPU mask refinement and compositing (``kernels/composite.cu``), matching the CPU path.

:class:`GpuCompositor` keeps the temporal-smoothing state on the GPU and produces, per
frame, the composed BGR frame and the float32 mask at frame size, on one stream:

1. ``smooth_state``: model output (host-uploaded probability, or a device output of a
   one-channel model) -> probability -> uncertainty-weighted smoothing (app/refine.py 1).
2. Soft masks (the default), one kernel per resolution step: ``prep_step`` runs the
   horizontal halves of the float bilinear upsample and the feather once per model row;
   for ``blur`` backgrounds ``prep_blur`` does that and, in the same launch, the blurred
   background at the reduced size app/compose.py uses (its shrink: exact 2x2 INTER_AREA
   halvings; then the fixed-point Gaussian in OpenCV's integer arithmetic) plus the
   horizontal half of its uint8 enlargement. ``composite_rows`` then does the vertical
   halves per pixel (weights folded on the host: :func:`vertical_tables`), clip and snap
   (values within 1/512 of 0 or 1 become 0 or 1, segcam.refine.snap), and the blend
   ``floor(fg*m + bg*(1-m) + 0.5)``.
3. Hard thresholds (not linear) and geometries with too many model rows per output row:
   the blurred background (``blur_small_u8``, or ``area_down_u8`` + ``gauss_rows_u8`` +
   ``gauss_cols_u8`` for very strong blurs), then ``composite_fused``: upsample +
   threshold + feather (r <= 6, shared memory) + clip and snap + blend, the background
   enlarged inside it.

All sample tables are computed here with OpenCV's formulas (see preprocess.py), so the
kernels repeat OpenCV's arithmetic instead of approximating it. Settings the kernels do
not cover are refined on the CPU and only blended here (feather > 6: reduced-size
feather; ``min_blob_area`` > 0: connected components), and the ``overlay`` visualisation
is drawn on the CPU; :attr:`GpuCompositor.fallbacks` counts such frames.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from segcam.gpu.memory import DeviceBuffer, PinnedBuffer, Stream
from segcam.gpu.nvrtc import Module
from segcam.gpu.preprocess import linear_positions, resize_tables

log = logging.getLogger("segcam.gpu")

BLOCK = (32, 8, 1)
TILE = (128, 8)  # pixels per composite block (4 per thread along x)
BLUR_RMAX = 16  # Gaussian radius blur_small_u8 holds in shared memory
RMAX = 6  # feather radius handled in the fused kernel (segcam.refine.FULL_RES_FEATHER_MAX)
BG_COLOR, BG_IMAGE, BG_SMALL, BG_NONE = 0, 1, 2, 3
MR_T = 256  # mask-row blocks (prep_step, prep_blur): output columns per block
RPB = 8  # model rows per mask-row block
BLUR_TILE = (32, 8)  # blur_small_u8's block: small pixels per tile
NW = 8  # model rows one output row may combine in composite_rows (kernels/composite.cu)


# ----------------------------------------------------------------------------- tables


def float_linear_coeffs(
    src: int, dst: int, clamp: bool
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cv2.resize INTER_LINEAR coefficients for float images: (i0, i1, w0, w1), float32.

    As for uint8 (see :func:`segcam.gpu.preprocess.linear_coeffs`) but the weights stay
    float: ``w0 = 1 - fx``, ``w1 = fx``. The position is kept in double precision as
    OpenCV 5 does (OpenCV 4 rounds it to float first: up to ~1e-5 apart on a mask).
    """
    s, f = linear_positions(src, dst, clamp, np.float64)
    w0 = (1.0 - f).astype(np.float32)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1), w0, f.astype(np.float32)


def mask_tables(lw: int, lh: int, w: int, h: int) -> np.ndarray:
    """int32 [w + h, 4] rows (i0, i1, w0 bits, w1 bits) for the float mask upsample."""
    rows = []
    for src, dst, clamp in ((lw, w, True), (lh, h, False)):
        i0, i1, w0, w1 = float_linear_coeffs(src, dst, clamp)
        tab = np.empty((dst, 4), dtype=np.int32)
        tab[:, 0] = i0
        tab[:, 1] = i1
        tab[:, 2] = w0.astype(np.float32).view(np.int32)
        tab[:, 3] = w1.astype(np.float32).view(np.int32)
        rows.append(tab)
    return np.ascontiguousarray(np.concatenate(rows))


def emulate_upsample_f32(low: np.ndarray, w: int, h: int) -> np.ndarray:
    """The kernel's float bilinear upsample in numpy (≈ cv2.resize INTER_LINEAR, float32)."""
    lh, lw = low.shape
    xi0, xi1, xw0, xw1 = float_linear_coeffs(lw, w, True)
    yi0, yi1, yw0, yw1 = float_linear_coeffs(lh, h, False)
    hor = low[:, xi0] * xw0[None, :] + low[:, xi1] * xw1[None, :]
    return (hor[yi0] * yw0[:, None] + hor[yi1] * yw1[:, None]).astype(np.float32)


def gaussian_fixed_weights(k: int) -> np.ndarray:
    """OpenCV's 8-fraction-bit Gaussian kernel for uint8 (sigma from ksize, error diffusion).

    Outer taps are rounded with the rounding error carried inward; the centre takes what
    is left so the taps sum to exactly 256.
    """
    g = cv2.getGaussianKernel(k, 0, ktype=cv2.CV_64F).ravel()
    out = np.zeros(k, dtype=np.int32)
    err = 0.0
    total = 0
    for i in range(k // 2):
        adj = g[i] * 256.0 + err
        v = int(np.rint(adj))
        err = adj - v
        out[i] = out[k - 1 - i] = v
        total += v
    out[k // 2] = 256 - 2 * total
    return out


def feather_weights(radius: int) -> np.ndarray:
    """Float32 taps of segcam.refine's feather: Gaussian, ksize 2r+1, sigma r/2."""
    return cv2.getGaussianKernel(2 * radius + 1, radius / 2.0, ktype=cv2.CV_32F).ravel()


def vertical_tables(lh: int, h: int, radius: int) -> Optional[np.ndarray]:
    """int32 [h, 12] rows for composite_rows: base model row, count n, NW float weights.

    Output row y's soft mask is ``sum_k w[k] * hf[base + k]``: the feather's vertical taps
    (BORDER_REPLICATE) applied to the vertical upsample weights, summed per model row in
    float64. The arithmetic is the CPU's up to float rounding order (both steps are linear).
    None when some row would need more than NW model rows (model output far larger than
    the frame): the caller then uses the shared-memory kernel.
    """
    i0, i1, w0, w1 = float_linear_coeffs(lh, h, False)
    taps = feather_weights(radius).astype(np.float64) if radius > 0 else np.ones(1)
    ys = np.arange(h)
    gy = np.clip(ys[:, None] - radius + np.arange(taps.size)[None, :], 0, h - 1)
    base = i0[gy[:, 0]]
    n = i1[gy[:, -1]] - base + 1
    if int(n.max()) > NW:
        return None
    wts = np.zeros((h, NW), np.float64)
    rows = np.repeat(ys, taps.size)
    np.add.at(wts, (rows, (i0[gy] - base[:, None]).ravel()), (taps * w0[gy]).ravel())
    np.add.at(wts, (rows, (i1[gy] - base[:, None]).ravel()), (taps * w1[gy]).ravel())
    out = np.zeros((h, 12), np.int32)
    out[:, 0] = base
    out[:, 1] = n
    out[:, 2 : 2 + NW] = wts.astype(np.float32).view(np.int32)
    return out


def owned_columns(sw: int, sh: int, w: int, h: int) -> np.ndarray:
    """int32 [tiles + 1]: blur_small_u8 tile t enlarges output columns [own[t], own[t+1]),
    those whose left sample (OpenCV's uint8 bilinear, ``resize_tables``) lies in it."""
    i0 = resize_tables(sw, sh, w, h)[:w, 0]
    tiles = (sw + BLUR_TILE[0] - 1) // BLUR_TILE[0]
    own = np.searchsorted(i0, np.arange(tiles + 1) * BLUR_TILE[0], side="left")
    own[-1] = w
    return own.astype(np.int32)


def emulate_soft_mask(low: np.ndarray, w: int, h: int, radius: int) -> np.ndarray:
    """rows_step + composite_rows' mask in numpy (float64): horizontal half, then vertical,
    clip and snap (segcam.refine.snap)."""
    from segcam.refine import snap

    lh, lw = low.shape
    xi0, xi1, xw0, xw1 = float_linear_coeffs(lw, w, True)
    hu = low[:, xi0].astype(np.float64) * xw0 + low[:, xi1].astype(np.float64) * xw1
    if radius > 0:
        taps = feather_weights(radius).astype(np.float64)
        gx = np.clip(np.arange(w)[:, None] - radius + np.arange(taps.size)[None, :], 0, w - 1)
        hu = (hu[:, gx] * taps).sum(axis=2)
    vt = vertical_tables(lh, h, radius)
    assert vt is not None
    wts = vt[:, 2 : 2 + NW].view(np.float32).astype(np.float64)
    out = np.zeros((h, w))
    for k in range(NW):
        rows = np.minimum(vt[:, 0] + k, lh - 1)
        out += wts[:, k, None] * hu[rows]
    return snap(np.clip(out, 0.0, 1.0).astype(np.float32))


def blur_plan(strength: int) -> Tuple[int, int]:
    """(downscale factor, kernel size) of segcam.compose's blur background."""
    from segcam.compose import blur_plan as cpu_blur_plan

    return cpu_blur_plan(int(strength))


def emulate_gauss_u8(img: np.ndarray, k: int) -> np.ndarray:
    """The kernels' fixed-point Gaussian (REFLECT_101) in numpy (= cv2.GaussianBlur, uint8)."""
    wts = gaussian_fixed_weights(k).astype(np.int64)
    r = k // 2
    h, w = img.shape[:2]
    p = np.pad(img.astype(np.int64), ((r, r), (r, r), (0, 0)), mode="reflect")
    rows = sum(wts[i] * p[:, i : i + w] for i in range(k))
    cols = sum(wts[j] * rows[j : j + h] for j in range(k))
    return np.clip((cols + (1 << 15)) >> 16, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- compositor


def _c_ptr(value: int) -> ctypes.c_uint64:
    return ctypes.c_uint64(value)


class _SizeState:
    """Device buffers and tables that depend on the frame size."""

    def __init__(self, w: int, h: int) -> None:
        self.size = (w, h)
        self.buffers: Dict[str, Any] = {}

    def buffer(self, name: str, nbytes: int, pinned: bool = False) -> Any:
        buf = self.buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.close()
            buf = PinnedBuffer(nbytes) if pinned else DeviceBuffer(nbytes)
            self.buffers[name] = buf
        return buf

    def close(self) -> None:
        for buf in self.buffers.values():
            buf.close()
        self.buffers.clear()


class GpuCompositor:
    """Refine + composite on the GPU for one pipeline (one stream, not thread-safe)."""

    def __init__(self, module: Module, refine_cfg: Any, background_cfg: Any) -> None:
        from segcam.compose import Compositor

        self.refine_cfg = refine_cfg
        # The CPU compositor owns background settings: knob changes, image/video loading,
        # cover/fit scaling. Its arrays are uploaded; its blend is not used.
        self.cpu = Compositor(background_cfg)
        self._k_smooth = module.kernel("smooth_state")
        self._k_area = module.kernel("area_down_u8")
        self._k_rows = module.kernel("gauss_rows_u8")
        self._k_cols = module.kernel("gauss_cols_u8")
        self._k_comp = module.kernel("composite_fused")
        self._k_blur = module.kernel("blur_small_u8")
        self._k_prep = module.kernel("prep_step")
        self._k_prep_blur = module.kernel("prep_blur")
        self._k_crows = module.kernel("composite_rows")
        # Soft masks take the row-step kernels (prep_step + composite_rows); False keeps
        # every frame on composite_fused (the benchmark compares the two).
        self.row_path = True
        self._state: Optional[DeviceBuffer] = None
        self._state_shape: Optional[Tuple[int, int]] = None
        self._have_state = False
        self._zeros: Optional[DeviceBuffer] = None
        self._staging: Optional[PinnedBuffer] = None
        self._prob_dev: Optional[DeviceBuffer] = None
        self._size: Optional[_SizeState] = None
        self._consts: Dict[Tuple[Any, ...], DeviceBuffer] = {}
        self._vtabs: Dict[Tuple[int, int, int], Optional[DeviceBuffer]] = {}
        self._zeros_pending = False
        self._uploaded_bg: Any = None
        self._cpu_refiner: Any = None
        self._shrink_bufs: Dict[str, np.ndarray] = {}
        self.fallbacks = 0
        # refine.upsample: guided -> a segcam.gpu.guided.GpuGuided (set by the GPU stages):
        # it writes the refined frame-size mask, which is then blended as a given mask.
        self.guided: Any = None

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        """Forget the smoothing history."""
        self._have_state = False
        if self._cpu_refiner is not None:
            self._cpu_refiner.reset()

    @property
    def has_state(self) -> bool:
        """True once a probability map has been fed (the first frame's, or zeros)."""
        return self._state is not None and self._have_state

    def _ensure_state(self, shape: Tuple[int, int]) -> None:
        if self._state_shape == shape:
            return
        for buf in (self._state, self._zeros, self._prob_dev):
            if buf is not None:
                buf.close()
        if self._staging is not None:
            self._staging.close()
        n = shape[0] * shape[1] * 4
        self._state = DeviceBuffer(n)
        self._zeros = DeviceBuffer(n)
        self._prob_dev = DeviceBuffer(n)
        self._staging = PinnedBuffer(n)
        self._state_shape = shape
        self._have_state = False
        self._zeros_pending = True

    def _smooth(self, raw_ptr: int, fp16: bool, kind: int, smoothing: float, stream: Stream):
        assert self._state is not None and self._state_shape is not None
        n = self._state_shape[0] * self._state_shape[1]
        first = (not self._have_state) or smoothing <= 0.0
        args = (
            _c_ptr(raw_ptr),
            ctypes.c_int(int(fp16)),
            ctypes.c_int(kind),
            _c_ptr(self._state.ptr),
            ctypes.c_int(n),
            ctypes.c_int(int(first)),
            ctypes.c_float(smoothing),
        )
        self._k_smooth.launch(((n + 255) // 256, 1, 1), (256, 1, 1), stream, args)
        self._have_state = True

    def update_from_host(self, prob: np.ndarray, smoothing: float, stream: Stream) -> None:
        """Feed a new probability map (HxW float32, host) into the smoothing state."""
        prob = np.asarray(prob, dtype=np.float32)
        self._ensure_state(prob.shape)
        assert self._staging is not None and self._prob_dev is not None
        np.copyto(self._staging.array(prob.shape, np.float32), prob)
        stream.copy_htod(self._prob_dev.ptr, self._staging.host_ptr, prob.nbytes)
        self._smooth(self._prob_dev.ptr, False, 0, smoothing, stream)

    def update_from_device(
        self,
        ptr: int,
        shape: Tuple[int, int],
        fp16: bool,
        logits: bool,
        smoothing: float,
        stream: Stream,
    ) -> None:
        """Feed a one-channel model output that is already on the device (TensorRT)."""
        self._ensure_state(shape)
        self._smooth(ptr, fp16, 1 if logits else 0, smoothing, stream)

    def state_host(self, stream: Stream) -> np.ndarray:
        """Download the smoothing state (model resolution) — for tests and the CPU fallback."""
        assert self._state is not None and self._state_shape is not None
        out = np.empty(self._state_shape, np.float32)
        stream.synchronize()
        return self._state.download(out)

    # ------------------------------------------------------------------ background

    def _const(self, key: Tuple[Any, ...], make: Callable[[], np.ndarray]) -> DeviceBuffer:
        """A small constant table on the device, built and uploaded on first use only."""
        buf = self._consts.get(key)
        if buf is None:
            values = np.ascontiguousarray(make())
            buf = DeviceBuffer(values.nbytes)
            buf.upload(values)
            self._consts[key] = buf
        return buf

    def _size_state(self, w: int, h: int) -> _SizeState:
        if self._size is None or self._size.size != (w, h):
            if self._size is not None:
                self._size.close()
            self._size = _SizeState(w, h)
            self._uploaded_bg = None
        return self._size

    def _blur_background(
        self, frame_ptr: int, pitch: int, frame_host: np.ndarray, st: _SizeState, stream: Stream
    ) -> Tuple[int, int, int, int, int]:
        """Enqueue the blurred background; returns (mode, ptr, pitch, xtab ptr, ytab ptr)."""
        w, h = st.size
        d, k = blur_plan(self.cpu.cfg.blur)
        sw, sh = (w + d - 1) // d, (h + d - 1) // d
        weights = self._const(("gauss", k), lambda: gaussian_fixed_weights(k))
        blurred = st.buffer("blurred", sw * sh * 3)
        if d == 1 or (w % d == 0 and h % d == 0):
            src_ptr, src_pitch, factor = frame_ptr, pitch, d
        else:
            src_ptr, src_pitch, factor = (
                self._upload_small(frame_host, st, sw, sh, stream),
                sw * 3,
                1,
            )
        block = (32, 8, 1)
        grid = ((sw + 31) // 32, (sh + 7) // 8, 1)
        if k // 2 <= BLUR_RMAX:
            self._k_blur.launch(
                grid,
                block,
                stream,
                (
                    _c_ptr(src_ptr),
                    ctypes.c_int(src_pitch),
                    ctypes.c_int(factor),
                    _c_ptr(blurred.ptr),
                    ctypes.c_int(sw),
                    ctypes.c_int(sh),
                    _c_ptr(weights.ptr),
                    ctypes.c_int(k),
                    _c_ptr(0),
                    _c_ptr(0),
                    _c_ptr(0),
                    ctypes.c_int(0),
                ),
            )
        else:  # very strong blur: three passes through device memory
            small = st.buffer("small", sw * sh * 3)
            tmp = st.buffer("tmp16", sw * sh * 3 * 2)
            if factor == 1 and src_ptr != small.ptr:
                stream_copy_2d(stream, small.ptr, sw * 3, src_ptr, src_pitch, sw * 3, sh)
            elif factor > 1:
                self._k_area.launch(
                    grid,
                    block,
                    stream,
                    (
                        _c_ptr(src_ptr),
                        ctypes.c_int(src_pitch),
                        _c_ptr(small.ptr),
                        ctypes.c_int(sw),
                        ctypes.c_int(sh),
                        ctypes.c_int(factor),
                    ),
                )
            for kern, a, b in (
                (self._k_rows, small.ptr, tmp.ptr),
                (self._k_cols, tmp.ptr, blurred.ptr),
            ):
                kern.launch(
                    grid,
                    block,
                    stream,
                    (
                        _c_ptr(a),
                        _c_ptr(b),
                        ctypes.c_int(sw),
                        ctypes.c_int(sh),
                        _c_ptr(weights.ptr),
                        ctypes.c_int(k),
                    ),
                )
        if d == 1:
            return BG_IMAGE, blurred.ptr, w * 3, 0, 0
        tabs = self._const(("bgtab", sw, sh, w, h), lambda: resize_tables(sw, sh, w, h))
        return BG_SMALL, blurred.ptr, sw * 3, tabs.ptr, tabs.ptr + 16 * w

    def _upload_small(
        self, frame_host: np.ndarray, st: _SizeState, sw: int, sh: int, stream: Stream
    ) -> int:
        """Sizes not divisible by the factor (OpenCV's fractional INTER_AREA is not ported):
        shrink on the CPU as segcam.compose does (the frame is on the host anyway) and
        upload the small image; returns its device pointer."""
        from segcam.compose import shrink

        d = blur_plan(self.cpu.cfg.blur)[0]
        small = st.buffer("small", sw * sh * 3)
        host = st.buffer("small_host", sw * sh * 3, pinned=True)
        np.copyto(host.array((sh, sw, 3)), shrink(frame_host, d, self._shrink_bufs))
        stream.copy_htod(small.ptr, host.host_ptr, sw * sh * 3)
        return small.ptr

    def _host_background(self, frame_host: np.ndarray, st: _SizeState, stream: Stream) -> int:
        bg = self.cpu.background(frame_host)
        w, h = st.size
        buf = st.buffer("bg", w * h * 3)
        if bg is not self._uploaded_bg or self.cpu.mode == "video":
            buf.upload(np.ascontiguousarray(bg), stream)
            stream.synchronize()  # the host array may change or vanish after this call
            self._uploaded_bg = bg if self.cpu.mode != "video" else None
        return buf.ptr

    # ------------------------------------------------------------------ compose

    def compose(
        self,
        frame_ptr: int,
        pitch: int,
        frame_host: np.ndarray,
        knobs: Any,
        stream: Stream,
        out_ptr: int,
        mask_ptr: int,
        blank: bool = False,
    ) -> bool:
        """Enqueue refine + blend of one frame into ``out_ptr`` (BGR) and ``mask_ptr`` (float).

        ``frame_host`` is the same frame on the host (for CPU-side fallbacks). ``blank``
        composes with an all-background mask (paused, pause_mode background). Returns
        True when the caller must draw the overlay visualisation on the CPU instead.
        """
        from segcam.refine import MaskRefiner, params_from

        self.cpu.follow_knobs(knobs)  # the CPU compositor owns the background settings
        p = params_from(self.refine_cfg, knobs)
        h, w = frame_host.shape[:2]
        st = self._size_state(w, h)
        if self._state is None:
            raise RuntimeError("compose before the first probability map")
        lh, lw = self._state_shape  # type: ignore[misc]
        if self._zeros_pending:
            assert self._zeros is not None
            stream.memset(self._zeros.ptr, 0, self._zeros.nbytes)
            self._zeros_pending = False

        mask_in = 0
        low_ptr = self._state.ptr
        if blank:
            low_ptr = self._zeros.ptr  # type: ignore[union-attr]
        elif (
            p.feather > RMAX
            or p.min_blob_area > 0.0
            or (self.guided is None and self.refine_cfg.upsample == "guided")
        ):
            # Not in the fused kernel (nor, for guided upsampling, in a GpuGuided given to
            # this compositor): refine on the CPU from the same state, blend here.
            self.fallbacks += 1
            if self._cpu_refiner is None:
                self._cpu_refiner = MaskRefiner(self.refine_cfg)
            state = self.state_host(stream)
            self._cpu_refiner.load_state(state)  # continue from the GPU's smoothing state
            host = st.buffer("mask_host", w * h * 4, pinned=True)
            self._cpu_refiner.refine(
                None, (h, w), knobs, out=host.array((h, w), np.float32), guide=frame_host
            )
            dev = st.buffer("mask_in", w * h * 4)
            stream.copy_htod(dev.ptr, host.host_ptr, w * h * 4)
            mask_in = dev.ptr
        elif self.guided is not None:
            dev = st.buffer("mask_in", w * h * 4)
            mask_in = self.guided.launch(
                low_ptr, lw, lh, frame_ptr, pitch, w, h, stream,
                soft=p.soft, threshold=p.threshold, feather=p.feather, out_ptr=dev.ptr,
            )  # fmt: skip
        tabs = self._const(("masktab", lw, lh, w, h), lambda: mask_tables(lw, lh, w, h))
        radius = p.feather if (p.feather <= RMAX and mask_in == 0 and not blank) else 0
        gauss = self._const(("feather", radius), lambda: feather_weights(max(radius, 1)))

        mode = self.cpu.mode
        color = [float(c) for c in self.cpu.cfg.color]
        bg_ptr, bg_pitch, bx, by = 0, 0, 0, 0
        vtab = None  # the row-step kernels' table when they cover this frame
        if (
            self.row_path
            and (p.soft or blank)
            and mask_in == 0
            and (mode != "blur" or blur_plan(self.cpu.cfg.blur)[1] // 2 <= BLUR_RMAX)
        ):
            vtab = self._vertical_table(lh, h, radius)
        if mode == "overlay":
            bg_mode = BG_NONE
        elif mode == "none":
            bg_mode = BG_NONE
        elif mode == "color":
            bg_mode = BG_COLOR
        elif mode == "blur":
            bg_mode = BG_SMALL  # the row path blurs in _compose_rows
            if vtab is None:
                bg_mode, bg_ptr, bg_pitch, bx, by = self._blur_background(
                    frame_ptr, pitch, frame_host, st, stream
                )
        else:  # image, video
            bg_mode, bg_ptr, bg_pitch = (
                BG_IMAGE,
                self._host_background(frame_host, st, stream),
                w * 3,
            )
        if vtab is not None:
            self._compose_rows(
                frame_ptr,
                pitch,
                frame_host,
                st,
                low_ptr,
                lw,
                lh,
                tabs.ptr,
                radius,
                gauss.ptr,
                vtab,
                (bg_mode, bg_ptr, bg_pitch, bx, by),
                color,
                out_ptr,
                mask_ptr,
                stream,
            )
            return mode == "overlay"
        args = (
            _c_ptr(frame_ptr),
            ctypes.c_int(pitch),
            ctypes.c_int(w),
            ctypes.c_int(h),
            _c_ptr(low_ptr),
            ctypes.c_int(lw),
            _c_ptr(mask_in),
            _c_ptr(tabs.ptr),
            _c_ptr(tabs.ptr + 16 * w),
            ctypes.c_int(1 if (p.soft or blank) else 0),
            ctypes.c_float(p.threshold),
            ctypes.c_int(radius),
            _c_ptr(gauss.ptr),
            ctypes.c_int(bg_mode),
            _c_ptr(bg_ptr),
            ctypes.c_int(bg_pitch),
            _c_ptr(bx),
            _c_ptr(by),
            ctypes.c_float(color[0]),
            ctypes.c_float(color[1]),
            ctypes.c_float(color[2]),
            _c_ptr(out_ptr),
            ctypes.c_int(w * 3),
            _c_ptr(mask_ptr),
        )
        grid = ((w + TILE[0] - 1) // TILE[0], (h + TILE[1] - 1) // TILE[1], 1)
        self._k_comp.launch(grid, BLOCK, stream, args)
        return mode == "overlay"

    def _vertical_table(self, lh: int, h: int, radius: int) -> Optional[int]:
        """Device pointer of :func:`vertical_tables` for this geometry, or None if unfit."""
        key = (lh, h, radius)
        if key not in self._vtabs:
            table = vertical_tables(lh, h, radius)
            buf = None
            if table is not None:
                buf = DeviceBuffer(table.nbytes)
                buf.upload(table)
            self._vtabs[key] = buf
        buf = self._vtabs[key]
        return None if buf is None else buf.ptr

    def _compose_rows(
        self,
        frame_ptr: int,
        pitch: int,
        frame_host: np.ndarray,
        st: _SizeState,
        low_ptr: int,
        lw: int,
        lh: int,
        mxtab: int,
        radius: int,
        gauss: int,
        vtab: int,
        bg: Tuple[int, int, int, int, int],
        color: Any,
        out_ptr: int,
        mask_ptr: int,
        stream: Stream,
    ) -> None:
        """Soft mask: prep_step (prep_blur for blur backgrounds) + composite_rows."""
        w, h = st.size
        bg_mode, bg_ptr, bg_pitch, bx, by = bg
        row_pitch = (w + 3) & ~3  # elements: 16-byte aligned rows for vector loads
        hf = st.buffer("hf", lh * row_pitch * 4)
        mask_grid = ((w + MR_T - 1) // MR_T, (lh + RPB - 1) // RPB)
        mask_args = (
            _c_ptr(low_ptr),
            ctypes.c_int(lw),
            ctypes.c_int(lh),
            _c_ptr(mxtab),
            ctypes.c_int(w),
            ctypes.c_int(radius),
            _c_ptr(gauss),
            _c_ptr(hf.ptr),
            ctypes.c_int(row_pitch),
        )
        bgh_ptr = 0
        if bg_mode != BG_SMALL:
            self._k_prep.launch(mask_grid + (1,), BLOCK, stream, mask_args)
        else:  # blur tiles and mask rows in one launch
            d, k = blur_plan(self.cpu.cfg.blur)
            sw, sh = (w + d - 1) // d, (h + d - 1) // d
            blurred = st.buffer("blurred", sw * sh * 3)
            own = 0
            if d == 1:
                src, src_pitch, factor = frame_ptr, pitch, 1
                bg_mode, bg_ptr, bg_pitch = BG_IMAGE, blurred.ptr, w * 3
            else:
                if w % d == 0 and h % d == 0:
                    src, src_pitch, factor = frame_ptr, pitch, d
                else:
                    small = self._upload_small(frame_host, st, sw, sh, stream)
                    src, src_pitch, factor = small, sw * 3, 1
                bgh_ptr = st.buffer("bgh", sh * 3 * row_pitch * 2).ptr
                tabs = self._const(("bgtab", sw, sh, w, h), lambda: resize_tables(sw, sh, w, h))
                bx, by = tabs.ptr, tabs.ptr + 16 * w
                own = self._const(("own", sw, sh, w, h), lambda: owned_columns(sw, sh, w, h)).ptr
            weights = self._const(("gauss", k), lambda: gaussian_fixed_weights(k))
            blur_grid = (
                (sw + BLUR_TILE[0] - 1) // BLUR_TILE[0],
                (sh + BLUR_TILE[1] - 1) // BLUR_TILE[1],
            )
            grid = (max(mask_grid[0], blur_grid[0]), blur_grid[1] + mask_grid[1], 1)
            self._k_prep_blur.launch(
                grid,
                BLOCK,
                stream,
                mask_args
                + (
                    ctypes.c_int(mask_grid[0]),
                    ctypes.c_int(blur_grid[0]),
                    ctypes.c_int(blur_grid[1]),
                    _c_ptr(src),
                    ctypes.c_int(src_pitch),
                    ctypes.c_int(factor),
                    _c_ptr(blurred.ptr),
                    ctypes.c_int(sw),
                    ctypes.c_int(sh),
                    _c_ptr(weights.ptr),
                    ctypes.c_int(k),
                    _c_ptr(own),
                    _c_ptr(bx),
                    _c_ptr(bgh_ptr),
                ),
            )
        args = (
            _c_ptr(frame_ptr),
            ctypes.c_int(pitch),
            ctypes.c_int(w),
            ctypes.c_int(h),
            _c_ptr(hf.ptr),
            ctypes.c_int(row_pitch),
            _c_ptr(vtab),
            ctypes.c_int(bg_mode),
            _c_ptr(bg_ptr if bg_mode == BG_IMAGE else 0),
            ctypes.c_int(bg_pitch),
            _c_ptr(bgh_ptr),
            _c_ptr(by),
            ctypes.c_float(color[0]),
            ctypes.c_float(color[1]),
            ctypes.c_float(color[2]),
            _c_ptr(out_ptr),
            ctypes.c_int(w * 3),
            _c_ptr(mask_ptr),
        )
        grid = ((w + TILE[0] - 1) // TILE[0], (h + TILE[1] - 1) // TILE[1], 1)
        self._k_crows.launch(grid, BLOCK, stream, args)

    def close(self) -> None:
        """Free every device and pinned buffer."""
        if self.guided is not None:
            self.guided.close()
        for buf in (self._state, self._zeros, self._prob_dev, self._staging):
            if buf is not None:
                buf.close()
        self._state = self._zeros = self._prob_dev = None
        self._staging = None
        self._state_shape = None
        if self._size is not None:
            self._size.close()
            self._size = None
        for buf in self._consts.values():
            buf.close()
        self._consts.clear()
        for vbuf in self._vtabs.values():
            if vbuf is not None:
                vbuf.close()
        self._vtabs.clear()
        self.cpu.close()


def stream_copy_2d(
    stream: Stream, dst: int, dst_pitch: int, src: int, src_pitch: int, width: int, rows: int
) -> None:
    """Pitched device-to-device copy, row by row (rare path: padded frames only)."""
    for r in range(rows):
        stream.copy_dtod(dst + r * dst_pitch, src + r * src_pitch, width)


__all__ = [
    "GpuCompositor",
    "mask_tables",
    "emulate_upsample_f32",
    "gaussian_fixed_weights",
    "feather_weights",
    "emulate_gauss_u8",
    "vertical_tables",
    "owned_columns",
    "emulate_soft_mask",
]
