"""A ring of pre-allocated frame slots recycled through the pipeline.

A :class:`FrameSlot` carries one frame through every stage together with the buffers the
stages write into (preprocessed tensor, model output, mask, composite) and its metadata.
Buffers are allocated on first use at the frame's size and reused afterwards, so in steady
state the hot path allocates nothing. A slot is owned by exactly one party at a time: the
ring (free), a queue (waiting) or a stage (in flight).

When capture needs a slot and none is free, the ring takes back the oldest slot that is
waiting in a queue (latest-frame semantics; counted as a drop). Only when every slot is in
a stage's hands does capture wait.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional

import numpy as np

FREE = "free"
QUEUED = "queued"
BUSY = "busy"


class FrameSlot:
    """One frame's buffers and metadata; reused for frame after frame."""

    __slots__ = (
        "index",
        "state",
        "holder",
        "frame",
        "tensor",
        "output",
        "prob",
        "mask",
        "composite",
        "frame_id",
        "capture_ts_ns",
        "capture_mono_ns",
        "inferred",
        "timings_ms",
        "knobs",
        "extra",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.state = FREE
        self.holder: Any = None  # the queue holding the slot while QUEUED
        self.frame: Optional[np.ndarray] = None  # captured BGR uint8 frame
        self.tensor: Optional[np.ndarray] = None  # preprocessed model input
        self.output: Optional[np.ndarray] = None  # raw model output (valid if ``inferred``)
        self.prob: Optional[np.ndarray] = None  # probability at model resolution
        self.mask: Optional[np.ndarray] = None  # refined float32 mask at frame size
        self.composite: Optional[np.ndarray] = None  # composed BGR uint8 frame
        self.frame_id = -1
        self.capture_ts_ns = 0
        self.capture_mono_ns = 0
        self.inferred = False
        self.timings_ms: Dict[str, float] = {}
        self.knobs: Any = None  # KnobValues snapshot taken at capture
        # Stage implementations keep their per-slot resources here (device buffers,
        # CUDA events, pinned host memory): key = stage name.
        self.extra: Dict[str, Any] = {}

    def reset(self) -> None:
        """Clear per-frame metadata (buffers are kept for reuse)."""
        self.frame_id = -1
        self.capture_ts_ns = 0
        self.capture_mono_ns = 0
        self.inferred = False
        self.timings_ms.clear()
        self.knobs = None

    def __repr__(self) -> str:
        return f"FrameSlot({self.index}, frame={self.frame_id}, {self.state})"


def ensure_buffer(current: Optional[np.ndarray], shape: Any, dtype: Any = np.uint8) -> np.ndarray:
    """Return ``current`` if it has ``shape``/``dtype``, else a new buffer (first use only)."""
    if current is not None and current.shape == tuple(shape) and current.dtype == dtype:
        return current
    return np.empty(shape, dtype=dtype)


def filled(buf: Optional[np.ndarray], what: str) -> np.ndarray:
    """``buf``, which an earlier stage must have written (``what`` names it if not)."""
    if buf is None:
        raise RuntimeError(f"frame slot has no {what}: a stage ran out of order")
    return buf


class SlotRing:
    """Fixed set of :class:`FrameSlot` objects handed out and taken back.

    ``acquire`` gives capture a free slot; if none is free it reclaims the oldest slot
    waiting in a queue (calling ``on_steal(slot)`` so the drop is counted), or, when
    ``steal`` is False (backpressure for files), waits for a slot to be released.
    """

    def __init__(self, count: int, on_steal: Optional[Callable[[FrameSlot], None]] = None):
        if count < 1:
            raise ValueError("a slot ring needs at least one slot")
        self.slots: List[FrameSlot] = [FrameSlot(i) for i in range(count)]
        # FIFO: a released slot is reused last, which leaves the most time before its
        # buffers are overwritten.
        self._free: Deque[FrameSlot] = collections.deque(self.slots)
        self._cond = threading.Condition()
        self._on_steal = on_steal
        self._closed = False
        self.steals = 0

    def __len__(self) -> int:
        return len(self.slots)

    @property
    def free_count(self) -> int:
        """How many slots are free right now."""
        with self._cond:
            return len(self._free)

    def acquire(self, timeout: float = 0.1, steal: bool = True) -> Optional[FrameSlot]:
        """A slot for a new frame, or None if ``timeout`` passed (or the ring closed)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                if self._free:
                    slot = self._free.popleft()
                    slot.state = BUSY
                    slot.reset()
                    return slot
                if steal:
                    stolen = self._steal_locked()
                    if stolen is not None:
                        return stolen
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(min(remaining, 0.05))
        return None

    def _steal_locked(self) -> Optional[FrameSlot]:
        waiting = [s for s in self.slots if s.state == QUEUED]
        # Reclaim where the least work is lost: the earliest queue first, then the oldest.
        waiting.sort(key=lambda s: (getattr(s.holder, "order", 0), s.frame_id))
        for slot in waiting:
            holder = slot.holder
            # The queue removes it atomically; False means a stage just took it. Queues
            # never call into the ring while holding their own lock, so ring -> queue is
            # the only lock order and cannot deadlock.
            if holder is not None and holder.discard(slot):
                self.steals += 1
                if self._on_steal is not None:
                    self._on_steal(slot)
                slot.state = BUSY
                slot.holder = None
                slot.reset()
                return slot
        return None

    def release(self, slot: FrameSlot) -> None:
        """Give a slot back to the ring (after the last stage, or when dropped)."""
        with self._cond:
            if slot.state == FREE:
                return  # released twice (e.g. dropped during shutdown): harmless
            slot.state = FREE
            slot.holder = None
            self._free.append(slot)
            self._cond.notify()

    def close(self) -> None:
        """Wake and refuse every waiter (shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
