"""Score refinement settings on frames with known silhouettes (see :mod:`segcam.eval`)."""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import cv2
import numpy as np

from segcam.config import Config, RefineConfig
from segcam.eval import metrics
from segcam.eval.frames import TruthFrame
from segcam.refine import MaskRefiner

Model = Callable[[np.ndarray], np.ndarray]  # BGR frame -> low-resolution probability
CROP = 128  # side of a worst-edge crop, in frame pixels


@dataclass
class FrameScore:
    """The metrics of one setting on one frame."""

    name: str
    iou: float
    boundary_f: float
    precision: float
    recall: float
    band_error: float
    flicker: Optional[float]  # None on a sequence's first frame (or not a sequence)
    refine_ms: float
    ghosting: Optional[float] = None  # None where the truth did not move (or no sequence)


@dataclass
class SettingResult:
    """All frames of one setting, and their summary."""

    name: str
    frames: List[FrameScore] = field(default_factory=list)

    def summary(self) -> Dict[str, float]:
        """Mean / median / worst of each metric (worst: lowest IoU/F, highest errors)."""
        f = self.frames
        iou = np.array([s.iou for s in f])
        bf = np.array([s.boundary_f for s in f])
        be = np.array([s.band_error for s in f])
        fl = np.array([s.flicker for s in f if s.flicker is not None])
        gh = np.array([s.ghosting for s in f if s.ghosting is not None])
        ms = np.array([s.refine_ms for s in f])
        out = {
            "frames": float(len(f)),
            "iou_mean": float(iou.mean()),
            "iou_median": float(np.median(iou)),
            "iou_worst": float(iou.min()),
            "boundary_f_mean": float(bf.mean()),
            "boundary_f_worst": float(bf.min()),
            "band_error_mean": float(be.mean()),
            "band_error_worst": float(be.max()),
            "refine_ms_median": float(np.median(ms)),
        }
        if fl.size:
            out["flicker_mean"] = float(fl.mean())
            out["flicker_worst"] = float(fl.max())
        if gh.size:
            out["ghosting_mean"] = float(gh.mean())
        return out


@dataclass
class Crop:
    """A worst-edge crop: the frame, the truth and each setting's mask around one spot."""

    score: float
    name: str
    box: Tuple[int, int, int, int]  # x0, y0, x1, y1 in the frame
    frame: np.ndarray
    truth: np.ndarray
    masks: Dict[str, np.ndarray]


@dataclass
class EvalResult:
    """One source (demo at a size, or a folder) scored under every setting."""

    label: str
    band: float
    settings: Dict[str, SettingResult]
    crops: List[Crop]
    infer_ms_median: float


def model_from_config(cfg: Config) -> Tuple[Model, str]:
    """The configured model as a function frame -> probability, and its backend line."""
    from segcam.inference.postprocess import to_probability
    from segcam.inference.preprocess import Preprocessor
    from segcam.pipeline.assemble import open_backend

    backend, reason = open_backend(cfg)
    profile = backend.profile
    pre = Preprocessor(profile)

    def run(frame: np.ndarray) -> np.ndarray:
        return to_probability(backend.infer(pre(frame)), profile).copy()

    return run, f"{profile.name} ({profile.resample}) on {reason}"


def _worst_spot(errors: List[np.ndarray]) -> Tuple[float, int, int]:
    """Centre (x, y) and score of the CROP-sized window with the most edge error."""
    total = errors[0].copy()
    for e in errors[1:]:
        total += e
    small = cv2.resize(total, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    k = max(1, CROP // 4)
    local = cv2.boxFilter(small, -1, (k, k), normalize=True, borderType=cv2.BORDER_CONSTANT)
    y, x = np.unravel_index(int(np.argmax(local)), local.shape)
    return float(local[y, x]), int(x * 4 + 2), int(y * 4 + 2)


class Evaluator:
    """Runs the model once per frame and every setting's refinement on its output."""

    def __init__(
        self,
        model: Model,
        settings: Dict[str, RefineConfig],
        band: float = 3.0,
        crops: int = 4,
        sequence: bool = True,
    ) -> None:
        self.model = model
        self.settings = settings
        self.band = float(band)
        self.crops = int(crops)
        self.sequence = sequence

    def run(self, frames: Iterable[TruthFrame], label: str) -> EvalResult:
        """Score every setting on ``frames`` (consecutive frames when ``sequence``)."""
        refiners = {n: MaskRefiner(c) for n, c in self.settings.items()}
        results = {n: SettingResult(n) for n in self.settings}
        prev: Dict[str, np.ndarray] = {}
        prev_truth: Optional[np.ndarray] = None
        heap: List[Tuple[float, int, Crop]] = []
        infer_ms: List[float] = []
        for index, tf in enumerate(frames):
            h, w = tf.truth.shape
            t0 = time.perf_counter()
            prob = self.model(tf.frame)
            infer_ms.append((time.perf_counter() - t0) * 1e3)
            same_size = prev_truth is not None and prev_truth.shape == tf.truth.shape
            masks: Dict[str, np.ndarray] = {}
            errors = []
            band = metrics.edge_band(tf.truth, self.band)
            for name, refiner in refiners.items():
                if not self.sequence or not same_size:
                    refiner.reset()
                t1 = time.perf_counter()
                mask = refiner.refine(prob, (h, w), out=None, guide=tf.frame)
                ms = (time.perf_counter() - t1) * 1e3
                f, p, r = metrics.boundary_f(mask, tf.truth, self.band)
                flick = ghost = None
                if self.sequence and same_size and name in prev:
                    flick = metrics.flicker(mask, prev[name], tf.truth, prev_truth)
                    ghost = metrics.ghosting(mask, tf.truth, prev_truth)
                be = metrics.band_error(mask, tf.truth, self.band, sel=band)
                err = metrics.error_map(mask, tf.truth) * band
                results[name].frames.append(
                    FrameScore(tf.name, metrics.iou(mask, tf.truth), f, p, r, be, flick, ms, ghost)
                )
                masks[name] = mask
                errors.append(err)
            self._keep_crop(heap, index, tf, masks, errors)
            prev = masks
            prev_truth = tf.truth
        crops = [c for _, _, c in sorted(heap, key=lambda t: -t[0])]
        return EvalResult(
            label, self.band, results, crops, float(np.median(infer_ms)) if infer_ms else 0.0
        )

    def _keep_crop(
        self,
        heap: List[Tuple[float, int, Crop]],
        index: int,
        tf: TruthFrame,
        masks: Dict[str, np.ndarray],
        errors: List[np.ndarray],
    ) -> None:
        if self.crops <= 0 or not errors:
            return
        score, cx, cy = _worst_spot(errors)
        if len(heap) >= self.crops and score <= heap[0][0]:
            return
        h, w = tf.truth.shape
        x0 = int(min(max(cx - CROP // 2, 0), max(w - CROP, 0)))
        y0 = int(min(max(cy - CROP // 2, 0), max(h - CROP, 0)))
        x1, y1 = min(w, x0 + CROP), min(h, y0 + CROP)
        crop = Crop(
            score,
            tf.name,
            (x0, y0, x1, y1),
            tf.frame[y0:y1, x0:x1].copy(),
            tf.truth[y0:y1, x0:x1].copy(),
            {n: m[y0:y1, x0:x1].copy() for n, m in masks.items()},
        )
        item = (score, index, crop)
        if len(heap) < self.crops:
            heapq.heappush(heap, item)
        else:
            heapq.heapreplace(heap, item)


__all__ = ["Evaluator", "EvalResult", "SettingResult", "FrameScore", "Crop", "model_from_config"]
