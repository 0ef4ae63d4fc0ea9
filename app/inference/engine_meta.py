"""Engines that know where they came from: file names, JSON sidecars and the load-time check.

A TensorRT engine only runs on the TensorRT version and GPU it was built with, and it is
only right for the exact ONNX it was built from. Every engine therefore has a sidecar
``<engine>.json`` recording the TensorRT version, the device name and SM, the ONNX's
sha256, the precision, the I/O tensors, the build flags and when/how long the build took.
File names encode model, precision, TensorRT major.minor and SM
(``mediapipe-selfie.fp16.trt10.3.sm87.engine``), so engines of different devices sharing
a directory never collide.

Before an engine is deserialised, :func:`compare` checks its sidecar against what is
running now and returns every difference; :func:`check_engine` turns that into one
:class:`~segcam.errors.EngineError` whose message says what differs and whose hint is the
command that rebuilds the engine.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from segcam.errors import EngineError
from segcam.fileio import write_atomic

SCHEMA = 1
SIDECAR_SUFFIX = ".json"
TIMING_CACHE_NAME = "timing.cache"
PRECISIONS = ("fp16", "fp32")
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class TensorMeta:
    """One engine I/O tensor as the engine reports it (-1 = dynamic dimension)."""

    name: str
    mode: str  # "input" | "output"
    shape: List[int]
    dtype: str  # numpy name: "float32", "float16", "int32", ...
    profile: List[List[int]] = field(default_factory=list)  # inputs: [min, opt, max]


@dataclass
class EngineMeta:
    """The sidecar of one engine (see the module docstring)."""

    model: str  # profile name
    precision: str  # "fp16" | "fp32"
    tensorrt_version: str  # full version of the TensorRT that built it, e.g. "10.3.0"
    device_name: str  # GPU name as CUDA reports it, e.g. "Orin"
    sm: str  # compute capability without the dot, e.g. "87"
    onnx_sha256: str
    onnx_path: str = ""
    inputs: List[TensorMeta] = field(default_factory=list)
    outputs: List[TensorMeta] = field(default_factory=list)
    builder: str = ""  # "trtexec" | "python"
    build_flags: List[str] = field(default_factory=list)
    workspace_mib: int = 0
    dla_core: int = -1
    built_at: str = ""  # ISO 8601 UTC
    build_seconds: float = 0.0
    engine_bytes: int = 0
    engine_sha256: str = ""
    segcam_version: str = ""
    schema: int = SCHEMA

    def to_json(self) -> str:
        """The sidecar text (stable key order, indented)."""
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> EngineMeta:
        """Build from parsed JSON (ValueError/TypeError/KeyError on a malformed file)."""
        data = dict(data)
        data["inputs"] = [TensorMeta(**t) for t in data.get("inputs", [])]
        data["outputs"] = [TensorMeta(**t) for t in data.get("outputs", [])]
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError("unknown keys " + ", ".join(unknown))
        return cls(**data)


@dataclass
class RuntimeFacts:
    """What is running now, to compare a sidecar against (empty = unknown, not checked)."""

    tensorrt_version: str = ""
    device_name: str = ""
    sm: str = ""
    onnx_sha256: str = ""
    precision: str = ""
    model: str = ""
    input_name: str = ""
    output_name: str = ""
    input_shape: Tuple[int, ...] = ()


@dataclass
class Mismatch:
    """One way an engine does not fit what is running now."""

    kind: str  # schema | tensorrt | sm | device | onnx | precision | model | input | output | shape
    engine: str
    current: str

    @property
    def message(self) -> str:
        """Short human text, e.g. 'built for TensorRT 8.5.2, running 10.3.0'."""
        what = _KIND_TEXT.get(self.kind, self.kind)
        return what.format(engine=self.engine, current=self.current)


_KIND_TEXT = {
    "schema": "sidecar schema {engine}, this segcam reads {current}",
    "tensorrt": "built with TensorRT {engine}, running TensorRT {current}",
    "sm": "built for SM {engine}, this GPU is SM {current}",
    "device": "built on GPU '{engine}', this GPU is '{current}'",
    "onnx": "built from ONNX sha256 {engine}, the model file now has {current}",
    "precision": "built as {engine}, {current} was asked for",
    "model": "built for model '{engine}', the profile is '{current}'",
    "input": "engine inputs {engine}, the profile feeds '{current}'",
    "output": "engine outputs {engine}, the profile reads '{current}'",
    "shape": "engine accepts input shapes {engine}, the profile feeds {current}",
}


# --------------------------------------------------------------------------- naming


def version_tuple(text: str) -> Tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0, 26); stops at the first non-numeric part."""
    out: List[int] = []
    for part in str(text).strip().split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        out.append(int(digits.group(0)))
        if digits.group(0) != part:  # '2-1+cuda11' ends the version (Debian revision)
            break
    return tuple(out)


