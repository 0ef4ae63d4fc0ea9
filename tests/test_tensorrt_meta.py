"""Engine sidecars: file naming, write/read, and every way an engine can fail to match.

Pure file and data logic: no TensorRT involved.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segcam.errors import EngineError
from segcam.inference.engine_meta import (
    EngineMeta,
    Mismatch,
    RuntimeFacts,
    TensorMeta,
    check_engine,
    compare,
    engine_filename,
    find_engines,
    format_meta,
    read_sidecar,
    rebuild_command,
    sha256_file,
    short_version,
    sidecar_path,
    sm_string,
    timing_cache_path,
    version_tuple,
    write_sidecar,
)


def _meta(**changes: object) -> EngineMeta:
    base = dict(
        model="mediapipe-selfie",
        precision="fp16",
        tensorrt_version="10.3.0",
        device_name="Orin",
        sm="87",
        onnx_sha256="a" * 64,
        onnx_path="/models/selfie.onnx",
        inputs=[TensorMeta("input_1", "input", [1, 256, 256, 3], "float32")],
        outputs=[TensorMeta("activation_10", "output", [1, 256, 256, 1], "float32")],
        builder="trtexec",
        build_flags=["fp16", "workspace=1024MiB"],
        workspace_mib=1024,
        built_at="2026-11-22T09:00:00+00:00",
        build_seconds=123.4,
    )
    base.update(changes)
    return EngineMeta(**base)  # type: ignore[arg-type]


def _facts(**changes: object) -> RuntimeFacts:
    base = dict(
        tensorrt_version="10.3.0.26",
        device_name="Orin",
        sm="87",
        onnx_sha256="a" * 64,
        precision="fp16",
        model="mediapipe-selfie",
        input_name="",
        output_name="",
        input_shape=(1, 256, 256, 3),
    )
    base.update(changes)
    return RuntimeFacts(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------ naming


def test_engine_file_names_encode_model_precision_version_and_sm() -> None:
    assert engine_filename("selfie", "fp16", "10.3.0", "87") == "selfie.fp16.trt10.3.sm87.engine"
    assert engine_filename("selfie", "fp32", "8.5.2.2", (7, 2)) == "selfie.fp32.trt8.5.sm72.engine"
    assert engine_filename("my model/x", "fp16", "10.3", "sm_87").startswith("my-model-x.fp16.")
    # different devices / versions never collide
    names = {
        engine_filename("m", p, v, s)
        for p in ("fp16", "fp32")
        for v in ("8.5.2", "10.3.0")
        for s in ("72", "87")
    }
    assert len(names) == 8


def test_naming_rejects_garbage() -> None:
    with pytest.raises(EngineError, match="precision"):
        engine_filename("m", "int8", "10.3", "87")
    with pytest.raises(EngineError, match="TensorRT version"):
        short_version("ten")
    with pytest.raises(EngineError, match="compute capability"):
        sm_string("orin")


def test_version_and_sm_parsing() -> None:
    assert version_tuple("10.3.0.26") == (10, 3, 0, 26)
    assert version_tuple("8.5.2-1+cuda11.4") == (8, 5, 2)
    assert short_version("8.5.2.2") == "8.5"
    assert sm_string("8.7") == sm_string((8, 7)) == sm_string("sm87") == "87"


def test_sidecar_and_timing_cache_paths(tmp_path: Path) -> None:
    eng = tmp_path / "selfie.fp16.trt10.3.sm87.engine"
    assert sidecar_path(eng).name == "selfie.fp16.trt10.3.sm87.engine.json"
    assert timing_cache_path(tmp_path, "10.3.0", "87").name == "trt10.3.sm87.timing.cache"


# ------------------------------------------------------------------ write / read


def test_sidecar_round_trip(tmp_path: Path) -> None:
    eng = tmp_path / "e.engine"
    eng.write_bytes(b"plan")
    meta = _meta(engine_bytes=4, engine_sha256=sha256_file(eng))
    side = write_sidecar(meta, eng)
    data = json.loads(side.read_text())
    for key in (
        "tensorrt_version",
        "device_name",
        "sm",
        "onnx_sha256",
        "precision",
        "inputs",
        "outputs",
        "build_flags",
        "built_at",
        "build_seconds",
    ):
        assert key in data
    assert read_sidecar(eng) == meta
    assert "Orin (SM 87)" in format_meta(meta)


def test_missing_and_corrupt_sidecars_are_refused(tmp_path: Path) -> None:
    eng = tmp_path / "e.engine"
    eng.write_bytes(b"plan")
    with pytest.raises(EngineError, match="no sidecar"):
        read_sidecar(eng)
    sidecar_path(eng).write_text("{not json")
    with pytest.raises(EngineError, match="corrupt"):
        read_sidecar(eng)
    sidecar_path(eng).write_text(json.dumps({"model": "x"}))
    with pytest.raises(EngineError, match="corrupt"):
        read_sidecar(eng)
    good = json.loads(_meta().to_json())
    good["surprise"] = 1
    sidecar_path(eng).write_text(json.dumps(good))
    with pytest.raises(EngineError, match="unknown keys surprise"):
        read_sidecar(eng)


# ------------------------------------------------------------------ compare


def test_matching_engine_has_no_mismatches() -> None:
    assert compare(_meta(), _facts()) == []
    # a 4-part Python version and a 3-part trtexec version are the same release
    assert compare(_meta(tensorrt_version="10.3.0"), _facts(tensorrt_version="10.3.0.26")) == []


@pytest.mark.parametrize(
    "meta_changes, fact_changes, kind, text",
    [
        ({"schema": 99}, {}, "schema", "sidecar schema 99"),
        ({"tensorrt_version": "8.5.2"}, {}, "tensorrt", "built with TensorRT 8.5.2, running"),
        ({"tensorrt_version": "10.3.1"}, {}, "tensorrt", "TensorRT 10.3.1"),
        ({"sm": "72"}, {}, "sm", "built for SM 72, this GPU is SM 87"),
        ({"device_name": "Xavier"}, {}, "device", "built on GPU 'Xavier', this GPU is 'Orin'"),
        ({"onnx_sha256": "b" * 64}, {}, "onnx", "built from ONNX sha256 bbbbbbbbbbbb"),
        ({"precision": "fp32"}, {}, "precision", "built as fp32, fp16 was asked for"),
        ({"model": "birefnet"}, {}, "model", "built for model 'birefnet'"),
        (
            {},
            {"input_name": "image"},
            "input",
            "engine inputs [input_1], the profile feeds 'image'",
        ),
        ({}, {"output_name": "mask"}, "output", "the profile reads 'mask'"),
        ({}, {"input_shape": (1, 144, 256, 3)}, "shape", "the profile feeds (1, 144, 256, 3)"),
    ],
)
def test_every_mismatch_kind_is_named(meta_changes, fact_changes, kind, text) -> None:
    problems = compare(_meta(**meta_changes), _facts(**fact_changes))
    assert [p.kind for p in problems] == [kind]
    assert text in problems[0].message


def test_dynamic_engine_shapes_are_checked_against_its_profile() -> None:
    dyn = TensorMeta(
        "x",
        "input",
        [1, 3, -1, -1],
        "float32",
        [[1, 3, 128, 128], [1, 3, 256, 256], [1, 3, 512, 512]],
    )
    meta = _meta(inputs=[dyn])
    assert compare(meta, _facts(input_shape=(1, 3, 320, 320))) == []
    (problem,) = compare(meta, _facts(input_shape=(1, 3, 1024, 1024)))
    assert problem.kind == "shape"
    assert "(1, 3, 128, 128)..(1, 3, 512, 512)" in problem.message


def test_unknown_facts_are_not_checked() -> None:
    # no ONNX next to the engine, or a sidecar without a device name: nothing to compare
    assert compare(_meta(), RuntimeFacts()) == []
    assert compare(_meta(device_name=""), _facts()) == []


def test_several_mismatches_are_all_listed() -> None:
    problems = compare(_meta(tensorrt_version="8.5.2", sm="72", device_name="Xavier"), _facts())
    assert [p.kind for p in problems] == ["tensorrt", "sm", "device"]
    assert isinstance(problems[0], Mismatch)


# ------------------------------------------------------------------ check_engine


def _engine(tmp_path: Path, **changes: object) -> Path:
    eng = tmp_path / "mediapipe-selfie.fp16.trt10.3.sm87.engine"
    eng.write_bytes(b"serialized plan bytes")
    meta = _meta(engine_bytes=eng.stat().st_size, engine_sha256=sha256_file(eng))
    for k, v in changes.items():
        setattr(meta, k, v)
    write_sidecar(meta, eng)
    return eng


def test_check_engine_accepts_a_match_and_names_the_rebuild(tmp_path: Path) -> None:
    eng = _engine(tmp_path)
    rebuild = rebuild_command("/m/selfie.onnx", "mediapipe-selfie", "fp16", tmp_path)
    assert rebuild.startswith("build_engine.sh /m/selfie.onnx --profile mediapipe-selfie")
    assert check_engine(eng, _facts(), rebuild).model == "mediapipe-selfie"


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing", "no TensorRT engine at"),
        ("no_sidecar", "has no sidecar"),
        ("bad_sidecar", "sidecar .* is corrupt"),
        ("truncated", "is corrupt: 5 bytes, its sidecar says 21"),
        ("replaced", "its sha256 differs"),
        ("version", "built with TensorRT 8.5.2"),
    ],
)
def test_check_engine_refuses_with_message_and_rebuild_hint(tmp_path: Path, setup, message) -> None:
    eng = _engine(tmp_path)
    if setup == "missing":
        eng.unlink()
    elif setup == "no_sidecar":
        sidecar_path(eng).unlink()
    elif setup == "bad_sidecar":
        sidecar_path(eng).write_text("][")
    elif setup == "truncated":
        eng.write_bytes(b"short")
    elif setup == "replaced":
        eng.write_bytes(b"other plan bytes!!!!!")  # same size, other content
    elif setup == "version":
        _engine(tmp_path, tensorrt_version="8.5.2")
    with pytest.raises(EngineError, match=message) as info:
        check_engine(eng, _facts(), "build_engine.sh m.onnx --profile p")
    assert "build_engine.sh m.onnx --profile p" in info.value.hint


def test_find_engines_lists_a_models_engines(tmp_path: Path) -> None:
    for name in (
        "m.fp16.trt10.3.sm87.engine",
        "m.fp32.trt8.5.sm72.engine",
        "other.fp16.trt10.3.sm87.engine",
    ):
        (tmp_path / name).write_bytes(b"x")
    assert sorted(p.name for p in find_engines(tmp_path, "m")) == [
        "m.fp16.trt10.3.sm87.engine",
        "m.fp32.trt8.5.sm72.engine",
    ]
    assert find_engines(tmp_path / "absent", "m") == []
