"""One inference backend shared by every stream, with frames of different streams batched.

Each stream's infer stage calls its :class:`StreamInference` (a Backend of its own, as far
as the stage can tell); the calls meet in :class:`SharedInference`, whose one thread
gathers them under a deadline: it runs as soon as ``batch_max`` frames wait, or every
running stream has a frame waiting, or the first frame has waited ``batch_wait_ms``. A
model with a dynamic batch dimension then runs them in one call (``Backend.infer_batch``);
a model fixed at batch 1 runs them one call each, in arrival order. Either way there is
one session / engine in the process. Recurrent state (``state_inputs``) is kept per
stream and swapped in for that stream's frames; temporal smoothing stays in each stream's
composite stage.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Deque, Dict, List, Optional

import numpy as np

from segcam.errors import BackendError
from segcam.inference.backend import Backend, TensorSpec
from segcam.inference.profile import ModelProfile

log = logging.getLogger("segcam.pipeline")


class _Request:
    """One frame waiting for inference, and where its answer goes."""

    __slots__ = ("client", "tensor", "out", "result", "error", "done", "queued")

    def __init__(
        self, client: StreamInference, tensor: np.ndarray, out: Optional[np.ndarray]
    ) -> None:
        self.client = client
        self.tensor = tensor
        self.out = out
        self.result: Optional[np.ndarray] = None
        self.error: Optional[BaseException] = None
        self.done = threading.Event()
        self.queued = time.monotonic()


class SharedInference:
    """The process's one backend, serving any number of :class:`StreamInference` clients.

    ``batch_max`` caps the frames per call (and ``backend.max_batch``); ``batch_wait_ms``
    is the longest the first frame of a batch waits for company. :meth:`start` before the
    streams run, :meth:`stop` after they stopped (the backend itself is closed by whoever
    opened it).
    """

    def __init__(self, backend: Backend, batch_max: int = 4, batch_wait_ms: float = 4.0) -> None:
        self.backend = backend
        self.batch_max = max(1, min(int(batch_max), int(backend.max_batch)))
        self.wait_s = max(0.0, float(batch_wait_ms)) / 1e3
        self.batched = self.batch_max > 1
        self.stateful = bool(backend.profile.state_inputs)
        self._cond = threading.Condition()
        self._pending: Deque[_Request] = collections.deque()
        self._active = 0  # clients whose stream is running
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._in_buf: Dict[int, np.ndarray] = {}  # batch size -> stacked input buffer
        self._out_buf: Dict[int, np.ndarray] = {}
        self._stats_lock = threading.Lock()
        self.calls = 0
        self.frames = 0
        self.sizes: Dict[int, int] = {}  # batch size -> calls
        self.wait_ms_total = 0.0

    # ------------------------------------------------------------------ clients
    def client(self, stream_id: str) -> StreamInference:
        """A Backend for one stream's infer stage."""
        return StreamInference(self, stream_id)

    def _activate(self, on: bool) -> None:
        with self._cond:
            self._active = max(0, self._active + (1 if on else -1))
            self._cond.notify_all()

    def submit(
        self, client: StreamInference, tensor: np.ndarray, out: Optional[np.ndarray]
    ) -> np.ndarray:
        """Queue one frame and wait for its output (raises what the backend raised)."""
        if self._thread is None:  # not started (sequential use): run inline
            return self._run_one(_Request(client, tensor, out))
        req = _Request(client, tensor, out)
        with self._cond:
            if self._stop.is_set():
                raise BackendError("shared inference has stopped")
            self._pending.append(req)
            self._cond.notify_all()
        while not req.done.wait(0.1):
            if self._stop.is_set() and not req.done.is_set():
                raise BackendError("shared inference stopped before this frame ran")
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    # ------------------------------------------------------------------ thread
    def start(self) -> None:
        """Start the batching thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="segcam-infer-shared", daemon=True)
        self._thread.start()
        log.info(
            "shared inference: %s, %s",
            self.backend.provider,
            f"up to {self.batch_max} frames per call, waiting at most {self.wait_s * 1e3:g} ms"
            if self.batched
            else "one frame per call (the model's batch is fixed at 1)",
        )

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the thread; frames still waiting fail with BackendError."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._cond:
            left = list(self._pending)
            self._pending.clear()
        for req in left:
            req.error = BackendError("shared inference stopped before this frame ran")
            req.done.set()

    def _take(self) -> List[_Request]:
        """Wait for a batch: full, every running stream waiting, or the deadline."""
        with self._cond:
            while not self._pending and not self._stop.is_set():
                self._cond.wait(0.1)
            if self._stop.is_set():
                return []
            # From when the batcher is free, not from when the frame came: a frame that
            # waited out the previous call would otherwise always go alone, and streams
            # that alternate would never meet.
            deadline = max(self._pending[0].queued, time.monotonic()) + self.wait_s
            while not self._stop.is_set():
                n = len(self._pending)
                if n >= self.batch_max or n >= max(1, self._active):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            count = min(len(self._pending), self.batch_max)
            return [self._pending.popleft() for _ in range(count)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._take()
            if not batch:
                continue
            now = time.monotonic()
            waited = sum(now - r.queued for r in batch) * 1e3
            if self.batched and len(batch) > 1:
                self._run_batch(batch)
            else:
                for req in batch:
                    self._run_one(req, raise_error=False)
            with self._stats_lock:
                if self.batched and len(batch) > 1:
                    self.calls += 1
                else:
                    self.calls += len(batch)
                self.frames += len(batch)
                self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
                self.wait_ms_total += waited

    def _run_one(self, req: _Request, raise_error: bool = True) -> np.ndarray:
        """One frame, one call (recurrent state of its stream swapped in)."""
        backend = self.backend
        try:
            if self.stateful:
                backend.set_state(req.client.state)
            req.result = backend.infer(req.tensor, out=req.out)
            if self.stateful:
                req.client.state = backend.get_state()
        except BaseException as exc:  # noqa: BLE001 - handed to the stream that asked
            req.error = exc
            if raise_error:
                raise
        finally:
            req.done.set()
        assert req.result is not None
        return req.result

    def _run_batch(self, batch: List[_Request]) -> None:
        n = len(batch)
        stack = self._in_buf.get(n)
        if stack is None:
            shape = (n,) + tuple(batch[0].tensor.shape[1:])
            stack = self._in_buf[n] = np.empty(shape, dtype=batch[0].tensor.dtype)
        try:
            for i, req in enumerate(batch):
                stack[i] = req.tensor[0]
            outs = self.backend.infer_batch(stack, out=self._out_buf.get(n))
            self._out_buf[n] = outs
            for i, req in enumerate(batch):
                one = outs[i : i + 1]
                if (
                    req.out is not None
                    and req.out.shape == one.shape
                    and req.out.dtype == one.dtype
                ):
                    np.copyto(req.out, one)
                    req.result = req.out
                else:
                    req.result = one.copy()  # the stream keeps it; the batch buffer is reused
        except BaseException as exc:  # noqa: BLE001 - every stream in the batch hears of it
            for req in batch:
                req.error = exc
        finally:
            for req in batch:
                req.done.set()

    def stats(self) -> Dict[str, object]:
        """Calls, frames, frames per call, batch sizes and the mean wait for a batch."""
        with self._stats_lock:
            calls, frames = self.calls, self.frames
            sizes = dict(sorted(self.sizes.items()))
            wait = self.wait_ms_total
        return {
            "batched": self.batched,
            "batch_max": self.batch_max,
            "calls": calls,
            "frames": frames,
            "frames_per_call": round(frames / calls, 3) if calls else 0.0,
            "batch_sizes": {str(k): v for k, v in sizes.items()},
            "mean_wait_ms": round(wait / frames, 3) if frames else 0.0,
        }


class StreamInference:
    """One stream's view of the shared backend: a Backend whose ``infer`` may be batched."""

    name: str
    provider: str
    profile: ModelProfile
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    supports_device = False  # frames meet on the host, where they are stacked

    def __init__(self, shared: SharedInference, stream_id: str) -> None:
        self.shared = shared
        self.stream_id = stream_id
        b = shared.backend
        self.name = b.name
        self.provider = b.provider
        self.profile = b.profile
        self.inputs = list(b.inputs)
        self.outputs = list(b.outputs)
        self.state: Dict[str, np.ndarray] = b.get_state()  # this stream's recurrent state

    @property
    def max_batch(self) -> int:
        """One frame per call from the stream's side; batching happens across streams."""
        return 1

    def activate(self, on: bool = True) -> None:
        """Count this stream as running (the batcher then waits for its frames)."""
        self.shared._activate(on)

    def infer(self, tensor: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """This stream's frame through the shared backend (maybe with other streams')."""
        return self.shared.submit(self, tensor, out)

    def infer_batch(self, tensors: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
        """A batch of one from this stream (see :attr:`max_batch`)."""
        return self.infer(tensors, out)

    def get_state(self) -> Dict[str, np.ndarray]:
        """This stream's recurrent state."""
        return dict(self.state)

    def set_state(self, states: Dict[str, np.ndarray]) -> None:
        """Replace this stream's recurrent state."""
        self.state = dict(states)

    def infer_device(self, in_ptr: int, out_ptr: int, stream: int) -> None:
        """Not offered: streams' frames are stacked on the host."""
        raise BackendError(
            "a shared backend batches host tensors; device buffers are not stacked",
            "this is chosen automatically; report it if you see it",
        )

    def close(self) -> None:
        """Nothing: the shared backend is closed by the supervisor."""


__all__ = ["SharedInference", "StreamInference"]
