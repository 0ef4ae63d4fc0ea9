"""SIGHUP reload: diff old/new config, apply live keys, keep restart-only ones, reject bad files.

The reloader works on a real (not started) Runner built from the real model, the demo
source and the real thermal governor; the end-to-end SIGHUP over the notify socket is
in test_service_notify.py.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from segcam.config import load_config
from segcam.reload import (
    ConfigReloader,
    diff_configs,
    effective_config,
    overrides_from_args,
    plan_reload,
)
from segcam.thermal.governor import ThermalGovernor
from segcam.thermal.sample import ThermalSample

BASE = """\
model:
  path: {model}
input:
  uri: demo
  width: 320
  height: 240
refine:
  threshold: 0.5
  infer_every: 1
thermal:
  sensor: none
  actions:
    warm: {{infer_every: 3}}
"""


def _write(path: Path, model: Path, extra: str = "") -> Path:
    path.write_text(BASE.format(model=model) + extra)
    return path


@pytest.fixture()
def runner_and_governor(tmp_path: Path, selfie_onnx: Path):
    from segcam.pipeline.assemble import open_backend
    from segcam.pipeline.runner import Runner
    from segcam.sources import open_source

    path = _write(tmp_path / "config.yaml", selfie_onnx)
    cfg = load_config(path)
    backend, _ = open_backend(cfg)
    governor = ThermalGovernor(cfg)
    runner = Runner(cfg, open_source(cfg.input), backend, [], [governor])
    governor.start(runner)  # sensor none: no thread; readings are fed with observe()
    yield runner, governor, path
    governor.stop()
    backend.close()


def test_diff_sorts_changes_into_live_and_restart(selfie_onnx: Path, tmp_path: Path):
    old = load_config(_write(tmp_path / "a.yaml", selfie_onnx))
    new = load_config(
        _write(tmp_path / "b.yaml", selfie_onnx),
        [
            "refine.threshold=0.7",
            "composite.background.mode=color",
            "publish.every_n=2",
            "input.uri=0",
            "inference.backend=onnxruntime",
            "thermal.thresholds.warm=60",
            "logging.level=debug",
        ],
    )
    changes = diff_configs(old, new)
    assert changes["refine.threshold"] == (0.5, 0.7)
    assert changes["input.uri"] == ("demo", "0")
    plan = plan_reload(changes, new, extensions_reconfigurable=True)
    assert plan.knobs["threshold"] == 0.7
    assert plan.knobs["publish_every"] == 2
    assert ("mode", "color") in plan.knobs["background"]
    assert plan.log_level == "debug"
    assert plan.extension_keys == ["thermal.thresholds.warm"]
    assert sorted(plan.restart_keys) == ["inference.backend", "input.uri"]
    # Without an extension that takes reconfigure(), thermal changes need a restart.
    plan = plan_reload(changes, new, extensions_reconfigurable=False)
    assert "thermal.thresholds.warm" in plan.restart_keys

    running = effective_config(old, new, plan.restart_keys)
    assert running.input.uri == "demo" and running.inference.backend == "auto"
    assert running.refine.threshold == 0.7


def test_reload_applies_live_changes_to_the_runner(runner_and_governor, selfie_onnx: Path):
    runner, governor, path = runner_and_governor
    governor.observe(ThermalSample(source="t", temps={"cpu": 75.0}, mono_s=time.monotonic()))
    assert governor.state == "warm" and runner.knobs.snapshot().infer_every == 3

    _write(
        path,
        selfie_onnx,
        "composite:\n  background:\n    mode: color\n    color: [10, 20, 30]\n",
    )
    text = path.read_text().replace("threshold: 0.5", "threshold: 0.7")
    text = text.replace("infer_every: 1", "infer_every: 2").replace("uri: demo", "uri: '0'")
    text = text.replace(
        "  sensor: none\n",
        "  sensor: none\n  thresholds: {warm: 60.0, hot: 85.0, critical: 95.0}\n",
    )
    path.write_text(text)

    result = ConfigReloader(str(path))(runner)
    assert result.ok, result.message
    assert result.restart == ["input.uri"]
    assert "refine.threshold" in result.applied and "thermal.thresholds.warm" in result.applied

    knobs = runner.knobs.snapshot()
    assert knobs.threshold == 0.7
    assert dict(knobs.background)["mode"] == "color"
    assert dict(knobs.background)["color"] == (10, 20, 30)
    assert knobs.infer_every == 3  # still warm: the state's stride on top of the new base
    assert runner.config.refine.threshold == 0.7
    assert runner.config.input.uri == "demo"  # restart-only: still what runs
    assert governor.tcfg.thresholds.warm == 60.0

    # 65 C was warm before the reload and still is (>= 60); 50 C is normal: the governor
    # goes back to the reloaded stride (2), not the one from start (1).
    governor.observe(ThermalSample(source="t", temps={"cpu": 65.0}, mono_s=time.monotonic()))
    assert governor.state == "warm"
    governor.observe(ThermalSample(source="t", temps={"cpu": 50.0}, mono_s=time.monotonic()))
    assert governor.state == "normal"
    assert runner.knobs.snapshot().infer_every == 2


def test_a_broken_config_is_rejected_and_nothing_changes(runner_and_governor):
    runner, _, path = runner_and_governor
    before_cfg = runner.config
    before = runner.knobs.snapshot()
    path.write_text(path.read_text().replace("threshold: 0.5", "threshold: 1.5"))
    reloader = ConfigReloader(str(path))
    result = reloader(runner)
    assert not result.ok
    assert "refine.threshold" in result.message and "keeping the running config" in result.message
    assert runner.config is before_cfg
    assert runner.knobs.snapshot() == before
    path.write_text("refine: [unclosed\n")
    assert not reloader(runner).ok
    assert reloader.status()["reload_failures"] == 2


def test_a_background_that_cannot_be_loaded_is_rejected(runner_and_governor, tmp_path):
    """A reload naming a background image that does not exist (or a video that does not
    decode) must be refused like any other bad config: the compositor would refuse it on
    the frame thread anyway, so reporting success (READY=1, "applied") and recording it
    as the running config would both be false."""
    runner, _, path = runner_and_governor
    before_cfg = runner.config
    before = runner.knobs.snapshot()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    for background in (
        f"    mode: image\n    image: {tmp_path / 'missing.png'}\n",
        f"    mode: video\n    video: {broken}\n",
    ):
        text = path.read_text().split("composite:")[0].replace("threshold: 0.5", "threshold: 0.7")
        path.write_text(text + "composite:\n  background:\n" + background)
        result = ConfigReloader(str(path))(runner)
        assert not result.ok, result.message
        assert "keeping the running config" in result.message
        assert "composite.background" in result.message
        assert runner.config is before_cfg
        assert runner.knobs.snapshot() == before  # not even the threshold changed


def test_command_line_overrides_keep_winning(runner_and_governor):
    runner, _, path = runner_and_governor
    args = argparse.Namespace(
        overrides=["refine.feather=5"], input="http://cam/stream", output=["none"]
    )
    overrides = overrides_from_args(args)
    assert overrides == [
        "refine.feather=5",
        'input.uri="http://cam/stream"',
        "inputs=[]",  # one --input replaces an inputs: list of the file
        'output.uris=["none"]',
    ]
    runner.config.input.uri = "http://cam/stream"  # what `segcam run --input` did at start
    result = ConfigReloader(str(path), overrides)(runner)
    assert result.ok
    assert "input.uri" not in result.restart  # --input still wins: no spurious restart
    assert runner.knobs.snapshot().feather == 5


def test_reload_without_a_config_file_says_so(runner_and_governor):
    runner, _, _ = runner_and_governor
    result = ConfigReloader(None)(runner)
    assert not result.ok and "without --config" in result.message
