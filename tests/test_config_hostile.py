"""Hostile and careless configs: every one exits 2 with a clear message, never a traceback;
every value the loader accepts runs (the extremes are run through the real pipeline)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, get_args, get_origin, get_type_hints

import pytest

from segcam import config as C
from segcam.config import Config, configs_dir, load_config
from segcam.errors import ConfigError


def _segcam(args: List[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env["SEGCAM_CACHE"] = str(cwd / "cache")
    return subprocess.run(
        [sys.executable, "-m", "segcam", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _laughs() -> str:
    """A "billion laughs": 9**9 strings from nine aliases, in a typed field (input.width)."""
    lines = ["x:", "  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 9):
        lines.append(f"  a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\ninput:\n  width: *a8\n"


FILES = {
    # PyYAML 6.0.4's libyaml refuses deep flow nesting itself, before our composer's limit
    "nesting": (
        "input:\n  uri: " + "[" * 5000 + "]" * 5000 + "\n",
        ("nesting deeper than 32", "exceeded maximum nesting depth"),
    ),
    "block_nesting": (
        "".join("  " * i + f"k{i}:\n" for i in range(200)),
        "nesting deeper than 32",
    ),
    "digits": ("input:\n  width: " + "9" * 5000 + "\n", "longer than 40 characters"),
    "bool_maybe": ("input:\n  loop: !!bool maybe\n", "cannot read 'maybe' as bool"),
    "int_abc": ("publish:\n  every_n: !!int abc\n", "cannot read 'abc' as int"),
    "float_tag": ("refine:\n  threshold: !!float x\n", "cannot read 'x' as float"),
    "timestamp": ("input:\n  uri: !!timestamp 2001-99-99\n", "as timestamp"),
    "laughs": (_laughs(), "aliases expand to more than"),
    "recursive": ("input: &a\n  x: *a\n", "alias refers to the node that contains it"),
    "huge": ("# " + "x" * (2 << 20) + "\n", "larger than"),
    "nan": ("input:\n  reconnect:\n    max_s: .nan\n", "finite"),
    "inf": ("pipeline:\n  stop_timeout_s: .inf\n", "finite"),
    "nul": ('input:\n  uri: "a\\0b"\n', "NUL"),
    "long_string": ("output:\n  display:\n    title: " + "t" * 300 + "\n", "at most 256"),
    "many_items": ("output:\n  uris: [" + ", ".join(["none"] * 100) + "]\n", "0 to 16 items"),
    "unhashable": ("input:\n  ? [a, b]\n  : 1\n", "invalid YAML"),
    "binary": ("input:\n  uri: !!binary '%%%'\n", "expected a string"),
    "key_type": ("input:\n  1: 2\n", "unknown key"),
}

SETS = {
    "int_abc": ("publish.every_n=!!int abc", "cannot read 'abc' as int"),
    "hex": ("input.fps=0x" + "f" * 300, "longer than 40 characters"),
    "model_name": ("model.name=" + "a" * 300, "255 bytes"),
    "sndhwm": ("publish.sndhwm=1e10", "expected an integer"),
    "sndhwm_int": ("publish.sndhwm=10000000000", "from 1 to 100000"),
    "heartbeat": ("publish.heartbeat_s=1e12", "0 or a number from 0.1 to 3600"),
    "stop_timeout": ("pipeline.stop_timeout_s=1e300", "from 0.1 to 600"),
    "width": ("input.width=100000000", "from 64 to 7680"),
    "slots": ("pipeline.slots=1e8", "expected an integer"),
    "slots_int": ("pipeline.slots=100000000", "from 2 to 64"),
    "threads": ("inference.threads=100000", "0 or an integer from 1 to 64"),
    "blur": ("composite.background.blur=1e9", "expected an integer"),
    "blur_int": ("composite.background.blur=1000000000", "from 1 to 255"),
    "max_fps": ("publish.max_fps=1e-300", "0 or a number from 0.01 to 1000"),
    "reconnect_nan": ("input.reconnect.max_s=.nan", "finite"),
    "reconnect_negative": ("input.reconnect.max_s=-1", "from 0.01 to 3600"),
    "bool_maybe": ("input.loop=!!bool maybe", "cannot read 'maybe' as bool"),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_hostile_config_file_exits_2_without_traceback(name: str, tmp_path: Path) -> None:
    text, fragment = FILES[name]
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    proc = _segcam(["run", "--config", str(f), "--frames", "1"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    fragments = fragment if isinstance(fragment, tuple) else (fragment,)
    assert any(f in proc.stderr for f in fragments), proc.stderr[-2000:]
    assert len(proc.stderr) < 2000  # the value is quoted, truncated


@pytest.mark.parametrize("name", sorted(SETS))
def test_hostile_override_exits_2_without_traceback(name: str, tmp_path: Path) -> None:
    override, fragment = SETS[name]
    proc = _segcam(["run", "--set", override, "--frames", "1"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr and "--set" in proc.stderr
    assert len(proc.stderr) < 2000


def test_exponent_floats_are_numbers_as_in_yaml_1_2() -> None:
    cfg = load_config(None, ["refine.min_blob_area=1e-3", "refine.threshold=5E-1"])
    assert cfg.refine.min_blob_area == 0.001 and cfg.refine.threshold == 0.5
    cfg = C.parse_config("publish:\n  max_fps: 2e1\n")
    assert cfg.publish.max_fps == 20.0
    # ints stay ints, quoted text stays text
    assert load_config(None, ["input.uri='1e3'"]).input.uri == "1e3"
    assert load_config(None, ["pipeline.slots=8"]).pipeline.slots == 8


def test_exponent_float_through_the_cli(tmp_path: Path, selfie_onnx: Path) -> None:
    stats = tmp_path / "stats.json"
    proc = _segcam(
        [
            "run",
            "--set",
            f"model.path={selfie_onnx}",
            "--set",
            "refine.min_blob_area=1e-3",
            "--set",
            "input.width=64",
            "--set",
            "input.height=64",
            "--frames",
            "2",
            "--stats-json",
            str(stats),
        ],  # fmt: skip
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(stats.read_text())["config"]["refine"]["min_blob_area"] == 0.001


# --------------------------------------------------------------------------- the schema


def _numeric_fields(cls=Config, prefix=""):
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source_path":
            continue
        tp, path = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, path + ".")
        elif tp in (int, float) or (get_origin(tp) in (list, List) and get_args(tp)[0] is int):
            yield path, f


def test_every_numeric_key_declares_a_range() -> None:
    missing = [p for p, f in _numeric_fields() if "bounds" not in f.metadata]
    assert not missing, f"numeric keys without Bounds metadata: {missing}"
    for path, f in _numeric_fields():
        b = f.metadata["bounds"]
        assert b.lo is not None and b.hi is not None and b.lo <= b.hi, path


def test_default_yaml_states_every_range() -> None:
    text = (configs_dir() / "default.yaml").read_text()
    missing = []
    for path, f in _numeric_fields():
        name = path.rsplit(".", 1)[-1]
        want = f"[{f.metadata['bounds'].text()}]"
        if not re.search(rf"\b{re.escape(name)}\b.*{re.escape(want)}", text):
            missing.append(f"{path} {want}")
    assert not missing, f"configs/default.yaml does not state: {missing}"


def test_range_edges_are_inclusive_and_off_values_accepted() -> None:
    for path, f in _numeric_fields():
        b = f.metadata["bounds"]
        if path == "composite.background.color" or path.startswith("thermal.thresholds"):
            continue  # a list, and keys with a cross-check (warm < hot < critical)
        for value in [b.lo, b.hi] + ([b.off] if b.off is not None else []):
            load_config(None, [f"{path}={value}"])
        below = b.lo - 1 if b.off is None or b.off != b.lo - 1 else b.lo - 2
        with pytest.raises(ConfigError):
            load_config(None, [f"{path}={below}"])


# --------------------------------------------------------------------------- accepted runs

# The largest (or smallest) accepted value of the keys that decide time and memory, in
# groups that each run a few frames of the real pipeline on the demo source.
EXTREMES = {
    "max_pipeline": [
        "pipeline.slots=64", "pipeline.queue_depth=8", "pipeline.cv_threads=64",
        "inference.threads=64", "composite.background.blur=255", "refine.feather=255",
        "pipeline.stop_timeout_s=600", "pipeline.status_interval_s=86400",
        "refine.infer_every=1000", "refine.min_blob_area=0.999",
    ],
    "max_publish": [
        "publish.enabled=true", "publish.bind=['tcp://127.0.0.1:*']",
        "publish.sndhwm=100000", "publish.heartbeat_s=3600", "publish.max_fps=0.01",
        "publish.every_n=10000", "publish.downscale=64", "publish.frame_topic=true",
        "publish.jpeg_quality=100", "publish.telemetry_interval_s=3600",
        "publish.encoding=png", "publish.values=probability",
    ],
    "min_everything": [
        "input.width=64", "input.height=64", "input.fps=0.1", "pipeline.slots=2",
        "composite.background.blur=1", "refine.feather=0", "publish.enabled=true",
        "publish.bind=['tcp://127.0.0.1:*']", "publish.max_fps=1000", "publish.downscale=64",
        "publish.heartbeat_s=0.1", "publish.telemetry_interval_s=0.05",
        "pipeline.stop_timeout_s=0.1", "pipeline.status_interval_s=0.1",
    ],
    "max_size": ["input.width=7680", "input.height=4320", "composite.background.blur=255"],
}  # fmt: skip


@pytest.mark.parametrize("group", sorted(EXTREMES))
def test_extreme_accepted_values_run(group: str, tmp_path: Path, selfie_onnx: Path) -> None:
    args = ["run", "--set", f"model.path={selfie_onnx}", "--frames", "3"]
    if group != "max_size" and group != "min_everything":
        args += ["--set", "input.width=320", "--set", "input.height=180"]
    for item in EXTREMES[group]:
        args += ["--set", item]
    stats = tmp_path / "stats.json"
    proc = _segcam(args + ["--stats-json", str(stats)], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert json.loads(stats.read_text())["frames_completed"] == 3


def test_a_key_given_twice_is_an_error_not_a_silent_replacement(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys: a second `refine:` would drop the first."""
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("refine:\n  threshold: 0.4\ninput:\n  width: 640\nrefine:\n  soft: false\n")
    with pytest.raises(ConfigError, match=r"'refine' appears twice \(first on line 1\)"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="'threshold' appears twice"):
        C.parse_config("refine:\n  threshold: 0.4\n  threshold: 0.6\n", "inner.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "segcam", "config", "show", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "line 5" in proc.stderr and "Traceback" not in proc.stderr
