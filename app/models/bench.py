"""Model-only speed: the converted ONNX in ONNX Runtime (CPU) beside the original .tflite
in LiteRT, same machine, same process, same input, interleaved call by call.

This is a benchmark, not a test: it reports medians, it asserts nothing. ``segcam bench
--model-only`` and ``bench/model_bench.py`` call :func:`run_model_bench`.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

import numpy as np

DEFAULT_MODELS = ("mediapipe-selfie", "mediapipe-selfie-landscape")
MIN_RUNS = 200  # medians of fewer runs are too noisy on a shared machine


def _stats(samples_s: List[float]) -> Dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {
        "p50": float(np.median(ms)),
        "p90": float(np.percentile(ms, 90)),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
    }


def _load() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _input(hw: Sequence[int]) -> np.ndarray:
    """A real photo of a person (skimage's astronaut) when available, else smooth noise."""
    h, w = int(hw[0]), int(hw[1])
    try:
        import cv2
        from skimage import data

        rgb = cv2.resize(data.astronaut(), (w, h), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray((rgb.astype(np.float32) / 255.0)[None])
    except ImportError:
        return np.random.default_rng(0).random((1, h, w, 3), dtype=np.float32)


def _ort_runner(onnx_path: Path, threads: int, x: np.ndarray) -> Callable[[], np.ndarray]:
    """One ORT CPU session with I/O bound once to preallocated numpy buffers."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads == 1:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    out_meta = sess.get_outputs()[0]
    out = np.empty([int(d) for d in out_meta.shape], np.float32)
    binding = sess.io_binding()
    binding.bind_cpu_input(sess.get_inputs()[0].name, x)
    binding.bind_output(out_meta.name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)

    def run() -> np.ndarray:
        sess.run_with_iobinding(binding)
        return out

    return run


def _litert_runner(tflite_path: Path, threads: int, x: np.ndarray) -> Callable[[], np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path), num_threads=threads)
    interp.allocate_tensors()
    in_index = interp.get_input_details()[0]["index"]
    out_index = interp.get_output_details()[0]["index"]

    def run() -> np.ndarray:
        interp.set_tensor(in_index, x)
        interp.invoke()
        return interp.get_tensor(out_index)

    return run


def _litert_available() -> Optional[str]:
    """None if LiteRT can be imported, else the reason it cannot."""
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError as exc:
        return f"ai-edge-litert not installed ({exc})"
    return None


def _time_interleaved(
    runners: Dict[str, Callable[[], np.ndarray]], runs: int, warmup: int
) -> Dict[str, List[float]]:
    """Alternate the runners call by call so background load hits them alike."""
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    samples: Dict[str, List[float]] = {k: [] for k in runners}
    clock = time.perf_counter
    for _ in range(runs):
        for key, fn in runners.items():
            t0 = clock()
            fn()
            samples[key].append(clock() - t0)
    return samples


def run_model_bench(
    models: Any = None,
    threads: Sequence[int] = (1, 2),
    runs: int = MIN_RUNS,
    cache_dir: Optional[Path] = None,
    warmup: int = 20,
    out: Optional[TextIO] = None,
    *,
    frames: Optional[int] = None,
    as_json: bool = False,
) -> Dict[str, Any]:
    """Median latency of ORT CPU vs LiteRT for each model and thread count.

    ``models``: model names (default: both MediaPipe models), or a segcam ``Config`` (as
    ``segcam bench --model-only`` passes it: its model cache is used). ``frames`` is the
    bench command's run count, raised to at least 200. Models come from the registry
    (fetched/converted into the cache if needed). Prints a table to ``out`` (default
    stdout; nothing when ``as_json``) and returns a dict: ``machine`` (cpu, cores, load
    before/after, versions) and ``results`` (model, threads, ort_ms/litert_ms stats,
    ratio = ORT p50 / LiteRT p50).
    """
    import onnxruntime as ort

    from segcam.config import default_cache_dir, model_cache_dir
    from segcam.models.registry import ensure_model, tflite_file

    if models is not None and hasattr(models, "model"):  # a Config
        cache_dir = cache_dir if cache_dir is not None else model_cache_dir(models)
        models = None
    if frames is not None:
        runs = max(int(frames), MIN_RUNS)
    stream = out if out is not None else sys.stdout
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    names = list(models or DEFAULT_MODELS)
    no_litert = _litert_available()
    versions = {"onnxruntime": ort.__version__}
    if no_litert is None:
        from importlib import metadata

        try:
            versions["ai-edge-litert"] = metadata.version("ai-edge-litert")
        except metadata.PackageNotFoundError:
            versions["ai-edge-litert"] = "?"
    report: Dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "load_before": _load(),
            "python": platform.python_version(),
            **versions,
        },
        "runs": runs,
        "warmup": warmup,
        "litert": no_litert or "ok",
        "results": [],
    }
    for name in names:
        onnx_path = ensure_model(name, cache)
        src = tflite_file(name, cache)
        for n in threads:
            x = _input(_ort_input_hw(onnx_path))
            runners = {"ort": _ort_runner(onnx_path, n, x)}
            if no_litert is None:
                runners["litert"] = _litert_runner(src, n, x)
            samples = _time_interleaved(runners, runs, warmup)
            row: Dict[str, Any] = {"model": name, "threads": n, "ort_ms": _stats(samples["ort"])}
            if "litert" in samples:
                row["litert_ms"] = _stats(samples["litert"])
                row["ratio"] = row["ort_ms"]["p50"] / row["litert_ms"]["p50"]
            report["results"].append(row)
    report["machine"]["load_after"] = _load()
    if not as_json:
        print(format_table(report), file=stream)
    return report


def _ort_input_hw(onnx_path: Path) -> List[int]:
    import onnx

    dims = onnx.load(str(onnx_path)).graph.input[0].type.tensor_type.shape.dim
    return [dims[1].dim_value, dims[2].dim_value]


def format_table(report: Dict[str, Any]) -> str:
    """The bench report as an aligned text table."""
    m = report["machine"]
    lines = [
        f"model-only latency, median of {report['runs']} runs (after {report['warmup']} warm-up),"
        f" interleaved; {m['cpu']} x{m['cores']}, load {m['load_before']} -> {m.get('load_after')}",
        f"onnxruntime {m.get('onnxruntime')}, ai-edge-litert {m.get('ai-edge-litert', '-')}",
        f"{'model':28} {'thr':>3} {'ORT p50':>9} {'ORT p90':>9} {'LiteRT p50':>10} "
        f"{'LiteRT p90':>10} {'ORT/LiteRT':>10}",
    ]
    for r in report["results"]:
        lite = r.get("litert_ms")
        lines.append(
            f"{r['model']:28} {r['threads']:>3} "
            f"{r['ort_ms']['p50']:>7.2f}ms {r['ort_ms']['p90']:>7.2f}ms "
            + (
                f"{lite['p50']:>8.2f}ms {lite['p90']:>8.2f}ms {r['ratio']:>9.2f}x"
                if lite
                else f"{'-':>10} {'-':>10} {'-':>10}"
            )
        )
    if report["litert"] != "ok":
        lines.append(f"LiteRT not measured: {report['litert']}")
    return "\n".join(lines)
