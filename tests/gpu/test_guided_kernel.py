"""GPU guided upsampling (kernels/guided.cu) against the CPU reference (segcam.guided)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from segcam.config import RefineConfig
from segcam.coverage import SNAP
from segcam.demo_scene import DemoScene
from segcam.gpu.guided import GpuGuided
from segcam.gpu.memory import DeviceBuffer
from segcam.refine import MaskRefiner, snap

pytestmark = pytest.mark.gpu

CASES = [
    ((1920, 1080), (256, 256)),
    ((1280, 720), (256, 144)),
    ((641, 479), (97, 61)),
    ((200, 150), (256, 256)),  # mask larger than the frame
]


def _scene(size, low):
    frame, truth = DemoScene(*size).render(17)
    mask = cv2.resize(truth.astype(np.float32), low, interpolation=cv2.INTER_AREA)
    return frame, cv2.GaussianBlur(mask, (5, 5), 1.2)


def _gpu(kernels, stream, frame, mask, radius, eps, soft=True, threshold=0.5, feather=0):
    h, w = frame.shape[:2]
    lh, lw = mask.shape
    g = GpuGuided(kernels("guided"), radius, eps)
    bufs = [DeviceBuffer(frame.nbytes), DeviceBuffer(mask.nbytes), DeviceBuffer(w * h * 4)]
    try:
        bufs[0].upload(frame)
        bufs[1].upload(np.ascontiguousarray(mask))
        stream.memset(bufs[2].ptr, 0xFF, w * h * 4)  # NaN: catches pixels never written
        ptr = g.launch(
            bufs[1].ptr, lw, lh, bufs[0].ptr, w * 3, w, h, stream,
            soft=soft, threshold=threshold, feather=feather, out_ptr=bufs[2].ptr,
        )  # fmt: skip
        assert ptr == bufs[2].ptr
        stream.synchronize()
        # composite_fused clips and snaps this mask as the CPU refiner's last step does
        return snap(bufs[2].download(np.empty((h, w), np.float32)))
    finally:
        g.close()
        for b in bufs:
            b.close()


def _cpu(frame, mask, radius, eps, soft=True, threshold=0.5, feather=0):
    cfg = RefineConfig(
        upsample="guided", guided_radius=radius, guided_eps=eps, smoothing=0.0,
        feather=feather, soft=soft, threshold=threshold,
    )  # fmt: skip
    return MaskRefiner(cfg).refine(mask, frame.shape[:2], guide=frame)


def _err(got, want):
    """|got - want|, with 0 where the two sit on either side of the snap bound (1/512 of 0
    or 1) within the 1e-4 the kernel may differ by."""
    err = np.abs(got - want)
    snapped = (np.minimum(got, want) == 0.0) | (np.maximum(got, want) == 1.0)
    err[snapped & (err <= SNAP + 1e-4)] = 0.0
    return err


@pytest.mark.parametrize("size,low", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("radius,eps", [(3, 1e-3), (1, 1e-4), (8, 1e-2)])
def test_guided_matches_cpu(kernels, stream, size, low, radius, eps):
    frame, mask = _scene(size, low)
    got = _gpu(kernels, stream, frame, mask, radius, eps)
    want = _cpu(frame, mask, radius, eps)
    assert np.isfinite(got).all()
    err = _err(got, want)
    assert err.max() <= 1e-4, f"max {err.max()} mean {err.mean()}"


@pytest.mark.parametrize("feather", [1, 3, 6])
def test_guided_feather_matches_cpu(kernels, stream, feather):
    frame, mask = _scene((1280, 720), (256, 144))
    got = _gpu(kernels, stream, frame, mask, 3, 1e-3, feather=feather)
    want = _cpu(frame, mask, 3, 1e-3, feather=feather)
    assert _err(got, want).max() <= 1e-4


def test_guided_hard_threshold_matches_cpu(kernels, stream):
    frame, mask = _scene((1920, 1080), (256, 256))
    got = _gpu(kernels, stream, frame, mask, 3, 1e-3, soft=False, threshold=0.6, feather=2)
    want = _cpu(frame, mask, 3, 1e-3, soft=False, threshold=0.6, feather=2)
    # A value within float rounding of the threshold may land on either side.
    assert np.mean(_err(got, want) > 1e-4) < 1e-4


def test_random_frames_match_too(kernels, stream):
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (333, 517, 3), dtype=np.uint8)
    mask = rng.random((61, 97)).astype(np.float32)
    got = _gpu(kernels, stream, frame, mask, 2, 1e-3)
    want = _cpu(frame, mask, 2, 1e-3)
    assert _err(got, want).max() <= 1e-4
