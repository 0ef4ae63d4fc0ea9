"""The lighter model for hot spells: built off the hot path, then handed to the runner.

Loading a model takes from a fraction of a second (ONNX Runtime) to several seconds (a
TensorRT engine, or a first fetch of the model), so it never happens on the pipeline's
threads nor on the governor's sampler thread: a builder thread makes the light profile's
backend and stages and registers them with ``runner.add_profile_stages``. Only then does the
governor set ``knobs.profile_override``; frames captured after that run the light model.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, Callable, Optional

from segcam.config import Config

log = logging.getLogger("segcam.thermal")


class LightModel:
    """Builds ``cfg.model.light_profile`` once for ``runner``; ``ready`` when usable."""

    def __init__(self, cfg: Config, runner: Any, on_ready: Callable[[], None]) -> None:
        self.name = cfg.model.light_profile
        self.cfg = cfg
        self.runner = runner
        self.on_ready = on_ready
        self.state = "idle"  # idle | building | ready | failed | unsupported
        self.error: Optional[str] = None
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        if not callable(getattr(runner, "add_profile_stages", None)):
            self.state = "unsupported"
            self.error = "this runner cannot switch model profiles"

    @property
    def ready(self) -> bool:
        """True once the runner has the light model's stages."""
        return self.state == "ready"

    def ensure(self) -> None:
        """Start building (once); returns at once."""
        with self._lock:
            if self.state != "idle":
                return
            self.state = "building"
        log.info("preparing the light model %s in the background", self.name)
        self._thread = threading.Thread(target=self._build, name="thermal-light", daemon=True)
        self._thread.start()

    def _build(self) -> None:
        try:
            from segcam.pipeline.assemble import open_backend
            from segcam.pipeline.stages import build_stages

            light_cfg = dataclasses.replace(
                self.cfg, model=dataclasses.replace(self.cfg.model, name=self.name, path="")
            )
            backend, reason = open_backend(light_cfg)
            try:
                stages = build_stages(light_cfg, backend, backend.profile)
            except BaseException:
                backend.close()
                raise
        except Exception as exc:  # noqa: BLE001 - reported in log and status; never fatal
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            hint = getattr(exc, "hint", "")
            with self._lock:
                self.state = "failed"
                self.error = f"light model {self.name} unavailable: {message}"
            log.error("%s%s", self.error, f" ({hint})" if hint else "")
            return
        stop = getattr(self.runner, "stop_event", None)
        if stop is not None and stop.is_set():  # the pipeline ended while we were building
            stages.close()
            backend.close()
            return
        self.runner.add_profile_stages(self.name, stages, backend)
        with self._lock:
            self.state = "ready"
        log.info("light model %s ready: %s", self.name, reason)
        self.on_ready()

    def join(self, timeout: float) -> None:
        """Wait (bounded) for a build in progress, e.g. in tests."""
        if self._thread is not None:
            self._thread.join(timeout)
