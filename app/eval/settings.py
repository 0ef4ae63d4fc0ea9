"""The refinement settings ``segcam eval`` compares, derived from the user's config.

- ``raw``: the model's probability enlarged bilinearly, nothing else (what MediaPipe's own
  example does: no smoothing, no feather).
- ``refine``: the config's refinement with bilinear upsampling and a 3 px feather (the
  default before guided upsampling: :data:`BILINEAR_FEATHER`).
- ``guided``: the config's refinement with ``upsample: guided`` (edge-aware,
  :mod:`segcam.guided`) and the config's own feather (0 by default).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

from segcam.config import RefineConfig
from segcam.errors import UsageError

SETTINGS = ("raw", "refine", "guided")
BILINEAR_FEATHER = 3  # the feather the bilinear refinement shipped with


def setting_configs(base: RefineConfig, names: Sequence[str]) -> Dict[str, RefineConfig]:
    """RefineConfig per setting name, in the order given."""
    out: Dict[str, RefineConfig] = {}
    for name in names:
        if name == "raw":
            cfg = RefineConfig(
                soft=True, feather=0, smoothing=0.0, min_blob_area=0.0, upsample="bilinear"
            )
        elif name == "refine":
            cfg = dataclasses.replace(base, upsample="bilinear", feather=BILINEAR_FEATHER)
        elif name == "guided":
            cfg = dataclasses.replace(base, upsample="guided")
        else:
            raise UsageError(
                f"unknown eval setting {name!r}", "choose from: " + ", ".join(SETTINGS)
            )
        out[name] = dataclasses.replace(cfg, infer_every=1)
    return out


def parse_settings(text: str) -> List[str]:
    """``"raw,guided"`` -> ``["raw", "guided"]`` (checked, duplicates dropped)."""
    names: List[str] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part not in SETTINGS:
            raise UsageError(
                f"unknown eval setting {part!r}", "choose from: " + ", ".join(SETTINGS)
            )
        if part not in names:
            names.append(part)
    if not names:
        raise UsageError("no eval setting given", "e.g. --settings raw,refine,guided")
    return names


__all__ = ["SETTINGS", "setting_configs", "parse_settings"]
