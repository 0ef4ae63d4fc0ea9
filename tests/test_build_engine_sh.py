"""build_engine.sh: the exact trtexec command for TensorRT 8.5 and 10.x, a build, failures.

The script runs for real (bash subprocess, segcam's own ``engine plan``/``engine sidecar``
helpers, the real default model). trtexec does not exist here: ``--dry-run`` tests need
none, and the build tests use a small fake ``trtexec`` shell script (a TEST DOUBLE that
prints trtexec's version banner and writes a dummy plan file, or fails with a given log
line) so that version detection, progress, sidecar writing and failure explanations run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from fake_tensorrt.helpers import dynamic_two_output_onnx

from segcam.inference.engine_meta import RuntimeFacts, compare, read_sidecar, sha256_file

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "build_engine.sh"

FAKE_TRTEXEC = """#!/usr/bin/env bash
# TEST DOUBLE of trtexec: banner, then write the --saveEngine file or fail.
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{banner}] # trtexec $*"
[ "$1" = "--help" ] && exit 0
echo "$*" > "$(dirname "$0")/last_args"
out=""
for a in "$@"; do case "$a" in --saveEngine=*) out="${{a#--saveEngine=}}";; esac; done
echo "[11/22/2026-09:00:00] [I] [TRT] Building engine"
if [ -n "${{FAKE_TRTEXEC_FAIL:-}}" ]; then echo "[E] $FAKE_TRTEXEC_FAIL"; exit 1; fi
printf 'plan bytes' > "$out"
echo "&&&& PASSED TensorRT.trtexec"
"""


def _run(
    args: List[str], env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None
) -> subprocess.CompletedProcess:
    full_env = {
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "SEGCAM_PYTHON": sys.executable,
    }
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=str(cwd or REPO),
        timeout=120,
    )


def _trtexec(tmp_path: Path, banner: str) -> Path:
    d = tmp_path / f"trtexec-{banner}"
    d.mkdir()
    exe = d / "trtexec"
    exe.write_text(FAKE_TRTEXEC.format(banner=banner))
    exe.chmod(0o755)
    return exe


def _command(result: subprocess.CompletedProcess) -> List[str]:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return shlex.split(lines[0])


def test_dry_run_for_tensorrt_8_5(selfie_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "eng"
    cmd = _command(
        _run(
            [
                str(selfie_onnx),
                "--dry-run",
                "--trt-version",
                "8.5.2",
                "--sm",
                "72",
                "--out-dir",
                str(out),
            ]
        )
    )
    assert cmd[0] == "/usr/src/tensorrt/bin/trtexec"
    assert cmd[1:] == [
        f"--onnx={selfie_onnx}",
        f"--saveEngine={out}/mediapipe-selfie.fp16.trt8.5.sm72.engine.partial",
        "--fp16",
        "--memPoolSize=workspace:1024",
        f"--timingCacheFile={out}/trt8.5.sm72.timing.cache",
        "--buildOnly",
    ]


def test_dry_run_for_tensorrt_10(selfie_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "my engines"  # spaces survive quoting
    cmd = _command(
        _run(
            [
                str(selfie_onnx),
                "--dry-run",
                "--trt-version",
                "10.3.0",
                "--sm",
                "87",
                "--out-dir",
                str(out),
                "--workspace",
                "2048",
                "--dla-core",
                "1",
                "--precision",
                "fp32",
                "--",
                "--builderOptimizationLevel=4",
            ]
        )
    )
    assert cmd[1:] == [
        f"--onnx={selfie_onnx}",
        f"--saveEngine={out}/mediapipe-selfie.fp32.trt10.3.sm87.engine.partial",
        "--memPoolSize=workspace:2048",
        f"--timingCacheFile={out}/trt10.3.sm87.timing.cache",
        "--useDLACore=1",
        "--allowGPUFallback",
        "--skipInference",
        "--builderOptimizationLevel=4",
    ]


def test_skip_inference_from_8_6_on(selfie_onnx: Path) -> None:
    cmd = _command(_run([str(selfie_onnx), "--dry-run", "--trt-version", "8.6.1", "--sm", "87"]))
    assert "--skipInference" in cmd and "--buildOnly" not in cmd


def test_shapes_only_for_dynamic_inputs(tmp_path: Path) -> None:
    onnx = dynamic_two_output_onnx(tmp_path / "dyn2.onnx")
    prof = tmp_path / "dyn2.yaml"
    prof.write_text(
        "name: dyn2\ninput_name: image\nlayout: NCHW\nwidth: 64\nheight: 48\n"
        "output_name: prob\noutput_kind: probability\n"
    )
    args = [str(onnx), "--dry-run", "--trt-version", "10.3.0", "--sm", "87", "--profile", str(prof)]
    cmd = _command(
        _run(args + ["--min-shape", "1x3x32x32", "--max-shape", "1x3x128x128", "--io-fp16"])
    )
    assert "--minShapes=image:1x3x32x32" in cmd
    assert "--optShapes=image:1x3x48x64" in cmd
    assert "--maxShapes=image:1x3x128x128" in cmd
    assert "--inputIOFormats=fp16:chw" in cmd and "--outputIOFormats=fp16:chw" in cmd
    assert any(c.endswith("/dyn2.fp16.trt10.3.sm87.engine.partial") for c in cmd)


@pytest.mark.parametrize(
    "banner, version, build_only",
    [("8502", "8.5", "--buildOnly"), ("100300", "10.3", "--skipInference")],
)
def test_version_is_read_from_the_trtexec_banner(
    selfie_onnx: Path, tmp_path: Path, banner: str, version: str, build_only: str
) -> None:
    exe = _trtexec(tmp_path, banner)
    result = _run([str(selfie_onnx), "--dry-run", "--sm", "87"], env={"TRTEXEC": str(exe)})
    cmd = _command(result)
    assert cmd[0] == str(exe)
    assert any(f"trt{version}.sm87.engine.partial" in c for c in cmd)
    assert build_only in cmd
    assert f"TensorRT {version}" in result.stderr


def test_too_old_tensorrt_is_refused(selfie_onnx: Path) -> None:
    result = _run([str(selfie_onnx), "--dry-run", "--trt-version", "8.4.3", "--sm", "87"])
    assert result.returncode == 2
    assert "too old: segcam needs 8.5 or newer" in result.stderr


def test_usage_errors(selfie_onnx: Path, tmp_path: Path) -> None:
    assert _run([]).returncode == 2
    r = _run([str(tmp_path / "absent.onnx"), "--dry-run"])
    assert r.returncode == 2 and "no ONNX model at" in r.stderr
    r = _run([str(selfie_onnx), "--precision", "int8", "--dry-run"])
    assert r.returncode == 2 and "fp16 or fp32" in r.stderr
    r = _run([str(selfie_onnx), "--bogus"])
    assert r.returncode == 2 and "unknown option --bogus" in r.stderr
    r = _run([str(selfie_onnx), "--dry-run", "--sm", "87"])  # no trtexec, no version
    assert r.returncode == 2 and "pass --trt-version" in r.stderr
    r = _run([str(selfie_onnx), "--trt-version", "10.3.0", "--sm", "87"])  # real build, no trtexec
    assert r.returncode == 2 and "trtexec not found" in r.stderr and "apt install" in r.stderr
    r = _run(["--help"])
    assert r.returncode == 0 and "--trt-version" in r.stdout and "--dry-run" in r.stdout


def test_build_writes_engine_and_sidecar(selfie_onnx: Path, tmp_path: Path) -> None:
    exe = _trtexec(tmp_path, "100300")
    out = tmp_path / "engines"
    result = _run(
        [str(selfie_onnx), "--sm", "87", "--out-dir", str(out)], env={"TRTEXEC": str(exe)}
    )
    assert result.returncode == 0, result.stderr
    engine = out / "mediapipe-selfie.fp16.trt10.3.sm87.engine"
    assert result.stdout.strip().splitlines()[-1] == str(engine)
    assert engine.read_bytes() == b"plan bytes"
    assert not (out / (engine.name + ".partial")).exists()
    assert "done in" in result.stderr and "TensorRT 10.3.0, SM 87" in result.stderr
    args = (exe.parent / "last_args").read_text().split()
    assert "--skipInference" in args and "--fp16" in args
    meta = read_sidecar(engine)
    assert meta.builder == "trtexec" and meta.tensorrt_version == "10.3.0" and meta.sm == "87"
    assert meta.onnx_sha256 == sha256_file(selfie_onnx)
    assert meta.engine_sha256 == sha256_file(engine)
    assert "fp16" in meta.build_flags and "timing_cache" in meta.build_flags
    assert [t.name for t in meta.inputs] == ["input_1"]
    assert [t.name for t in meta.outputs] == ["activation_10"]
    facts = RuntimeFacts(
        tensorrt_version="10.3.0",
        sm="87",
        onnx_sha256=sha256_file(selfie_onnx),
        precision="fp16",
        model="mediapipe-selfie",
        input_shape=(1, 256, 256, 3),
    )
    assert compare(meta, facts) == []


@pytest.mark.parametrize(
    "log_line, explanation",
    [
        ("ModelImporter.cpp:726: No importer registered for op: DeformConv", "cannot import"),
        (
            "Requested amount of GPU memory (4294967296 bytes) could not be allocated",
            "GPU memory ran out",
        ),
        ("Cannot find input tensor with name image", "check input_name in profile"),
    ],
)
def test_failures_are_explained(
    selfie_onnx: Path, tmp_path: Path, log_line: str, explanation: str
) -> None:
    exe = _trtexec(tmp_path, "8502")
    out = tmp_path / "engines"
    result = _run(
        [str(selfie_onnx), "--sm", "72", "--out-dir", str(out)],
        env={"TRTEXEC": str(exe), "FAKE_TRTEXEC_FAIL": log_line},
    )
    assert result.returncode == 1
    assert log_line in result.stderr  # the log tail is shown
    assert explanation in result.stderr
    assert "trtexec failed after" in result.stderr
    assert not list(out.glob("*.engine")) and not list(out.glob("*.partial"))
    assert (out / "mediapipe-selfie.fp16.trt8.5.sm72.engine.build.log").is_file()


def test_shellcheck_clean() -> None:
    exe = shutil.which("shellcheck")
    if exe is None:
        pytest.skip("shellcheck is not installed (CI installs it: apt-get install shellcheck)")
    result = subprocess.run([exe, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_max_batch_makes_an_optimisation_profile_of_1_to_n_frames(
    selfie_onnx: Path, tmp_path: Path
) -> None:
    """An ONNX with a dynamic batch (what several streams share) gets min 1, opt/max N."""
    import onnx

    from segcam.models.batch import with_dynamic_batch

    dyn = tmp_path / "mediapipe-selfie.onnx"
    onnx.save(with_dynamic_batch(onnx.load(str(selfie_onnx))), str(dyn))
    base = ["--dry-run", "--trt-version", "10.3.0", "--sm", "87", "--profile", "mediapipe-selfie"]
    cmd = _command(_run([str(dyn), *base, "--max-batch", "4"]))
    assert "--minShapes=input_1:1x256x256x3" in cmd
    assert "--optShapes=input_1:4x256x256x3" in cmd
    assert "--maxShapes=input_1:4x256x256x3" in cmd
    fixed = _run([str(selfie_onnx), *base, "--max-batch", "4"])
    assert fixed.returncode != 0 and "dynamic batch" in fixed.stderr
    bad = _run([str(dyn), *base, "--max-batch", "four"])
    assert bad.returncode == 2 and "--max-batch" in bad.stderr
