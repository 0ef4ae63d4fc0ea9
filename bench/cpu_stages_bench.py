"""Micro-benchmark of the CPU per-frame stages at 720p and 1080p (not a test).

Prints the median (and p90) milliseconds of preprocess, postprocess, refine (with the
default knobs and variants) and compose (each background mode), so that changes to the
CPU path can be judged. Inference itself is measured by `segcam bench` / model_bench.

    .venv/bin/python bench/cpu_stages_bench.py [--runs 50] [--profile mediapipe-selfie]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segcam.compose import Compositor  # noqa: E402
from segcam.config import BackgroundConfig, RefineConfig  # noqa: E402
from segcam.inference.postprocess import to_probability  # noqa: E402
from segcam.inference.preprocess import Preprocessor  # noqa: E402
from segcam.inference.profile import load_profile  # noqa: E402
from segcam.refine import MaskRefiner  # noqa: E402


def timeit(fn: Callable[[], object], runs: int) -> List[float]:
    fn()  # warm caches and lazy allocations
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def row(name: str, times: List[float]) -> None:
    times = sorted(times)
    p90 = times[int(0.9 * (len(times) - 1))]
    print(f"  {name:<34} {statistics.median(times):8.2f} {p90:8.2f}")


def person_like_prob(h: int, w: int) -> np.ndarray:
    """A model-like probability map: a head and shoulders with sigmoid edges."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    head = 0.16 * h - np.hypot(yy - 0.35 * h, xx - 0.5 * w)
    body = np.minimum(yy - 0.55 * h, 0.3 * w - np.abs(xx - 0.5 * w))
    return (1.0 / (1.0 + np.exp(-np.maximum(head, body) / 2.0))).astype(np.float32)


def bench_size(w: int, h: int, prof, runs: int, rng: np.random.Generator) -> None:
    """Print one table for frames of w x h."""
    print(f"\n{w}x{h}                                 median ms   p90 ms")
    frame = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    pre = Preprocessor(prof)
    tensor = np.empty(prof.input_shape, prof.np_dtype)
    row("preprocess", timeit(lambda: pre(frame, tensor), runs))
    raw = person_like_prob(prof.height, prof.width)[None, :, :, None]
    prob = np.empty((prof.height, prof.width), np.float32)
    row("postprocess", timeit(lambda: to_probability(raw, prof, out=prob), runs))
    mask = np.empty((h, w), np.float32)
    variants = [
        ("refine default (guided, s0.6)", RefineConfig()),
        ("refine bilinear (soft, f3, s0.6)", RefineConfig(upsample="bilinear", feather=3)),
        ("refine soft, no feather", RefineConfig(upsample="bilinear", feather=0)),
        ("refine hard + feather 3", RefineConfig(upsample="bilinear", soft=False, feather=3)),
        ("refine feather 15", RefineConfig(upsample="bilinear", feather=15)),
        ("refine + blobs 1%", RefineConfig(upsample="bilinear", min_blob_area=0.01, feather=3)),
    ]
    for name, rc in variants:
        ref = MaskRefiner(rc)
        row(name, timeit(lambda ref=ref: ref.refine(prob, (h, w), out=mask, guide=frame), runs))
    reuse = MaskRefiner(RefineConfig(upsample="bilinear", feather=3))
    reuse.refine(prob, (h, w), out=mask)
    row("refine reuse (prob=None)", timeit(lambda: reuse.refine(None, (h, w), out=mask), runs))
    out = np.empty_like(frame)
    bgimg = Path(tempfile.gettempdir()) / "segcam_bench_bg.png"
    cv2.imwrite(str(bgimg), rng.integers(0, 256, size=(600, 800, 3), dtype=np.uint8))
    modes = [
        ("compose color", BackgroundConfig(mode="color")),
        ("compose image (cover)", BackgroundConfig(mode="image", image=str(bgimg))),
        ("compose blur 21", BackgroundConfig(mode="blur", blur=21)),
        ("compose blur 51", BackgroundConfig(mode="blur", blur=51)),
        ("compose none", BackgroundConfig(mode="none")),
        ("compose overlay", BackgroundConfig(mode="overlay")),
    ]
    cov = reuse.coverage  # the mask above is reuse's: compose as the pipeline calls it
    for name, bc in modes:
        comp = Compositor(bc)
        row(name, timeit(lambda comp=comp: comp.compose(frame, mask, out=out, coverage=cov), runs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--profile", default="mediapipe-selfie")
    args = ap.parse_args()
    prof = load_profile(args.profile)
    rng = np.random.default_rng(0)
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    print(
        f"cpu_stages_bench: {platform.machine()} {os.cpu_count()} cpus, load {load[0]:.2f}, "
        f"cv2 {cv2.__version__} ({cv2.getNumThreads()} threads), numpy {np.__version__}, "
        f"profile {prof.name}, {args.runs} runs"
    )
    for w, h in ((1280, 720), (1920, 1080)):
        bench_size(w, h, prof, args.runs, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
