"""The Backend protocol that every inference engine (ONNX Runtime, TensorRT) follows.

A backend is built from a :class:`~segcam.inference.profile.ModelProfile` and a model (ONNX
file or TensorRT engine). It checks at load time that the model matches the profile and
then runs one inference per call: one frame (``infer``), or with a dynamic batch
dimension several frames of different streams at once (``infer_batch``).

Two ways to run:

- ``infer(tensor, out=None)``: host in, host out. ``tensor`` has the profile's input
  shape and dtype; the result is the profile's chosen output, raw (postprocess turns it
  into a probability). With ``out`` the result is written there (no allocation).
- ``infer_device(in_ptr, out_ptr, stream)``: device pointers (GPU path); only when
  ``supports_device`` is true, else :class:`~segcam.errors.BackendError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np

from segcam.inference.profile import ModelProfile

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Protocol
else:
    try:
        from typing import Protocol
    except ImportError:  # pragma: no cover
        Protocol = object


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of a model input or output.

    ``shape`` entries are ints; a dynamic dimension is ``-1``. ``dtype`` is a numpy dtype
    name such as ``"float32"``.
    """

    name: str
    shape: Tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        """``name[1,3,256,256] float32`` for messages."""
        dims = ",".join("?" if d < 0 else str(d) for d in self.shape)
        return f"{self.name}[{dims}] {self.dtype}"


class Backend(Protocol):
    """What the pipeline needs from an inference engine."""

    name: str  # "onnxruntime" or "tensorrt"
    provider: str  # e.g. "onnxruntime:CPUExecutionProvider", "tensorrt:fp16"
    profile: ModelProfile
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    supports_device: bool

    def infer(self, tensor: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Run one inference on a host tensor; return the chosen raw output."""

    @property
    def max_batch(self) -> int:
        """Frames one ``infer_batch`` call may carry (1: the model's batch is fixed)."""

    def infer_batch(self, tensors: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Run once on host tensors stacked ``[N, ...]``; return the stacked raw outputs."""

    def get_state(self) -> Dict[str, np.ndarray]:
        """Recurrent state fed back between frames (empty for stateless models)."""

    def set_state(self, states: Dict[str, np.ndarray]) -> None:
        """Feed ``states`` next (each stream of a shared backend keeps its own)."""

    def infer_device(self, in_ptr: int, out_ptr: int, stream: int) -> None:
        """Run on device buffers, enqueued on ``stream`` (GPU path only)."""

    def close(self) -> None:
        """Release the session/engine and its buffers."""


def describe_specs(specs: List[TensorSpec]) -> str:
    """``a[1,3,8,8] float32, b[...]`` for error messages."""
    return ", ".join(s.describe() for s in specs) or "none"


__all__ = ["Backend", "TensorSpec", "describe_specs"]
