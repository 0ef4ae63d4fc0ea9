"""``MaskPublisherSink``: the pipeline sink that publishes masks over ZeroMQ.

``submit`` runs on the pipeline's compositing thread, so it does the least that must
happen there: the rate limit, then one pass that scales and quantises the mask into an
array the job owns (the slot's buffers are recycled after ``submit``). Encoding,
JPEG and sending happen on the publisher thread. ``attach(runner)`` gives it the
runner's knobs (``publish_every``, ``publish_max_fps``, changeable at run time) and
``runner.status`` for telemetry.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from segcam.errors import ConfigError
from segcam.pipeline.types import FrameResult
from segcam.publish import protocol
from segcam.publish.publisher import MaskPublisher, PublishJob, exposure_warning

__all__ = ["MaskPublisherSink", "exposure_warning"]


def check_publish_config(pcfg: Any) -> None:
    """Reject combinations the field types cannot express (ConfigError)."""
    if pcfg.encoding == "rle" and pcfg.values != "binary":
        raise ConfigError(
            "publish.encoding rle carries binary masks only, but publish.values is "
            f"{pcfg.values!r}",
            "set publish.values=binary, or publish.encoding=png (or raw) for probabilities",
        )
    if not pcfg.bind:
        raise ConfigError(
            "publish.bind is empty", "give at least one address, e.g. tcp://127.0.0.1:5555"
        )


class MaskPublisherSink:
    """Sink publishing each (rate-limited) mask on topic ``mask`` (+ ``frame``, ``telemetry``).

    ``cfg`` is the whole Config (or just its ``publish`` section). With ``publisher`` (one
    MaskPublisher shared by the streams of a multi-input run, started and stopped by the
    supervisor) the sink only hands it jobs tagged with ``publish.stream_id``.
    """

    name = "publish"

    def __init__(self, cfg: Any, publisher: Optional[MaskPublisher] = None) -> None:
        self.pcfg = getattr(cfg, "publish", cfg)
        check_publish_config(self.pcfg)
        self.runner: Any = None
        self.lossless = False  # masks are a live stream: a busy socket drops, never waits
        self._shared = publisher is not None
        self.stream_id = self.pcfg.stream_id if self._shared else ""
        self.publisher: Optional[MaskPublisher] = publisher
        self._lock = threading.Lock()
        self._submitted = 0
        self._skipped_rate = 0
        self._n = 0
        self._next_ns = 0

    def attach(self, runner: Any) -> None:
        """Use the runner's knobs for the rate limit and its ``status()`` for telemetry."""
        self.runner = runner

    def start(self) -> None:
        """Bind the PUB socket and start the publisher thread (PublishError if impossible)."""
        if self._shared:
            return
        status_fn = getattr(self.runner, "status", None)
        on_error = getattr(self.runner, "report_error", None)
        self.publisher = MaskPublisher(self.pcfg, status_fn=status_fn, on_error=on_error)
        self.publisher.start()

    @property
    def endpoints(self) -> List[str]:
        """Bound endpoints (with resolved ports), once started."""
        return list(self.publisher.endpoints) if self.publisher else []

    def _rate(self) -> Tuple[int, float]:
        knobs = getattr(self.runner, "knobs", None)
        if knobs is not None:
            values = knobs.snapshot()
            return max(1, int(values.publish_every)), float(values.publish_max_fps)
        return self.pcfg.every_n, self.pcfg.max_fps

    def submit(self, result: FrameResult) -> bool:
        """Offer a result; False if rate-limited away or it replaced an unsent one."""
        publisher = self.publisher
        if publisher is None:
            return False
        every_n, max_fps = self._rate()
        with self._lock:
            self._submitted += 1
            self._n += 1
            if self._n < every_n:
                self._skipped_rate += 1
                return False
            if max_fps > 0:
                now = time.monotonic_ns()
                if now < self._next_ns:
                    self._skipped_rate += 1
                    return False
                period = int(1e9 / max_fps)
                # Keep the average at max_fps without bursting after a pause.
                self._next_ns = max(self._next_ns + period, now + period // 2)
            self._n = 0
        job = PublishJob(
            frame_id=result.frame_id,
            capture_ts_ns=result.capture_ts_ns,
            mask=self._wire_mask(result),
            frame=result.frame.copy() if self.pcfg.frame_topic else None,
            frame_width=int(result.mask.shape[1]),
            frame_height=int(result.mask.shape[0]),
            model_id=result.model_id,
            threshold=result.threshold,
            inferred=result.inferred,
            stream_id=self.stream_id,
        )
        return publisher.offer(job)

    def _wire_mask(self, result: FrameResult) -> np.ndarray:
        """Scaled, quantised copy of the mask: one pass over the slot's buffer (about 1.5 ms
        at 1080p), which must happen here because the slot is recycled after ``submit``."""
        mask = result.mask
        n = self.pcfg.downscale
        if n > 1:
            import cv2

            h, w = mask.shape[:2]
            src = mask.astype(np.float32) if mask.dtype == np.float16 else mask
            mask = cv2.resize(src, (max(1, w // n), max(1, h // n)), interpolation=cv2.INTER_AREA)
        return protocol.quantize(mask, self.pcfg.values, result.threshold)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the publisher thread and close the socket (bounded by ``timeout``)."""
        if self.publisher is not None and not self._shared:
            self.publisher.stop(timeout)

    def stats(self) -> Dict[str, Any]:
        """Publisher counters plus the sink's own (submitted, skipped by rate limit)."""
        out: Dict[str, Any] = self.publisher.stats() if self.publisher else {}
        with self._lock:
            out["submitted"] = self._submitted
            out["skipped_rate"] = self._skipped_rate
        out["dropped"] = out.get("dropped_busy", 0) + out.get("dropped_hwm", 0)
        return out
