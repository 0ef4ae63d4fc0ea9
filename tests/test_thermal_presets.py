"""Device presets: loadable as config files, ordered, below the documented limits, cited."""

from __future__ import annotations

from pathlib import Path

import pytest

from segcam.config import configs_dir, load_config
from segcam.inference.profile import load_profile

PRESETS = sorted((configs_dir() / "devices").glob("*.yaml"))
# Where the hardware steps in (docs/thermal.md): Orin software throttling at about 99 C,
# Xavier's operating junction limit of 90 C.
LIMIT_C = {"orin": 99.0, "xavier": 90.0}


def test_the_five_presets_exist() -> None:
    names = {p.stem for p in PRESETS}
    assert {"orin-nano", "orin-nx", "orin-agx", "xavier-nx", "xavier-agx"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_and_backs_off_before_the_hardware(path: Path) -> None:
    cfg = load_config(path)
    t = cfg.thermal.thresholds
    assert t.warm < t.hot < t.critical
    family = path.stem.split("-")[0]
    assert t.critical <= LIMIT_C[family] - 3.0
    assert cfg.thermal.allow_nvpmodel is False  # needs root: opt-in only
    assert cfg.thermal.actions.critical.pause
    if cfg.model.light_profile:
        assert load_profile(cfg.model.light_profile).name == cfg.model.light_profile


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_cites_its_sources(path: Path) -> None:
    text = path.read_text()
    assert "https://docs.nvidia.com/jetson/" in text
    assert "segcam doctor" in text  # how to check the device's own trip points
