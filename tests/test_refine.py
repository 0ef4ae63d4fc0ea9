"""Mask refinement: uncertainty-weighted smoothing, upsample, threshold, feather, blobs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcam.config import RefineConfig
from segcam.coverage import BG, FG, MIX, SNAP, Coverage
from segcam.errors import PipelineError
from segcam.pipeline.knobs import KnobValues
from segcam.refine import FULL_RES_FEATHER_MAX, MaskRefiner, feather, snap, uncertainty


def cfg(**kw) -> RefineConfig:
    base = dict(
        threshold=0.5, soft=True, feather=0, smoothing=0.0, min_blob_area=0.0, upsample="bilinear"
    )
    base.update(kw)
    return RefineConfig(**base)


def test_uncertainty_is_entropy_based() -> None:
    p = np.array([0.0, 1.0, 0.5, 0.1, 0.9, 0.3], np.float32)
    u = uncertainty(p)
    assert u[0] < 1e-4 and u[1] < 1e-4  # certain: no blending
    assert u[2] == pytest.approx(1.0)  # p = 0.5: fully uncertain
    assert u[3] == pytest.approx(u[4], abs=1e-6)  # symmetric
    h = -(0.3 * np.log2(0.3) + 0.7 * np.log2(0.7))
    assert u[5] == pytest.approx(1 - (1 - h) ** 2, abs=1e-5)
    assert u.dtype == np.float32


def test_smoothing_blends_only_where_uncertain() -> None:
    r = MaskRefiner(cfg(smoothing=0.8))
    first = np.full((4, 4), 0.9, np.float32)
    np.testing.assert_array_equal(r.refine(first, (4, 4)), first)  # first mask passes
    new = np.array([[0.0, 1.0, 0.5, 0.6]] * 4, np.float32)
    out = r.refine(new, (4, 4))
    # confident pixels follow the model; the p=0.5 one moves 80% of the way back to 0.9
    assert out[0, 0] == pytest.approx(0.0, abs=1e-4)
    assert out[0, 1] == pytest.approx(1.0, abs=1e-4)
    assert out[0, 2] == pytest.approx(0.5 + (0.9 - 0.5) * 0.8, abs=1e-5)
    assert 0.6 < out[0, 3] < 0.9
    # the history is the smoothed value (as in MediaPipe, the previous *output*), before
    # the output's snap of values within half a grey level of 0 or 1
    np.testing.assert_array_equal(snap(r.last.copy()), out)
    assert r.last[0, 0] > 0.0 and out[0, 0] == 0.0


def test_smoothing_zero_and_reset() -> None:
    r = MaskRefiner(cfg(smoothing=0.0))
    r.refine(np.full((4, 4), 0.9, np.float32), (4, 4))
    half = np.full((4, 4), 0.5, np.float32)
    np.testing.assert_array_equal(r.refine(half, (4, 4)), half)
    r2 = MaskRefiner(cfg(smoothing=1.0))
    r2.refine(np.full((4, 4), 0.9, np.float32), (4, 4))
    assert r2.refine(half, (4, 4))[0, 0] == pytest.approx(0.9)
    r2.reset()
    np.testing.assert_array_equal(r2.refine(half, (4, 4)), half)


def test_none_re_emits_last_mask_and_first_needs_one() -> None:
    r = MaskRefiner(cfg(smoothing=0.5, feather=2))
    with pytest.raises(PipelineError, match="no mask yet"):
        r.refine(None, (8, 8))
    prob = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    a = r.refine(prob, (32, 48))
    b = r.refine(None, (32, 48))
    np.testing.assert_array_equal(a, b)
    assert b.shape == (32, 48)


def test_upsample_is_opencv_bilinear_on_float() -> None:
    prob = np.random.default_rng(1).random((9, 16), dtype=np.float32)
    out = np.empty((90, 160), np.float32)
    got = MaskRefiner(cfg()).refine(prob, (90, 160), out=out)
    assert got is out
    np.testing.assert_array_equal(got, cv2.resize(prob, (160, 90), interpolation=cv2.INTER_LINEAR))
    assert got.dtype == np.float32


def test_threshold_mode_is_binary_strictly_above() -> None:
    prob = np.array([[0.2, 0.5, 0.51, 0.9]], np.float32)
    got = MaskRefiner(cfg(soft=False)).refine(prob, (1, 4))
    np.testing.assert_array_equal(got, [[0.0, 0.0, 1.0, 1.0]])


def test_feather_softens_a_hard_edge_by_radius() -> None:
    prob = np.zeros((100, 100), np.float32)
    prob[:, 50:] = 1.0
    for radius in (3, 12):
        got = MaskRefiner(cfg(soft=False, feather=radius)).refine(prob, (100, 100))
        row = got[50]
        ramp = np.flatnonzero((row > 0.02) & (row < 0.98))
        # the transition widens with the radius and stays centred on the edge
        assert radius <= len(ramp) <= 2 * radius + 2
        assert abs(row[49] + row[50] - 1.0) < 0.05
        assert got.min() >= 0.0 and got.max() <= 1.0


def test_reduced_resolution_feather_is_close_to_full_resolution() -> None:
    rng = np.random.default_rng(2)
    low = (rng.random((12, 20)) > 0.5).astype(np.float32)
    mask = cv2.resize(low, (400, 240), interpolation=cv2.INTER_NEAREST)
    radius = 3 * FULL_RES_FEATHER_MAX
    fast = feather(mask, radius)
    k = 2 * radius + 1
    exact = cv2.GaussianBlur(mask, (k, k), radius / 2, borderType=cv2.BORDER_REPLICATE)
    assert np.abs(fast - exact).max() < 0.06
    assert np.abs(fast - exact).mean() < 0.01


def test_small_blob_removal() -> None:
    prob = np.zeros((100, 100), np.float32)
    prob[20:80, 10:50] = 0.95  # the person: 24% of the frame
    prob[5:8, 80:83] = 0.9  # a speck: 0.09%
    prob[60:75, 70:85] = 0.8  # a mid blob: 2.25%
    r = MaskRefiner(cfg(min_blob_area=0.01))
    got = r.refine(prob, (200, 200))
    assert got[10:16, 160:166].max() == 0.0  # speck (and its soft fringe) gone
    assert got[130:140, 150:160].min() > 0.7  # mid blob kept
    assert got[80:140, 40:80].min() > 0.9  # person kept
    np.testing.assert_array_equal(r.last, prob)  # the history is not altered
    got2 = MaskRefiner(cfg(min_blob_area=0.05)).refine(prob, (100, 100))
    assert got2[60:75, 70:85].max() == 0.0 and got2[30:70, 20:40].min() > 0.9


def test_knobs_override_config_per_call() -> None:
    prob = np.array([[0.2, 0.6]], np.float32)
    r = MaskRefiner(cfg(soft=True))
    np.testing.assert_allclose(r.refine(prob, (1, 2)), prob)
    hard = KnobValues(threshold=0.7, soft=False, feather=0, smoothing=0.0, min_blob_area=0)
    np.testing.assert_array_equal(r.refine(None, (1, 2), hard), [[0.0, 0.0]])
    np.testing.assert_array_equal(
        r.refine(None, (1, 2), KnobValues(threshold=0.5, soft=False)), [[0.0, 1.0]]
    )


def test_bad_inputs() -> None:
    r = MaskRefiner(cfg())
    with pytest.raises(PipelineError, match="HxW"):
        r.refine(np.zeros((1, 4, 4), np.float32), (4, 4))
    with pytest.raises(PipelineError, match="output buffer"):
        r.refine(np.zeros((4, 4), np.float32), (4, 4), out=np.empty((4, 5), np.float32))


@settings(max_examples=30, deadline=None)
@given(
    st.floats(0.0, 1.0), st.booleans(), st.integers(0, 20), st.floats(0.0, 1.0),
    st.floats(0.0, 0.5), st.integers(0, 2**31 - 1),
)  # fmt: skip
def test_refined_mask_stays_in_unit_range(
    threshold: float, soft: bool, radius: int, smoothing: float, blobs: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    knobs = KnobValues(
        threshold=threshold, soft=soft, feather=radius, smoothing=smoothing, min_blob_area=blobs
    )
    r = MaskRefiner(cfg())
    for _ in range(2):
        m = r.refine(rng.random((12, 16), dtype=np.float32) * 1.2 - 0.1, (30, 41), knobs)
        assert m.shape == (30, 41) and m.dtype == np.float32
        assert m.min() >= 0.0 and m.max() <= 1.0


def _person_like(lh: int, lw: int, seed: int) -> np.ndarray:
    """A model-like map: a blob with sigmoid edges, saturated far from them, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    cy, cx = rng.uniform(0.3, 0.7) * lh, rng.uniform(0.3, 0.7) * lw
    d = 0.25 * min(lh, lw) - np.hypot(yy - cy, xx - cx)
    p = 1.0 / (1.0 + np.exp(np.clip(-d * rng.uniform(0.3, 3.0), -60.0, 60.0)))
    p += rng.normal(0.0, 1e-4, p.shape) * (rng.random(p.shape) < 0.02)
    return np.clip(p, 0.0, 1.0).astype(np.float32)


