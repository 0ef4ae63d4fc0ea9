"""Mask quality metrics against a true silhouette (all on frame-size arrays).

- **IoU** of the mask thresholded at 0.5 with the truth (1.0 when both are empty).
- **Boundary F** (as in the DAVIS benchmark): the boundary of a binary mask is its pixels
  with a 4-neighbour outside it (the frame border does not count: the picture ends there,
  not the person). Precision is the share of predicted boundary pixels within ``band`` px
  (Euclidean) of a true boundary pixel, recall the reverse; F is their harmonic mean
  (1.0 when neither has a boundary, 0.0 when only one has).
- **Band error**: mean ``|alpha - truth|`` of the soft mask over the pixels within
  ``band`` px of the true boundary, where the cut is judged.
- **Flicker**: mean ``|m_t - m_{t-1}|`` of the soft masks over the pixels whose truth did
  not change between the two frames (a change there is the model's, not the scene's).
- **Ghosting**: mean ``|m_t - truth_t|`` over the pixels whose truth *did* change (where the
  person moved): a mask that lags behind the motion (too much temporal smoothing) scores high.
"""

from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def binary(mask: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """uint8 0/1 of a soft mask (``> threshold``) or of a 0/1 or boolean truth."""
    if mask.dtype == np.bool_:
        return mask.view(np.uint8)
    if mask.dtype == np.uint8:
        return (mask > 0).view(np.uint8)
    return (mask > threshold).view(np.uint8)


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of the thresholded mask and the truth."""
    a, b = binary(mask).astype(bool), binary(truth).astype(bool)
    union = int(np.count_nonzero(a | b))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(a & b)) / union


def boundary(binary_mask: np.ndarray) -> np.ndarray:
    """uint8 0/1: pixels of the mask with a 4-neighbour outside it (frame border excluded)."""
    m = binary_mask.astype(np.uint8)
    eroded = cv2.erode(m, _CROSS, borderType=cv2.BORDER_REPLICATE)
    return m - eroded


def _distance_to(edge: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest pixel of ``edge`` (inf if none)."""
    if not edge.any():
        return np.full(edge.shape, np.inf, np.float32)
    return cv2.distanceTransform((edge == 0).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def boundary_f(
    mask: np.ndarray, truth: np.ndarray, band: float = 3.0
) -> Tuple[float, float, float]:
    """(F, precision, recall) of the mask's boundary against the truth's, within ``band`` px."""
    pb = boundary(binary(mask))
    tb = boundary(binary(truth))
    np_, nt = int(pb.sum()), int(tb.sum())
    if np_ == 0 and nt == 0:
        return 1.0, 1.0, 1.0
    if np_ == 0 or nt == 0:
        return 0.0, float(np_ == 0), float(nt == 0)
    precision = float(np.count_nonzero(_distance_to(tb)[pb > 0] <= band)) / np_
    recall = float(np.count_nonzero(_distance_to(pb)[tb > 0] <= band)) / nt
    if precision + recall == 0.0:
        return 0.0, precision, recall
    return 2 * precision * recall / (precision + recall), precision, recall


def edge_band(truth: np.ndarray, band: float = 3.0) -> np.ndarray:
    """bool: the pixels within ``band`` px of the true boundary."""
    return _distance_to(boundary(binary(truth))) <= band


def error_map(mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """float32 ``|alpha - truth|`` per pixel."""
    return np.abs(mask.astype(np.float32) - binary(truth).astype(np.float32))


def band_error(
    mask: np.ndarray, truth: np.ndarray, band: float = 3.0, sel: Optional[np.ndarray] = None
) -> float:
    """Mean ``|alpha - truth|`` inside the edge band (0.0 when the truth has no edge).

    ``sel`` is :func:`edge_band` of the truth when the caller already has it.
    """
    if sel is None:
        sel = edge_band(truth, band)
    if not sel.any():
        return 0.0
    return float(error_map(mask, truth)[sel].mean())


def flicker(
    mask: np.ndarray, prev_mask: np.ndarray, truth: np.ndarray, prev_truth: np.ndarray
) -> float:
    """Mean frame-to-frame mask change where the truth stayed the same (0.0 if nowhere)."""
    same = binary(truth) == binary(prev_truth)
    if not same.any():
        return 0.0
    d = np.abs(mask.astype(np.float32) - prev_mask.astype(np.float32))
    return float(d[same].mean())


def ghosting(mask: np.ndarray, truth: np.ndarray, prev_truth: np.ndarray) -> Optional[float]:
    """Mean error where the truth changed since the previous frame (None if nowhere)."""
    moved = binary(truth) != binary(prev_truth)
    if not moved.any():
        return None
    return float(error_map(mask, truth)[moved].mean())


__all__ = [
    "ghosting",
    "error_map",
    "iou",
    "boundary",
    "boundary_f",
    "edge_band",
    "band_error",
    "flicker",
    "binary",
]
