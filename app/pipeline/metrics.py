"""Pipeline metrics: per-stage latency percentiles, throughput, drops, glass-to-glass.

Every series is a fixed-size ring of samples (no growth however long segcam runs);
percentiles are computed over the most recent samples when a snapshot is taken.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

SAMPLES = 512  # per series: ~17 s of history at 30 fps


class SampleRing:
    """Fixed-size ring of float samples with percentiles over what it holds."""

    def __init__(self, size: int = SAMPLES) -> None:
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0  # total samples ever added
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        """Record one sample (overwrites the oldest once full)."""
        with self._lock:
            self._buf[self._n % self._buf.size] = value
            self._n += 1

    @property
    def count(self) -> int:
        """Samples ever added."""
        return self._n

    def values(self) -> np.ndarray:
        """A copy of the samples currently held."""
        with self._lock:
            return self._buf[: min(self._n, self._buf.size)].copy()

    def percentiles(self, *qs: float) -> List[Optional[float]]:
        """The requested percentiles (None while empty)."""
        vals = self.values()
        if vals.size == 0:
            return [None for _ in qs]
        return [float(v) for v in np.percentile(vals, qs)]

    def clear(self) -> None:
        """Forget every sample."""
        with self._lock:
            self._n = 0


class RateMeter:
    """Events per second over a recent window of event times."""

    def __init__(self, size: int = 64) -> None:
        self._t = np.zeros(size, dtype=np.float64)
        self._n = 0
        self._lock = threading.Lock()

    def tick(self, now: Optional[float] = None) -> None:
        """Record one event at ``now`` (monotonic seconds)."""
        with self._lock:
            self._t[self._n % self._t.size] = time.monotonic() if now is None else now
            self._n += 1

    def rate(self, now: Optional[float] = None, stale_s: float = 2.0) -> float:
        """Recent events/s; 0 if nothing happened for ``stale_s`` seconds."""
        with self._lock:
            k = min(self._n, self._t.size)
            if k < 2:
                return 0.0
            last = self._t[(self._n - 1) % self._t.size]
            first = self._t[(self._n - k) % self._t.size]
        now = time.monotonic() if now is None else now
        if now - last > stale_s or last <= first:
            return 0.0
        return (k - 1) / (last - first)


def _ms(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 3)


class PipelineMetrics:
    """All counters of one pipeline run; written by stage threads, read by anyone."""

    def __init__(self, stage_names: List[str]) -> None:
        self.started = time.monotonic()
        self.stage_names = list(stage_names)
        self.stages: Dict[str, SampleRing] = {n: SampleRing() for n in stage_names}
        self.g2g = SampleRing()
        self.fps = RateMeter()
        self.frames_in = 0
        self.frames_out = 0
        self.inferences = 0
        self.backend = ""
        self.first_out_mono: Optional[float] = None
        self.last_out_mono: Optional[float] = None
        self._drop_sources: Dict[str, Callable[[], int]] = {}
        self._sink_sources: Dict[str, Callable[[], Dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def reset_samples(self) -> None:
        """Forget latency samples (after a warm-up); counters keep counting."""
        for ring in self.stages.values():
            ring.clear()
        self.g2g.clear()

    def add_stage(self, name: str) -> None:
        """Track a stage that was not known at construction."""
        if name not in self.stages:
            self.stages[name] = SampleRing()
            self.stage_names.append(name)

    def record(self, stage: str, ms: float) -> None:
        """One latency sample of ``stage`` in milliseconds."""
        ring = self.stages.get(stage)
        if ring is None:
            self.add_stage(stage)
            ring = self.stages[stage]
        ring.add(ms)

    def count_in(self) -> None:
        """A frame entered the pipeline."""
        with self._lock:
            self.frames_in += 1

    def count_inference(self) -> None:
        """The model ran once."""
        with self._lock:
            self.inferences += 1

    def frame_done(self, capture_mono_ns: int, now_ns: Optional[int] = None) -> None:
        """A frame reached the sinks: count it and record its glass-to-glass latency."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        now = now_ns / 1e9
        with self._lock:
            self.frames_out += 1
            if self.first_out_mono is None:
                self.first_out_mono = now
            self.last_out_mono = now
        self.fps.tick(now)
        self.g2g.add((now_ns - capture_mono_ns) / 1e6)

    def watch_drops(self, name: str, counter: Callable[[], int]) -> None:
        """Report ``counter()`` as the drops of ``name`` (a queue, the ring, a sink)."""
        self._drop_sources[name] = counter

    def watch_sink(self, name: str, stats: Callable[[], Dict[str, Any]]) -> None:
        """Include a sink's own stats (frames written, dropped, ...) in snapshots."""
        self._sink_sources[name] = stats

    def drops(self) -> Dict[str, int]:
        """Drops by queue/ring/sink name."""
        out: Dict[str, int] = {}
        for name, fn in list(self._drop_sources.items()):
            try:
                out[name] = int(fn())
            except Exception:  # noqa: BLE001 - a broken counter must not kill metrics
                out[name] = -1
        return out

    def average_fps(self) -> float:
        """Frames out per second between the first and the last output frame."""
        with self._lock:
            first, last, n = self.first_out_mono, self.last_out_mono, self.frames_out
        if first is None or last is None or last <= first or n < 2:
            return 0.0
        return (n - 1) / (last - first)

    def snapshot(self) -> Dict[str, Any]:
        """Plain-dict view: fps, counters, per-stage p50/p95, drops, glass-to-glass."""
        stages: Dict[str, Dict[str, Any]] = {}
        for name in list(self.stage_names):
            ring = self.stages[name]
            p50, p95 = ring.percentiles(50, 95)
            stages[name] = {"p50_ms": _ms(p50), "p95_ms": _ms(p95), "count": ring.count}
        g50, g95 = self.g2g.percentiles(50, 95)
        sinks: Dict[str, Any] = {}
        for name, fn in list(self._sink_sources.items()):
            try:
                sinks[name] = dict(fn())
            except Exception as exc:  # noqa: BLE001 - a broken sink must not kill metrics
                sinks[name] = {"error": str(exc)}
        with self._lock:
            frames_in, frames_out, inferences = self.frames_in, self.frames_out, self.inferences
        return {
            "fps": round(self.fps.rate(), 2),
            "average_fps": round(self.average_fps(), 2),
            "frames_in": frames_in,
            "frames_out": frames_out,
            "inferences": inferences,
            "stages": stages,
            "drops": self.drops(),
            "glass_to_glass_ms": {"p50": _ms(g50), "p95": _ms(g95)},
            "sinks": sinks,
            "backend": self.backend,
            "uptime_s": round(time.monotonic() - self.started, 3),
        }


