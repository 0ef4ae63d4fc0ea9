"""GPU refine + composite equals the CPU reference (segcam.refine.MaskRefiner + segcam.compose)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from segcam.compose import Compositor
from segcam.config import BackgroundConfig, RefineConfig
from segcam.coverage import SNAP
from segcam.gpu.composite import GpuCompositor
from segcam.gpu.memory import DeviceBuffer
from segcam.pipeline.knobs import KnobValues
from segcam.refine import MaskRefiner

pytestmark = pytest.mark.gpu


def _knobs(refine: RefineConfig, **extra) -> KnobValues:
    return KnobValues(
        threshold=refine.threshold,
        soft=refine.soft,
        feather=refine.feather,
        smoothing=refine.smoothing,
        min_blob_area=refine.min_blob_area,
        **extra,
    )


def _frames(rng, w, h, n):
    """Smooth-ish random frames (a blurred noise field) so blur backgrounds are not flat."""
    out = []
    for _ in range(n):
        f = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out.append(f)
    return out


def _probs(rng, lw, lh, n):
    base = cv2.GaussianBlur(rng.random((lh, lw), dtype=np.float32), (0, 0), 3)
    base = (base - base.min()) / max(float(np.ptp(base)), 1e-6)
    seq = []
    for _ in range(n):
        p = np.clip(base + rng.normal(0, 0.15, base.shape).astype(np.float32), 0, 1)
        seq.append(p.astype(np.float32))
    return seq


def _run(
    kernels, stream, refine, background, size, low=(256, 256), n=3, seed=0, knobs=None, rows=True
):
    """Feed ``n`` frames to both paths; return per-frame (gpu comp, gpu mask, cpu comp, mask).

    ``rows=False`` keeps soft masks on composite_fused instead of the row-step kernels.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    frames = _frames(rng, w, h, n)
    probs = _probs(rng, low[0], low[1], n)
    knobs = knobs or _knobs(refine)
    gpu = GpuCompositor(kernels("composite"), refine, background)
    gpu.row_path = rows
    cpu_ref = MaskRefiner(refine)
    cpu_comp = Compositor(background)
    frame_dev = DeviceBuffer(w * h * 3)
    out_dev = DeviceBuffer(w * h * 3)
    mask_dev = DeviceBuffer(w * h * 4)
    results = []
    try:
        for frame, prob in zip(frames, probs):
            frame_dev.upload(frame)
            gpu.update_from_host(prob, knobs.smoothing, stream)
            got = []
            for poison in (0x00, 0xFF):  # every output byte must be written, whatever it held
                stream.memset(out_dev.ptr, poison, out_dev.nbytes)
                stream.memset(mask_dev.ptr, 0xFF, mask_dev.nbytes)  # NaN
                overlay = gpu.compose(
                    frame_dev.ptr, w * 3, frame, knobs, stream, out_dev.ptr, mask_dev.ptr
                )
                assert not overlay
                stream.synchronize()
                comp = out_dev.download(np.empty((h, w, 3), np.uint8))
                mask = mask_dev.download(np.empty((h, w), np.float32))
                got.append((comp, mask))
            assert np.array_equal(got[0][0], got[1][0]), "output depends on the poison"
            want_mask = cpu_ref.refine(prob, (h, w), knobs)
            want = cpu_comp.compose(frame, want_mask, knobs)
            results.append((got[0][0], got[0][1], want, want_mask))
    finally:
        gpu.close()
        cpu_comp.close()
        for b in (frame_dev, out_dev, mask_dev):
            b.close()
    return results


def _check(results, mask_tol=2e-5, allow_flips=0.0):
    for comp, mask, want, want_mask in results:
        assert np.isfinite(mask).all(), "mask pixels left unwritten"
        dm = np.abs(mask - want_mask)
        # float rounding may put a value on either side of the snap bound (1/512 of 0 or 1)
        near = np.minimum(np.minimum(mask, want_mask), 1.0 - np.maximum(mask, want_mask))
        flip = (np.abs(near) < 1e-5) & (np.abs(dm - SNAP) < 1e-5)
        bad = (dm > mask_tol) & ~flip
        assert bad.mean() <= allow_flips, f"mask max err {dm.max()} on {bad.sum()} px"
        dc = np.abs(comp.astype(np.int16) - want.astype(np.int16))
        if allow_flips:
            dc = dc[~bad]  # a hard-threshold flip moves whole pixels; judged above
        assert dc.max() <= 1, f"composite differs by {dc.max()} levels"


SIZES = [(1920, 1080), (1281, 719), (640, 480), (333, 211)]


