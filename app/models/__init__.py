"""Models segcam fetches and converts by itself.

- :mod:`segcam.models.registry`: named models (MediaPipe Selfie Segmentation, general and
  landscape), ``ensure_model`` / ``model_path`` over a verified on-disk cache.
- :mod:`segcam.models.fetch`: the .tflite out of the ``mediapipe`` wheel via ``pip download``.
- :mod:`segcam.models.tflite_reader` + :mod:`segcam.models.tflite_onnx`: segcam's own
  TFLite -> ONNX converter; :mod:`segcam.models.convert` writes the ONNX + sidecar.
- :mod:`segcam.models.sidecar`, :mod:`segcam.models.describe`: provenance JSON, ``model info``.
- :mod:`segcam.models.bench`: ORT CPU vs LiteRT latency (``segcam bench --model-only``).
"""
