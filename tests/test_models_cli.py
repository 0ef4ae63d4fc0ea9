"""``segcam model ...`` end to end in real subprocesses: fetch, convert, path, info, list,
and every bad-input case (one clear line, non-zero exit, no traceback).

"No network" is real: pip is pointed at a closed port on loopback, so its connection is
refused exactly as on a machine without a network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from segcam.models.registry import MODELS, tflite_file

REPO = Path(__file__).resolve().parent.parent
SELFIE = MODELS["mediapipe-selfie"]
LANDSCAPE = MODELS["mediapipe-selfie-landscape"]


def _no_network_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_EXTRA_INDEX_URL="",
        PIP_FIND_LINKS="",
        PIP_NO_CACHE_DIR="1",
    )
    return env


def segcam(args: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run ``python -m segcam ARGS`` (the installed CLI's code) and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "segcam", *args],
        cwd=str(REPO),
        env=env or _no_network_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Non-zero exit, no traceback, and an error line containing every needle."""
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("segcam: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    return errors[0]


def _wheel(path: Path, members: Dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def real_tflite(
    model_cache: Path, selfie_onnx: Path, selfie_landscape_onnx: Path
) -> Dict[str, bytes]:
    """The verified .tflite bytes of both models (from the test model cache)."""
    return {
        SELFIE.member: tflite_file(SELFIE.name, model_cache).read_bytes(),
        LANDSCAPE.member: tflite_file(LANDSCAPE.name, model_cache).read_bytes(),
    }


def test_fetch_without_network_fails_cleanly(tmp_path: Path) -> None:
    proc = segcam(["model", "fetch", "mediapipe-selfie", "--cache-dir", str(tmp_path)])
    assert_clean_error(proc, "unreachable", "segcam model convert")
    assert not (tmp_path / "mediapipe-selfie.onnx").exists()


def test_fetch_rejects_hash_mismatch(tmp_path: Path) -> None:
    fake = _wheel(tmp_path / "fake.whl", {SELFIE.member: b"\x1c\x00\x00\x00TFL3" + b"\0" * 64})
    cache = tmp_path / "cache"
    proc = segcam(["model", "fetch", "--wheel", str(fake), "--cache-dir", str(cache)])
    assert_clean_error(proc, "sha256 mismatch")
    assert not list(cache.glob("*.tflite")) and not list(cache.glob("*.onnx"))


def test_fetch_from_wheel_offline(tmp_path: Path, real_tflite: Dict[str, bytes]) -> None:
    """A wheel on disk is enough: both members are verified, the ONNX path is the last line."""
    wheel = _wheel(tmp_path / "mediapipe.whl", real_tflite)
    cache = tmp_path / "cache"
    proc = segcam(["model", "fetch", "--wheel", str(wheel), "--cache-dir", str(cache)])
    assert proc.returncode == 0, proc.stderr
    onnx_path = Path(proc.stdout.strip().splitlines()[-1])
    assert onnx_path == cache / "mediapipe-selfie.onnx" and onnx_path.is_file()
    assert "verified" in proc.stderr  # progress is shown (on stderr)
    side = json.loads((cache / "mediapipe-selfie.onnx.json").read_text())
    assert side["tflite_sha256"] == SELFIE.sha256
    assert side["source"]["wheel"] == "mediapipe==0.10.14"
    assert side["source"]["member"] == SELFIE.member
    assert side["onnx_opset"] == 17 and side["converter_version"]
    # the sibling model came out of the same wheel: the landscape fetch needs no network
    proc = segcam(["model", "fetch", "mediapipe-selfie-landscape", "--cache-dir", str(cache)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(cache / "mediapipe-selfie-landscape.onnx")


def test_unknown_model_name_suggests(tmp_path: Path) -> None:
    proc = segcam(["model", "fetch", "mediapipe-selfy", "--cache-dir", str(tmp_path)])
    line = assert_clean_error(proc, "did you mean 'mediapipe-selfie'")
    assert "mediapipe-selfy" in line


def test_path_of_missing_model_says_how_to_fetch(tmp_path: Path) -> None:
    proc = segcam(["model", "path", "mediapipe-selfie", "--cache-dir", str(tmp_path)])
    assert_clean_error(proc, "not in the cache", "segcam model fetch mediapipe-selfie")


def test_path_of_cached_model(model_cache: Path, selfie_onnx: Path) -> None:
    proc = segcam(["model", "path", "mediapipe-selfie", "--cache-dir", str(model_cache)])
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == selfie_onnx


def test_corrupt_cached_onnx_is_detected_and_rebuilt_offline(
    tmp_path: Path, real_tflite: Dict[str, bytes]
) -> None:
    wheel = _wheel(tmp_path / "mp.whl", real_tflite)
    cache = tmp_path / "cache"
    assert (
        segcam(["model", "fetch", "--wheel", str(wheel), "--cache-dir", str(cache)]).returncode == 0
    )
    onnx_path = cache / "mediapipe-selfie.onnx"
    blob = bytearray(onnx_path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    onnx_path.write_bytes(bytes(blob))
    proc = segcam(["model", "path", "mediapipe-selfie", "--cache-dir", str(cache)])
    assert_clean_error(proc, "does not match the hash")
    # fetch repairs it from the cached, verified .tflite: no network needed
    proc = segcam(["model", "fetch", "--cache-dir", str(cache)])
    assert proc.returncode == 0, proc.stderr
    assert "rebuilding" in proc.stderr
    assert segcam(["model", "path", "--cache-dir", str(cache)]).returncode == 0


def test_ensure_model_cache_hit_does_not_rewrite(model_cache: Path, selfie_onnx: Path) -> None:
    from segcam.models.registry import ensure_model

    before = selfie_onnx.stat()
    messages: List[str] = []
    assert ensure_model("mediapipe-selfie", model_cache, messages.append) == selfie_onnx
    after = selfie_onnx.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert messages == []


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_truncated_models_fail_cleanly(
    tmp_path: Path, model_cache: Path, selfie_onnx: Path, kind: str
) -> None:
    src = tflite_file("mediapipe-selfie", model_cache) if kind == "tflite" else selfie_onnx
    data = src.read_bytes()
    bad = tmp_path / f"half.{kind}"
    bad.write_bytes(data[: len(data) // 2])
    assert_clean_error(segcam(["model", "info", str(bad)]), "half." + kind)
    if kind == "tflite":
        assert_clean_error(segcam(["model", "convert", str(bad)]), "corrupt or truncated")
        assert not (tmp_path / "half.onnx").exists()


def test_garbage_and_missing_files_fail_cleanly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"this is not a model at all" * 10)
    assert_clean_error(segcam(["model", "convert", str(junk)]), "not a TensorFlow Lite model")
    assert_clean_error(segcam(["model", "info", str(junk)]), "junk.tflite")
    missing = tmp_path / "nope.onnx"
    assert_clean_error(segcam(["model", "info", str(missing)]), "no such model file")
    assert_clean_error(segcam(["model", "convert", str(tmp_path / "nope.tflite")]), "no such file")


def test_convert_offline_and_info(tmp_path: Path, real_tflite: Dict[str, bytes]) -> None:
    src = tmp_path / "downloaded.tflite"
    src.write_bytes(real_tflite[LANDSCAPE.member])
    out = tmp_path / "out" / "landscape.onnx"
    proc = segcam(["model", "convert", str(src), "-o", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    info = segcam(["model", "info", str(out)])
    assert info.returncode == 0, info.stderr
    assert "input_1  float32[1, 144, 256, 3]" in info.stdout
    assert "segment_back  float32[1, 144, 256, 1]" in info.stdout
    assert "sidecar hash matches" in info.stdout
    info = segcam(["model", "info", str(src)])
    assert info.returncode == 0 and "Convolution2DTransposeBias x1" in info.stdout


def test_convert_of_registered_tflite_fills_the_cache(
    tmp_path: Path, real_tflite: Dict[str, bytes]
) -> None:
    """`segcam model convert` on a copied registry .tflite is the offline `fetch`."""
    src = tmp_path / "copied-from-usb.tflite"
    src.write_bytes(real_tflite[SELFIE.member])
    cache = tmp_path / "cache"
    proc = segcam(["model", "convert", str(src), "--cache-dir", str(cache)])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(cache / "mediapipe-selfie.onnx")
    proc = segcam(["model", "path", "mediapipe-selfie", "--cache-dir", str(cache)])
    assert proc.returncode == 0 and proc.stdout.strip() == str(cache / "mediapipe-selfie.onnx")
    listing = segcam(["model", "list", "--cache-dir", str(cache)])
    assert listing.returncode == 0
    rows = {ln.split()[0]: ln.split()[2] for ln in listing.stdout.splitlines()[1:3]}
    assert rows == {"mediapipe-selfie": "ready", "mediapipe-selfie-landscape": "-"}
