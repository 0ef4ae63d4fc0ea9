"""Per-frame stage timelines from CUDA events, the overlap they prove, and a plot.

Each GPU stage records a start and an end event on its stream for every frame. Once the
frame is done, :class:`EventClock` turns them into milliseconds since a reference event
(host-side work such as CPU inference is placed on the same axis through a host/GPU
clock pairing taken at start). :class:`Timeline` keeps the last spans; ``overlap()``
counts frames whose inference overlapped a later frame's preprocess and the previous
frame's composite; :func:`plot_timeline` draws it (``segcam bench --plot``).
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, List, Optional, Sequence, Tuple

from segcam.pipeline.contracts import DEVICE_STAGES

STAGES = DEVICE_STAGES  # the stages that run on CUDA streams


@dataclass(frozen=True)
class Span:
    """One stage's work on one frame, in ms on the timeline's axis."""

    frame_id: int
    stage: str
    start_ms: float
    end_ms: float
    where: str = "gpu"  # "gpu" (CUDA events) or "host" (host clock, e.g. CPU inference)


class EventClock:
    """Maps CUDA events (and host times) onto one millisecond axis."""

    def __init__(self, stream: Any) -> None:
        from segcam.gpu.memory import Event

        self.ref = Event(timing=True)
        self.ref.record(stream)
        self.ref.wait()
        self.host_ref = time.perf_counter()

    def event_ms(self, event: Any) -> float:
        """Milliseconds from the reference to a completed event."""
        return self.ref.elapsed_ms(event)

    def host_ms(self, t: Optional[float] = None) -> float:
        """Milliseconds from the reference to a host ``time.perf_counter()`` reading."""
        return ((time.perf_counter() if t is None else t) - self.host_ref) * 1e3

    def close(self) -> None:
        """Destroy the reference event."""
        self.ref.close()


class Timeline:
    """The last ``capacity`` frames' spans (thread-safe)."""

    def __init__(self, capacity: int = 600) -> None:
        self._spans: Deque[Span] = collections.deque(maxlen=capacity * len(STAGES))
        self._lock = threading.Lock()

    def add(self, span: Span) -> None:
        """Record one span."""
        with self._lock:
            self._spans.append(span)

    def extend(self, spans: Iterable[Span]) -> None:
        """Record several spans."""
        with self._lock:
            self._spans.extend(spans)

    def spans(self) -> List[Span]:
        """A copy of the recorded spans, oldest first."""
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        """Forget everything (e.g. after warm-up)."""
        with self._lock:
            self._spans.clear()

    def overlap(self) -> Dict[str, Any]:
        """How often frame i's inference overlapped a later preprocess / frame i-1's composite."""
        return overlap_stats(self.spans())

    def rows(self) -> List[Dict[str, Any]]:
        """Spans as plain dicts (JSON)."""
        return [s.__dict__.copy() for s in self.spans()]


def _by_frame(spans: Sequence[Span]) -> Dict[int, Dict[str, Span]]:
    frames: Dict[int, Dict[str, Span]] = {}
    for s in spans:
        frames.setdefault(s.frame_id, {})[s.stage] = s
    return frames


def _overlaps(a: Span, b: Span) -> bool:
    return a.start_ms < b.end_ms and b.start_ms < a.end_ms


def overlap_stats(spans: Sequence[Span]) -> Dict[str, Any]:
    """Counts of frames whose inference overlapped a later frame's preprocess (i+1 or i+2:
    with a queue between them, preprocessing runs up to two frames ahead) and the previous
    frame's composite."""
    frames = _by_frame(spans)
    ids = sorted(frames)
    with_pre = with_cmp = both = judged = 0
    for i, fid in enumerate(ids[1:-2], start=1):
        cur, prev = frames[fid], frames[ids[i - 1]]
        later = [frames[ids[i + k]].get("preprocess") for k in (1, 2)]
        later = [s for s in later if s is not None]
        if "infer" not in cur or not later or "composite" not in prev:
            continue
        judged += 1
        a = any(_overlaps(cur["infer"], s) for s in later)
        b = _overlaps(cur["infer"], prev["composite"])
        with_pre += a
        with_cmp += b
        both += a and b
    return {
        "frames": judged,
        "infer_overlaps_later_preprocess": with_pre,
        "infer_overlaps_prev_composite": with_cmp,
        "both": both,
    }


def plot_timeline(
    spans: Sequence[Span], path: Path, title: str = "segcam stage timeline", frames: int = 12
) -> Path:
    """Draw the last ``frames`` frames as a Gantt chart (one row per stage) into ``path``.

    Needs matplotlib (``pip install segcam[plot]``); raises ImportError without it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_frame = _by_frame(spans)
    ids = sorted(by_frame)[-frames:]
    chosen = [s for fid in ids for s in by_frame[fid].values()]
    if not chosen:
        raise ValueError("no spans to plot")
    t0 = min(s.start_ms for s in chosen)
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(12, 3.2))
    rows = {name: i for i, name in enumerate(STAGES)}
    for s in chosen:
        row = rows.get(s.stage, len(rows))
        colour = colours(ids.index(s.frame_id) % 10)
        ax.broken_barh(
            [(s.start_ms - t0, max(s.end_ms - s.start_ms, 0.01))],
            (row - 0.4, 0.8),
            facecolors=colour,
            edgecolors="black",
            linewidth=0.4,
            hatch="//" if s.where == "host" else None,
        )
        ax.text(s.start_ms - t0, row, str(s.frame_id), fontsize=6, va="center")
    ax.set_yticks(list(rows.values()))
    ax.set_yticklabels(list(rows))
    ax.invert_yaxis()
    ax.set_xlabel("ms (CUDA events; hatched = host work)")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), dpi=120)
    plt.close(fig)
    return path


def spans_from_events(
    clock: EventClock, frame_id: int, events: Dict[str, Tuple[Any, Any]]
) -> List[Span]:
    """Spans of one finished frame from its {stage: (start event, end event)}."""
    return [
        Span(frame_id, stage, clock.event_ms(start), clock.event_ms(end))
        for stage, (start, end) in events.items()
    ]


def plot_stage_timeline(stages: Any, path: Path, title: str = "") -> Optional[Path]:
    """For ``segcam bench --plot``: draw the GPU stage timeline of a StageSet next to ``path``.

    Returns the PNG written (``<path stem>.timeline.png``), or None when ``stages`` are not
    GPU stages or recorded nothing.
    """
    info = getattr(stages, "info", None) or {}
    timeline = info.get("timeline")
    if timeline is None or not timeline.spans():
        return None
    path = Path(path)
    out = path.with_name(f"{path.stem}.timeline.png")
    return plot_timeline(timeline.spans(), out, title or "segcam GPU stage timeline")