def short_version(text: str) -> str:
    """major.minor of a TensorRT version ('10.3.0.26' -> '10.3')."""
    vt = version_tuple(text)
    if len(vt) < 2:
        raise EngineError(
            f"cannot read a TensorRT version from {text!r}", "expected e.g. 8.5.2 or 10.3.0"
        )
    return f"{vt[0]}.{vt[1]}"


def sm_string(value: Union[str, Tuple[int, int], List[int]]) -> str:
    """Normalise a compute capability: (8, 7), '8.7', 'sm87', '87' -> '87'."""
    if isinstance(value, (tuple, list)):
        return f"{int(value[0])}{int(value[1])}"
    text = str(value).strip().lower()
    if text.startswith("sm"):
        text = text[2:].lstrip("_")
    text = text.replace(".", "")
    if not text.isdigit():
        raise EngineError(f"cannot read a GPU compute capability from {value!r}", "e.g. 8.7 or 87")
    return text


def engine_filename(model: str, precision: str, tensorrt_version: str, sm: str) -> str:
    """``<model>.<precision>.trt<major.minor>.sm<SM>.engine``."""
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}", "use fp16 or fp32")
    safe = _NAME_SAFE.sub("-", Path(model).stem if model.endswith(".yaml") else model)
    return f"{safe}.{precision}.trt{short_version(tensorrt_version)}.sm{sm_string(sm)}.engine"


def sidecar_path(engine_path: Union[str, Path]) -> Path:
    """Where an engine's sidecar lives (``<engine>.json``)."""
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def timing_cache_path(engine_dir: Union[str, Path], tensorrt_version: str, sm: str) -> Path:
    """Persistent timing cache of one TensorRT version + SM inside the engine directory."""
    name = f"trt{short_version(tensorrt_version)}.sm{sm_string(sm)}.{TIMING_CACHE_NAME}"
    return Path(engine_dir) / name


# --------------------------------------------------------------------------- files


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def write_sidecar(meta: EngineMeta, engine_path: Union[str, Path]) -> Path:
    """Write ``meta`` next to the engine (atomically); returns the sidecar path."""
    out = sidecar_path(engine_path)
    write_atomic(out, meta.to_json())
    return out


def read_sidecar(engine_path: Union[str, Path]) -> EngineMeta:
    """Read an engine's sidecar; EngineError if it is missing or malformed."""
    side = sidecar_path(engine_path)
    try:
        text = side.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EngineError(
            f"engine {engine_path} has no sidecar {side.name}: its origin is unknown",
            "rebuild it with build_engine.sh or `segcam engine build`",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"cannot read engine sidecar {side}: {exc}") from None
    try:
        meta = EngineMeta.from_dict(json.loads(text))
    except (ValueError, TypeError, KeyError) as exc:
        raise EngineError(
            f"engine sidecar {side} is corrupt ({exc})",
            "rebuild the engine with build_engine.sh or `segcam engine build`",
        ) from None
    return meta


# --------------------------------------------------------------------------- checks


def _io_names(tensors: List[TensorMeta]) -> str:
    return "[" + ", ".join(t.name for t in tensors) + "]" if tensors else "[]"


def _shape_fits(meta_in: TensorMeta, shape: Tuple[int, ...]) -> bool:
    if len(meta_in.shape) != len(shape):
        return False
    if meta_in.profile and len(meta_in.profile) == 3:
        lo, _, hi = meta_in.profile
        return all(a <= s <= b for a, s, b in zip(lo, shape, hi))
    return all(d in (-1, s) for d, s in zip(meta_in.shape, shape))


def _shape_text(meta_in: TensorMeta) -> str:
    if meta_in.profile and len(meta_in.profile) == 3 and meta_in.profile[0] != meta_in.profile[2]:
        lo, _, hi = meta_in.profile
        return f"{tuple(lo)}..{tuple(hi)}"
    return str(tuple(meta_in.shape))


