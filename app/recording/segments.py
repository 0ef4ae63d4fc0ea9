"""Segment names and the disk budget of a recording.

A ``file://`` path with ``%`` in it is a :func:`time.strftime` pattern
(``rec/cam-%Y%m%d-%H%M%S.mp4``); without one, rotation (``output.record.segment_s``)
appends ``-%Y%m%d-%H%M%S`` to the stem. The same pattern, with every ``%x`` turned into a
wildcard, finds the segments of earlier runs, so the budget also covers what was
recorded before a restart.

The budget keeps the segments' total under ``output.record.max_mib`` and the free space of
their filesystem above ``output.record.min_free_mib``, by removing the oldest finished
segments (a video and its ``.mask`` companion together). When the floor is reached and
nothing is left to remove, :meth:`DiskBudget.enforce` says why recording has to stop.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

from segcam.errors import OutputError

log = logging.getLogger("segcam.record")

MIB = 1024 * 1024
ROTATION_SUFFIX = "-%Y%m%d-%H%M%S"


def mask_video_path(path: Path) -> Path:
    """``out.mp4`` -> ``out.mask.mp4``."""
    return path.with_name(f"{path.stem}.mask{path.suffix or '.mp4'}")


@dataclass
class Segment:
    """One finished (or current) segment: its files and their size in bytes."""

    paths: List[Path]
    size: int = 0
    mtime: float = 0.0

    def measure(self) -> int:
        """Re-read the files' sizes (missing files count 0)."""
        total = 0
        for p in self.paths:
            try:
                total += p.stat().st_size
            except OSError:
                pass
        self.size = total
        return total


class SegmentNamer:
    """Turns the output path (pattern) into segment paths and finds earlier segments."""

    def __init__(self, path: Path, rotate: bool) -> None:
        self.path = path
        text = str(path)
        if "%" not in text and rotate:
            text = str(path.with_name(f"{path.stem}{ROTATION_SUFFIX}{path.suffix}"))
        self.pattern = text
        self.is_pattern = "%" in text
        self._used: Set[Path] = set()  # a removed segment's name is never given again

    def next_path(self, now: Optional[float] = None) -> Path:
        """The path of a segment starting at ``now``: never an existing file's name, nor
        one given before in this run (so names sort in recording order)."""
        if not self.is_pattern:
            return self.path
        base = Path(time.strftime(self.pattern, time.localtime(now)))
        cand, n = base, 1
        while cand in self._used or cand.exists() or mask_video_path(cand).exists():
            cand = base.with_name(f"{base.stem}-{n}{base.suffix}")
            n += 1
        return cand

    def claim(self, path: Path) -> None:
        """``path`` is now a segment of this run."""
        self._used.add(path)

    def glob(self) -> str:
        """A glob matching every segment this pattern names (``%Y`` etc. become ``*``)."""
        text = self.pattern.replace("%%", "\x00")
        text = re.sub(r"%-?[A-Za-z]", "*", text)
        text = glob.escape(text.replace("\x00", "%")).replace("[*]", "*")
        return text

    def existing(self) -> List[Segment]:
        """Earlier segments on disk, oldest first (videos with their mask companions)."""
        if not self.is_pattern:
            return []
        found = []
        for name in glob.glob(self.glob()):
            p = Path(name)
            try:
                empty = p.stat().st_size == 0
            except OSError:
                continue
            if empty:  # created an instant before a crash: holds nothing, never plays
                _remove_quietly(p)
                continue
            found.append(p)
        masks = frozenset(p for p in found if p.stem.endswith(".mask"))
        unclaimed = set(masks)
        out: List[Segment] = []
        for p in found:
            if p in masks:
                continue
            paths = [p]
            m = mask_video_path(p)
            if m in unclaimed:
                paths.append(m)
                unclaimed.discard(m)
            out.append(_segment(paths))
        out.extend(_segment([m]) for m in sorted(unclaimed))  # masks whose video was removed
        out.sort(key=lambda s: s.mtime)
        return out


