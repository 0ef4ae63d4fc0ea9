"""Guided (edge-aware) mask upsampling: properties with known answers, refine hook, config."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segcam.config import RefineConfig, load_config
from segcam.errors import ConfigError, PipelineError
from segcam.guided import GuidedUpsampler, footprints, guided_upsample, low_res_guide
from segcam.refine import MaskRefiner, params_from, resolve_upsample, snap


def _box(x: np.ndarray, r: int) -> np.ndarray:
    k = 2 * r + 1
    return cv2.boxFilter(x, cv2.CV_64F, (k, k), borderType=cv2.BORDER_REPLICATE)


def test_constant_guide_reduces_to_box_smoothed_bilinear_mask() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((36, 64)).astype(np.float32)
    frame = np.full((180, 320, 3), 90, np.uint8)
    got = guided_upsample(mask, frame, radius=2, eps=1e-3)
    smooth = _box(_box(mask.astype(np.float64), 2), 2).astype(np.float32)  # a = 0, b = mean p
    want = np.clip(cv2.resize(smooth, (320, 180), interpolation=cv2.INTER_LINEAR), 0, 1)
    np.testing.assert_allclose(got, want, atol=1e-5)


def _edge_scene(edge_x: int, w: int = 320, h: int = 160):
    frame = np.empty((h, w, 3), np.uint8)
    frame[:, :edge_x] = (40, 60, 200)  # person (left): reddish
    frame[:, edge_x:] = (220, 200, 120)  # sky (right): bluish
    truth = np.zeros((h, w), np.float32)
    truth[:, :edge_x] = 1.0
    return frame, truth


def test_the_edge_follows_the_guide_not_the_mask_grid() -> None:
    """A blurry low-res step becomes a sharp edge exactly where the picture's edge is."""
    frame, truth = _edge_scene(edge_x=173)
    low = cv2.resize(truth, (40, 20), interpolation=cv2.INTER_AREA)
    low = cv2.GaussianBlur(low, (5, 5), 1.0)  # the model's soft, coarse edge
    guided = guided_upsample(low, frame, radius=2, eps=1e-4)
    bilinear = cv2.resize(low, (320, 160), interpolation=cv2.INTER_LINEAR)
    row_g, row_b = guided[80], bilinear[80]
    step_g, step_b = -np.diff(row_g), -np.diff(row_b)
    assert int(np.argmax(step_g)) == 172 and step_g[172] > 0.7  # one sharp step, on the edge
    assert step_b.max() < 0.1  # bilinear: a ramp over tens of pixels
    assert row_g[172] > 0.5 > row_g[173]
    assert np.abs(guided - truth).mean() < 0.7 * np.abs(bilinear - truth).mean()


def test_low_res_guide_is_the_exact_footprint_mean() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (97, 203, 3), dtype=np.uint8)
    got = low_res_guide(frame, 41, 23)
    xs, ys = footprints(203, 41), footprints(97, 23)
    for j in (0, 7, 40):
        for i in (0, 11, 22):
            patch = frame[ys[0][i] : ys[1][i], xs[0][j] : xs[1][j]].astype(np.float64)
            np.testing.assert_allclose(got[i, j], patch.mean(axis=(0, 1)) / 255.0, rtol=1e-6)
    # Footprints tile the frame exactly when it is larger than the mask.
    lo, hi = footprints(203, 41)
    assert lo[0] == 0 and hi[-1] == 203 and (lo[1:] == hi[:-1]).all()
    lo, hi = footprints(5, 12)  # frame smaller than the mask: one pixel each, in range
    assert (hi - lo == 1).all() and hi.max() <= 5


def test_output_range_shape_and_errors() -> None:
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    mask = rng.random((30, 50)).astype(np.float32)
    up = GuidedUpsampler(3, 1e-3)
    out = np.empty((120, 200), np.float32)
    assert up(mask, frame, out=out) is out
    assert out.min() >= 0.0 and out.max() <= 1.0
    with pytest.raises(PipelineError, match="uint8 BGR"):
        up(mask, frame.astype(np.float32))
    with pytest.raises(PipelineError, match="radius"):
        GuidedUpsampler(0, 1e-3)
    with pytest.raises(PipelineError, match="eps"):
        GuidedUpsampler(2, 0.0)


def test_refiner_uses_guided_upsampling_when_configured() -> None:
    frame, truth = _edge_scene(edge_x=150)
    low = cv2.resize(truth, (40, 20), interpolation=cv2.INTER_AREA)
    cfg = RefineConfig(upsample="guided", feather=0, smoothing=0.0, guided_radius=2)
    ref = MaskRefiner(cfg)
    got = ref.refine(low, frame.shape[:2], guide=frame)
    want = snap(guided_upsample(low, frame, 2, cfg.guided_eps))  # the refiner's last step
    np.testing.assert_array_equal(got, want)
    assert ref.coverage is None  # not convex: the compositor blends the whole frame
    with pytest.raises(PipelineError, match="needs the frame"):
        MaskRefiner(cfg).refine(low, frame.shape[:2])
    hard = MaskRefiner(RefineConfig(upsample="guided", soft=False, feather=2, smoothing=0.0))
    m = hard.refine(low, frame.shape[:2], guide=frame)
    assert m.min() >= 0.0 and m.max() <= 1.0 and 0.0 < m[80, 148] <= 1.0
    bil = RefineConfig(feather=0, smoothing=0.0, upsample="bilinear")
    plain = MaskRefiner(bil).refine(low, frame.shape[:2])
    np.testing.assert_array_equal(
        plain, cv2.resize(low, (320, 160), interpolation=cv2.INTER_LINEAR)
    )


def test_config_keys_and_ranges() -> None:
    default = load_config(None, []).refine
    assert (default.upsample, default.feather) == ("auto", -1)
    # auto: guided with no feather on GPU stages, bilinear with a 3 px feather on CPU stages
    on_gpu, on_cpu = resolve_upsample(default, gpu=True), resolve_upsample(default, gpu=False)
    assert (on_gpu.upsample, params_from(on_gpu).feather) == ("guided", 0)
    assert (on_cpu.upsample, params_from(on_cpu).feather) == ("bilinear", 3)
    assert MaskRefiner(default).cfg.upsample == "bilinear"  # the CPU reference resolves it
    explicit = load_config(None, ["refine.feather=5"]).refine
    assert params_from(resolve_upsample(explicit, gpu=True)).feather == 5
    cfg = load_config(None, ["refine.upsample=guided", "refine.guided_radius=4"])
    assert cfg.refine.upsample == "guided" and cfg.refine.guided_radius == 4
    for bad in ("refine.upsample=bicubic", "refine.guided_radius=0", "refine.guided_eps=0"):
        with pytest.raises(ConfigError):
            load_config(None, [bad])
