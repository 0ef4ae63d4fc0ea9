"""Bounded latest-frame queues between stages.

A :class:`LatestQueue` holds at most ``maxsize`` items. In the default *latest* mode a
``put`` into a full queue drops the oldest item (counted, and handed to ``on_drop`` so its
slot goes back to the ring): latency never grows when a later stage is slow. In
*backpressure* mode (finite files and images that must be processed frame by frame) a full
queue makes ``put`` wait instead.

``get(timeout)`` returns None on timeout so that stage threads can check their stop event.
The end of a finite stream travels as :data:`END_OF_STREAM`, which is never dropped.

Callbacks (``on_drop``) run after the queue's lock is released: queues never call out while
holding it, so the slot ring may call ``discard`` while holding its own lock.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Deque, Optional

from segcam.pipeline.slots import BUSY, QUEUED, FrameSlot


class _EndOfStream:
    """Marker that follows the last frame of a finite source through the stages."""

    def __repr__(self) -> str:
        return "END_OF_STREAM"


END_OF_STREAM: Any = _EndOfStream()


class LatestQueue:
    """A bounded queue that drops its oldest item when full (or blocks, if asked to)."""

    def __init__(
        self,
        name: str,
        maxsize: int = 1,
        block_when_full: bool = False,
        on_drop: Optional[Callable[[Any], None]] = None,
        order: int = 0,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.name = name
        self.order = order  # position in the pipeline (the ring reclaims early queues first)
        self.maxsize = maxsize
        self.block_when_full = block_when_full
        self._on_drop = on_drop
        self._items: Deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.puts = 0
        self.drops = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def _enter(self, item: Any) -> None:
        if isinstance(item, FrameSlot):
            item.state = QUEUED
            item.holder = self
        self._items.append(item)
        self.puts += 1

    def put(self, item: Any, timeout: Optional[float] = None) -> bool:
        """Add ``item``; returns False only if the queue closed (or a blocking put timed out).

        In latest mode a full queue first drops its oldest item. In blocking mode the call
        waits for room (in short steps, so ``close`` wakes it).
        """
        dropped = None
        with self._cond:
            if self._closed:
                return False
            if len(self._items) >= self.maxsize:
                if self.block_when_full:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    while len(self._items) >= self.maxsize and not self._closed:
                        if deadline is not None and time.monotonic() >= deadline:
                            return False
                        self._cond.wait(0.05)
                    if self._closed:
                        return False
                else:
                    dropped = self._items.popleft()
                    self.drops += 1
            self._enter(item)
            self._cond.notify_all()
        if dropped is not None and self._on_drop is not None:
            self._on_drop(dropped)
        return True

    def put_end(self) -> None:
        """Queue the end-of-stream marker; it never drops and never waits."""
        with self._cond:
            self._items.append(END_OF_STREAM)
            self._cond.notify_all()

    def get(self, timeout: float = 0.1) -> Optional[Any]:
        """Oldest item, or None after ``timeout`` seconds (or when closed and empty)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._items:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._items.popleft()
            if isinstance(item, FrameSlot):
                item.state = BUSY
                item.holder = None
            self._cond.notify_all()
            return item

    def discard(self, item: Any) -> bool:
        """Remove ``item`` if it is still queued (the ring reclaiming a slot)."""
        with self._cond:
            try:
                self._items.remove(item)
            except ValueError:
                return False
            self.drops += 1
            self._cond.notify_all()
            return True

    def drain(self) -> list:
        """Remove and return everything queued (shutdown)."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
        return items

    def close(self) -> None:
        """Wake every waiter; further puts are refused."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed
