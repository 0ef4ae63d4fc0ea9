"""Model profiles (loading, validation errors) and the CPU pre/post-processing arithmetic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from segcam.errors import ConfigError, ModelError, PipelineError
from segcam.inference.postprocess import to_probability
from segcam.inference.preprocess import Preprocessor, preprocess
from segcam.inference.profile import available_profiles, load_profile, replace
from segcam.inference.resample import warp_resize_u8

SHIPPED = [
    "birefnet",
    "deeplabv3",
    "mediapipe-selfie",
    "mediapipe-selfie-landscape",
    "modnet",
    "pp-humanseg",
]


def test_shipped_profiles_load() -> None:
    assert set(SHIPPED) <= set(available_profiles())
    for name in SHIPPED:
        p = load_profile(name)
        assert p.name == name and p.width > 0 and p.height > 0
        assert len(p.mean) == 3 and len(p.std) == 3
        assert p.licence and p.source and p.description
    selfie = load_profile("mediapipe-selfie")
    assert (selfie.layout, selfie.width, selfie.height, selfie.output_kind) == (
        "NHWC",
        256,
        256,
        "probability",
    )
    assert selfie.scale == pytest.approx(1 / 255)
    land = load_profile("mediapipe-selfie-landscape")
    assert land.input_shape == (1, 144, 256, 3)
    biref = load_profile("birefnet")
    assert biref.input_shape == (1, 3, 1024, 1024) and biref.output_kind == "logits"
    assert biref.mean == [0.485, 0.456, 0.406] and biref.std == [0.229, 0.224, 0.225]
    assert load_profile("modnet").mean == [0.5] * 3
    assert load_profile("deeplabv3").foreground_classes == [15]


def test_profile_by_path_and_single_value_mean(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("width: 8\nheight: 4\nscale: 2/255\nmean: [0.5]\nstd: [0.25]\n")
    p = load_profile(str(f))
    assert p.name == "mine" and p.path == str(f)
    assert p.mean == [0.5] * 3 and p.std == [0.25] * 3 and p.scale == pytest.approx(2 / 255)
    assert p.input_shape == (1, 3, 4, 8)


@pytest.mark.parametrize(
    "text, match",
    [
        ("width: 8\nheight: 8\nlayuot: NHWC\n", r"layuot \(line 3 of .*bad.yaml\): unknown key"),
        ("width: 8\nheight: 8\nlayout: NWHC\n", r"layout \(line 3 .*expected one of"),
        ("width: 8\nheight: -1\n", r"height \(line 2 .*positive integer"),
        ("width: 8\nheight: 8\nscale: one/255\n", r"scale \(line 3 .*fraction"),
        ("width: 8\nheight: 8\nstd: [1, 0, 1]\n", r"std \(line 3 .*non-zero"),
        ("width: 8\nheight: 8\nmean: [1, 2]\n", r"mean \(line 3 .*one number or three"),
        (
            "width: 8\nheight: 8\noutput_kind: multiclass\nnum_classes: 2\n"
            "foreground_classes: [2]\n",
            r"foreground_classes \(line 5",
        ),
        ("width: 8\nheight: [8\n", r"invalid YAML"),
    ],
)
def test_profile_errors_name_file_key_and_line(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_profile(f)


def test_unknown_profile_suggests_close_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_profile("mediapipe-selfy")
    assert "did you mean 'mediapipe-selfie'" in err.value.hint
    with pytest.raises(ConfigError, match="does not exist"):
        load_profile(tmp_path / "missing.yaml")


# ------------------------------------------------------------------ preprocess


def reference_preprocess(frame: np.ndarray, p) -> np.ndarray:
    """The documented arithmetic, written out step by step in float32."""
    if p.resample == "bilinear_half_pixel":
        x = cv2.resize(frame, (p.width, p.height), interpolation=cv2.INTER_LINEAR)
    else:  # checked against independent arithmetic in test_resample.py
        x = warp_resize_u8(frame, p.width, p.height, p.resample)
    if p.color_order == "RGB":
        x = x[:, :, ::-1]
    y = np.empty(x.shape, np.float32)
    for c in range(3):
        v = x[:, :, c].astype(np.float32) * np.float32(p.scale)
        v = v - np.float32(p.mean[c])
        y[:, :, c] = v / np.float32(p.std[c])
    y = y.astype(p.np_dtype)
    return (y.transpose(2, 0, 1) if p.layout == "NCHW" else y)[None]


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(120, 200, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", SHIPPED)
def test_preprocess_matches_documented_arithmetic(name: str, frame: np.ndarray) -> None:
    p = replace(load_profile(name), width=40, height=24)
    got = preprocess(frame, p)
    assert got.shape == p.input_shape and got.dtype == p.np_dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, reference_preprocess(frame, p))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_preprocess_float16_and_bgr(layout: str, frame: np.ndarray) -> None:
    p = replace(load_profile("birefnet"), width=33, height=17, layout=layout, dtype="float16")
    np.testing.assert_array_equal(preprocess(frame, p), reference_preprocess(frame, p))
    bgr = replace(p, color_order="BGR")
    a, b = preprocess(frame, p), preprocess(frame, bgr)
    assert not np.array_equal(a, b)  # the colour order changes the tensor
    np.testing.assert_array_equal(b, reference_preprocess(frame, bgr))


def test_preprocess_writes_into_out_and_same_size_skips_resize(frame: np.ndarray) -> None:
    p = replace(load_profile("mediapipe-selfie"), width=200, height=120)
    out = np.empty(p.input_shape, np.float32)
    res = preprocess(frame, p, out=out)
    assert res is out
    np.testing.assert_allclose(out[0], frame[:, :, ::-1] / 255.0, atol=1e-7)
    pre = Preprocessor(p)
    assert pre(frame) is pre(frame)  # internal buffer reused, no per-frame allocation
    with pytest.raises(PipelineError, match="output buffer"):
        preprocess(frame, p, out=np.empty((1, 3, 120, 200), np.float32))
    with pytest.raises(PipelineError, match="uint8 BGR"):
        preprocess(frame.astype(np.float32), p)


# ------------------------------------------------------------------ postprocess


def test_postprocess_single_channel_shapes() -> None:
    p = load_profile("mediapipe-selfie")
    v = np.linspace(-0.5, 1.5, 12, dtype=np.float32).reshape(3, 4)
    expect = np.clip(v, 0, 1)
    for shaped in (v[None, None], v[None, :, :, None], v[None], v, v[:, :, None]):
        np.testing.assert_array_equal(to_probability(shaped, p), expect)
    logits = replace(p, output_kind="logits")
    np.testing.assert_allclose(to_probability(v[None, None], logits), 1 / (1 + np.exp(-v)), 1e-6)
    out = np.empty((3, 4), np.float32)
    assert to_probability(v[None].astype(np.float16), logits, out=out) is out
    big = np.array([[-1e4, 0.0, 1e4]], np.float32)
    np.testing.assert_array_equal(to_probability(big, logits), [[0.0, 0.5, 1.0]])
    with pytest.raises(ModelError, match="expects one channel"):
        to_probability(np.zeros((1, 2, 3, 4), np.float32), p)


def test_postprocess_multiclass_axes_and_classes() -> None:
    rng = np.random.default_rng(1)
    s = rng.normal(size=(5, 6, 7)).astype(np.float32) * 4
    e = np.exp(s.astype(np.float64))
    expect = (e[1] + e[3]) / e.sum(axis=0)
    p = replace(load_profile("deeplabv3"), foreground_classes=[1, 3], num_classes=5)
    np.testing.assert_allclose(to_probability(s[None], p), expect, atol=1e-6)
    nhwc = replace(p, class_axis=-1)
    np.testing.assert_allclose(to_probability(np.moveaxis(s, 0, 2)[None], nhwc), expect, atol=1e-6)
    probs = replace(p, scores="probabilities")
    sm = (e / e.sum(axis=0)).astype(np.float32)
    np.testing.assert_allclose(to_probability(sm[None], probs), expect, atol=1e-6)
    with pytest.raises(ModelError, match="num_classes 21"):
        to_probability(s[None], replace(p, num_classes=21, foreground_classes=[15]))
    with pytest.raises(ModelError, match="spatial"):
        to_probability(s[None], replace(p, class_axis=2))
