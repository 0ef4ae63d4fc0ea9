"""Describe a model file (.onnx or .tflite): its inputs, outputs, ops and provenance."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Dict, List

from segcam.errors import ModelError
from segcam.models.sidecar import read_sidecar, sha256_file

_ONNX_TYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    6: "int32",
    7: "int64",
    10: "float16",
    11: "float64",
}


def is_tflite(path: Path) -> bool:
    """Whether ``path`` starts like a TFLite flatbuffer (the TFL3 identifier)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    return len(head) == 8 and head[4:8] == b"TFL3"


def load_onnx(path: Path, check: bool = True) -> Any:
    """Load an ONNX model, turning a corrupt/truncated file into one ModelError."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such model file: {path}")
    hint = "re-create it (`segcam model fetch` / `segcam model convert`) or check the path"
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError) as exc:
        raise ModelError(f"{path} is not a readable ONNX model ({exc})", hint) from None
    if len(model.graph.node) == 0 or len(model.graph.output) == 0:
        raise ModelError(f"{path} is not a usable ONNX model (empty graph; truncated?)", hint)
    if check:
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
            raise ModelError(f"{path} fails onnx.checker: {first}", hint) from None
    return model


def _onnx_io(values: Any) -> List[Dict[str, Any]]:
    out = []
    for vi in values:
        tt = vi.type.tensor_type
        dims = [
            d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim
        ]
        out.append(
            {
                "name": vi.name,
                "shape": dims,
                "dtype": _ONNX_TYPES.get(tt.elem_type, str(tt.elem_type)),
            }
        )
    return out


def describe(path: Path) -> Dict[str, Any]:
    """A dict describing the model at ``path`` (format, inputs, outputs, ops, sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such model file: {path}")
    if is_tflite(path):
        return _describe_tflite(path)
    return _describe_onnx(path)


def _describe_tflite(path: Path) -> Dict[str, Any]:
    import numpy as np

    from segcam.models.tflite_reader import parse_tflite

    graph = parse_tflite(path.read_bytes(), path.name)

    def io(indices: List[int]) -> List[Dict[str, Any]]:
        return [
            {
                "name": graph.tensors[i].name,
                "shape": list(graph.tensors[i].shape),
                "dtype": np.dtype(graph.tensors[i].dtype).name if graph.tensors[i].dtype else "?",
            }
            for i in indices
        ]

    return {
        "path": str(path),
        "format": f"tflite (schema {graph.schema_version})",
        "sha256": sha256_file(path),
        "inputs": io(graph.inputs),
        "outputs": io(graph.outputs),
        "ops": dict(sorted(graph.op_counts.items(), key=lambda kv: -kv[1])),
    }


def _describe_onnx(path: Path) -> Dict[str, Any]:
    model = load_onnx(path)
    inits = {i.name for i in model.graph.initializer}
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    info: Dict[str, Any] = {
        "path": str(path),
        "format": f"onnx (ir {model.ir_version}, opset {opsets.get('ai.onnx', '?')})",
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "sha256": sha256_file(path),
        "inputs": _onnx_io([i for i in model.graph.input if i.name not in inits]),
        "outputs": _onnx_io(model.graph.output),
        "ops": dict(Counter(n.op_type for n in model.graph.node).most_common()),
    }
    sidecar = read_sidecar(path)
    if sidecar is not None:
        info["sidecar"] = sidecar
        info["sidecar_hash_ok"] = sidecar.get("onnx_sha256") == info["sha256"]
    return info


def format_description(info: Dict[str, Any]) -> str:
    """Human-readable lines for :func:`describe`'s dict."""
    lines = [f"{info['path']}", f"  format:  {info['format']}"]
    if info.get("producer"):
        lines.append(f"  producer: {info['producer']}")
    lines.append(f"  sha256:  {info['sha256']}")
    for key in ("inputs", "outputs"):
        lines.append(f"  {key}:")
        for spec in info[key]:
            lines.append(f"    {spec['name']}  {spec['dtype']}{spec['shape']}")
    ops = ", ".join(f"{k} x{v}" for k, v in info["ops"].items())
    lines.append(f"  ops ({sum(info['ops'].values())}): {ops}")
    sidecar = info.get("sidecar")
    if sidecar:
        src = sidecar.get("source", {})
        where = (
            src.get("wheel") and f"{src.get('wheel')} : {src.get('member')}" or src.get("file", "?")
        )
        ok = "matches" if info.get("sidecar_hash_ok") else "DOES NOT MATCH (file changed?)"
        lines.append(f"  source:  {where}")
        lines.append(
            f"  converter: {sidecar.get('converter', '?')} {sidecar.get('converter_version', '?')}"
            f", created {sidecar.get('created', '?')}; sidecar hash {ok}"
        )
    return "\n".join(lines)
