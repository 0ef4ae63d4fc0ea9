"""``segcam bench``: the same workload run sequentially, then pipelined, in one process.

Workload: the demo source (default 1920x1080, unpaced), the configured model and
compositing, no output (a null sink that only notes when each frame arrives). The
sequential loop is the synchronous pattern of common TensorRT recipes; the pipelined run
is the runner with one thread per stage. Both drive the same stage implementations.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from segcam.commands import add_config_options, config_from_args
from segcam.errors import UsageError
from segcam.pipeline.contracts import STAGE_NAMES

HELP = "measure sequential vs pipelined throughput and per-stage latency"

log = logging.getLogger("segcam")

MAIN_STAGES = STAGE_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``segcam bench``."""
    add_config_options(parser)
    parser.add_argument(
        "--frames", type=int, default=120, metavar="N", help="measured frames per mode (120)"
    )
    parser.add_argument(
        "--warmup", type=int, default=10, metavar="N", help="unmeasured frames first (10)"
    )
    parser.add_argument(
        "--resolution", default="1920x1080", metavar="WxH", help="demo frame size (1920x1080)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="FILE.png", help="per-stage latency chart (matplotlib)")
    parser.add_argument(
        "--model-only", action="store_true", help="time the model alone (segcam model bench)"
    )
    parser.add_argument(
        "--lib-threads",
        type=int,
        default=0,
        metavar="N",
        help="OpenCV and ONNX Runtime threads in both modes (0 = their defaults); "
        "1 shows what the stage threads alone overlap",
    )


def parse_resolution(text: str) -> Tuple[int, int]:
    """'1920x1080' -> (1920, 1080)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text or "")
    if not m or int(m.group(1)) < 16 or int(m.group(2)) < 16:
        raise UsageError(f"--resolution {text!r}: expected WIDTHxHEIGHT", "e.g. 1920x1080")
    return int(m.group(1)), int(m.group(2))


class _ArrivalSink:
    """The null sink: records when each frame arrives; resets metrics after the warm-up."""

    name = "null"

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.arrivals: List[float] = []
        self.cpu: List[float] = []  # process CPU time at the first and last measured frame
        self.runner: Any = None

    def attach(self, runner: Any) -> None:
        self.runner = runner

    def start(self) -> None:
        pass

    def submit(self, result: Any) -> bool:
        now = time.perf_counter()
        self.arrivals.append(now)
        n = len(self.arrivals)
        if n == self.warmup + 1:
            self.cpu = [time.process_time()] * 2
        elif n > self.warmup + 1:
            self.cpu[1] = time.process_time()
        if n == self.warmup and self.runner is not None:
            self.runner.metrics.reset_samples()
        return True

    def stop(self, timeout: float = 2.0) -> None:
        pass

    def stats(self) -> Dict[str, Any]:
        return {"written": len(self.arrivals), "dropped": 0}

    def fps(self) -> float:
        """Steady-state throughput over the frames after the warm-up."""
        t = self.arrivals[self.warmup :] if len(self.arrivals) > self.warmup + 1 else []
        if len(t) < 2 or t[-1] <= t[0]:
            return 0.0
        return (len(t) - 1) / (t[-1] - t[0])

    def cpu_use(self) -> Tuple[Optional[float], Optional[float]]:
        """(process CPU ms per frame, cores kept busy) over the measured frames."""
        t = self.arrivals[self.warmup :]
        if len(t) < 2 or not self.cpu or t[-1] <= t[0]:
            return None, None
        cpu = self.cpu[1] - self.cpu[0]
        return round(cpu / (len(t) - 1) * 1e3, 2), round(cpu / (t[-1] - t[0]), 2)


def _stage_table(snap: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    return {
        name: {"p50_ms": v["p50_ms"], "p95_ms": v["p95_ms"]}
        for name, v in snap["stages"].items()
        if v.get("p50_ms") is not None
    }


def apply_lib_threads(cfg: Any, n: int) -> None:
    """Use ``n`` OpenCV and ONNX Runtime threads in both modes."""
    import cv2

    cv2.setNumThreads(n)
    cfg.pipeline.cv_threads = n
    cfg.inference.threads = n


def run_bench(
    cfg: Any, frames: int, warmup: int, plot_path: Optional[str] = None
) -> Dict[str, Any]:
    """Run both modes and return the result object (what --json prints).

    With GPU stages the result also carries how often their CUDA work overlapped, and
    with ``plot_path`` their timeline is drawn next to it (``<stem>.timeline.png``).
    """
    from segcam.pipeline.assemble import open_backend
    from segcam.pipeline.runner import Runner
    from segcam.pipeline.sequential import run_sequential
    from segcam.pipeline.stages import build_stages
    from segcam.sources import open_source

    backend, reason = open_backend(cfg)
    try:
        source = open_source(cfg.input)
        source.open()
        try:
            seq = run_sequential(
                cfg, source, build_stages(cfg, backend, backend.profile), frames, warmup
            )
        finally:
            source.close()
        log.info("sequential: %.2f fps", seq["fps"])
        source = open_source(cfg.input)
        probe = _ArrivalSink(warmup)
        stages = build_stages(cfg, backend, backend.profile)
        runner = Runner(cfg, source, backend, [probe], stages=stages, backpressure=True)
        runner.run(max_frames=warmup + frames)
        if runner.error is not None:
            raise runner.error
        pipe = runner.metrics.snapshot()
        gpu = _gpu_timeline(stages, plot_path)
        pipe_fps = probe.fps()
        pipe_cpu, pipe_cores = probe.cpu_use()
        log.info("pipelined: %.2f fps", pipe_fps)
    finally:
        backend.close()
    main = {k: v for k, v in pipe["stages"].items() if k in MAIN_STAGES and v["p50_ms"]}
    slowest = max(main, key=lambda k: main[k]["p50_ms"]) if main else ""
    bound = 1000.0 / main[slowest]["p50_ms"] if slowest else 0.0
    seq_fps = float(seq["fps"])
    try:
        load: Optional[List[float]] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "resolution": f"{cfg.input.width}x{cfg.input.height}",
        "frames": frames,
        "warmup": warmup,
        "model": cfg.model.name,
        "backend": reason,
        "device": stages.device,
        "background": cfg.composite.background.mode,
        "lib_threads": {"opencv": _cv_threads(), "onnxruntime": cfg.inference.threads or "default"},
        "sequential_fps": round(seq_fps, 2),
        "pipelined_fps": round(pipe_fps, 2),
        "speedup": round(pipe_fps / seq_fps, 3) if seq_fps > 0 else None,
        "slowest_stage": slowest,
        "slowest_stage_bound_fps": round(bound, 2),
        "bound_ratio": round(pipe_fps / bound, 3) if bound > 0 else None,
        "stages": _stage_table(pipe),
        "sequential_stages": _stage_table(seq),
        "sequential_cpu_ms_per_frame": seq.get("cpu_ms_per_frame"),
        "pipelined_cpu_ms_per_frame": pipe_cpu,
        "sequential_cores_used": seq.get("cores_used"),
        "pipelined_cores_used": pipe_cores,
        "glass_to_glass_ms": pipe["glass_to_glass_ms"],
        "sequential_glass_to_glass_ms": seq["glass_to_glass_ms"],
        "drops": pipe["drops"],
        **gpu,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "load_average": load,
        },
    }


def _cv_threads() -> int:
    import cv2

    return int(cv2.getNumThreads())


def _gpu_timeline(stages: Any, plot_path: Optional[str]) -> Dict[str, Any]:
    """GPU stages only: stream overlap figures and, if asked, the timeline chart."""
    timeline = (getattr(stages, "info", None) or {}).get("timeline")
    if timeline is None:
        return {}
    out: Dict[str, Any] = {"gpu_overlap": timeline.overlap()}
    if plot_path:
        from pathlib import Path

        from segcam.gpu.timeline import plot_stage_timeline

        written = plot_stage_timeline(stages, Path(plot_path), "segcam bench: GPU stage timeline")
        if written is not None:
            out["timeline_plot"] = str(written)
    return out


def format_table(result: Dict[str, Any]) -> str:
    """Human-readable table of both modes."""
    seq, pipe = result["sequential_stages"], result["stages"]
    names = [n for n in pipe if n in seq] + [n for n in pipe if n not in seq]
    lines = [
        f"segcam bench: {result['resolution']}, {result['frames']} frames, model "
        f"{result['model']}, {result['backend']}, background {result['background']}, "
        f"library threads {result['lib_threads']}",
        "",
        f"{'stage':<22}{'sequential p50/p95 ms':>24}{'pipelined p50/p95 ms':>24}",
        "-" * 70,
    ]

    def cell(d: Dict[str, Any], n: str) -> str:
        v = d.get(n)
        return "-" if not v else f"{v['p50_ms']:.2f} / {v['p95_ms']:.2f}"

    for n in names:
        lines.append(f"{n:<22}{cell(seq, n):>24}{cell(pipe, n):>24}")
    sg, pg = result["sequential_glass_to_glass_ms"], result["glass_to_glass_ms"]

    def g(d: Dict[str, Any]) -> str:
        return "-" if d.get("p50") is None else f"{d['p50']:.1f} / {d['p95']:.1f}"

    lines.append(f"{'glass-to-glass':<22}{g(sg):>24}{g(pg):>24}")
    lines.append("-" * 70)
    seq_fps, pipe_fps = result["sequential_fps"], result["pipelined_fps"]
    lines.append(f"{'throughput':<22}{seq_fps:>20.2f} fps{pipe_fps:>20.2f} fps")
    lines.append(
        f"speedup {result['speedup']}x; slowest stage {result['slowest_stage']} bounds "
        f"pipelining at {result['slowest_stage_bound_fps']} fps (reached "
        f"{result['bound_ratio']} of it)"
    )
    lines.append(
        f"CPU per frame: sequential {result['sequential_cpu_ms_per_frame']} ms "
        f"({result['sequential_cores_used']} cores busy), pipelined "
        f"{result['pipelined_cpu_ms_per_frame']} ms ({result['pipelined_cores_used']} cores busy)"
    )
    m = result["machine"]
    lines.append(f"machine: {m['cpu_count']} CPUs, {m['processor']}, load {m['load_average']}")
    return "\n".join(lines)


def _check_plotting() -> None:
    """UsageError unless matplotlib can be imported (checked before a long run)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            "--plot needs matplotlib, which is not installed",
            'pip install "segcam[plot]" (or pip install matplotlib)',
        ) from None


