"""The fused preprocess kernel equals the CPU reference (segcam.inference.preprocess)."""

from __future__ import annotations

import numpy as np
import pytest

from segcam.gpu.memory import DeviceBuffer
from segcam.gpu.preprocess import GpuPreprocessor, emulate_resize_u8
from segcam.inference.preprocess import preprocess
from segcam.inference.profile import load_profile, replace

pytestmark = pytest.mark.gpu

SIZES = [(1920, 1080), (1280, 720), (641, 479), (333, 211), (97, 61), (3840, 2160), (200, 150)]


def _profiles():
    base = load_profile("mediapipe-selfie")  # NHWC float32 RGB [0, 1], bilinear_top_left
    modnet = load_profile("modnet")  # NCHW float32 RGB [-1, 1]
    return [
        pytest.param(base, id="nhwc-f32-rgb"),
        pytest.param(modnet, id="nchw-f32-rgb-mean.5"),
        pytest.param(replace(modnet, dtype="float16", width=320, height=192), id="nchw-f16"),
        pytest.param(
            replace(
                base,
                color_order="BGR",
                layout="NCHW",
                mean=[0.485, 0.456, 0.406],
                std=[0.229, 0.224, 0.225],
                width=257,
                height=143,
            ),
            id="nchw-f32-bgr-imagenet-odd",
        ),
        pytest.param(replace(base, dtype="float16", width=511, height=289), id="nhwc-f16-odd"),
    ]


def _run_gpu(kernels, stream, profile, frame):
    h, w = frame.shape[:2]
    pre = GpuPreprocessor(kernels("preprocess"), profile)
    src = DeviceBuffer(frame.nbytes)
    out = np.empty(profile.input_shape, profile.np_dtype)
    dst = DeviceBuffer(out.nbytes)
    try:
        src.upload(frame)
        stream.memset(dst.ptr, 0xFF, dst.nbytes)  # poison: NaN in float32 and float16
        pre.launch(src.ptr, w, h, w * 3, dst.ptr, stream)
        stream.synchronize()
        dst.download(out)
    finally:
        pre.close()
        src.close()
        dst.close()
    return out


@pytest.mark.parametrize("profile", _profiles())
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_preprocess_matches_cpu(kernels, stream, profile, size):
    rng = np.random.default_rng(hash(size) & 0xFFFF)
    frame = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    got = _run_gpu(kernels, stream, profile, frame)
    want = preprocess(frame, profile)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.isfinite(got.astype(np.float32)).all(), "some outputs were never written"
    tol = 1e-2 if profile.dtype == "float16" else 1e-3
    err = np.abs(got.astype(np.float32) - want.astype(np.float32)).max()
    assert err <= tol, f"max abs error {err}"


def test_resize_is_bit_exact_before_normalisation(kernels, stream):
    """With scale 1, mean 0, std 1 and BGR NHWC the kernel output is the resized image."""
    profile = replace(
        load_profile("mediapipe-selfie"),
        resample="bilinear_half_pixel",
        color_order="BGR",
        scale=1.0,
        mean=[0.0],
        std=[1.0],
        width=173,
        height=97,
    )
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, (719, 1283, 3), dtype=np.uint8)
    got = _run_gpu(kernels, stream, profile, frame)[0]
    np.testing.assert_array_equal(got, emulate_resize_u8(frame, 173, 97).astype(np.float32))


WARP_SIZES = SIZES + [(256, 256), (255, 143), (17, 9)]


@pytest.mark.parametrize("resample", ["bilinear_top_left", "bilinear_align_corners"])
@pytest.mark.parametrize("profile", _profiles())
@pytest.mark.parametrize("size", WARP_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_warp_conventions_are_bit_exact(kernels, stream, profile, size, resample):
    """The warp kernel equals the CPU reference bit for bit, normalisation and dtype too."""
    profile = replace(profile, resample=resample)
    rng = np.random.default_rng(size[0] * 7 + size[1])
    frame = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    got = _run_gpu(kernels, stream, profile, frame)
    want = preprocess(frame, profile)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_warp_resize_equals_numpy_reference(kernels, stream):
    """With scale 1 and BGR NHWC the warp kernel's output is the numpy warp arithmetic."""
    from segcam.inference.resample import warp_resize_u8

    profile = replace(
        load_profile("mediapipe-selfie"), color_order="BGR", scale=1.0, width=256, height=144
    )
    frame = np.random.default_rng(9).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    got = _run_gpu(kernels, stream, profile, frame)[0]
    want = warp_resize_u8(frame, 256, 144, "bilinear_top_left").astype(np.float32)
    np.testing.assert_array_equal(got, want)
