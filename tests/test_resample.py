"""Resampling conventions of model profiles against independent numpy arithmetic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segcam.errors import ConfigError
from segcam.inference.preprocess import preprocess
from segcam.inference.profile import load_profile, parse_profile, replace
from segcam.inference.resample import (
    WarpResizer,
    bilinear_weight_table,
    warp_positions,
    warp_resize_u8,
)

SIZES = [(1920, 1080), (1280, 720), (641, 479), (97, 61), (256, 256), (255, 143)]


def float_bilinear(img: np.ndarray, dst_w: int, dst_h: int, pos_x, pos_y) -> np.ndarray:
    """Textbook bilinear sampling at the given positions in float64, zero outside."""
    h, w = img.shape[:2]
    px = pos_x(np.arange(dst_w, dtype=np.float64))
    py = pos_y(np.arange(dst_h, dtype=np.float64))
    # OpenCV's warp keeps positions on a 1/32 grid: quantise the same way.
    px = np.rint(px * 32) / 32
    py = np.rint(py * 32) / 32
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    src = img.astype(np.float64)
    out = np.zeros((dst_h, dst_w) + img.shape[2:])
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            ys, xs = y0 + dy, x0 + dx
            ok = ((ys >= 0) & (ys < h))[:, None] & ((xs >= 0) & (xs < w))[None, :]
            tap = src[np.clip(ys, 0, h - 1)[:, None], np.clip(xs, 0, w - 1)[None, :]]
            wgt = (wy[:, None] * wx[None, :]) * ok
            out += tap * (wgt[..., None] if img.ndim == 3 else wgt)
    return out


CONV = {
    "bilinear_top_left": lambda s, n: lambda d: d * s / n,
    "bilinear_align_corners": lambda s, n: lambda d: d * (s - 1) / max(n - 1, 1),
}


@pytest.mark.parametrize("conv", sorted(CONV))
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_warp_resize_is_bilinear_at_the_convention_positions(conv: str, size) -> None:
    rng = np.random.default_rng(size[0])
    img = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    for dw, dh in ((256, 256), (256, 144), (300, 97)):
        got = warp_resize_u8(img, dw, dh, conv)
        want = float_bilinear(img, dw, dh, CONV[conv](size[0], dw), CONV[conv](size[1], dh))
        # 15-bit weights round the float result: never more than one level apart.
        assert np.abs(got - want).max() <= 0.51 + 1e-9


def test_conventions_sample_where_they_say() -> None:
    """A horizontal ramp x -> x shows each convention's sample positions directly."""
    ramp = np.tile(np.arange(200, dtype=np.uint8), (4, 1))
    half = cv2.resize(ramp, (50, 4), interpolation=cv2.INTER_LINEAR)[0]
    top = warp_resize_u8(ramp, 50, 4, "bilinear_top_left")[0]
    corners = warp_resize_u8(ramp, 50, 4, "bilinear_align_corners")[0]
    d = np.arange(50)
    np.testing.assert_array_equal(top, d * 4)  # x = d * 200 / 50
    np.testing.assert_allclose(half, (d + 0.5) * 4 - 0.5, atol=0.5)  # 1.5, 5.5, ...
    np.testing.assert_allclose(corners, d * 199 / 49, atol=0.5 + 1 / 64)  # 1/32 grid
    assert corners[-1] == 199 and top[-1] == 196


def test_weight_table_is_opencvs() -> None:
    tab = bilinear_weight_table()
    assert tab.shape == (1024, 4)
    assert (tab.sum(axis=1) == 32768).all()
    np.testing.assert_array_equal(tab[0], [32767, 0, 0, 1])  # int16 saturation quirk
    ty, tx = 3, 17  # row ty*32+tx: exact products of (32-t, t) / 32
    np.testing.assert_array_equal(
        tab[ty * 32 + tx],
        [(32 - ty) * (32 - tx) * 32, (32 - ty) * tx * 32, ty * (32 - tx) * 32, ty * tx * 32],
    )


@pytest.mark.parametrize("size", SIZES[:3], ids=lambda s: f"{s[0]}x{s[1]}")
def test_mediapipe_geometry_matches_opencv_warp_perspective(size) -> None:
    """MediaPipe builds its matrix from boxPoints of the full-image rect onto the tensor's
        corners. This OpenCV's warpPerspective (float path in OpenCV >= 4.11, positions not
        rounded to 1/32) lands within one level of the fixed-point result on a smooth image (frames
    larger than the tensor: when enlarging, the zero border magnifies sub-pixel differences)."""
    w, h = size
    coarse = np.random.default_rng(1).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    box = cv2.boxPoints(((w / 2, h / 2), (w, h), 0.0)).astype(np.float32)
    dst = np.array([[0, 256], [0, 0], [256, 0], [256, 256]], np.float32)
    m = cv2.getPerspectiveTransform(box, dst)
    ref = cv2.warpPerspective(img, m, (256, 256), flags=cv2.INTER_LINEAR, borderValue=0)
    got = warp_resize_u8(img, 256, 256, "bilinear_top_left")
    assert np.abs(got.astype(int) - ref).max() <= 1


@pytest.mark.parametrize("conv", sorted(CONV))
def test_remap_path_equals_numpy_reference(conv: str) -> None:
    rng = np.random.default_rng(3)
    resize = WarpResizer(256, 144, conv)
    for w, h in SIZES:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        np.testing.assert_array_equal(resize(img), warp_resize_u8(img, 256, 144, conv))


def test_positions_round_half_to_even_on_the_32_grid() -> None:
    x0, t = warp_positions(1920, 256, "bilinear_top_left")
    assert (x0[:3].tolist(), t[:3].tolist()) == ([0, 7, 15], [0, 16, 0])  # 0, 7.5, 15


def test_mediapipe_profiles_use_mediapipe_resampling() -> None:
    for name in ("mediapipe-selfie", "mediapipe-selfie-landscape"):
        assert load_profile(name).resample == "bilinear_top_left"
    assert load_profile("modnet").resample == "bilinear_half_pixel"
    frame = np.random.default_rng(5).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    p = load_profile("mediapipe-selfie")
    got = preprocess(frame, p)
    want = warp_resize_u8(frame, 256, 256, "bilinear_top_left")[:, :, ::-1] * np.float32(p.scale)
    np.testing.assert_array_equal(got[0], want.astype(np.float32))
    half = preprocess(frame, replace(p, resample="bilinear_half_pixel"))
    assert not np.array_equal(got, half)


def test_unknown_convention_is_a_config_error() -> None:
    text = "width: 8\nheight: 8\nresample: bicubic\n"
    with pytest.raises(ConfigError, match="resample"):
        parse_profile(text, "p.yaml")
