"""Cost per frame of the refinement settings, on this CPU and (when present) the GPU.

    python bench/guided_bench.py [--sizes 1280x720 1920x1080] [--runs 30] [--json OUT]

CPU: segcam.refine's MaskRefiner per setting (raw bilinear, the bilinear refinement with
a 3 px feather, guided with and without feather), median wall time per call.
GPU (cuda-python and a device): the guided kernels (segcam.gpu.guided) and the two
preprocess kernels (half-pixel bilinear and the warp conventions), device time from CUDA
events around back-to-back launches. The model mask is 256x256, as the default model's.
A benchmark, not a test; on a shared machine the CPU figures are noisy: the load average
is printed with them.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segcam.config import RefineConfig  # noqa: E402
from segcam.demo_scene import DemoScene  # noqa: E402
from segcam.refine import MaskRefiner  # noqa: E402


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def cpu_rows(sizes: List[str], runs: int) -> List[Dict[str, Any]]:
    """Median ms per refine call for each setting and size."""
    import cv2

    rows = []
    for size in sizes:
        w, h = (int(v) for v in size.split("x"))
        frame, truth = DemoScene(w, h).render(10)
        mask = cv2.resize(truth.astype(np.float32), (256, 256), interpolation=cv2.INTER_AREA)
        out = np.empty((h, w), np.float32)
        for name, cfg in (
            ("raw bilinear", RefineConfig(upsample="bilinear", feather=0, smoothing=0.0)),
            ("refine (bilinear, feather 3)", RefineConfig(upsample="bilinear", feather=3)),
            ("guided (feather 3)", RefineConfig(upsample="guided", feather=3)),
            ("guided (feather 0, the default)", RefineConfig(upsample="guided", feather=0)),
        ):
            r = MaskRefiner(cfg)
            ms = _median_ms(functools.partial(r.refine, mask, (h, w), out=out, guide=frame), runs)
            rows.append({"where": "cpu", "size": size, "step": name, "ms": ms})
    return rows


def gpu_rows(sizes: List[str], runs: int) -> List[Dict[str, Any]]:
    """Device ms per launch of the guided kernels and the preprocess kernels."""
    from segcam.gpu.device import GpuContext, probe
    from segcam.gpu.guided import GpuGuided
    from segcam.gpu.memory import DeviceBuffer, Event, Stream
    from segcam.gpu.nvrtc import load_module
    from segcam.gpu.preprocess import GpuPreprocessor
    from segcam.inference.profile import load_profile, replace

    info, why = probe()
    if info is None:
        print(f"GPU: skipped ({why})")
        return []
    ctx = GpuContext.acquire(info.index)
    rows = []
    try:
        cache = Path(os.environ.get("TMPDIR", "/tmp")) / "segcam-guided-bench"
        gmod, _ = load_module("guided", info.sm, cache)
        pmod, _ = load_module("preprocess", info.sm, cache)
        stream = Stream()
        ev0, ev1 = Event(), Event()

        def device_ms(launch: Callable[[], Any]) -> float:
            launch()
            stream.synchronize()
            samples = []
            for _ in range(5):
                ev0.record(stream)
                for _ in range(runs):
                    launch()
                ev1.record(stream)
                ev1.wait()
                samples.append(ev0.elapsed_ms(ev1) / runs)
            return statistics.median(samples)

        prof = load_profile("mediapipe-selfie")
        for size in sizes:
            w, h = (int(v) for v in size.split("x"))
            frame, _ = DemoScene(w, h).render(10)
            fb, mb, ob = (
                DeviceBuffer(frame.nbytes),
                DeviceBuffer(256 * 256 * 4),
                DeviceBuffer(w * h * 4),
            )
            tb = DeviceBuffer(4 * 256 * 256 * 3)
            fb.upload(frame)
            mb.upload(np.full((256, 256), 0.5, np.float32))
            for feather in (0, 3):
                g = GpuGuided(gmod, 3, 1e-3)
                launch = functools.partial(
                    g.launch, mb.ptr, 256, 256, fb.ptr, w * 3, w, h, stream,
                    feather=feather, out_ptr=ob.ptr,
                )  # fmt: skip
                ms = device_ms(launch)
                rows.append({"where": info.name, "size": size,
                             "step": f"guided kernels (feather {feather})", "ms": ms})  # fmt: skip
                g.close()
            for resample in ("bilinear_half_pixel", "bilinear_top_left"):
                pre = GpuPreprocessor(pmod, replace(prof, resample=resample))
                ms = device_ms(functools.partial(pre.launch, fb.ptr, w, h, w * 3, tb.ptr, stream))
                rows.append({"where": info.name, "size": size,
                             "step": f"preprocess {resample}", "ms": ms})  # fmt: skip
                pre.close()
            for b in (fb, mb, ob, tb):
                b.close()
        stream.close()
        ev0.close()
        ev1.close()
    finally:
        ctx.release()
    return rows


def main() -> int:
    """Run the CPU and GPU measurements and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = [] if args.no_cpu else cpu_rows(args.sizes, args.runs)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows += gpu_rows(args.sizes, max(args.runs, 50))
    print(f"{'where':24s} {'size':10s} {'step':34s} {'ms':>9s}   (CPU load avg {load:.1f}, "
          f"{os.cpu_count()} cores)")  # fmt: skip
    for r in rows:
        print(f"{r['where']:24s} {r['size']:10s} {r['step']:34s} {r['ms']:9.3f}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
