"""Convert a .tflite file to ONNX on disk, with its sidecar (the offline half of fetch)."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from segcam.errors import ModelError
from segcam.fileio import write_atomic
from segcam.models.sidecar import sha256_bytes, write_sidecar
from segcam.models.tflite_onnx import CONVERTER_VERSION, ONNX_IR_VERSION, ONNX_OPSET, convert_tflite

Progress = Callable[[str], None]


def _io_specs(values: Any) -> List[Dict[str, Any]]:
    specs = []
    for vi in values:
        dims = [
            d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in vi.type.tensor_type.shape.dim
        ]
        specs.append({"name": vi.name, "shape": dims, "dtype": "float32"})
    return specs


def convert_file(
    tflite_path: Path,
    onnx_path: Path,
    source: Optional[Dict[str, Any]] = None,
    progress: Optional[Progress] = None,
    dynamic_batch: bool = False,
) -> Path:
    """Convert ``tflite_path`` into ``onnx_path`` and write its sidecar; returns onnx_path.

    ``dynamic_batch`` gives the model a symbolic batch dimension (several frames a call).

    ``source`` describes where the .tflite came from (e.g. wheel and member); by default
    the file itself. Raises ModelError for a missing, corrupt or unsupported model.
    """
    tflite_path = Path(tflite_path)
    onnx_path = Path(onnx_path)
    if not tflite_path.is_file():
        raise ModelError(f"no such file: {tflite_path}", "pass the path of a .tflite model")
    data = tflite_path.read_bytes()
    say = progress or (lambda _msg: None)
    say(f"converting {tflite_path.name} ({len(data) / 1e6:.2f} MB) to ONNX opset {ONNX_OPSET}")
    model = convert_tflite(data, tflite_path.name, dynamic_batch=dynamic_batch)
    blob = model.SerializeToString()
    write_atomic(onnx_path, blob)
    info: Dict[str, Any] = {
        "source": source or {"file": str(tflite_path.resolve())},
        "tflite_sha256": sha256_bytes(data),
        "onnx_sha256": sha256_bytes(blob),
        "converter": "segcam-tflite2onnx",
        "converter_version": CONVERTER_VERSION,
        "onnx_opset": ONNX_OPSET,
        "onnx_ir_version": ONNX_IR_VERSION,
        "nodes": len(model.graph.node),
        "batch": "dynamic" if dynamic_batch else 1,
        "inputs": _io_specs(model.graph.input),
        "outputs": _io_specs(model.graph.output),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    write_sidecar(onnx_path, info)
    shapes = "dynamic batch" if dynamic_batch else "static shapes"
    say(f"wrote {onnx_path.name}: {len(model.graph.node)} nodes, onnx.checker ok, {shapes}")
    return onnx_path
