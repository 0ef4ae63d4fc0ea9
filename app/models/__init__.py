"""Models segcam fetches and converts by itself.

- :mod:`app.models.registry`: named models (MediaPipe Selfie Segmentation, general and
  landscape), ``ensure_model`` / ``model_path`` over a verified on-disk cache.
- :mod:`app.models.fetch`: the .tflite out of the ``mediapipe`` wheel via ``pip download``.
- :mod:`app.models.tflite_reader` + :mod:`app.models.tflite_onnx`: segcam's own
  TFLite -> ONNX converter; :mod:`app.models.convert` writes the ONNX + sidecar.
- :mod:`app.models.sidecar`, :mod:`app.models.describe`: provenance JSON, ``model info``.
- :mod:`app.models.bench`: ORT CPU vs LiteRT latency (``segcam bench --model-only``).
"""
