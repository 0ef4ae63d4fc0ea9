"""Compositing: blend arithmetic, every background mode, run-time switches, bad files."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcam.compose import Compositor, blend_reference, check_background, shrink
from segcam.config import BackgroundConfig, RefineConfig
from segcam.coverage import BG, MIX, Coverage
from segcam.errors import ConfigError, PipelineError
from segcam.pipeline.knobs import KnobValues
from segcam.refine import MaskRefiner

H, W = 90, 160


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    """Soft person-like mask: a disc with a ramped edge, plus exact 0 and 1 regions."""
    yy, xx = np.mgrid[0:H, 0:W]
    d = np.hypot(yy - H / 2, xx - W / 2)
    return np.clip((40.0 - d) / 10.0, 0.0, 1.0).astype(np.float32)


def test_blend_within_one_level_of_reference(frame: np.ndarray, mask: np.ndarray) -> None:
    c = Compositor(BackgroundConfig(mode="color", color=[10, 200, 30]))
    rng = np.random.default_rng(1)
    m = rng.random((H, W), dtype=np.float32)
    out = c.compose(frame, m)
    ref = blend_reference(frame, c.background(frame), m)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1
    assert (out != ref).mean() < 0.01


def test_color_mode_exact_where_mask_is_0_or_1(frame: np.ndarray, mask: np.ndarray) -> None:
    c = Compositor(BackgroundConfig(mode="color", color=[10, 200, 30]))
    out = np.empty_like(frame)
    assert c.compose(frame, mask, out=out) is out
    np.testing.assert_array_equal(out[mask == 1.0], frame[mask == 1.0])
    assert (out[mask == 0.0] == [10, 200, 30]).all()


def test_none_mode_is_the_frame(frame: np.ndarray, mask: np.ndarray) -> None:
    out = Compositor(BackgroundConfig(mode="none")).compose(frame, mask)
    np.testing.assert_array_equal(out, frame)
    assert out is not frame


def test_blur_mode_blurs_only_the_background(frame: np.ndarray, mask: np.ndarray) -> None:
    c = Compositor(BackgroundConfig(mode="blur", blur=21))
    bg = c.background(frame)
    assert bg.shape == frame.shape

    # a blurred random image has far less pixel-to-pixel variation than the original
    def roughness(a):
        return np.abs(np.diff(a.astype(np.int16), axis=1)).mean()

    assert roughness(bg) < roughness(frame) / 4
    out = c.compose(frame, mask)
    np.testing.assert_array_equal(out[mask == 1.0], frame[mask == 1.0])
    assert roughness(out[:, :20]) < roughness(frame[:, :20]) / 4
    small = Compositor(BackgroundConfig(mode="blur", blur=3)).background(frame)
    assert roughness(bg) < roughness(small) < roughness(frame)


def _picture(tmp_path: Path, w: int, h: int) -> Path:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (255, 0, 0)
    img[:, w // 2 :] = (0, 0, 255)
    path = tmp_path / f"bg_{w}x{h}.png"
    cv2.imwrite(str(path), img)
    return path


def test_image_cover_and_fit(tmp_path: Path, frame: np.ndarray) -> None:
    tall = _picture(tmp_path, 100, 200)  # portrait picture behind a landscape frame
    cover = Compositor(BackgroundConfig(mode="image", image=str(tall), fit="cover"))
    bg = cover.background(frame)
    assert bg.shape == frame.shape
    assert (bg[:, :70] == (255, 0, 0)).all() and (bg[:, 90:] == (0, 0, 255)).all()
    assert cover.background(frame) is bg  # scaled once per frame size, cached
    fit = Compositor(BackgroundConfig(mode="image", image=str(tall), fit="fit", color=[0, 255, 0]))
    bg = fit.background(frame)
    # 100x200 into 160x90: 45x90 in the middle, green bars left and right
    assert (bg[:, :55] == (0, 255, 0)).all() and (bg[:, 105:] == (0, 255, 0)).all()
    assert (bg[:, 60:75] == (255, 0, 0)).all() and (bg[:, 85:100] == (0, 0, 255)).all()
    assert fit.background(np.zeros((20, 30, 3), np.uint8)).shape == (20, 30, 3)


def test_video_background_loops(tmp_path: Path, frame: np.ndarray) -> None:
    path = tmp_path / "bg.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    levels = [0, 120, 250]
    for v in levels:
        writer.write(np.full((48, 64, 3), v, np.uint8))
    writer.release()
    c = Compositor(BackgroundConfig(mode="video", video=str(path)))
    seen = [int(round(c.background(frame).mean())) for _ in range(7)]
    expect = [levels[i % 3] for i in range(7)]
    assert np.abs(np.array(seen) - expect).max() <= 3, seen
    c.close()


@pytest.mark.parametrize(
    "bg, match",
    [
        (dict(mode="image", image="/nonexistent/bg.png"), "cannot read /nonexistent/bg.png"),
        (dict(mode="video", video="/nonexistent/bg.mp4"), "/nonexistent/bg.mp4 does not exist"),
        (dict(mode="image"), "no image is given"),
    ],
)
def test_missing_files_are_config_errors(bg: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Compositor(BackgroundConfig(**bg))


def test_broken_video_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 500)
    with pytest.raises(ConfigError, match="cannot decode"):
        Compositor(BackgroundConfig(mode="video", video=str(bad)))


def test_overlay_tints_person_and_draws_outline(frame: np.ndarray, mask: np.ndarray) -> None:
    c = Compositor(BackgroundConfig(mode="overlay", color=[0, 0, 255]))
    out = c.compose(frame, mask)
    np.testing.assert_array_equal(out[mask == 0.0][:100], frame[mask == 0.0][:100])
    inside = mask == 1.0
    assert out[inside][:, 2].astype(int).mean() > frame[inside][:, 2].astype(int).mean() + 40
    edge = (mask > 0.4) & (mask < 0.6)
    assert (out[edge] == (0, 0, 255)).all(axis=1).mean() > 0.5  # outline at the threshold


def test_knobs_switch_background_at_run_time(frame: np.ndarray, mask: np.ndarray) -> None:
    c = Compositor(BackgroundConfig(mode="blur"))
    items = tuple(sorted({"mode": "color", "color": (1, 2, 3)}.items()))
    out = c.compose(frame, mask, KnobValues(background=items))
    assert c.mode == "color" and (out[mask == 0.0] == (1, 2, 3)).all()
    c.compose(frame, mask, KnobValues())  # empty knobs: keep the current settings
    assert c.mode == "color"


def test_mask_size_must_match(frame: np.ndarray) -> None:
    c = Compositor(BackgroundConfig(mode="color"))
    with pytest.raises(PipelineError, match="frame size"):
        c.compose(frame, np.zeros((10, 10), np.float32))


def test_bad_background_at_run_time_keeps_the_old_one(frame: np.ndarray, mask: np.ndarray) -> None:
    c = Compositor(BackgroundConfig(mode="color", color=[1, 2, 3]))
    items = tuple(sorted({"mode": "image", "image": "/nonexistent/x.png"}.items()))
    out = c.compose(frame, mask, KnobValues(background=items))
    assert c.mode == "color" and (out[mask == 0.0] == (1, 2, 3)).all()
    assert "cannot read /nonexistent/x.png" in c.last_error
    with pytest.raises(ConfigError, match="cannot read"):
        check_background(BackgroundConfig(mode="image", image="/nonexistent/x.png"))
    check_background(BackgroundConfig(mode="blur"))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 255), st.integers(0, 255), st.floats(0.0, 1.0, width=32),
)  # fmt: skip
def test_blend_within_one_level_for_any_pixel(fg: int, bg: int, m: float) -> None:
    c = Compositor(BackgroundConfig(mode="color", color=[bg, bg, bg]))
    frame = np.full((2, 3, 3), fg, np.uint8)
    mask = np.full((2, 3), m, np.float32)
    got = int(c.compose(frame, mask)[0, 0, 0])
    ref = int(blend_reference(frame, c.background(frame), mask)[0, 0, 0])
    assert abs(got - ref) <= 1
    assert min(fg, bg) <= got <= max(fg, bg)


@pytest.mark.parametrize("runs", [False, True], ids=["whole", "runs"])
@pytest.mark.parametrize("mode", ["overlay", "video", "blur", "color"])
def test_steady_state_compose_allocates_no_frame_sized_array(
    tmp_path: Path, mode: str, runs: bool
) -> None:
    """The hot-path rule of the blueprint: once warmed up, ``compose`` allocates no
    frame-sized array. numpy (and OpenCV's numpy-backed outputs) report their allocations
    to tracemalloc, so its peak over one call is what that call allocated."""
    h, w = 360, 640
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    mask = rng.random((h, w), dtype=np.float32)
    cfg = BackgroundConfig(mode=mode)
    if mode == "video":  # a real file of another size: decoded and scaled every frame
        cfg.video = str(tmp_path / "bg.avi")
        writer = cv2.VideoWriter(cfg.video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 200))
        assert writer.isOpened()
        for v in (0, 120, 250):
            writer.write(np.full((200, 320, 3), v, np.uint8))
        writer.release()
    c = Compositor(cfg)
    out = np.empty_like(frame)
    coverage = None
    if runs:  # the pipeline's path: the refiner's coverage of a person-like mask
        refiner = MaskRefiner(RefineConfig())
        yy, xx = np.mgrid[0:64, 0:64]
        low = np.clip((20.0 - np.hypot(yy - 32, xx - 32)) / 4.0, 0, 1).astype(np.float32)
        mask = refiner.refine(low, (h, w))
        coverage = refiner.coverage
    for _ in range(4):  # warm-up: buffers are allocated here, once
        c.compose(frame, mask, out=out, coverage=coverage)
    tracemalloc.start()
    try:
        for _ in range(4):  # the video loops back to its start in here too
            c.compose(frame, mask, out=out, coverage=coverage)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        c.close()
    # Blur works at a quarter of the size (about 0.4 plane); one frame-sized plane is h * w.
    assert peak < h * w // 2, f"{mode}: {peak} bytes allocated per frame ({h * w} = one plane)"


def _bg_config(mode: str, tmp_path: Path) -> BackgroundConfig:
    cfg = BackgroundConfig(mode=mode)
    if mode == "image":
        cfg.image = str(tmp_path / "bg.png")
        cv2.imwrite(cfg.image, np.random.default_rng(4).integers(0, 256, (50, 70, 3), np.uint8))
    if mode == "video":
        cfg.video = str(tmp_path / "bg.avi")
        writer = cv2.VideoWriter(cfg.video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (120, 80))
        for v in (10, 200):
            writer.write(np.full((80, 120, 3), v, np.uint8))
        writer.release()
    return cfg


@pytest.mark.parametrize("mode", ["blur", "color", "image", "video", "none", "overlay"])
@pytest.mark.parametrize("size", [(360, 640), (211, 333)])
def test_runs_compose_equals_whole_frame_blend(tmp_path: Path, mode: str, size) -> None:
    """With the refiner's coverage, background and person runs are copied, mixed runs
    blended: the same bytes as the whole-frame blend, and the reference within one level."""
    h, w = size
    rng = np.random.default_rng(5)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), np.uint8), (0, 0), 2)
    yy, xx = np.mgrid[0:48, 0:64]
    low = np.clip((14.0 - np.hypot(yy - 24, xx - 30)) / 3.0, 0, 1).astype(np.float32)
    refiner = MaskRefiner(RefineConfig(feather=3))
    mask = refiner.refine(low, (h, w))
    assert 0.0 < refiner.coverage.fraction(MIX) < 0.5
    whole, runs = Compositor(_bg_config(mode, tmp_path)), Compositor(_bg_config(mode, tmp_path))
    try:
        for _ in range(2):  # video: the next frame each call, in both
            a = whole.compose(frame, mask)
            b = runs.compose(frame, mask, coverage=refiner.coverage)
            np.testing.assert_array_equal(a, b)
            if mode in ("color", "image"):
                ref = blend_reference(frame, runs.background(frame), mask)
                assert np.abs(ref.astype(int) - b).max() <= 1
    finally:
        whole.close()
        runs.close()


def test_all_background_coverage_shows_the_background(frame: np.ndarray) -> None:
    c = Compositor(BackgroundConfig(mode="color", color=[1, 2, 3]))
    zeros = np.zeros((H, W), np.float32)
    got = c.compose(frame, zeros, coverage=Coverage.uniform((H, W), BG))
    assert (got == np.array([1, 2, 3], np.uint8)).all()


@pytest.mark.parametrize("size", [(1080, 1920), (721, 1283), (5, 3)])
def test_blur_shrink_is_two_exact_halvings(size) -> None:
    """The blur background's 1/4 shrink: OpenCV's 2x2 INTER_AREA twice, (s + 2) >> 2 each
    time on even sizes; within one level of a single 4x4 INTER_AREA."""
    h, w = size
    img = np.random.default_rng(6).integers(0, 256, (h, w, 3), np.uint8)
    got = shrink(img, 4)
    assert got.shape == ((h + 3) // 4, (w + 3) // 4, 3)
    if h % 4 == 0 and w % 4 == 0:
        x = img.astype(np.int32)
        half = (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2] + 2) >> 2
        want = (half[0::2, 0::2] + half[1::2, 0::2] + half[0::2, 1::2] + half[1::2, 1::2] + 2) >> 2
        np.testing.assert_array_equal(got, want)
        once = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        assert np.abs(once.astype(int) - got).max() <= 1