@pytest.mark.parametrize("rows", [True, False], ids=["row-step", "fused"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("feather", [0, 3, 6])
def test_blur_background_soft(kernels, stream, size, feather, rows):
    refine = RefineConfig(upsample="bilinear", feather=feather, smoothing=0.6, soft=True)
    bg = BackgroundConfig(mode="blur", blur=21)
    _check(_run(kernels, stream, refine, bg, size, rows=rows))


@pytest.mark.parametrize("mode", ["color", "none"])
@pytest.mark.parametrize("size", [(1920, 1080), (1281, 719)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_row_step_other_backgrounds(kernels, stream, size, mode):
    refine = RefineConfig(upsample="bilinear", feather=3, smoothing=0.6, soft=True)
    bg = BackgroundConfig(mode=mode)
    _check(_run(kernels, stream, refine, bg, size, low=(256, 144)))


def test_blur_background_hard_threshold_stays_fused(kernels, stream):
    """Thresholding between upsample and feather is not linear: composite_fused does it."""
    refine = RefineConfig(upsample="bilinear", feather=3, smoothing=0.0, soft=False, threshold=0.5)
    bg = BackgroundConfig(mode="blur", blur=45)
    _check(_run(kernels, stream, refine, bg, (1280, 720), n=2), allow_flips=1e-4)


@pytest.mark.parametrize("blur", [3, 9, 40, 45, 200])
def test_blur_strengths(kernels, stream, blur):
    refine = RefineConfig(upsample="bilinear", feather=3, smoothing=0.3)
    bg = BackgroundConfig(mode="blur", blur=blur)
    _check(_run(kernels, stream, refine, bg, (1280, 720), low=(144, 256), seed=blur))


@pytest.mark.parametrize("size", [(1280, 720), (333, 211)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_color_background_hard_threshold(kernels, stream, size):
    refine = RefineConfig(upsample="bilinear", feather=2, smoothing=0.0, soft=False, threshold=0.45)
    # A bilinear value within float rounding of the threshold may land on either side.
    _check(
        _run(kernels, stream, refine, BackgroundConfig(mode="color"), size, n=2),
        allow_flips=1e-4,
    )


def test_image_background(kernels, stream, tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "bg.png"
    cv2.imwrite(str(path), rng.integers(0, 256, (500, 700, 3), dtype=np.uint8))
    bg = BackgroundConfig(mode="image", image=str(path), fit="cover")
    _check(_run(kernels, stream, RefineConfig(upsample="bilinear", feather=4), bg, (963, 541)))


def test_none_background_passes_frame(kernels, stream):
    _check(
        _run(
            kernels,
            stream,
            RefineConfig(upsample="bilinear", feather=3),
            BackgroundConfig(mode="none"),
            (641, 359),
        )
    )


@pytest.mark.parametrize(
    "refine",
    [
        RefineConfig(upsample="bilinear", feather=9, smoothing=0.5),
        RefineConfig(upsample="bilinear", feather=3, min_blob_area=0.01),
    ],
    ids=["feather9-cpu-refine", "min-blob-cpu-refine"],
)
def test_cpu_refined_settings_blend_on_gpu(kernels, stream, refine):
    _check(_run(kernels, stream, refine, BackgroundConfig(mode="color"), (800, 600)))


def test_smoothing_state_matches_cpu(kernels, stream):
    refine = RefineConfig(upsample="bilinear", smoothing=0.8, feather=3)
    rng = np.random.default_rng(11)
    gpu = GpuCompositor(kernels("composite"), refine, BackgroundConfig(mode="color"))
    cpu = MaskRefiner(refine)
    try:
        for p in _probs(rng, 255, 129, 6):
            gpu.update_from_host(p, 0.8, stream)
            want = cpu.smooth_only(p, 0.8)
            np.testing.assert_allclose(gpu.state_host(stream), want, atol=2e-6)
    finally:
        gpu.close()


@pytest.mark.parametrize("fp16", [False, True])
@pytest.mark.parametrize("kind", ["probability", "logits"])
def test_device_output_to_state(kernels, stream, fp16, kind):
    """A device-resident model output (TensorRT path) turns into the same smoothed state."""
    from segcam.inference.postprocess import to_probability
    from segcam.inference.profile import load_profile, replace

    profile = replace(load_profile("mediapipe-selfie"), output_kind=kind)
    rng = np.random.default_rng(5)
    dtype = np.float16 if fp16 else np.float32
    gpu = GpuCompositor(
        kernels("composite"),
        RefineConfig(upsample="bilinear", feather=3),
        BackgroundConfig(mode="color"),
    )
    cpu = MaskRefiner(RefineConfig(upsample="bilinear", feather=3))
    buf = DeviceBuffer(256 * 256 * 4)
    try:
        for _ in range(3):
            raw = (
                rng.normal(0, 3, (1, 256, 256, 1))
                if kind == "logits"
                else rng.random((1, 256, 256, 1))
            ).astype(dtype)
            buf.upload(raw)
            gpu.update_from_device(buf.ptr, (256, 256), fp16, kind == "logits", 0.6, stream)
            want = cpu.smooth_only(to_probability(raw, profile), 0.6)
            np.testing.assert_allclose(gpu.state_host(stream), want, atol=1e-5)
    finally:
        buf.close()
        gpu.close()


def test_paused_background_blank(kernels, stream):
    """pause_mode background: all-background mask (the composite stage passes blank=True)."""
    refine = RefineConfig(upsample="bilinear", feather=3)
    w, h = 320, 240
    gpu = GpuCompositor(kernels("composite"), refine, BackgroundConfig(mode="color"))
    frame = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    bufs = [DeviceBuffer(w * h * 3), DeviceBuffer(w * h * 3), DeviceBuffer(w * h * 4)]
    try:
        bufs[0].upload(frame)
        gpu.update_from_host(np.ones((64, 64), np.float32), 0.0, stream)
        knobs = dataclasses.replace(_knobs(refine), paused=True, pause_mode="background")
        gpu.compose(bufs[0].ptr, w * 3, frame, knobs, stream, bufs[1].ptr, bufs[2].ptr, True)
        stream.synchronize()
        comp = bufs[1].download(np.empty((h, w, 3), np.uint8))
        assert (comp == np.array([0, 177, 64], np.uint8)).all()
    finally:
        for b in bufs:
            b.close()
        gpu.close()
