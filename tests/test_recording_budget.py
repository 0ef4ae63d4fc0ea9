"""Segment rotation and the disk budget, on real files and a small filesystem made here.

The small filesystem is a tmpfs mounted by the test (root only; skipped with the reason
elsewhere) so that "the disk is full" is real: statvfs, ENOSPC and removals all happen
on a filesystem of a few MiB, never on the machine's own disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
from recording_helpers import Run, need_ffprobe, need_pyav, probe_frames

from segcam.config import RecordConfig
from segcam.recording import recorder as recorder_mod
from segcam.recording.recorder import SegmentRecorder
from segcam.recording.segments import MIB, SegmentNamer, free_bytes, mask_video_path


def _frame(i: int) -> np.ndarray:
    """Fresh noise: nothing to predict, so sizes are large and known roughly."""
    return np.random.default_rng(i).integers(0, 256, (96, 160, 3), dtype=np.uint8)


def _mask(i: int) -> np.ndarray:
    m = np.zeros((96, 160), np.uint8)
    m[:, (i * 3) % 160 :] = 255
    return m


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs at tmp_path/disk, unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path, leave_bytes: int) -> Path:
    """A filler file that leaves about ``leave_bytes`` free on ``disk``."""
    filler = disk / "filler.bin"
    size = free_bytes(disk) - leave_bytes
    assert size > 0
    with open(filler, "wb") as fh:
        fh.write(b"\0" * size)  # tmpfs allocates on write, not on truncate
    return filler


def _settings(**kw) -> RecordConfig:
    base = dict(recorder="pyav", flush_interval_s=0.5, crf=10, min_free_mib=0.0)
    base.update(kw)
    return RecordConfig(**base)


def test_rotation_by_duration_names_segments_and_the_mask_follows(tmp_path):
    need_pyav()
    need_ffprobe()
    pattern = tmp_path / "rec" / "cam-%Y%m%d-%H%M%S.mp4"
    rec = SegmentRecorder(pattern, "auto", _settings(segment_s=1.0), record_mask=True, fps=10)
    rec.lossless = True  # media time = index / fps: 10 frames per segment
    rec.start(None, 10.0)
    seen: List[Path] = []
    for i in range(35):
        assert rec.write(_frame(i), _mask(i), time.monotonic_ns())
        if rec.last_path not in seen:
            seen.append(rec.last_path)
    rec.close()
    assert rec.segments == 4 and len(seen) == 4
    stamp = time.strftime("cam-%Y%m%d-", time.localtime())
    assert all(p.name.startswith(stamp) for p in seen), seen
    assert len({p.name for p in seen}) == 4  # same second: -1, -2 ... keep them apart
    counts = [probe_frames(p) for p in seen]
    assert counts == [10, 10, 10, 5]
    assert [probe_frames(mask_video_path(p)) for p in seen] == counts
    # A later run finds these segments (the budget covers them after a restart).
    found = SegmentNamer(pattern, rotate=True).existing()
    assert sorted(q.name for s in found for q in s.paths) == sorted(
        [p.name for p in seen] + [mask_video_path(p).name for p in seen]
    )


def test_byte_limit_removes_the_oldest_segments_first(tmp_path):
    need_pyav()
    out = tmp_path / "seg.mp4"  # no pattern: rotation appends -%Y%m%d-%H%M%S
    rec = SegmentRecorder(out, "auto", _settings(segment_s=1.0, max_mib=0.5), fps=10)
    rec.lossless = True
    rec.start(None, 10.0)
    order: List[Path] = []
    for i in range(120):
        rec.write(_frame(i), None, 0)
        if rec.last_path not in order:
            order.append(rec.last_path)
    rec.close()
    left = sorted(tmp_path.glob("seg-*.mp4"), key=lambda p: order.index(p))
    assert rec.segments == 12 and rec.stopped is None
    assert left and left == order[-len(left) :]  # the newest survive, the oldest went first
    assert len(left) < 12 and rec.budget.state.removed == 12 - len(left)
    total = sum(p.stat().st_size for p in left)
    assert total <= 0.5 * MIB + max(p.stat().st_size for p in left)


def test_floor_removes_old_segments_then_stops_once_then_resumes(small_fs, monkeypatch):
    need_pyav()
    need_ffprobe()
    floor = 1.0  # MiB
    filler = _fill(small_fs, int((floor + 0.6) * MIB))
    stops: List[str] = []
    resumes: List[bool] = []
    rec = SegmentRecorder(
        small_fs / "r-%H%M%S.mp4",
        "auto",
        _settings(segment_s=1.0, min_free_mib=floor),
        fps=10,
        on_stop=stops.append,
        on_resume=lambda: resumes.append(True),
    )
    rec.lossless = True
    rec.start(None, 10.0)
    for i in range(150):  # far more than 0.6 MiB of noise: old segments must go
        assert rec.write(_frame(i), None, 0), rec.stopped
    assert rec.budget.state.removed > 0 and not stops
    assert free_bytes(small_fs) >= floor * MIB * 0.9
    # Now another program fills the disk as fast as segments are removed: the old
    # segments go first, then only the current one is left and recording stops.
    filler2 = small_fs / "filler2.bin"
    i = 150
    while rec.stopped is None and i < 1500:
        rec.write(_frame(i), None, 0)
        i += 1
        extra = free_bytes(small_fs) - int((floor + 0.05) * MIB)
        if extra > 0:
            with open(filler2, "ab") as fh:
                fh.write(b"\0" * extra)
    assert rec.stopped is not None and "output.record.min_free_mib" in rec.stopped
    # Everything removable went first: only the segment that was being written is left.
    assert [s.paths[0] for s in rec.budget.finished] == [rec.last_path]
    results = [rec.write(_frame(j), None, 0) for j in range(20)]
    assert len(stops) == 1, stops  # one clear error, not one per frame
    assert not any(results) and rec.not_recorded >= 20
    for p in small_fs.glob("r-*.mp4"):
        assert probe_frames(p) > 0  # every segment left behind is a playable file
    filler.unlink()
    filler2.unlink()
    monkeypatch.setattr(recorder_mod, "RESUME_CHECK_S", 0.0)
    rec._next_resume_check = 0.0
    assert rec.write(_frame(0), None, 0)
    assert rec.stopped is None and resumes == [True]
    rec.close()


def test_run_keeps_going_when_the_recording_disk_fills(selfie_onnx, small_fs, tmp_path):
    """`segcam run` with one recording on the full disk and one elsewhere: one error, exit 0."""
    need_pyav()
    need_ffprobe()
    _fill(small_fs, int(1.15 * MIB))
    full = small_fs / "full.mp4"
    other = tmp_path / "other.mp4"
    stats = tmp_path / "stats.json"
    run = Run(
        [
            "--set",
            f"model.path={selfie_onnx}",
            "--input",
            "demo",
            "--set",
            "input.realtime=true",
            "--set",
            "input.width=320",
            "--set",
            "input.height=180",
            "--set",
            "thermal.enabled=false",
            "--set",
            "output.record.min_free_mib=1",
            "--set",
            "output.record.crf=0",  # big frames: the floor is reached within seconds
            "--output",
            f"file://{full}",
            "--output",
            f"file://{other}",
            "--stats-json",
            str(stats),
            "--seconds",
            "6",
        ],
        tmp_path,
    )
    code = run.finish(120)
    log = run.text()
    assert code == 0, log
    st = json.loads(stats.read_text())
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "recording stopped:" in errors[0], log
    assert "output.record.min_free_mib" in log and "Traceback" not in log
    assert f"DEGRADED output file:{full}: recording stopped" in log  # the periodic status line
    assert any("file:" + str(full) in k for k in st["degraded"]), st["degraded"]
    full_st, other_st = st["sinks"][f"file:{full}"], st["sinks"][f"file:{other}"]
    assert "recording stopped" in full_st["error"] and full_st["not_recorded"] > 0
    assert other_st["written"] > full_st["written"] > 0  # the other output kept recording
    assert probe_frames(other) == other_st["written"]
    assert probe_frames(full) >= full_st["written"] - 1  # finished when it stopped


def test_systemd_status_names_a_degraded_output() -> None:
    from segcam.service import format_status

    text = format_status(
        {"fps": 25.0, "degraded": {"output file:/d/a.mp4": "recording stopped: x"}}
    )
    assert text == "25.0 fps | DEGRADED output file:/d/a.mp4: recording stopped: x"


def test_syncer_fsyncs_tracked_files_in_its_thread_and_reports_errors(tmp_path) -> None:
    from segcam.recording.durable import Syncer

    path = tmp_path / "a.bin"
    path.write_bytes(b"x" * 1000)
    syncer = Syncer("test")
    syncer.track(path)
    syncer.track(tmp_path / "missing.bin")  # cannot be opened: reported, not raised
    assert "missing.bin" in (syncer.last_error or "")
    syncer.last_error = None
    before = syncer.syncs
    syncer.request()
    deadline = time.monotonic() + 10
    while syncer.syncs == before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert syncer.syncs > before and syncer.last_error is None
    syncer.untrack(path)
    syncer.close(2.0)
    assert not syncer._fds


def test_resuming_a_single_file_recording_keeps_what_was_recorded(tmp_path, monkeypatch) -> None:
    need_pyav()
    need_ffprobe()
    out = tmp_path / "one.mp4"
    rec = SegmentRecorder(out, "auto", _settings(), fps=10)
    rec.lossless = True
    rec.start(None, 10.0)
    for i in range(12):
        rec.write(_frame(i), None, 0)
    rec._disk_stop("test: disk full")  # as when the floor is reached
    monkeypatch.setattr(recorder_mod, "RESUME_CHECK_S", 0.0)
    rec._next_resume_check = 0.0
    assert rec.write(_frame(12), None, 0)
    rec.close()
    assert probe_frames(out) == 12  # the first file is intact
    assert rec.last_path != out and rec.last_path.name.startswith("one-")
    assert probe_frames(rec.last_path) == 1


def test_a_full_disk_without_a_floor_stops_recording_on_enospc(small_fs) -> None:
    """min_free_mib 0: the write itself fails with ENOSPC; one stop, the file still plays."""
    need_pyav()
    need_ffprobe()
    _fill(small_fs, int(0.4 * MIB))
    stops: List[str] = []
    out = small_fs / "nofloor.mp4"
    rec = SegmentRecorder(out, "auto", _settings(min_free_mib=0.0), fps=10, on_stop=stops.append)
    rec.lossless = True
    rec.start(None, 10.0)
    i = 0
    while rec.stopped is None and i < 400:
        rec.write(_frame(i), None, 0)
        i += 1
    rec.close()
    assert rec.stopped is not None and "No space left" in rec.stopped, rec.stopped
    assert len(stops) == 1
    assert probe_frames(out) >= 5  # everything up to the last fragment that fitted
