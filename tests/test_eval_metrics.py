"""Eval metrics on synthetic cases whose answers are known by construction."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from segcam.eval import metrics as M


def _disc(r: float, size: int = 200) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.circle(m, (size // 2, size // 2), int(r), 1, -1)
    return m


def test_iou_of_known_overlaps() -> None:
    a = np.zeros((40, 40), np.float32)
    b = np.zeros((40, 40), np.uint8)
    a[0:10, 0:10] = 0.9
    b[0:10, 5:15] = 1
    assert M.iou(a, b) == pytest.approx(50 / 150)
    assert M.iou(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8)) == 1.0
    assert M.iou(a, a > 0.5) == 1.0
    assert M.iou(np.full((4, 4), 0.5, np.float32), np.ones((4, 4), np.uint8)) == 0.0  # > 0.5


def test_boundary_f_inside_and_outside_the_band() -> None:
    truth = _disc(50)
    assert M.boundary_f(truth.astype(np.float32), truth, 3)[0] == 1.0
    near = _disc(52).astype(np.float32)  # every boundary pixel 2 px off
    assert M.boundary_f(near, truth, 3)[0] == 1.0
    far = _disc(57).astype(np.float32)  # 7 px off: nothing within 3 px
    assert M.boundary_f(far, truth, 3) == (0.0, 0.0, 0.0)
    f, p, r = M.boundary_f(far, truth, 8)
    assert f == p == r == 1.0
    assert M.boundary_f(np.zeros((9, 9), np.float32), np.zeros((9, 9), np.uint8)) == (1, 1, 1)
    assert M.boundary_f(np.zeros((200, 200), np.float32), truth)[0] == 0.0


def test_frame_border_is_not_a_boundary() -> None:
    truth = np.zeros((50, 60), np.uint8)
    truth[20:, 10:40] = 1  # a body cut by the bottom of the frame
    b = M.boundary(truth)
    assert b[-1, 11:39].sum() == 0  # the bottom row is the picture's end, not an edge
    assert b[20, 10:40].all() and b[30:, 10].all()
    full = np.ones((10, 10), np.uint8)
    assert M.boundary(full).sum() == 0


def test_band_error_and_edge_band() -> None:
    truth = _disc(40)
    band = M.edge_band(truth, 3)
    d = cv2.distanceTransform((M.boundary(truth) == 0).astype(np.uint8), cv2.DIST_L2, 5)
    assert band.sum() == (d <= 3).sum() > 0
    half = np.full(truth.shape, 0.5, np.float32)
    assert M.band_error(half, truth, 3) == pytest.approx(0.5)
    assert M.band_error(truth.astype(np.float32), truth, 3) == 0.0
    soft = truth.astype(np.float32) * 0.8  # 0.2 off inside, exact outside
    inside = band & (truth > 0)
    assert M.band_error(soft, truth, 3) == pytest.approx(0.2 * inside.sum() / band.sum(), 1e-5)


def test_flicker_counts_only_where_the_truth_stayed() -> None:
    t0 = np.zeros((20, 20), np.uint8)
    t1 = t0.copy()
    t1[:, :5] = 1  # the person moved into columns 0-4
    m0 = np.zeros((20, 20), np.float32)
    m1 = m0.copy()
    m1[:, :5] = 1.0  # followed the truth: no flicker
    assert M.flicker(m1, m0, t1, t0) == 0.0
    m2 = m1.copy()
    m2[:, 5:] = 0.1  # changed where the truth did not
    assert M.flicker(m2, m0, t1, t0) == pytest.approx(0.1)
    assert M.flicker(m0, m0, t0, t0) == 0.0


def test_ghosting_measures_a_mask_that_lags_the_motion() -> None:
    t0 = np.zeros((20, 20), np.uint8)
    t1 = t0.copy()
    t1[:, :5] = 1  # the person moved into columns 0-4
    assert M.ghosting(t1.astype(np.float32), t1, t0) == 0.0  # followed at once
    assert M.ghosting(np.zeros((20, 20), np.float32), t1, t0) == 1.0  # still at the old place
    half = np.where(t1 > 0, 0.5, 0.0).astype(np.float32)  # half way (heavy smoothing)
    assert M.ghosting(half, t1, t0) == pytest.approx(0.5)
    assert M.ghosting(half, t0, t0) is None  # nothing moved


def test_plot_says_why_without_matplotlib(tmp_path, monkeypatch) -> None:
    from segcam.eval import report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    why = report.plot([], tmp_path / "p.png")
    assert why and "matplotlib is not installed" in why
    assert not (tmp_path / "p.png").exists()
