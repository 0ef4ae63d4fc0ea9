"""The heat states and how a temperature moves between them (pure functions, no I/O).

Up: the state is the hottest one whose entry threshold the temperature has reached (a
jump from normal straight to critical is allowed). Down: one step at a time, and only once
the temperature is ``hysteresis`` degrees below the current state's entry threshold; a
single reading may fall through several states if it is cool enough for each of them.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from segcam.config import ThermalAction, ThermalConfig, ThermalThresholds

STATES: Tuple[str, ...] = ("normal", "warm", "hot", "critical")


def level(state: str) -> int:
    """Index of ``state`` in :data:`STATES` (0 = normal)."""
    return STATES.index(state)


def entry_threshold(thresholds: ThermalThresholds, state: str) -> float:
    """Temperature (deg C) at which ``state`` is entered; normal has none (-inf)."""
    if state == "normal":
        return float("-inf")
    return float(getattr(thresholds, state))


def next_state(
    current: str, temp_c: Optional[float], thresholds: ThermalThresholds, hysteresis: float
) -> str:
    """The state after a reading of ``temp_c`` (None = no reading: stay where we are)."""
    if temp_c is None:
        return current
    up = "normal"
    for state in STATES[1:]:
        if temp_c >= entry_threshold(thresholds, state):
            up = state
    if level(up) > level(current):
        return up
    state = current
    while state != "normal" and temp_c < entry_threshold(thresholds, state) - hysteresis:
        state = STATES[level(state) - 1]
    return state


def knob_changes(
    action: ThermalAction, base: Dict[str, Any], cfg: ThermalConfig, light_profile: str
) -> Dict[str, Any]:
    """The knob values a state's ``action`` implies, on top of the user's ``base`` knobs.

    ``base`` holds the knobs as they were in ``normal`` (infer_every, fps_cap,
    profile_override). Heat only ever makes things lighter: the larger stride, the
    smaller non-zero fps cap.
    """
    infer_every = max(int(base.get("infer_every", 1)), int(action.infer_every))
    caps = [c for c in (float(base.get("fps_cap", 0.0)), float(action.fps_cap)) if c > 0]
    fps_cap = min(caps) if caps else 0.0
    profile = base.get("profile_override")
    if action.light_profile and light_profile:
        profile = light_profile
    return {
        "infer_every": infer_every,
        "fps_cap": fps_cap,
        "profile_override": profile,
        "paused": bool(action.pause),
        "pause_mode": cfg.pause_mode,
    }


def describe_action(action: ThermalAction, light_profile: str) -> str:
    """One-line summary of what a state does (for the transition log)."""
    parts = [f"infer_every {action.infer_every}"]
    if action.fps_cap > 0:
        parts.append(f"fps cap {action.fps_cap:g}")
    if action.light_profile:
        parts.append(f"light profile {light_profile}" if light_profile else "no light profile set")
    if action.pause:
        parts.append("inference paused")
    if action.nvpmodel >= 0:
        parts.append(f"nvpmodel {action.nvpmodel}")
    return ", ".join(parts)
