"""Config loading and validation: defaults, precise errors, overrides, the CLI's exit code."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import yaml

from segcam.config import Config, config_to_dict, configs_dir, load_config, parse_config
from segcam.errors import ConfigError


def test_default_yaml_matches_dataclass_defaults() -> None:
    cfg = load_config(configs_dir() / "default.yaml")
    assert config_to_dict(cfg) == config_to_dict(Config())


def test_every_default_key_is_commented() -> None:
    lines = (configs_dir() / "default.yaml").read_text().splitlines()
    data = yaml.safe_load("\n".join(lines))
    uncommented = []
    for line in lines:
        m = re.match(r"^(\s*)([a-z_]+):(.*)$", line)
        if not m:
            continue
        rest = m.group(3).strip()
        is_section = rest == "" or rest.startswith("{")
        if not is_section and "#" not in rest:
            uncommented.append(m.group(2))
    assert data and not uncommented, f"keys without a comment: {uncommented}"


def test_unknown_key_names_line_and_suggests(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("input:\n  uri: demo\nrefine:\n  treshold: 0.3\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "refine.treshold" in err.value.message and "line 4" in err.value.message
    assert "threshold" in err.value.hint


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("refine:\n  threshold: high\n", "expected a number"),
        ("refine:\n  threshold: 1.5\n", "a number from 0 to 1"),
        ("pipeline:\n  slots: true\n", "expected an integer"),
        ("composite:\n  background:\n    mode: blurry\n", "did you mean 'blur'"),
        ("composite:\n  background:\n    color: [0, 300, 0]\n", "from 0 to 255"),
        ("thermal:\n  thresholds: {warm: 90, hot: 80}\n", "warm < hot < critical"),
        ("input: [1, 2]\n", "mapping"),
        ("- a\n- b\n", "top level"),
        ("input:\n  uri: [demo\n", "invalid YAML at line"),
    ],
)
def test_bad_values_are_named(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yaml")
    assert fragment in str(err.value)


def test_overrides_are_safe_loaded_and_validated() -> None:
    cfg = load_config(None, ["refine.threshold=0.7", "output.uris=[none, 'file://a.mp4']"])
    assert cfg.refine.threshold == 0.7 and cfg.output.uris == ["none", "file://a.mp4"]
    cfg = load_config(None, ["input.uri=0"])
    assert cfg.input.uri == "0"  # a camera index stays a string
    with pytest.raises(ConfigError, match="--set refine.feather"):
        load_config(None, ["refine.feather=-2"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(None, ["refine.threshold"])
    # the safe loader never builds Python objects: an unknown tag is a config error
    with pytest.raises(ConfigError, match="--set input.uri: invalid value.*python/object"):
        load_config(None, ["input.uri=!!python/object/apply:os.system ['true']"])


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/segcam.yaml")


def test_config_is_plain_dataclasses() -> None:
    assert dataclasses.is_dataclass(Config())
    assert load_config().input.uri == "demo"


def test_bad_config_exits_2_without_traceback(tmp_path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("pipeline:\n  queue_depth: lots\n")
    proc = subprocess.run(
        [sys.executable, "-m", "segcam", "doctor", "--config", str(f)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "pipeline.queue_depth (line 2" in proc.stderr
    assert "Traceback" not in proc.stderr