def _whole_frame_reference(low: np.ndarray, h: int, w: int, soft: bool, t: float, r: int):
    """The documented steps on the whole frame: upsample, threshold, feather, clip, snap."""
    m = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)
    if not soft:
        m = (m > np.float32(t)).astype(np.float32)
    if r > 0:
        m = feather(m, r)
    m = np.clip(m, 0.0, 1.0)
    m[m <= SNAP] = 0.0
    m[m >= 1.0 - SNAP] = 1.0
    return m


@pytest.mark.parametrize("size", [(1080, 1920), (719, 1281), (211, 333), (64, 64), (7, 5)])
@pytest.mark.parametrize("soft", [True, False])
@pytest.mark.parametrize("radius", [0, 1, 3, 6, 9])
def test_banded_refine_equals_the_whole_frame_steps(size, soft, radius) -> None:
    """Band and run processing (pure runs filled, mixed runs computed with the feather's
    margin) gives the whole-frame result, at frame sizes above and below the model's."""
    h, w = size
    r = MaskRefiner(cfg(soft=soft, feather=radius, threshold=0.4))
    for seed in range(3):
        low = _person_like(64, 48, seed)
        got = r.refine(low, (h, w))
        want = _whole_frame_reference(low, h, w, soft, 0.4, radius)
        assert np.abs(got - want).max() <= 2e-6
        cov = r.coverage
        assert isinstance(cov, Coverage) and cov.shape == (h, w)
        for b, runs in enumerate(cov.runs):
            y0, y1 = cov.rows(b)
            assert runs[0][0] == 0 and runs[-1][1] == w
            assert all(a[1] == c[0] for a, c in zip(runs, runs[1:]))  # they tile the band
            for x0, x1, kind in runs:
                block = got[y0:y1, x0:x1]
                if kind == BG:
                    assert not block.any()
                elif kind == FG:
                    assert (block == 1.0).all()
        assert cov.fraction(BG) + cov.fraction(FG) + cov.fraction(MIX) == pytest.approx(1.0)


def test_pure_regions_are_found_on_a_real_sized_frame() -> None:
    """Far from the edges a model-like mask is exactly 0 or 1: only a thin band is mixed."""
    r = MaskRefiner(cfg(feather=3, smoothing=0.6))
    low = _person_like(256, 256, 7)
    for _ in range(3):
        r.refine(low, (1080, 1920))
    assert r.coverage.fraction(MIX) < 0.25
    assert r.coverage.fraction(BG) > 0.3 and r.coverage.fraction(FG) > 0.05
    assert set(r.timings_ms) == {"smooth", "plan", "mask"}