def combined_snapshot(parts: List[PipelineMetrics], names: List[str]) -> Dict[str, Any]:
    """The totals of several pipelines (streams), in the shape of one snapshot.

    Counters and rates add up; latency percentiles are over the samples of every stream
    together; drops and sinks are listed per stream as ``<stream>:<name>``.
    """
    snaps = [m.snapshot() for m in parts]
    stages: Dict[str, Dict[str, Any]] = {}
    order: List[str] = []
    for m in parts:
        order.extend(n for n in m.stage_names if n not in order)
    for name in order:
        rings = [m.stages[name] for m in parts if name in m.stages]
        vals = np.concatenate([r.values() for r in rings]) if rings else np.zeros(0)
        p50, p95 = (None, None) if vals.size == 0 else np.percentile(vals, (50, 95))
        stages[name] = {
            "p50_ms": _ms(None if p50 is None else float(p50)),
            "p95_ms": _ms(None if p95 is None else float(p95)),
            "count": sum(r.count for r in rings),
        }
    g = np.concatenate([m.g2g.values() for m in parts]) if parts else np.zeros(0)
    g50, g95 = (None, None) if g.size == 0 else (float(v) for v in np.percentile(g, (50, 95)))
    drops: Dict[str, int] = {}
    sinks: Dict[str, Any] = {}
    for name, snap in zip(names, snaps):
        for key, value in snap["drops"].items():
            drops[f"{name}:{key}"] = value
        for key, value in snap["sinks"].items():
            sinks[f"{name}:{key}"] = value
    return {
        "fps": round(sum(s["fps"] for s in snaps), 2),
        "average_fps": round(sum(s["average_fps"] for s in snaps), 2),
        "frames_in": sum(s["frames_in"] for s in snaps),
        "frames_out": sum(s["frames_out"] for s in snaps),
        "inferences": sum(s["inferences"] for s in snaps),
        "stages": stages,
        "drops": drops,
        "glass_to_glass_ms": {"p50": _ms(g50), "p95": _ms(g95)},
        "sinks": sinks,
        "backend": snaps[0]["backend"] if snaps else "",
        "uptime_s": max((s["uptime_s"] for s in snaps), default=0.0),
    }


