"""The GPU path's pure-Python parts, on any machine: shim import layouts, probe without a
GPU, kernel cache keys, the kernels' arithmetic (emulated in numpy) against OpenCV, and the
stage timeline maths. The kernels themselves run in tests/gpu (tier ``gpu``)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from segcam.config import BackgroundConfig
from segcam.errors import GpuError
from segcam.gpu import cuda_api, probe
from segcam.gpu.composite import (
    NW,
    emulate_gauss_u8,
    emulate_soft_mask,
    emulate_upsample_f32,
    gaussian_fixed_weights,
    mask_tables,
    owned_columns,
    vertical_tables,
)
from segcam.gpu.nvrtc import KERNEL_DIR, cache_key, cubin_path, kernel_source
from segcam.gpu.preprocess import emulate_resize_u8, resize_tables
from segcam.gpu.timeline import Span, Timeline, overlap_stats


def _cuda_python_installed() -> bool:
    try:
        cuda_api.import_layout()
    except GpuError:
        return False
    return True


# --------------------------------------------------------------------------- shim


@pytest.fixture
def fake_modules(monkeypatch):
    """Install stand-in ``cuda`` packages in sys.modules (cuda-python is not installed here,
    so its import layouts can only be imitated); the real state is restored afterwards."""
    for name in list(sys.modules):
        if name == "cuda" or name.startswith("cuda."):
            monkeypatch.delitem(sys.modules, name)
    cuda_api.reset_for_tests()
    yield monkeypatch
    cuda_api.reset_for_tests()


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def test_old_layout_is_used_when_bindings_are_missing(fake_modules):
    """cuda-python <= 12.5 (JetPack 5, Python 3.8) only has ``from cuda import cuda, nvrtc``."""
    pkg = _module("cuda", __path__=[])
    drv, nv = _module("cuda.cuda"), _module("cuda.nvrtc")
    pkg.cuda, pkg.nvrtc = drv, nv
    fake_modules.setitem(sys.modules, "cuda", pkg)
    fake_modules.setitem(sys.modules, "cuda.cuda", drv)
    fake_modules.setitem(sys.modules, "cuda.nvrtc", nv)
    api = cuda_api.import_layout()
    assert api.layout == "cuda" and api.driver is drv and api.nvrtc is nv


def test_new_layout_is_preferred(fake_modules):
    """cuda-python 12.6+ / 13.x: ``from cuda.bindings import driver, nvrtc``."""
    pkg = _module("cuda", __path__=[])
    bindings = _module("cuda.bindings", __path__=[])
    drv, nv = _module("cuda.bindings.driver"), _module("cuda.bindings.nvrtc")
    bindings.driver, bindings.nvrtc = drv, nv
    pkg.bindings = bindings
    for name, mod in {
        "cuda": pkg,
        "cuda.bindings": bindings,
        "cuda.bindings.driver": drv,
        "cuda.bindings.nvrtc": nv,
    }.items():
        fake_modules.setitem(sys.modules, name, mod)
    api = cuda_api.import_layout()
    assert api.layout == "cuda.bindings" and api.driver is drv


@pytest.mark.skipif(_cuda_python_installed(), reason="cuda-python is installed here")
def test_missing_cuda_python_is_a_clear_error_and_probe_says_why():
    cuda_api.reset_for_tests()
    with pytest.raises(GpuError) as err:
        cuda_api.api()
    assert "cuda-python not installed" in err.value.message
    assert "segcam[gpu]" in err.value.hint
    info, reason = probe()
    assert info is None
    assert reason == "cuda-python not installed: pip install segcam[gpu]"


def test_check_raises_with_the_status_name():
    class Status(int):
        name = "CUDA_ERROR_OUT_OF_MEMORY"

    assert cuda_api.check((Status(0), 7)) == 7
    assert cuda_api.check((Status(0), 1, 2)) == (1, 2)
    assert cuda_api.check((Status(0),)) is None
    with pytest.raises(GpuError, match="cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY"):
        cuda_api.check((Status(2), None), "cuMemAlloc")


def test_a_binding_that_raises_becomes_a_gpu_error():
    def nvrtcVersion():  # noqa: N802 - named like the binding it imitates
        raise RuntimeError("Failed to dlopen libnvrtc.so.13")

    with pytest.raises(GpuError, match="nvrtcVersion unavailable: RuntimeError") as err:
        cuda_api.call(nvrtcVersion)
    assert "cuda-python[all]" in err.value.hint


@pytest.mark.parametrize(
    "text,expected,gil",
    [
        ("12.9.0", (12, 9, 0), True),
        ("12.9.1", (12, 9, 1), False),
        ("13.0.0rc1", (13, 0, 0), False),
        ("11.8.7", (11, 8, 7), True),
        ("", (), True),
    ],
)
def test_version_parsing_and_gil_rule(text, expected, gil):
    assert cuda_api.parse_version(text) == expected
    assert cuda_api.CudaApi(None, None, "cuda", text).holds_gil is gil


@pytest.mark.skipif(_cuda_python_installed(), reason="cuda-python is installed here")
def test_pipeline_falls_back_to_cpu_with_the_reason():
    from segcam.config import load_config
    from segcam.pipeline.stages import select_device

    device, reason, info = select_device(load_config(None, []))
    assert device == "cpu" and info is None
    assert "cuda-python not installed" in reason
    with pytest.raises(GpuError, match="no GPU can be used"):
        select_device(load_config(None, ["inference.device=gpu"]))


# --------------------------------------------------------------------------- NVRTC cache


def test_cache_key_changes_with_every_input():
    base = cache_key("src", (8, 7), (12, 6), ["-a"])
    assert base == cache_key("src", (8, 7), (12, 6), ["-a"])
    others = {
        cache_key("src2", (8, 7), (12, 6), ["-a"]),
        cache_key("src", (7, 2), (12, 6), ["-a"]),
        cache_key("src", (8, 7), (12, 8), ["-a"]),
        cache_key("src", (8, 7), (12, 6), ["-b"]),
    }
    assert base not in others and len(others) == 4


def test_cubin_path_names_kernel_and_arch(tmp_path):
    p = cubin_path(tmp_path, "preprocess", "x", (9, 0), (13, 0), ())
    assert p.parent == tmp_path / "kernels"
    assert p.name.startswith("preprocess-sm_90-") and p.suffix == ".cubin"


def test_kernel_sources_ship_with_the_package():
    names = sorted(p.stem for p in Path(KERNEL_DIR).glob("*.cu"))
    assert names == ["composite", "guided", "preprocess"]
    assert 'extern "C" __global__ void preprocess_bilinear_u8' in kernel_source("preprocess")
    with pytest.raises(GpuError, match="unreadable"):
        kernel_source("no-such-kernel")


# --------------------------------------------------------------------------- arithmetic


@pytest.mark.parametrize(
    "src,dst",
    [
        ((1920, 1080), (256, 256)),
        ((641, 479), (257, 255)),
        ((33, 17), (256, 144)),
        ((5, 3), (7, 9)),
        ((1, 1), (4, 4)),
        ((3840, 2160), (512, 288)),
    ],
)
def test_uint8_resize_tables_reproduce_opencv(src, dst):
    img = np.random.default_rng(src[0]).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    want = cv2.resize(img, dst, interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(emulate_resize_u8(img, *dst), want)
    tab = resize_tables(src[0], src[1], dst[0], dst[1])
    assert tab.shape == (dst[0] + dst[1], 4) and tab.dtype == np.int32
    assert (tab[:, 2] + tab[:, 3] >= 2047).all() and (tab[:, 2] + tab[:, 3] <= 2049).all()


@pytest.mark.parametrize("low,size", [((256, 256), (1920, 1080)), ((144, 256), (1281, 719))])
def test_float_upsample_tables_reproduce_opencv(low, size):
    m = np.random.default_rng(1).random((low[1], low[0]), dtype=np.float32)
    want = cv2.resize(m, size, interpolation=cv2.INTER_LINEAR)
    # OpenCV 5 keeps sample positions in double (as we do); OpenCV 4 rounds them to float
    np.testing.assert_allclose(emulate_upsample_f32(m, *size), want, atol=2e-5)
    assert mask_tables(low[0], low[1], *size).shape == (size[0] + size[1], 4)


@pytest.mark.parametrize("k", [3, 5, 7, 9, 11, 13, 15, 21])
def test_fixed_point_gaussian_reproduces_opencv(k):
    assert gaussian_fixed_weights(k).sum() == 256
    img = np.random.default_rng(k).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    np.testing.assert_array_equal(emulate_gauss_u8(img, k), cv2.GaussianBlur(img, (k, k), 0))


@pytest.mark.parametrize("blur,size", [(21, (1280, 720)), (9, (640, 480)), (5, (333, 211))])
def test_blur_background_chain_reproduces_the_compositor(blur, size):
    """area /d (integer; /4 as two 2x2 halvings) -> fixed-point Gaussian -> uint8 bilinear
    x d, as the kernels do."""
    from segcam.compose import Compositor
    from segcam.gpu.composite import blur_plan

    w, h = size
    frame = np.random.default_rng(blur).integers(0, 256, (h, w, 3), dtype=np.uint8)
    want = Compositor(BackgroundConfig(mode="blur", blur=blur)).background(frame)
    d, k = blur_plan(blur)
    if d == 1:
        small = frame
    else:
        small = frame.astype(np.int64)
        for _ in range(d // 2):  # d = 2: one halving, d = 4: two
            hh, ww = small.shape[:2]
            s = small.reshape(hh // 2, 2, ww // 2, 2, 3).sum(axis=(1, 3))
            small = (s + 2) >> 2
        small = small.astype(np.uint8)
    got = emulate_gauss_u8(small, k)
    if d > 1:
        got = emulate_resize_u8(got, w, h)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "size,low", [((1920, 1080), (256, 256)), ((1281, 719), (256, 144)), ((800, 600), (256, 256))]
)
@pytest.mark.parametrize("radius", [0, 1, 3, 6])
def test_row_step_soft_mask_reproduces_the_refiner(size, low, radius):
    """Horizontal upsample + feather per model row, then their vertical halves per pixel
    (combined weights), equals segcam.refine's upsample -> feather -> clip to float rounding."""
    from segcam.config import RefineConfig
    from segcam.pipeline.knobs import KnobValues
    from segcam.refine import MaskRefiner

    w, h = size
    rng = np.random.default_rng(radius + w)
    m = cv2.GaussianBlur(rng.random((low[1], low[0]), dtype=np.float32), (0, 0), 2)
    m = np.clip((m - m.min()) / np.ptp(m) * 1.2 - 0.1, 0, 1).astype(np.float32)  # flat 0/1
    refiner = MaskRefiner(
        RefineConfig(feather=radius, smoothing=0.0, soft=True, upsample="bilinear")
    )
    want = refiner.refine(m, (h, w), KnobValues(feather=radius, smoothing=0.0, soft=True))
    np.testing.assert_allclose(emulate_soft_mask(m, w, h, radius), want, atol=1e-6)
    tab = vertical_tables(low[1], h, radius)
    assert tab is not None and tab.shape == (h, 12) and (tab[:, 1] <= NW).all()
    weights = tab[:, 2 : 2 + NW].view(np.float32)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("small,size", [((480, 270), (1920, 1080)), ((321, 180), (1281, 719))])