def keep_earlier(path: Path) -> None:
    """Move an earlier recording at ``path`` (with its mask video) aside, to the first free
    ``<stem>-N<suffix>``, so that a restart (crash, watchdog, reboot, a resumed recording)
    never overwrites what was already recorded. Empty files are left to be overwritten."""
    pair = [p for p in (path, mask_video_path(path)) if _size(p) > 0]
    if not pair:
        return
    n = 1
    while True:
        aside = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not aside.exists() and not mask_video_path(aside).exists():
            break
        n += 1
    for p in pair:
        target = aside if p == path else mask_video_path(aside)
        try:
            os.replace(p, target)
        except OSError as exc:
            raise OutputError(
                f"cannot keep the earlier recording {p} (moving it to {target}: "
                f"{exc.strerror or exc})",
                "free the folder or choose another output path",
            ) from None
        log.info("kept the earlier recording %s as %s", p, target.name)


def _segment(paths: List[Path]) -> Segment:
    seg = Segment(paths)
    seg.measure()
    try:
        seg.mtime = max(p.stat().st_mtime for p in paths)
    except OSError:
        seg.mtime = 0.0
    return seg


def free_bytes(directory: Path) -> int:
    """Bytes available to this (unprivileged) process on ``directory``'s filesystem.

    A directory not made yet (a pattern's ``%Y/%m``) is measured at its nearest ancestor.
    """
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    st = os.statvfs(str(directory))
    return st.f_bavail * st.f_frsize


@dataclass
class BudgetState:
    """What the last enforcement saw."""

    total: int = 0
    free: int = 0
    removed: int = 0
    removed_bytes: int = 0


@dataclass
class DiskBudget:
    """Byte limit and free-space floor over a recording's segments (0 = no limit)."""

    directory: Path
    max_bytes: int = 0
    min_free_bytes: int = 0
    finished: List[Segment] = field(default_factory=list)  # oldest first
    state: BudgetState = field(default_factory=BudgetState)

    def add_finished(self, seg: Segment) -> None:
        """A segment was closed: it may be removed from now on."""
        seg.measure()
        self.finished.append(seg)

    def enforce(self, current: Sequence[Path] = ()) -> Optional[str]:
        """Remove the oldest finished segments until within budget; None if recording may go on.

        Otherwise the reason recording must stop (the floor is reached and no finished
        segment is left, or the current segment alone exceeds the byte limit).
        """
        cur = sum(_size(p) for p in current)
        while True:
            total = cur + sum(s.size for s in self.finished)
            free = free_bytes(self.directory)
            self.state.total, self.state.free = total, free
            over = self.max_bytes > 0 and total > self.max_bytes
            low = self.min_free_bytes > 0 and free < self.min_free_bytes
            if not (over or low) or not self.finished:
                break
            self._remove(self.finished.pop(0), "over output.record.max_mib" if over else "disk low")
        if low:
            return (
                f"free space on {self.directory} is {free / MIB:.1f} MiB, below the floor of "
                f"{self.min_free_bytes / MIB:.1f} MiB (output.record.min_free_mib) and no "
                "older segment is left to remove"
            )
        if over and cur > self.max_bytes:
            return (
                f"the recording reached output.record.max_mib ({self.max_bytes / MIB:.0f} MiB) "
                "in one file; set output.record.segment_s so older segments can be removed"
            )
        return None

    def over_limit(self, current: Sequence[Path]) -> bool:
        """Whether the current files alone exceed the byte limit (time to rotate early)."""
        return self.max_bytes > 0 and sum(_size(p) for p in current) > self.max_bytes

    def _remove(self, seg: Segment, why: str) -> None:
        for p in seg.paths:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove old segment %s: %s", p, exc.strerror or exc)
        self.state.removed += 1
        self.state.removed_bytes += seg.size
        log.info(
            "removed segment %s (%.1f MiB, %s)",
            ", ".join(p.name for p in seg.paths),
            seg.size / MIB,
            why,
        )


def _remove_quietly(p: Path) -> None:
    try:
        p.unlink()
        log.info("removed empty leftover %s", p)
    except OSError as exc:
        log.debug("cannot remove %s: %s", p, exc)


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return 0


def parse_budget(max_mib: float, min_free_mib: float) -> Tuple[int, int]:
    """Config MiB values as bytes."""
    return int(max_mib * MIB), int(min_free_mib * MIB)
