"""Edge-aware upsampling of a low-resolution mask, guided by the full-resolution frame.

The fast guided filter (He & Sun, "Fast Guided Filter", 2015) in its joint-upsampling
form: the mask is modelled, in small windows at mask resolution, as a linear function of
the frame's colour, and that local model is evaluated with the full-resolution colour. The
mask's edge then follows the edge in the picture (hair against sky, a shoulder against a
wall) instead of the bilinear staircase of the model's grid, and where the picture is flat
it reduces to a smoothed upsample. OpenCV's box filters suffice (no opencv-contrib).

For a mask ``p`` (h x w, float32 in [0, 1]) and a BGR uint8 frame (H x W):

1. **Guide at mask resolution.** ``I`` (h x w x 3, in [0, 1]) is the exact mean of the
   frame over each mask pixel's footprint: columns ``floor(j*W/w) .. floor((j+1)*W/w) - 1``
   (at least one), rows likewise; integer sums (``cv2.integral``) divided by ``255 * count``.
2. **Local linear model**, in float64, with normalised ``(2r+1)^2`` box means ``mean(.)``
   (border replicate): ``Sigma = cov(I, I) + eps * Id`` (3 x 3), ``c = cov(I, p)``,
   ``a = Sigma^-1 c``, ``b = mean(p) - a . mean(I)``; then ``A = mean(a)``, ``B = mean(b)``.
3. **Evaluate at frame size.** ``A / 255`` and ``B`` are cast to float32 and enlarged with
   ``cv2.resize(INTER_LINEAR)`` (half-pixel centres, as the bilinear path), and
   ``q = ((B + A0*f0) + A1*f1) + A2*f2`` with ``f`` the frame's B, G, R values (0..255),
   clipped to [0, 1].

``radius`` (r, in mask pixels) sets how far the local model reaches, ``eps`` how strongly
it prefers a flat mask (larger: closer to a box-smoothed bilinear upsample). The GPU
kernels (``app/gpu/kernels/guided.cu``, :mod:`segcam.gpu.guided`) repeat this arithmetic.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import cv2
import numpy as np

from segcam.errors import PipelineError

DEFAULT_RADIUS = 2
DEFAULT_EPS = 1e-3
MAX_RADIUS = 8


def footprints(src: int, dst: int) -> Tuple[np.ndarray, np.ndarray]:
    """First and one-past-last source index of each destination pixel's footprint."""
    d = np.arange(dst, dtype=np.int64)
    lo = np.minimum((d * src) // dst, src - 1)
    hi = np.maximum(((d + 1) * src) // dst, lo + 1)
    return lo, np.minimum(hi, src)


def guide_tables(w: int, h: int, lw: int, lh: int) -> np.ndarray:
    """int32 [lw + lh, 2]: footprint (lo, hi) of each mask column, then of each row."""
    x = np.stack(footprints(w, lw), axis=1)
    y = np.stack(footprints(h, lh), axis=1)
    return np.ascontiguousarray(np.concatenate([x, y]).astype(np.int32))


def low_res_guide(frame: np.ndarray, lw: int, lh: int) -> np.ndarray:
    """Step 1: the frame's mean over each mask pixel's footprint, float32 in [0, 1]."""
    h, w = frame.shape[:2]
    tab = guide_tables(w, h, lw, lh)
    x0, x1 = tab[:lw, 0], tab[:lw, 1]
    y0, y1 = tab[lw:, 0], tab[lw:, 1]
    ii = cv2.integral(frame)  # int32 (h+1, w+1, 3) for uint8 frames up to 8.4 Mpx
    if frame.size > (1 << 31) // 255:
        ii = cv2.integral(frame, sdepth=cv2.CV_64F)
    r0, r1 = ii.take(y0, axis=0), ii.take(y1, axis=0)
    s = (r1.take(x1, axis=1) - r0.take(x1, axis=1)) - (r1.take(x0, axis=1) - r0.take(x0, axis=1))
    count = ((y1 - y0)[:, None] * (x1 - x0)[None, :]).astype(np.float32) * np.float32(255.0)
    return (s.astype(np.float32) / count[:, :, None]).astype(np.float32)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    k = 2 * r + 1
    return cv2.boxFilter(x, cv2.CV_64F, (k, k), normalize=True, borderType=cv2.BORDER_REPLICATE)


def coefficients(
    mask: np.ndarray, guide: np.ndarray, radius: int, eps: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Step 2: ``A`` (h x w x 3) and ``B`` (h x w), float64, of the local linear model."""
    p = mask.astype(np.float64)
    g = [np.ascontiguousarray(guide[:, :, c], dtype=np.float64) for c in range(3)]
    mi = [_box(g[c], radius) for c in range(3)]
    mp = _box(p, radius)
    cov = [_box(g[c] * p, radius) - mi[c] * mp for c in range(3)]
    s = {}
    for i in range(3):
        for j in range(i, 3):
            s[i, j] = _box(g[i] * g[j], radius) - mi[i] * mi[j]
    a00, a01, a02 = s[0, 0] + eps, s[0, 1], s[0, 2]
    a11, a12, a22 = s[1, 1] + eps, s[1, 2], s[2, 2] + eps
    # Inverse of the symmetric 3x3 matrix by cofactors (positive definite: eps > 0).
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    det = a00 * c00 + a01 * c01 + a02 * c02
    a0 = (c00 * cov[0] + c01 * cov[1] + c02 * cov[2]) / det
    a1 = (c01 * cov[0] + c11 * cov[1] + c12 * cov[2]) / det
    a2 = (c02 * cov[0] + c12 * cov[1] + c22 * cov[2]) / det
    b = mp - a0 * mi[0] - a1 * mi[1] - a2 * mi[2]
    coef_a = np.stack([_box(a0, radius), _box(a1, radius), _box(a2, radius)], axis=2)
    return coef_a, _box(b, radius)


class GuidedUpsampler:
    """Steps 1-3 for a stream of frames; frame-size buffers are allocated once per size."""

    def __init__(self, radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> None:
        if not 1 <= radius <= MAX_RADIUS:
            raise PipelineError(f"guided radius must be 1..{MAX_RADIUS}, got {radius}")
        if not eps > 0.0:
            raise PipelineError(f"guided eps must be positive, got {eps}")
        self.radius = int(radius)
        self.eps = float(eps)
        self._size: Tuple[int, int] = (0, 0)
        self._planes: List[np.ndarray] = []

    def low_res(self, mask: np.ndarray, frame: np.ndarray) -> np.ndarray:
        """float32 4 x h x w: ``A / 255`` (weights of B, G, R) and ``B``, ready to enlarge."""
        lh, lw = mask.shape
        guide = low_res_guide(frame, lw, lh)
        coef_a, coef_b = coefficients(mask, guide, self.radius, self.eps)
        ab = np.empty((4, lh, lw), np.float32)
        for c in range(3):
            ab[c] = coef_a[:, :, c] / 255.0
        ab[3] = coef_b
        return ab

    def __call__(
        self, mask: np.ndarray, frame: np.ndarray, out: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """Upsample ``mask`` (h x w float32) to ``frame``'s size, guided by ``frame``."""
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise PipelineError(
                f"guided upsampling needs an HxWx3 uint8 BGR frame, got {frame.dtype} {frame.shape}"
            )
        mask = np.asarray(mask, np.float32)
        if mask.ndim != 2:
            raise PipelineError(f"guided upsampling needs an HxW mask, got shape {mask.shape}")
        h, w = frame.shape[:2]
        if out is None:
            out = np.empty((h, w), np.float32)
        ab = self.low_res(mask, frame)
        if self._size != (h, w):
            self._planes = [np.empty((h, w), np.float32) for _ in range(2)]
            self._size = (h, w)
        up, fc = self._planes
        # One plane at a time: contiguous single-channel passes are OpenCV's fastest.
        cv2.resize(ab[3], (w, h), dst=out, interpolation=cv2.INTER_LINEAR)
        for c in range(3):
            cv2.resize(ab[c], (w, h), dst=up, interpolation=cv2.INTER_LINEAR)
            np.copyto(fc, frame[:, :, c], casting="unsafe")
            cv2.accumulateProduct(fc, up, out)
        return np.clip(out, 0.0, 1.0, out=out)


def guided_upsample(
    mask: np.ndarray,
    frame: np.ndarray,
    radius: int = DEFAULT_RADIUS,
    eps: float = DEFAULT_EPS,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """One-shot :class:`GuidedUpsampler` (see the module doc)."""
    return GuidedUpsampler(radius, eps)(mask, frame, out=out)


__all__ = [
    "GuidedUpsampler",
    "guided_upsample",
    "guide_tables",
    "low_res_guide",
    "coefficients",
    "footprints",
]