def test_blur_tiles_own_every_output_column_once(small, size):
    """blur_small_u8 tile t enlarges columns own[t]..own[t+1]: their left sample in the tile,
    the right one at most one column past it (the extra column the tile blurs)."""
    (sw, sh), (w, h) = small, size
    own = owned_columns(sw, sh, w, h)
    assert own[0] == 0 and own[-1] == w and (np.diff(own) >= 0).all()
    xt = resize_tables(sw, sh, w, h)[:w]
    for t in range(own.size - 1):
        cols = xt[own[t] : own[t + 1]]
        assert (cols[:, 0] >= 32 * t).all() and (cols[:, 0] < 32 * (t + 1)).all()
        assert (cols[:, 1] <= 32 * (t + 1)).all()


def test_vertical_tables_decline_when_rows_do_not_fit():
    """A frame much smaller than the model output would combine more than NW model rows."""
    assert vertical_tables(256, 211, 6) is None
    assert vertical_tables(256, 211, 0) is not None  # plain bilinear: two rows at most


# --------------------------------------------------------------------------- timeline


def _pipelined_spans(n: int, overlap: bool):
    spans = []
    for i in range(n):
        t = i * 10.0
        spans.append(Span(i, "preprocess", t, t + 2))
        inf_start = t + 2 if not overlap else t + 2
        spans.append(Span(i, "infer", inf_start, inf_start + (15 if overlap else 5), "host"))
        c0 = inf_start + (15 if overlap else 5)
        spans.append(Span(i, "composite", c0, c0 + (12 if overlap else 2)))
    return spans


def test_overlap_stats_detects_pipelining():
    par = overlap_stats(_pipelined_spans(8, overlap=True))
    seq = overlap_stats(_pipelined_spans(8, overlap=False))
    assert par["frames"] == 5 and par["both"] == 5
    assert seq["frames"] == 5 and seq["both"] == 0


def test_timeline_keeps_the_last_frames():
    tl = Timeline(capacity=4)
    tl.extend(_pipelined_spans(10, overlap=True))
    assert len(tl.spans()) == 12 and tl.spans()[0].frame_id == 6
    assert tl.rows()[0]["stage"] == "preprocess"
    tl.clear()
    assert tl.spans() == []


def test_plot_stage_timeline_skips_cpu_stages(tmp_path):
    from segcam.gpu.timeline import plot_stage_timeline

    class CpuStages:
        info: dict = {}

    assert plot_stage_timeline(CpuStages(), tmp_path / "bench.png") is None


def test_plot_timeline_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib (segcam[plot]) not installed")
    from segcam.gpu.timeline import plot_timeline

    out = plot_timeline(_pipelined_spans(6, overlap=True), tmp_path / "t.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
