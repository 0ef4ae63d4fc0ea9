"""``segcam bench`` pieces in process: the sequential baseline, the table, the plot."""

from __future__ import annotations

import sys

import pytest
from pipeline_helpers import pipeline_config

from segcam.commands.bench import format_table, parse_resolution, plot, run_bench
from segcam.errors import UsageError
from segcam.pipeline.assemble import open_backend
from segcam.pipeline.sequential import run_sequential
from segcam.pipeline.stages import build_stages
from segcam.sources import open_source


def test_parse_resolution() -> None:
    assert parse_resolution("1920x1080") == (1920, 1080)
    assert parse_resolution(" 640 X 360 ") == (640, 360)
    for bad in ("", "1920", "axb", "8x8"):
        with pytest.raises(UsageError):
            parse_resolution(bad)


def test_sequential_loop_runs_the_same_stages(selfie_onnx) -> None:
    cfg = pipeline_config(selfie_onnx, "refine.infer_every=2")
    backend, _ = open_backend(cfg)
    try:
        source = open_source(cfg.input)
        source.open()
        snap = run_sequential(cfg, source, build_stages(cfg, backend, backend.profile), 6, 2)
        source.close()
    finally:
        backend.close()
    assert snap["frames_out"] == 6 and snap["inferences"] == 3
    assert snap["fps"] > 0
    for name in (
        "capture",
        "preprocess",
        "infer",
        "composite",
        "composite/compose",
        "composite/mask",  # the composite's own sub-steps (refine and compose parts)
        "composite/background",
        "composite/blend",
    ):
        assert snap["stages"][name]["p50_ms"] > 0


@pytest.fixture(scope="module")
def bench_result(selfie_onnx):
    cfg = pipeline_config(selfie_onnx, "pipeline.status_interval_s=0")
    return run_bench(cfg, frames=5, warmup=2)


def test_bench_result_and_table(bench_result) -> None:
    r = bench_result
    assert r["sequential_fps"] > 0 and r["pipelined_fps"] > 0
    assert r["slowest_stage"] in ("capture", "preprocess", "infer", "composite")
    assert r["drops"] and all(v == 0 for v in r["drops"].values())  # lossless hand-off
    table = format_table(r)
    assert "throughput" in table and "speedup" in table and "glass-to-glass" in table


def test_plot_without_matplotlib_is_a_clear_message(bench_result, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(UsageError, match="needs matplotlib") as info:
        plot(bench_result, str(tmp_path / "p.png"))
    assert "segcam[plot]" in info.value.hint


def test_plot_draws_a_png(bench_result, tmp_path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    import cv2

    path = tmp_path / "bench.png"
    plot(bench_result, str(path))
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
