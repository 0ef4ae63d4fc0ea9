"""GPU kernel and pipeline benchmark (not a test): one run prints the whole table.

For 720p, 1080p and 4K frames it measures, in the same process:

* each GPU step's device time: CUDA events around a batch of back-to-back launches queued
  behind a large copy (so Python's launch cost does not starve the GPU), per launch,
  median of the repetitions after warm-up; input frames rotate so the L2 cache cannot
  hold them all;
* the host cost of enqueueing one step from Python (what a stage thread pays);
* the OpenCV/numpy CPU equivalent (segcam.inference.preprocess / segcam.refine + segcam.compose);
* the DRAM floor: the fewest bytes the step must move / the measured device copy bandwidth;

and then the pipeline's throughput on the demo source with the GPU stages against the CPU
stages (ONNX Runtime on the CPU in both, same model, same machine).

    PYTHONPATH=. python3 bench/gpu_bench.py [--markdown out.md] [--plot timeline.png]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segcam.compose import Compositor  # noqa: E402
from segcam.config import BackgroundConfig, RefineConfig, load_config  # noqa: E402
from segcam.gpu.composite import GpuCompositor  # noqa: E402
from segcam.gpu.device import GpuContext, probe  # noqa: E402
from segcam.gpu.memory import LEDGER, DeviceBuffer, Event, Stream  # noqa: E402
from segcam.gpu.nvrtc import load_module  # noqa: E402
from segcam.gpu.preprocess import GpuPreprocessor  # noqa: E402
from segcam.inference.preprocess import Preprocessor  # noqa: E402
from segcam.inference.profile import load_profile  # noqa: E402
from segcam.pipeline.knobs import KnobValues  # noqa: E402
from segcam.refine import MaskRefiner  # noqa: E402

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4K": (3840, 2160)}
ROTATE = 6  # input frames cycled through so the L2 cannot hold every input


class GpuTimer:
    """Device time per launch of an enqueue function, hidden behind a copy 'filler'."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.e0, self.e1 = Event(), Event()
        self.fill_bytes = 512 << 20
        self.fa, self.fb = DeviceBuffer(self.fill_bytes), DeviceBuffer(self.fill_bytes)
        stream.memset(self.fa.ptr, 7, self.fill_bytes)
        self.fill_ms = self._time(lambda: self._fill(1), 1)
        self.copy_gbs = 2 * self.fill_bytes / (self.fill_ms * 1e-3) / 1e9  # read + write

    def _fill(self, n: int) -> None:
        for _ in range(n):
            self.stream.copy_dtod(self.fb.ptr, self.fa.ptr, self.fill_bytes)

    def _time(self, fn: Callable[[], None], n: int) -> float:
        self.e0.record(self.stream)
        for _ in range(n):
            fn()
        self.e1.record(self.stream)
        self.e1.wait()
        return self.e0.elapsed_ms(self.e1) / n

    def measure(self, fn: Callable[[], None], reps: int = 15, n: int = 30) -> Tuple[float, float]:
        """(median device µs per launch, host µs to enqueue one)."""
        for _ in range(5):
            fn()
        self.stream.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            fn()
        host_us = (time.perf_counter() - t) / n * 1e6
        self.stream.synchronize()
        fills = max(1, int(np.ceil(n * host_us * 1.5 / (self.fill_ms * 1e3))))
        samples = []
        for _ in range(reps):
            self._fill(fills)
            samples.append(self._time(fn, n))
        return statistics.median(samples) * 1e3, host_us

    def close(self) -> None:
        for obj in (self.e0, self.e1, self.fa, self.fb):
            obj.close()


def cpu_us(fn: Callable[[], Any], reps: int = 25) -> float:
    """Median wall µs of a CPU function after two warm-up calls."""
    fn()
    fn()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


class _Kit:
    """What every size's measurement shares (kernels, timer, CPU references)."""

    def __init__(self, info: Any, cache: Path) -> None:
        self.profile = load_profile("mediapipe-selfie")
        self.pre_mod, _ = load_module("preprocess", info.sm, cache)
        self.cmp_mod, _ = load_module("composite", info.sm, cache)
        self.stream = Stream()
        self.timer = GpuTimer(self.stream)
        self.bw = self.timer.copy_gbs * 1e9
        # The bilinear path (soft, feather 3, smoothing 0.6); bench/guided_bench.py has guided.
        self.refine = RefineConfig(upsample="bilinear", feather=3)
        self.knobs = KnobValues(feather=self.refine.feather, smoothing=0.6, soft=True)
        self.rng = np.random.default_rng(0)
        self.low = self.rng.random((256, 256), dtype=np.float32)
        self.pre = GpuPreprocessor(self.pre_mod, self.profile)
        self.cpu_pre = Preprocessor(self.profile)
        self.tensor = np.empty(self.profile.input_shape, self.profile.np_dtype)

    def close(self) -> None:
        self.pre.close()
        self.timer.close()
        self.stream.close()
        self.pre_mod.close()
        self.cmp_mod.close()


