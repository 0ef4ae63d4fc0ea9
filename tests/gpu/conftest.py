"""Fixtures of the ``gpu`` tier: a real CUDA device through cuda-python, or a skip saying why.

Every test in tests/gpu/ is marked ``gpu``; on a machine without cuda-python or without a
GPU they skip with the probe's reason (CI has neither).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from segcam.gpu import probe


@pytest.fixture(scope="session")
def gpu_info():
    """The GpuInfo of device 0, or skip with the reason there is none."""
    info, reason = probe()
    if info is None:
        pytest.skip(f"no CUDA GPU: {reason}")
    return info


@pytest.fixture(scope="session")
def gpu_ctx(gpu_info) -> Iterator:
    """The retained primary context for the whole session."""
    from segcam.gpu.device import GpuContext

    ctx = GpuContext.acquire(gpu_info.index)
    yield ctx
    ctx.release()


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory) -> Path:
    """A fresh kernel cache for the session (so the first load really compiles)."""
    return tmp_path_factory.mktemp("segcam-kernels")


@pytest.fixture(scope="session")
def kernels(gpu_ctx, kernel_cache):
    """Loader of compiled kernel modules by name (cached per session)."""
    from segcam.gpu.nvrtc import load_module

    loaded = {}

    def get(name: str):
        gpu_ctx.make_current()
        if name not in loaded:
            loaded[name], _ = load_module(name, gpu_ctx.info.sm, kernel_cache)
        return loaded[name]

    yield get
    for module in loaded.values():
        module.close()


@pytest.fixture
def stream(gpu_ctx):
    """A fresh stream for one test."""
    from segcam.gpu.memory import Stream

    s = Stream()
    yield s
    s.close()
