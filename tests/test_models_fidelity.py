"""Fidelity of the converted MediaPipe models against Google's own runtime (LiteRT).

The original .tflite (from the cache that ``ensure_model`` fills) runs in
``ai_edge_litert``; the converted ONNX runs in ONNX Runtime on the CPU. Both get the same
float32 NHWC input. Note: stock LiteRT resolves MediaPipe's custom op
``Convolution2DTransposeBias`` only through its default XNNPACK delegate (with
``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` the model fails to prepare), so the default
interpreter is used here; ``test_converter_ops.py`` also checks that op against a numpy
transcription of MediaPipe's reference kernel.

Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest

litert = pytest.importorskip("ai_edge_litert.interpreter", reason="ai-edge-litert not installed")
cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")

MAX_ABS = 1e-3
MIN_AGREE = 0.999

MODELS = {"mediapipe-selfie": (256, 256), "mediapipe-selfie-landscape": (144, 256)}


class _Pair:
    """The same model in LiteRT and in ONNX Runtime."""

    def __init__(self, tflite_path: Path, onnx_path: Path) -> None:
        self.interp = litert.Interpreter(model_path=str(tflite_path), num_threads=1)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.in_name = self.sess.get_inputs()[0].name

    def run(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        self.interp.set_tensor(self.inp["index"], x)
        self.interp.invoke()
        ref = self.interp.get_tensor(self.out["index"]).copy()
        got = self.sess.run(None, {self.in_name: x})[0]
        return ref, got


@pytest.fixture(scope="module")
def pairs(model_cache: Path, selfie_onnx: Path, selfie_landscape_onnx: Path) -> Dict[str, _Pair]:
    from segcam.models.registry import tflite_file

    onnx = {"mediapipe-selfie": selfie_onnx, "mediapipe-selfie-landscape": selfie_landscape_onnx}
    return {name: _Pair(tflite_file(name, model_cache), onnx[name]) for name in MODELS}


def _photo_input(bgr: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    h, w = hw
    rgb = cv2.cvtColor(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    return (rgb.astype(np.float32) / 255.0)[None]


def _photos(portrait_bgr: np.ndarray) -> Dict[str, np.ndarray]:
    from skimage import data

    camera = data.camera()  # a photographer with his camera (grey)
    return {
        "astronaut": portrait_bgr,
        "astronaut-mirrored": np.ascontiguousarray(portrait_bgr[:, ::-1]),
        "cameraman": np.ascontiguousarray(np.repeat(camera[:, :, None], 3, axis=2)),
    }


def _compare(pair: _Pair, x: np.ndarray, label: str) -> Tuple[float, float]:
    ref, got = pair.run(x)
    assert got.shape == ref.shape
    max_abs = float(np.abs(got - ref).max())
    agree = float(((got > 0.5) == (ref > 0.5)).mean())
    fg = float((ref > 0.5).mean())
    print(f"\nfidelity {label}: max|diff|={max_abs:.2e} mask agreement={agree:.6f} fg={fg:.3f}")
    return max_abs, agree


@pytest.mark.parametrize("name", sorted(MODELS))
def test_photos_match_litert(pairs: Dict[str, _Pair], portrait_bgr: np.ndarray, name: str) -> None:
    """On real photographs of people, ONNX probabilities equal LiteRT's within 1e-3."""
    for label, bgr in _photos(portrait_bgr).items():
        x = _photo_input(bgr, MODELS[name])
        max_abs, agree = _compare(pairs[name], x, f"{name} {label}")
        assert max_abs <= MAX_ABS
        assert agree >= MIN_AGREE


@pytest.mark.parametrize("name", sorted(MODELS))
def test_person_is_found(pairs: Dict[str, _Pair], portrait_bgr: np.ndarray, name: str) -> None:
    """Sanity: the converted model marks the astronaut's face as person, the corner not."""
    h, w = MODELS[name]
    _ref, got = pairs[name].run(_photo_input(portrait_bgr, MODELS[name]))
    prob = got[0, :, :, 0]
    # In skimage's astronaut the face is near (x=0.43, y=0.2) of the frame; top-right is flag/sky.
    assert prob[int(0.2 * h), int(0.43 * w)] > 0.9
    assert prob[int(0.05 * h), int(0.95 * w)] < 0.1


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_inputs_match_litert(pairs: Dict[str, _Pair], name: str, seed: int) -> None:
    """On random inputs (pixel noise and smooth blobs) the outputs agree as well."""
    h, w = MODELS[name]
    rng = np.random.default_rng(seed)
    noise = rng.random((1, h, w, 3), dtype=np.float32)
    small = rng.random((h // 16, w // 16, 3), dtype=np.float32)
    blobs = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)[None]
    for label, x in (("noise", noise), ("blobs", np.ascontiguousarray(blobs, np.float32))):
        max_abs, agree = _compare(pairs[name], x, f"{name} random-{label} seed={seed}")
        assert max_abs <= MAX_ABS
        assert agree >= MIN_AGREE