def status_line(snap: Dict[str, Any], extensions: Optional[Dict[str, Any]] = None) -> str:
    """One compact line for the periodic status log."""
    parts = [f"fps {snap['fps']:.1f}", f"frames {snap['frames_out']}"]
    p50s = " ".join(
        f"{name} {v['p50_ms']:.1f}"
        for name, v in snap["stages"].items()
        if v.get("p50_ms") is not None and "/" not in name  # sub-steps: summary only
    )
    if p50s:
        parts.append(f"p50 ms [{p50s}]")
    drops = {k: v for k, v in snap["drops"].items() if v}
    parts.append("drops " + (" ".join(f"{k}={v}" for k, v in drops.items()) if drops else "0"))
    g = snap["glass_to_glass_ms"]
    if g.get("p50") is not None:
        parts.append(f"g2g {g['p50']:.0f}/{g['p95']:.0f} ms")
    if snap.get("backend"):
        parts.append(snap["backend"])
    for name, st in (extensions or {}).items():
        if isinstance(st, dict) and st:
            brief = ",".join(f"{k}={v}" for k, v in list(st.items())[:4])
            parts.append(f"{name}: {brief}")
    for where, why in (snap.get("degraded") or {}).items():
        parts.append(f"DEGRADED {where}: {why}")
    return " | ".join(parts)


def summary_table(snap: Dict[str, Any]) -> str:
    """Multi-line table printed at exit."""
    lines = [
        f"{'stage':<22}{'p50 ms':>9}{'p95 ms':>9}{'count':>9}",
        "-" * 49,
    ]
    for name, v in snap["stages"].items():
        p50 = "-" if v["p50_ms"] is None else f"{v['p50_ms']:.2f}"
        p95 = "-" if v["p95_ms"] is None else f"{v['p95_ms']:.2f}"
        lines.append(f"{name:<22}{p50:>9}{p95:>9}{v['count']:>9}")
    g = snap["glass_to_glass_ms"]
    if g.get("p50") is not None:
        lines.append(f"{'glass-to-glass':<22}{g['p50']:>9.2f}{g['p95']:>9.2f}")
    lines.append("-" * 49)
    lines.append(
        f"frames in {snap['frames_in']}, out {snap['frames_out']}, "
        f"inferences {snap['inferences']}, average {snap['average_fps']:.2f} fps"
    )
    drops = snap["drops"]
    lines.append("drops: " + (", ".join(f"{k} {v}" for k, v in drops.items()) or "none"))
    for name, st in snap.get("sinks", {}).items():
        brief = ", ".join(f"{k} {v}" for k, v in st.items() if not isinstance(v, dict))
        lines.append(f"sink {name}: {brief}")
    if snap.get("backend"):
        lines.append(f"backend: {snap['backend']}")
    return "\n".join(lines)
