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


# The exit codes of every segcam command: `segcam --help` prints this table and the README
# carries the same one (a test keeps the two and the classes above in agreement).
EXIT_CODES = (
    (0, "success; also a stop by SIGTERM (systemd's clean stop)"),
    (1, "unexpected internal error (a bug: please report it with its traceback)"),
    (2, "invalid configuration, --set value or command-line usage (ConfigError, UsageError)"),
    (3, "model missing, corrupt, not matching its profile, or its fetch failed (ModelError)"),
    (4, "inference backend or TensorRT engine unusable (BackendError, EngineError)"),
    (5, "input cannot be opened, or was lost for good (SourceError)"),
    (6, "output cannot be opened: no display, unwritable path (OutputError)"),
    (7, "a pipeline stage failed while running (PipelineError)"),
    (8, "CUDA / NVRTC failure where a GPU was required (GpuError)"),
    (9, "mask stream setup failed or a message did not decode (PublishError, ProtocolError)"),
    (10, "thermal sensor configuration unusable (ThermalError)"),
    (11, "systemd service install, uninstall or notify failed (ServiceError)"),
    (130, "interrupted by SIGINT (Ctrl-C), as shells expect"),
)


def exit_codes_text() -> str:
    """The exit-code table as plain text (the ``--help`` epilog)."""
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {what}" for code, what in EXIT_CODES)