def compare(meta: EngineMeta, facts: RuntimeFacts) -> List[Mismatch]:
    """Every difference between an engine's sidecar and what is running now.

    TensorRT versions must agree up to the patch number: a plan file is refused by any
    other TensorRT release (only version-compatible engines, which segcam does not build,
    are exempt).
    """
    out: List[Mismatch] = []
    if meta.schema != SCHEMA:
        out.append(Mismatch("schema", str(meta.schema), str(SCHEMA)))
    if facts.tensorrt_version:
        built, running = version_tuple(meta.tensorrt_version), version_tuple(facts.tensorrt_version)
        if built[:3] != running[:3]:
            out.append(Mismatch("tensorrt", meta.tensorrt_version, facts.tensorrt_version))
    if facts.sm and sm_string(meta.sm) != sm_string(facts.sm):
        out.append(Mismatch("sm", meta.sm, sm_string(facts.sm)))
    # A sidecar written where the GPU could not be queried has no name: SM still counts.
    if facts.device_name and meta.device_name and meta.device_name != facts.device_name:
        out.append(Mismatch("device", meta.device_name, facts.device_name))
    if facts.onnx_sha256 and meta.onnx_sha256 != facts.onnx_sha256:
        out.append(Mismatch("onnx", meta.onnx_sha256[:12], facts.onnx_sha256[:12]))
    if facts.precision and meta.precision != facts.precision:
        out.append(Mismatch("precision", meta.precision, facts.precision))
    if facts.model and meta.model != facts.model:
        out.append(Mismatch("model", meta.model, facts.model))
    chosen: Optional[TensorMeta] = None
    if facts.input_name:
        chosen = next((t for t in meta.inputs if t.name == facts.input_name), None)
        if chosen is None:
            out.append(Mismatch("input", _io_names(meta.inputs), facts.input_name))
    elif len(meta.inputs) == 1:
        chosen = meta.inputs[0]
    if facts.output_name and all(t.name != facts.output_name for t in meta.outputs):
        out.append(Mismatch("output", _io_names(meta.outputs), facts.output_name))
    if chosen is not None and facts.input_shape and not _shape_fits(chosen, facts.input_shape):
        out.append(Mismatch("shape", _shape_text(chosen), str(tuple(facts.input_shape))))
    return out


def rebuild_command(
    onnx_path: Union[str, Path],
    model: str,
    precision: str = "fp16",
    engine_dir: Union[str, Path] = "engines",
) -> str:
    """The shell command that builds a matching engine on this device."""
    parts = ["build_engine.sh", str(onnx_path), "--profile", model, "--out-dir", str(engine_dir)]
    if precision != "fp16":
        parts += ["--precision", precision]
    return " ".join(shlex.quote(p) for p in parts)


def describe(mismatches: List[Mismatch]) -> str:
    """All mismatches in one line ('; '-separated)."""
    return "; ".join(m.message for m in mismatches)


def check_engine(
    engine_path: Union[str, Path],
    facts: RuntimeFacts,
    rebuild: str,
    verify_bytes: bool = True,
) -> EngineMeta:
    """Check an engine file and its sidecar before deserialising it.

    Raises :class:`EngineError` (message: what is wrong; hint: ``rebuild``) when the
    engine is missing, its sidecar is missing or corrupt, its bytes do not match the
    sidecar (truncated or replaced file), or anything in :func:`compare` differs.
    """
    engine_path = Path(engine_path)
    hint = f"rebuild it: {rebuild}"
    if not engine_path.is_file():
        raise EngineError(f"no TensorRT engine at {engine_path}", f"build one: {rebuild}")
    try:
        meta = read_sidecar(engine_path)
    except EngineError as exc:
        raise EngineError(exc.message, hint) from None
    size = engine_path.stat().st_size
    if meta.engine_bytes and size != meta.engine_bytes:
        raise EngineError(
            f"engine {engine_path} is corrupt: {size} bytes, its sidecar says {meta.engine_bytes}",
            hint,
        )
    if verify_bytes and meta.engine_sha256 and sha256_file(engine_path) != meta.engine_sha256:
        raise EngineError(
            f"engine {engine_path} is corrupt: its sha256 differs from its sidecar's", hint
        )
    problems = compare(meta, facts)
    if problems:
        raise EngineError(f"engine {engine_path.name} does not match: {describe(problems)}", hint)
    return meta


def find_engines(engine_dir: Union[str, Path], model: str) -> List[Path]:
    """Engines of ``model`` in a directory (any precision, version, SM), newest first."""
    d = Path(engine_dir)
    if not d.is_dir():
        return []
    safe = _NAME_SAFE.sub("-", model)
    found = [p for p in d.glob(f"{safe}.*.engine") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def format_meta(meta: EngineMeta) -> str:
    """Human summary of a sidecar for `segcam engine inspect`."""
    lines = [
        f"model:        {meta.model}",
        f"precision:    {meta.precision}",
        f"TensorRT:     {meta.tensorrt_version}",
        f"device:       {meta.device_name} (SM {meta.sm})",
        f"ONNX:         {meta.onnx_path} (sha256 {meta.onnx_sha256[:16]}...)",
        f"built:        {meta.built_at} in {meta.build_seconds:.1f} s by {meta.builder}",
        f"workspace:    {meta.workspace_mib} MiB"
        + (f", DLA core {meta.dla_core}" if meta.dla_core >= 0 else ""),
        f"flags:        {' '.join(meta.build_flags) or '-'}",
    ]
    for t in meta.inputs + meta.outputs:
        prof = ""
        if t.profile:
            prof = "  profile min/opt/max " + " / ".join(str(tuple(s)) for s in t.profile)
        lines.append(f"{t.mode + ':':13} {t.name} {tuple(t.shape)} {t.dtype}{prof}")
    return "\n".join(lines)
