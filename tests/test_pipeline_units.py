"""Unit tests of the pipeline's building blocks: latest-frame queues, slot ring, metrics."""

from __future__ import annotations

import threading
import time

import pytest

from segcam.pipeline.metrics import (
    PipelineMetrics,
    RateMeter,
    SampleRing,
    status_line,
    summary_table,
)
from segcam.pipeline.queues import END_OF_STREAM, LatestQueue
from segcam.pipeline.slots import BUSY, FREE, QUEUED, SlotRing


def test_latest_queue_drops_oldest_and_counts() -> None:
    dropped = []
    q = LatestQueue("q", maxsize=2, on_drop=dropped.append)
    for i in range(5):
        assert q.put(i)
    assert q.drops == 3 and dropped == [0, 1, 2]
    assert [q.get(0.01), q.get(0.01)] == [3, 4]
    assert q.get(0.01) is None  # empty: returns after the timeout


def test_latest_queue_get_times_out_promptly() -> None:
    q = LatestQueue("q", maxsize=1)
    t0 = time.monotonic()
    assert q.get(0.05) is None
    assert time.monotonic() - t0 < 2.0


def test_blocking_queue_waits_for_room_instead_of_dropping() -> None:
    q = LatestQueue("q", maxsize=1, block_when_full=True)
    assert q.put("a")
    assert not q.put("b", timeout=0.05)  # full: a blocking put times out, nothing dropped
    assert q.drops == 0
    done = threading.Event()

    def producer() -> None:
        q.put("c")
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    assert not done.wait(0.1)  # waiting for room
    assert q.get(1.0) == "a"
    assert done.wait(2.0)
    assert q.get(1.0) == "c"
    t.join(2.0)


def test_end_of_stream_is_never_dropped_and_close_wakes_waiters() -> None:
    q = LatestQueue("q", maxsize=1)
    q.put(1)
    q.put_end()
    q.put(2)  # drops the oldest item (1), not the end marker
    assert q.get(0.01) is END_OF_STREAM
    assert q.get(0.01) == 2
    blocked = LatestQueue("b", maxsize=1, block_when_full=True)
    blocked.put(1)
    result = []
    t = threading.Thread(target=lambda: result.append(blocked.put(2)))
    t.start()
    time.sleep(0.05)
    blocked.close()
    t.join(2.0)
    assert result == [False]


def test_ring_hands_out_each_slot_once_and_takes_them_back() -> None:
    ring = SlotRing(3)
    slots = [ring.acquire(0.01, steal=False) for _ in range(3)]
    assert len({id(s) for s in slots}) == 3 and all(s.state == BUSY for s in slots)
    assert ring.acquire(0.01, steal=False) is None  # exhausted, nothing to reclaim
    ring.release(slots[1])
    ring.release(slots[1])  # twice is harmless
    assert ring.free_count == 1
    again = ring.acquire(0.01)
    assert again is slots[1] and again.frame_id == -1  # metadata reset on reuse


def test_exhausted_ring_reclaims_oldest_waiting_slot_from_earliest_queue() -> None:
    ring = SlotRing(3)
    early = LatestQueue("early", maxsize=2, order=0)
    late = LatestQueue("late", maxsize=2, order=1)
    a, b, c = (ring.acquire(0.01) for _ in range(3))
    a.frame_id, b.frame_id, c.frame_id = 0, 1, 2
    late.put(a)
    early.put(b)
    early.put(c)
    assert a.state == QUEUED and a.holder is late
    stolen = ring.acquire(0.01)
    assert stolen is b  # the earliest queue, oldest frame: least work lost
    assert early.drops == 1 and ring.steals == 1
    assert early.get(0.01) is c and late.get(0.01) is a
    assert c.state == BUSY and c.holder is None


def test_ring_release_wakes_a_waiting_acquire() -> None:
    ring = SlotRing(1)
    held = ring.acquire(0.01)
    got = []
    t = threading.Thread(target=lambda: got.append(ring.acquire(2.0, steal=False)))
    t.start()
    time.sleep(0.05)
    ring.release(held)
    t.join(3.0)
    assert got == [held] and held.state == BUSY
    ring.release(held)
    assert held.state == FREE


def test_sample_ring_is_fixed_size_and_gives_percentiles() -> None:
    ring = SampleRing(size=10)
    assert ring.percentiles(50) == [None]
    for v in range(100):
        ring.add(float(v))
    assert ring.count == 100
    assert len(ring.values()) == 10  # only the newest 10 are kept
    p50, p95 = ring.percentiles(50, 95)
    assert 90 <= p50 <= 99 and p50 <= p95 <= 99


def test_rate_meter() -> None:
    meter = RateMeter()
    for i in range(11):
        meter.tick(100.0 + i * 0.1)
    assert meter.rate(now=101.0) == pytest.approx(10.0)
    assert meter.rate(now=110.0) == 0.0  # stale


def test_metrics_snapshot_has_the_documented_keys() -> None:
    m = PipelineMetrics(["capture", "infer"])
    m.backend = "onnxruntime:CPUExecutionProvider"
    m.record("capture", 2.0)
    m.record("infer", 10.0)
    m.count_in()
    m.count_inference()
    m.frame_done(time.monotonic_ns() - 5_000_000)
    m.watch_drops("q", lambda: 3)
    snap = m.snapshot()
    for key in ("fps", "frames_in", "frames_out", "inferences", "stages", "drops"):
        assert key in snap
    assert snap["stages"]["infer"] == {"p50_ms": 10.0, "p95_ms": 10.0, "count": 1}
    assert snap["drops"] == {"q": 3}
    assert snap["glass_to_glass_ms"]["p50"] >= 5.0
    assert snap["backend"] and snap["uptime_s"] >= 0
    line = status_line(snap, {"thermal": {"state": "normal"}})
    assert "q=3" in line and "thermal: state=normal" in line and "infer 10.0" in line
    table = summary_table(snap)
    assert "glass-to-glass" in table and "infer" in table