def _size_rows(kit: _Kit, label: str, w: int, h: int, compare: bool) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    s = kit.stream
    frames = [kit.rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(ROTATE)]
    devs = [DeviceBuffer(w * h * 3) for _ in range(ROTATE)]
    for d, f in zip(devs, frames):
        d.upload(f)
    out_t = [DeviceBuffer(kit.tensor.nbytes) for _ in range(ROTATE)]
    comp = [DeviceBuffer(w * h * 3) for _ in range(ROTATE)]
    mask = [DeviceBuffer(w * h * 4) for _ in range(ROTATE)]
    turn = [0]

    def nxt() -> int:
        turn[0] = (turn[0] + 1) % ROTATE
        return turn[0]

    def run_pre() -> None:
        i = nxt()
        kit.pre.launch(devs[i].ptr, w, h, w * 3, out_t[i].ptr, s)

    dev_us, host_us = kit.timer.measure(run_pre)
    cpu = cpu_us(lambda: kit.cpu_pre(frames[0], kit.tensor))
    n_out = kit.profile.width * kit.profile.height
    floor_bytes = kit.tensor.nbytes + n_out * 4 * 3  # output + the 4 sampled pixels each
    rows.append(_row(f"preprocess {label}->256² f32", dev_us, host_us, cpu, floor_bytes, kit.bw))

    blur = BackgroundConfig()
    cases = [
        # frame read once, composite + float mask written, blurred 1/16 image in and out
        (blur, f"blur bg {blur.blur}", w * h * 10 + 2 * (w * h * 3) // 16, True),
        (BackgroundConfig(mode="color"), "colour bg", w * h * 10, True),
    ]
    if compare:  # the single shared-memory kernel the row-step kernels replace
        cases += [(c[0], c[1] + ", composite_fused", c[2], False) for c in cases]
    for bg, what, floor_bytes, row_path in cases:
        gpu = GpuCompositor(kit.cmp_mod, kit.refine, bg)
        gpu.row_path = row_path
        gpu.update_from_host(kit.low, 0.6, s)

        def run_comp(gpu: GpuCompositor = gpu) -> None:
            i = nxt()
            gpu.compose(devs[i].ptr, w * 3, frames[i], kit.knobs, s, comp[i].ptr, mask[i].ptr)

        dev_us, host_us = kit.timer.measure(run_comp, n=20)
        cpu_ref, cpu_cmp = MaskRefiner(kit.refine), Compositor(bg)
        cpu_ref.refine(kit.low, (h, w), kit.knobs)

        def cpu_chain(cpu_ref: MaskRefiner = cpu_ref, cpu_cmp: Compositor = cpu_cmp) -> None:
            m = cpu_ref.refine(None, (h, w), kit.knobs)
            cpu_cmp.compose(frames[0], m, kit.knobs)

        cpu = cpu_us(cpu_chain, reps=10)
        name = f"refine+composite {label} ({what}, feather 3)"
        rows.append(_row(name, dev_us, host_us, cpu, floor_bytes, kit.bw))
        gpu.close()
        cpu_cmp.close()
    for buf in devs + out_t + comp + mask:
        buf.close()
    return rows


def kernel_rows(
    info: Any, cache: Path, compare: bool = False
) -> Tuple[List[Dict[str, Any]], float]:
    """Per-kernel rows for every size; returns (rows, copy bandwidth GB/s)."""
    kit = _Kit(info, cache)
    try:
        rows: List[Dict[str, Any]] = []
        for label, (w, h) in SIZES.items():
            rows += _size_rows(kit, label, w, h, compare)
        return rows, kit.bw / 1e9
    finally:
        kit.close()


def _row(name: str, dev_us: float, host_us: float, cpu: float, floor_bytes: int, bw: float):
    floor_us = floor_bytes / bw * 1e6
    return {
        "step": name,
        "gpu_us": dev_us,
        "enqueue_us": host_us,
        "cpu_us": cpu,
        "speedup": cpu / dev_us if dev_us else float("nan"),
        "floor_us": floor_us,
        "x_floor": dev_us / floor_us if floor_us else float("nan"),
    }


def pipeline_rows(info: Any, frames: int, plot: Optional[str]) -> List[Dict[str, Any]]:
    """Throughput of the runner with GPU stages vs CPU stages (ORT on the CPU in both)."""
    import tempfile

    import cv2

    from segcam.demo_scene import DemoScene
    from segcam.gpu.stages import build_gpu_stages
    from segcam.gpu.timeline import plot_timeline
    from segcam.inference.onnxruntime import OnnxRuntimeBackend
    from segcam.models.registry import ensure_model
    from segcam.pipeline.runner import Runner
    from segcam.pipeline.stages import build_cpu_stages
    from segcam.sources import open_source

    cache = Path(os.environ.get("SEGCAM_TEST_CACHE", ".cache/segcam-test"))
    onnx = ensure_model("mediapipe-selfie", cache)
    out: List[Dict[str, Any]] = []
    for label, (w, h) in SIZES.items():
        if label == "4K":
            continue
        # Demo frames saved as BMP and looped: capture costs a file read, not a rendering,
        # so the stages (not the source) set the pace.
        folder = Path(tempfile.mkdtemp(prefix=f"segcam-frames-{label}-"))
        scene = DemoScene(w, h, 30.0)
        for i in range(0, 240, 30):
            cv2.imwrite(str(folder / f"f{i:04d}.bmp"), scene.render(i)[0])
        cfg = load_config(
            None,
            [f"input.uri={folder}", "input.loop=true", f"input.width={w}", f"input.height={h}"],
        )
        profile = load_profile("mediapipe-selfie")
        backend = OnnxRuntimeBackend(profile, onnx)
        for device in ("cpu", "gpu"):
            stages = (
                build_gpu_stages(cfg, backend, profile, info)
                if device == "gpu"
                else build_cpu_stages(cfg, backend, profile)
            )
            source = open_source(cfg.input)
            runner = Runner(cfg, source, backend, [], stages=stages, backpressure=True)
            t = time.perf_counter()
            rc = runner.run(max_frames=frames)
            secs = time.perf_counter() - t
            snap = runner.metrics.snapshot()
            row = {
                "config": f"{label} demo, {device} stages",
                "fps": frames / secs,
                "rc": rc,
                "stages": {k: v.get("p50_ms") for k, v in snap.get("stages", {}).items()},
            }
            if device == "gpu":
                tl = stages.info["timeline"]
                row["overlap"] = tl.overlap()
                if plot and label == "1080p":
                    try:
                        plot_timeline(tl.spans(), Path(plot), f"segcam GPU stages, {label}")
                    except ImportError as exc:
                        print(f"no plot: {exc}")
            out.append(row)
        backend.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", help="also write the tables to this file")
    ap.add_argument("--plot", help="PNG of the 1080p pipeline's stage timeline")
    ap.add_argument("--frames", type=int, default=300, help="frames per pipeline run")
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument(
        "--compare-fused",
        action="store_true",
        help="also time soft masks on composite_fused (the single shared-memory kernel)",
    )
    args = ap.parse_args()
    info, reason = probe()
    if info is None:
        print(f"no GPU: {reason}")
        return 1
    ctx = GpuContext.acquire(info.index)
    import tempfile

    import cv2
    import onnxruntime

    cache = Path(tempfile.mkdtemp(prefix="segcam-bench-"))
    rows, gbs = kernel_rows(info, cache, args.compare_fused)
    pipe = [] if args.no_pipeline else pipeline_rows(info, args.frames, args.plot)
    lines = [
        f"Machine: {info.describe()}; host {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; OpenCV {cv2.__version__}, onnxruntime {onnxruntime.__version__}"
        f", Python {platform.python_version()}; measured copy bandwidth {gbs:.0f} GB/s "
        "(device-to-device, read + write).",
        "",
        "| step | GPU µs (events, median) | enqueue µs (host) | OpenCV/numpy CPU µs | "
        "GPU speed-up | DRAM floor µs | GPU / floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']} | {r['gpu_us']:.1f} | {r['enqueue_us']:.1f} | {r['cpu_us']:.0f} | "
            f"{r['speedup']:.0f}x | {r['floor_us']:.1f} | {r['x_floor']:.1f}x |"
        )
    if pipe:
        lines += [
            "",
            "| pipeline (runner, ORT CPU inference) | fps | stage p50 ms | infer/preprocess/"
            "composite overlap |",
            "|---|---:|---|---|",
        ]
        for r in pipe:
            st = ", ".join(
                f"{k} {v:.2f}" for k, v in r["stages"].items() if v is not None and "/" not in k
            )
            ov = r.get("overlap")
            ovs = (
                f"{ov['infer_overlaps_later_preprocess']}/{ov['frames']} later pre, "
                f"{ov['infer_overlaps_prev_composite']}/{ov['frames']} prev-comp"
                if ov
                else ""
            )
            lines.append(f"| {r['config']} | {r['fps']:.1f} | {st} | {ovs} |")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n", encoding="utf-8")
    ctx.release()
    print(f"live CUDA resources at exit: {LEDGER.snapshot() or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
