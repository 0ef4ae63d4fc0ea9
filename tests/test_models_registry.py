"""Registry, sidecar and cache behaviour of segcam.models (real files, real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest

from segcam.errors import ModelError
from segcam.models import registry
from segcam.models.sidecar import read_sidecar, sha256_file, sidecar_path

REPO = Path(__file__).resolve().parent.parent


def test_registry_pins_the_mediapipe_files() -> None:
    selfie = registry.get_spec("mediapipe-selfie")
    landscape = registry.get_spec("mediapipe-selfie-landscape")
    assert selfie.requirement == landscape.requirement == "mediapipe==0.10.14"
    assert selfie.member == "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"
    assert landscape.member.endswith("/selfie_segmentation_landscape.tflite")
    assert selfie.sha256.startswith("9ee168ec") and landscape.sha256.startswith("a77d03f4")
    assert selfie.input_shape == (1, 256, 256, 3) and landscape.input_shape == (1, 144, 256, 3)
    assert registry.spec_for_sha256(selfie.sha256) is selfie
    assert registry.spec_for_sha256("0" * 64) is None


@pytest.mark.parametrize(
    "typo,suggestion",
    [("mediapipe_selfie", "mediapipe-selfie"), ("selfie-landscape", "mediapipe-selfie-landscape")],
)
def test_unknown_names_get_a_close_match(typo: str, suggestion: str) -> None:
    with pytest.raises(ModelError) as info:
        registry.get_spec(typo)
    assert f"did you mean '{suggestion}'" in info.value.hint


def test_sidecar_records_provenance(selfie_onnx: Path) -> None:
    side = read_sidecar(selfie_onnx)
    assert side is not None and sidecar_path(selfie_onnx).name == "mediapipe-selfie.onnx.json"
    assert side["onnx_sha256"] == sha256_file(selfie_onnx)
    assert side["tflite_sha256"] == registry.get_spec("mediapipe-selfie").sha256
    assert side["source"]["member"].endswith("selfie_segmentation.tflite")
    assert {"converter_version", "onnx_opset", "created", "inputs", "outputs"} <= set(side)
    assert side["inputs"] == [{"name": "input_1", "shape": [1, 256, 256, 3], "dtype": "float32"}]


def test_broken_sidecar_makes_the_cache_entry_broken(tmp_path: Path, selfie_onnx: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mediapipe-selfie.onnx").write_bytes(selfie_onnx.read_bytes())
    assert registry.cache_state("mediapipe-selfie", cache) == "has no sidecar"
    sidecar_path(cache / "mediapipe-selfie.onnx").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        registry.model_path("mediapipe-selfie", cache)


def test_stale_converter_version_is_still_usable_and_refreshed(
    tmp_path: Path, model_cache: Path, selfie_onnx: Path
) -> None:
    """A model made by an older converter is valid for model_path; ensure_model redoes it
    from the cached .tflite (no download)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("mediapipe-selfie.onnx", "mediapipe-selfie.onnx.json", "mediapipe-selfie.tflite"):
        (cache / name).write_bytes((model_cache / name).read_bytes())
    side = json.loads((cache / "mediapipe-selfie.onnx.json").read_text())
    side["converter_version"] = "0.0-old"
    (cache / "mediapipe-selfie.onnx.json").write_text(json.dumps(side))
    assert registry.cache_state("mediapipe-selfie", cache) == "stale"
    assert registry.model_path("mediapipe-selfie", cache) == cache / "mediapipe-selfie.onnx"
    messages: List[str] = []
    registry.ensure_model("mediapipe-selfie", cache, messages.append)
    assert registry.cache_state("mediapipe-selfie", cache) == "ok"
    assert any("using cached mediapipe-selfie.tflite" in m for m in messages)
    assert not any("download" in m for m in messages)


def test_concurrent_fetches_into_one_cache(
    tmp_path: Path, model_cache: Path, selfie_onnx: Path
) -> None:
    """Two processes fetching the same model at once both succeed with one valid result."""
    spec = registry.get_spec("mediapipe-selfie")
    wheel = tmp_path / "mp.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(spec.member, registry.tflite_file(spec.name, model_cache).read_bytes())
    cache = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "segcam",
        "model",
        "fetch",
        "--wheel",
        str(wheel),
        "--cache-dir",
        str(cache),
    ]
    procs = [
        subprocess.Popen(
            cmd, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results: Dict[int, str] = {}
    for i, proc in enumerate(procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results[i] = out.strip().splitlines()[-1]
    assert results[0] == results[1] == str(cache / "mediapipe-selfie.onnx")
    assert registry.cache_state("mediapipe-selfie", cache) == "ok"
    assert not list(cache.glob(".*.tmp"))


def test_a_cache_segcam_cannot_use_is_a_model_error_naming_it(tmp_path: Path) -> None:
    # Found under the service: a model copied in by root, unreadable by the service user,
    # ended `segcam run` with a PermissionError traceback. Root reads everything, so the
    # OSError here is a cache path that is a file, not a folder.
    cache = tmp_path / "models"
    cache.write_text("not a folder")
    with pytest.raises(ModelError) as err:
        registry.ensure_model("mediapipe-selfie", cache)
    assert f"cannot use the model cache {cache}" in err.value.message
    assert "chown -R" in (err.value.hint or "")
    proc = subprocess.run(
        [sys.executable, "-m", "segcam", "model", "fetch", "--cache-dir", str(cache)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith(f"segcam: error: cannot use the model cache {cache}")
    assert "Traceback" not in proc.stderr


def test_first_run_with_a_cached_tflite_says_it_converts_offline(
    tmp_path: Path, model_cache: Path, selfie_onnx: Path
) -> None:
    """A cache with only the verified .tflite converts it without naming the registry."""
    cache = tmp_path / "cache"
    cache.mkdir()
    src = registry.tflite_file("mediapipe-selfie", model_cache)
    (cache / src.name).write_bytes(src.read_bytes())
    assert registry.has_verified_source("mediapipe-selfie", cache)
    cmd = [sys.executable, "-m", "segcam", "run", "--input", "demo", "--frames", "2"]
    cmd += ["--set", f"model.cache_dir={cache}"]
    res = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "from the cached, verified mediapipe-selfie.tflite" in res.stderr
    assert "package registry" not in res.stderr
    assert registry.cache_state("mediapipe-selfie", cache) == "ok"
    # A tampered source is not "verified": the fetch path (and its log) would run instead.
    (cache / src.name).write_bytes(b"not a model")
    assert not registry.has_verified_source("mediapipe-selfie", cache)
