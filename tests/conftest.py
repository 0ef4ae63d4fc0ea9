"""Shared fixtures: the real default model, a real portrait photo, temporary configs.

The model fixture converts MediaPipe Selfie Segmentation from the mediapipe wheel on the
package registry (the same path as `segcam model fetch`) into a cache that survives between
test runs (.cache/ in the repo, git-ignored), so only the first run downloads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _restore_segcam_logger():
    """Undo what an in-process ``segcam`` main() does to the ``segcam`` logger.

    ``setup_logging`` binds a handler to the sys.stderr of the moment (pytest's capture
    stream inside a test) and sets the level; left in place, later tests would log into a
    closed stream or miss records below that level.
    """
    logger = logging.getLogger("segcam")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Persistent model cache for tests (SEGCAM_TEST_CACHE or <repo>/.cache/segcam-test)."""
    path = Path(os.environ.get("SEGCAM_TEST_CACHE", REPO / ".cache" / "segcam-test"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def selfie_onnx(model_cache: Path) -> Path:
    """Path of the converted mediapipe-selfie ONNX (fetched and converted once)."""
    from segcam.models.registry import ensure_model

    return ensure_model("mediapipe-selfie", model_cache)


@pytest.fixture(scope="session")
def selfie_landscape_onnx(model_cache: Path) -> Path:
    """Path of the converted mediapipe-selfie-landscape ONNX."""
    from segcam.models.registry import ensure_model

    return ensure_model("mediapipe-selfie-landscape", model_cache)


@pytest.fixture(scope="session")
def portrait_bgr() -> np.ndarray:
    """A real photograph of a person (scikit-image's astronaut, Eileen Collins), BGR uint8."""
    from skimage import data

    rgb = data.astronaut()
    return np.ascontiguousarray(rgb[:, :, ::-1])


# --------------------------------------------------------------------------- fuzz tier


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the fuzz tier's counts, rates, seeds and slowest cases (tests/fuzz_support.py)."""
    from fuzz_support import REPORTS

    if not REPORTS:
        return
    terminalreporter.section("fuzz summary")
    for rec in REPORTS:
        terminalreporter.write_line(
            f"{rec['name']}: {rec['cases']} cases (seeds {rec['seeds']}) in {rec['seconds']:.1f} s"
            f" = {rec['cases_per_s']:.0f} cases/s (worker CPU {rec['cpu_s']:.1f} s);"
            f" accepted {rec['accepted']}, project errors {rec['project_errors']};"
            f" slowest {rec['slowest_cpu_ms']:.1f} ms CPU / {rec['slowest_ms']:.1f} ms wall"
            f" ({rec['slowest_case']}); worker peak RSS {rec['peak_rss_mib']} MiB"
        )
