"""Helpers shared by the pipeline tests: configs, small videos, recording sinks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from segcam.config import Config, load_config
from segcam.outputs import ThreadedSink


def pipeline_config(model: Path, *overrides: str, size: Tuple[int, int] = (320, 240)) -> Config:
    """A config running the real model at a small frame size, quiet status."""
    base = [
        f"model.path={model}",
        f"input.width={size[0]}",
        f"input.height={size[1]}",
        "pipeline.status_interval_s=0",
        "thermal.enabled=false",
    ]
    return load_config(None, base + list(overrides))


def write_demo_video(path: Path, frames: int, size: Tuple[int, int] = (320, 240)) -> Path:
    """A real mp4 of ``frames`` demo-scene frames (the pipeline reads it back)."""
    from segcam.demo_scene import DemoScene

    scene = DemoScene(size[0], size[1], 30.0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(scene.render(i)[0])
    writer.release()
    return path


def count_video_frames(path: Path) -> Tuple[int, int]:
    """(frame count the container reports, frames actually decoded)."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    decoded = 0
    while cap.read()[0]:
        decoded += 1
    cap.release()
    return reported, decoded


class RecordingSink(ThreadedSink):
    """A real threaded sink that keeps each frame's id and mask (and can be slow).

    ``delay_s`` makes every write take that long, like a sink on a slow disk or link.
    """

    needs_mask = True

    def __init__(self, name: str = "recording", delay_s: float = 0.0) -> None:
        super().__init__(name)
        self.delay_s = delay_s
        self.frame_ids: List[int] = []
        self.masks: List[np.ndarray] = []
        self.keep_masks = True

    def _write(self, item) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.frame_ids.append(item.frame_id)
        if self.keep_masks:
            self.masks.append(item.mask.copy())


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks."""
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def stages_of(snapshot: dict, names: Sequence[str]) -> dict:
    """The named stages' entries of a metrics snapshot."""
    return {n: snapshot["stages"][n] for n in names}
