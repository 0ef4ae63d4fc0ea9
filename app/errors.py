"""segcam's own exception types.

Every error that reaches a user is a :class:`SegcamError`: it names the problem and, in
``hint``, what to do about it. The CLI prints ``segcam: error: <message>`` (and the hint)
and exits with ``exit_code``; no traceback is shown for these.
"""

from __future__ import annotations


class SegcamError(Exception):
    """Base of every user-facing segcam error."""

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigError(SegcamError):
    """Invalid configuration file, key, value or --set override."""

    exit_code = 2


class UsageError(SegcamError):
    """Invalid command-line usage that argparse could not catch."""

    exit_code = 2


class ModelError(SegcamError):
    """Model missing, corrupt, unsupported, or not matching its profile."""

    exit_code = 3


class FetchError(ModelError):
    """Model download failed (no network, registry error, hash mismatch)."""


class BackendError(SegcamError):
    """Inference backend could not be created or failed at run time."""

    exit_code = 4


class EngineError(BackendError):
    """TensorRT engine missing, corrupt or built for another device/TensorRT."""


class SourceError(SegcamError):
    """Input source cannot be opened (unknown scheme, missing file, no camera)."""

    exit_code = 5


class OutputError(SegcamError):
    """Output sink cannot be opened (no display, unwritable path)."""

    exit_code = 6


class PipelineError(SegcamError):
    """A pipeline stage failed; the runner stopped the pipeline."""

    exit_code = 7


class GpuError(SegcamError):
    """CUDA / NVRTC failure or no usable GPU where one was required."""

    exit_code = 8


class PublishError(SegcamError):
    """ZeroMQ publisher/subscriber setup failed (bad address, keys)."""

    exit_code = 9


class ProtocolError(SegcamError):
    """A wire message could not be decoded (malformed, unknown version)."""

    exit_code = 9


class ThermalError(SegcamError):
    """Thermal sensor configuration is unusable."""

    exit_code = 10


class ServiceError(SegcamError):
    """systemd service install/uninstall/notify failed."""

    exit_code = 11
