"""The GPU path: cuda-python shim, device probe, memory, NVRTC kernels, GPU pipeline stages.

Everything here imports without cuda-python; :func:`probe` says whether the GPU path can
run and why not. Heavy pieces (kernels, stages) load the bindings only when used.
"""

from __future__ import annotations

from segcam.gpu.device import GpuInfo, probe

__all__ = ["GpuInfo", "probe"]