def plot(result: Dict[str, Any], path: str) -> None:
    """Grouped bar chart of per-stage p50 (bars) and p95 (whiskers) for both modes."""
    _check_plotting()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq, pipe = result["sequential_stages"], result["stages"]
    names = [n for n in pipe if n in MAIN_STAGES or "/" in n]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    xs = list(range(len(names)))
    for offset, label, data in ((-0.2, "sequential", seq), (0.2, "pipelined", pipe)):
        p50 = [(data.get(n) or {}).get("p50_ms") or 0.0 for n in names]
        p95 = [(data.get(n) or {}).get("p95_ms") or 0.0 for n in names]
        err = [max(0.0, b - a) for a, b in zip(p50, p95)]
        ax.bar([x + offset for x in xs], p50, 0.4, yerr=[[0] * len(err), err], label=label)
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=20)
    ax.set_ylabel("latency ms (bar p50, whisker p95)")
    ax.set_title(
        f"segcam bench {result['resolution']}: sequential {result['sequential_fps']} fps, "
        f"pipelined {result['pipelined_fps']} fps"
    )
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise UsageError(f"--plot {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _model_only(cfg: Any, args: argparse.Namespace) -> int:
    try:
        from segcam.models.bench import run_model_bench
    except ImportError:
        raise UsageError(
            "--model-only needs segcam.models.bench, which this build does not have",
            "run segcam bench without --model-only",
        ) from None
    result = run_model_bench(cfg, frames=args.frames, as_json=args.json)
    if isinstance(result, dict) and args.json:
        print(json.dumps(result, indent=2, default=str))
    elif isinstance(result, str):
        print(result)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``segcam bench``."""
    if args.frames < 2:
        raise UsageError(f"--frames must be at least 2, got {args.frames}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be 0 or more, got {args.warmup}")
    cfg = config_from_args(args)
    if args.model_only:
        return _model_only(cfg, args)
    width, height = parse_resolution(args.resolution)
    cfg.input.uri = "demo"
    cfg.input.width, cfg.input.height = width, height
    cfg.input.realtime = False
    cfg.output.uris = ["none"]
    cfg.pipeline.status_interval_s = 0
    if args.lib_threads < 0:
        raise UsageError(f"--lib-threads must be 0 or more, got {args.lib_threads}")
    if args.lib_threads:
        apply_lib_threads(cfg, args.lib_threads)
    if args.plot:
        _check_plotting()
    result = run_bench(cfg, args.frames, args.warmup, plot_path=args.plot)
    if args.plot:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        if args.plot:
            print(f"plot: {args.plot}")
        if result.get("timeline_plot"):
            print(f"GPU stage timeline: {result['timeline_plot']}")
    return 0
