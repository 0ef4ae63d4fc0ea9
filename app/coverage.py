"""Where a refined mask is exactly background, exactly person, or in between.

The refined mask (app/refine.py) is a convex combination of model-resolution values: the
bilinear upsample, the feather and the clip never leave the range of the values they read.
So a frame pixel whose model-resolution contributors are all below :data:`PURE_LOW` ends
below :data:`SNAP` and is snapped to exactly 0 (background), one whose contributors are all
above :data:`PURE_HIGH` is snapped to exactly 1 (person). :func:`classify` finds these
regions from the model-resolution mask alone, in row bands of :data:`BAND` frame rows and
column runs, so refinement and compositing spend per-pixel work only on the ``MIX`` runs
(the edges; a few percent of a typical frame) and copy or fill the rest.

The classification is conservative: a ``MIX`` run may hold pure pixels, a ``BG`` or ``FG``
run never holds anything else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import cv2
import numpy as np

BG, FG, MIX = 0, 1, 2
# Mask values within this of 0 or 1 become exactly 0 or 1: 255 * SNAP < 0.5, so the blend
# floor(fg*m + bg*(1-m) + 0.5) is bg (fg) there whether or not the value is snapped.
SNAP = np.float32(1.0 / 512.0)
# Contributors strictly inside these bounds stay inside [0, SNAP) (or (1 - SNAP, 1]) after
# float rounding of the bilinear and Gaussian weights (which sum to 1 within 1e-6).
PURE_LOW = np.float32(SNAP * 0.999)
PURE_HIGH = np.float32(1.0 - SNAP * 0.999)
BAND = 64  # frame rows per band (taller: fewer runs to visit, a wider mixed share)
MIN_RUN = 32  # pure runs shorter than this (between others) are merged into MIX runs

Run = Tuple[int, int, int]  # x0, x1 (exclusive), kind


@dataclass(frozen=True)
class Coverage:
    """Column runs per row band of a frame-size mask (see the module docstring).

    ``runs[b]`` covers rows ``[b * band, min((b + 1) * band, height))`` with runs
    ``(x0, x1, kind)`` that tile ``[0, width)`` left to right.
    """

    shape: Tuple[int, int]
    band: int
    runs: Tuple[Tuple[Run, ...], ...]

    def rows(self, b: int) -> Tuple[int, int]:
        """First and last (exclusive) frame row of band ``b``."""
        y0 = b * self.band
        return y0, min(y0 + self.band, self.shape[0])

    def fraction(self, kind: int) -> float:
        """Share of the frame's pixels in runs of ``kind``."""
        total = 0
        for b, runs in enumerate(self.runs):
            y0, y1 = self.rows(b)
            total += (y1 - y0) * sum(x1 - x0 for x0, x1, k in runs if k == kind)
        return total / float(max(1, self.shape[0] * self.shape[1]))

    @staticmethod
    def uniform(shape: Tuple[int, int], kind: int, band: int = BAND) -> Coverage:
        """A coverage with every pixel of one kind (e.g. an all-background frame)."""
        h, w = shape
        nb = max(1, math.ceil(h / band))
        return Coverage((h, w), band, tuple(((0, w, kind),) for _ in range(nb)))


def linear_taps(src: int, dst: int) -> Tuple[np.ndarray, np.ndarray]:
    """The two source indices cv2.resize INTER_LINEAR reads for each destination index."""
    f = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    s = np.floor(f).astype(np.int64)
    return np.clip(s, 0, src - 1), np.clip(s + 1, 0, src - 1)


def _band_counts(flags: np.ndarray, r0: np.ndarray, r1: np.ndarray) -> np.ndarray:
    """Per band, the column prefix sums of set flags in rows ``r0..r1``: (nb, lw + 1)."""
    s = cv2.integral(flags.view(np.uint8))  # int32 summed-area table, (lh + 1, lw + 1)
    return s[r1 + 1] - s[r0]


def classify(
    low: np.ndarray,
    frame_hw: Tuple[int, int],
    soft: bool,
    threshold: float,
    support: int,
    band: int = BAND,
    min_run: int = MIN_RUN,
) -> Coverage:
    """The coverage of the mask refined from ``low`` (model resolution, float32).

    ``soft``: contributors are compared with :data:`PURE_LOW` / :data:`PURE_HIGH`; hard
    masks compare them with ``threshold`` (the binary value is then known). ``support``:
    how many frame pixels the feather reaches (0 without one).
    """
    h, w = int(frame_hw[0]), int(frame_hw[1])
    lh, lw = low.shape
    if soft:
        zero, one = low < PURE_LOW, low > PURE_HIGH
    else:
        # a hair off the threshold: float rounding may move an upsampled value across it
        t = float(threshold)
        zero, one = low < np.float32(t - 1e-6), low > np.float32(t + 1e-6)
    yi0, yi1 = linear_taps(lh, h)
    xi0, xi1 = linear_taps(lw, w)
    nb = max(1, math.ceil(h / band))
    y0 = np.arange(nb) * band
    y1 = np.minimum(y0 + band, h) - 1
    r0 = yi0[np.maximum(y0 - support, 0)]
    r1 = yi1[np.minimum(y1 + support, h - 1)]
    xs = np.arange(w)
    c0 = xi0[np.maximum(xs - support, 0)]
    c1 = xi1[np.minimum(xs + support, w - 1)]
    # Frame columns reading the same model columns share a class: work per distinct window.
    key = c0 * (lw + 1) + c1
    ux = np.concatenate(([0], np.flatnonzero(key[1:] != key[:-1]) + 1))
    uc0, uc1 = c0[ux], c1[ux] + 1
    need = (r1 - r0 + 1)[:, None] * (uc1 - uc0)[None, :]
    kinds = np.full((nb, ux.size), MIX, np.int8)
    for flags, kind in ((zero, BG), (one, FG)):
        cs = _band_counts(flags, r0, r1)
        kinds[(cs[:, uc1] - cs[:, uc0]) == need] = kind
    return Coverage((h, w), band, _runs(kinds, np.append(ux, w), min_run))


def _runs(kinds: np.ndarray, edges: np.ndarray, min_run: int) -> Tuple[Tuple[Run, ...], ...]:
    """Runs of equal kind per band (column ``i`` of ``kinds`` spans frame columns
    ``edges[i]..edges[i + 1]``); pure runs narrower than ``min_run`` become MIX, then merge."""
    nb, n = kinds.shape
    w = int(edges[-1])
    bands, cuts = np.nonzero(kinds[:, 1:] != kinds[:, :-1])
    cuts_at: List[List[int]] = [[] for _ in range(nb)]
    for b, i in zip(bands.tolist(), (cuts + 1).tolist()):
        cuts_at[b].append(i)
    x_at = edges.tolist()
    rows = kinds.tolist()
    out = []
    for b in range(nb):
        row = rows[b]
        starts = [0] + cuts_at[b]
        if len(starts) == 1:
            out.append(((0, w, row[0]),))
            continue
        runs: List[List[int]] = []
        for i0, i1 in zip(starts, starts[1:] + [n]):
            x0, x1, kind = x_at[i0], x_at[i1], row[i0]
            if kind != MIX and x1 - x0 < min_run:
                kind = MIX
            if runs and runs[-1][2] == kind:
                runs[-1][1] = x1
            else:
                runs.append([x0, x1, kind])
        out.append(tuple((a, e, k) for a, e, k in runs))
    return tuple(out)


__all__ = [
    "BG",
    "FG",
    "MIX",
    "SNAP",
    "PURE_LOW",
    "PURE_HIGH",
    "BAND",
    "Coverage",
    "classify",
    "linear_taps",
]
