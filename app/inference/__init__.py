"""Inference: model profiles, CPU pre/post-processing, backends (ONNX Runtime, TensorRT).

Import what you need from the submodules (``segcam.inference.profile``, ``.preprocess``,
``.postprocess``, ``.backend``, ``.onnxruntime``, ``.select``); this package imports
nothing heavy itself.
"""

from __future__ import annotations
