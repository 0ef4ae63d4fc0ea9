"""What a runner and the supervisor both keep: the first error, and degraded parts.

A failure (a stage, a sink, an extension) stops the pipeline and its first error decides
the exit code; a degraded part (a recording on a full disk) is logged once and reported in
the status while everything else keeps running.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, Optional

from segcam.errors import PipelineError, SegcamError

log = logging.getLogger("segcam.pipeline")


class FailureReports:
    """Mixin of :class:`~segcam.pipeline.runner.Runner` and the supervisor.

    The class using it calls :meth:`_init_reports` in its constructor and provides
    ``request_stop(reason)``.
    """

    error: Optional[SegcamError]
    error_where: str
    degraded: Dict[str, str]

    def _init_reports(self) -> None:
        self.error = None
        self.error_where = ""
        self.degraded = {}  # part -> why it stopped while the pipeline runs
        self._lock = threading.Lock()

    def request_stop(self, reason: str = "stop requested") -> None:  # pragma: no cover
        raise NotImplementedError

    def report_error(self, exc: BaseException, where: str) -> None:
        """Record a failure of ``where`` (the first one counts) and stop the pipeline."""
        with self._lock:
            first = self.error is None
            if first:
                self.error = (
                    exc
                    if isinstance(exc, SegcamError)
                    else PipelineError(
                        f"{where} failed: {type(exc).__name__}: {exc}",
                        "run with --log-level debug for the traceback",
                    )
                )
                self.error_where = where
        if first:
            log.debug("%s failed", where, exc_info=exc)
        self.request_stop(f"{where} failed")

    def report_degraded(self, where: str, message: str) -> None:
        """A part (a recording on a full disk) stopped; the pipeline and other outputs go on.

        Logged once as an error, kept in ``degraded`` (and the status) until cleared.
        """
        with self._lock:
            new = self.degraded.get(where) != message
            self.degraded[where] = message
        if new:
            log.error("%s: %s (the pipeline keeps running)", where, message)

    def clear_degraded(self, where: str) -> None:
        """``where`` works again."""
        with self._lock:
            self.degraded.pop(where, None)
