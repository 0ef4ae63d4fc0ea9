#!/usr/bin/env bash
# Build a TensorRT FP16 engine from an ONNX model (placeholder until the TensorRT issue lands).
set -euo pipefail
echo "build_engine.sh: not implemented yet" >&2
exit 1
