"""JSON sidecars beside converted models: where a model came from and its hashes.

``<model>.onnx.json`` records the source (wheel + member, or a file), the sha256 of the
source .tflite and of the ONNX, the converter version and opset, and when it was made.
A cache hit re-hashes the ONNX (a few hundred kB: milliseconds) and compares it with the
sidecar, so a truncated or edited model is noticed before ONNX Runtime trips over it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

from segcam.errors import ModelError
from segcam.fileio import write_atomic

SIDECAR_FORMAT = "segcam-model/1"


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path`` (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_path(model_path: Path) -> Path:
    """The sidecar of ``model_path`` (``model.onnx`` -> ``model.onnx.json``)."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def write_sidecar(model_path: Path, info: Dict[str, Any]) -> Path:
    """Write ``info`` (plus the format tag) as the sidecar of ``model_path``."""
    data = dict(info)
    data.setdefault("format", SIDECAR_FORMAT)
    path = sidecar_path(model_path)
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def read_sidecar(model_path: Path) -> Optional[Dict[str, Any]]:
    """The sidecar of ``model_path`` as a dict; None when there is none.

    Raises ModelError when a sidecar exists but is not valid JSON.
    """
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"model sidecar {path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"model sidecar {path} does not hold a JSON object")
    return data
