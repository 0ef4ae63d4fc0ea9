"""Config reload on SIGHUP: re-read, validate, diff, apply what can change live.

``systemctl reload segcam`` sends SIGHUP. ``segcam run`` calls a
:class:`ConfigReloader` for it on a thread of its own (never inside the signal handler):

1. tell systemd ``RELOADING=1`` (with ``MONOTONIC_USEC``);
2. load the config file again (plus the ``--set`` overrides given at start, which still
   win) and validate it; an invalid file is logged with its error and the service keeps
   running on the old config;
3. diff old and new key by key; apply the live keys (background, refine threshold /
   soft / feather / smoothing / min_blob_area / infer_every, publish rate, thermal
   thresholds and actions, log level) through ``runner.knobs`` and the extensions'
   ``reconfigure(cfg)``; log every other change as needing a restart and keep its old
   value in the effective config;
4. tell systemd ``READY=1`` with a status line.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from segcam.config import Config, config_to_dict, load_config, stream_configs
from segcam.errors import ConfigError
from segcam.pipeline.knobs import BACKGROUND_PREFIX, CONFIG_KNOBS, background_knob

log = logging.getLogger("segcam.reload")

# Keys applied through the knobs: segcam.pipeline.knobs.CONFIG_KNOBS (one mapping).
LOG_LEVEL_KEY = "logging.level"
# Applied by extensions offering reconfigure(cfg) (the thermal governor); without one
# they need a restart.
EXTENSION_PREFIXES: Tuple[str, ...] = (
    "thermal.thresholds.",
    "thermal.hysteresis",
    "thermal.actions.",
    "thermal.pause_mode",
    "thermal.interval_s",
    "thermal.sensors",
)


def flatten(data: Any, prefix: str = "") -> Dict[str, Any]:
    """Nested dict of a config -> ``{"a.b.c": leaf}`` (lists are leaves)."""
    out: Dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.update(flatten(value, path))
    else:
        out[prefix] = data
    return out


def diff_configs(old: Config, new: Config) -> Dict[str, Tuple[Any, Any]]:
    """Changed keys: ``{"refine.threshold": (0.5, 0.7), ...}`` in config order."""
    a = flatten(config_to_dict(old))
    b = flatten(config_to_dict(new))
    return {k: (a.get(k), b.get(k)) for k in b if a.get(k) != b.get(k)}


@dataclass
class ReloadPlan:
    """How each changed key will be handled."""

    knobs: Dict[str, Any] = field(default_factory=dict)  # knob name -> new value
    knob_keys: List[str] = field(default_factory=list)  # the config keys behind them
    background: bool = False
    log_level: Optional[str] = None
    extension_keys: List[str] = field(default_factory=list)
    restart_keys: List[str] = field(default_factory=list)

    @property
    def live_keys(self) -> int:
        """How many changes are applied without a restart (roughly, for the status)."""
        return (
            len(self.knobs)
            + int(self.background)
            + int(self.log_level is not None)
            + len(self.extension_keys)
        )


def plan_reload(
    changes: Dict[str, Tuple[Any, Any]], new: Config, extensions_reconfigurable: bool
) -> ReloadPlan:
    """Sort the changed keys into live changes and restart-only ones."""
    plan = ReloadPlan()
    for key, (before, value) in changes.items():
        if key == INPUTS_KEY and live_inputs_change(before, value):
            # Only the entries' refine/background changed: each stream's knobs follow.
            plan.knob_keys.extend(k for k in CONFIG_KNOBS if k.startswith("refine."))
            plan.knob_keys.append(BACKGROUND_PREFIX + "mode")
            plan.background = True
        elif key in CONFIG_KNOBS:
            plan.knobs[CONFIG_KNOBS[key]] = value
            plan.knob_keys.append(key)
        elif key.startswith(BACKGROUND_PREFIX):
            plan.background = True
            plan.knob_keys.append(key)
        elif key == LOG_LEVEL_KEY:
            plan.log_level = str(value)
        elif key.startswith(EXTENSION_PREFIXES) and extensions_reconfigurable:
            plan.extension_keys.append(key)
        else:
            plan.restart_keys.append(key)
    if plan.background:
        plan.knobs["background"] = background_knob(new)
    return plan


INPUTS_KEY = "inputs"
_LIVE_INPUT_KEYS = ("refine", "background")


def live_inputs_change(before: Any, after: Any) -> bool:
    """Whether two ``inputs:`` lists differ only in their entries' refine/background."""
    if not isinstance(before, list) or not isinstance(after, list) or len(before) != len(after):
        return False
    for a, b in zip(before, after):
        if not isinstance(a, dict) or not isinstance(b, dict):
            return False
        rest_a = {k: v for k, v in a.items() if k not in _LIVE_INPUT_KEYS}
        rest_b = {k: v for k, v in b.items() if k not in _LIVE_INPUT_KEYS}
        if rest_a != rest_b:
            return False
    return True


def effective_config(old: Config, new: Config, restart_keys: Sequence[str]) -> Config:
    """``new`` with every restart-only key put back to its ``old`` value: what now runs."""
    out = copy.deepcopy(new)
    for key in restart_keys:
        parts = key.split(".")
        src: Any = old
        dst: Any = out
        for part in parts[:-1]:
            src = getattr(src, part)
            dst = getattr(dst, part)
        setattr(dst, parts[-1], copy.deepcopy(getattr(src, parts[-1])))
    return out


@dataclass
class ReloadResult:
    """Outcome of one reload, for logs, status and tests."""

    ok: bool
    message: str
    applied: List[str] = field(default_factory=list)
    restart: List[str] = field(default_factory=list)


class ConfigReloader:
    """What SIGHUP does in ``segcam run``: ``reloader(runner)`` reloads the config.

    ``path``/``overrides`` are what ``segcam run`` was started with (``--set`` and
    ``--input``/``--output`` as overrides, so that they keep winning over the file). The
    systemd notifier, if any, is found among the runner's extensions. Reloads are
    serialised: a second SIGHUP during a reload waits for the first.
    """

    def __init__(
        self,
        path: Optional[str],
        overrides: Sequence[str] = (),
        loader: Callable[..., Config] = load_config,
    ) -> None:
        self.path = path
        self.overrides = list(overrides)
        self._loader = loader
        self._lock = threading.Lock()
        self.reloads = 0
        self.failures = 0
        self.last: Optional[ReloadResult] = None

    def __call__(self, runner: Any) -> ReloadResult:
        """Reload now for ``runner``; always ends with READY=1 to systemd."""
        with self._lock:
            notifier = _notifier(runner)
            if notifier is not None:
                notifier.reloading()
            try:
                result = self._reload(runner)
            except Exception as exc:  # noqa: BLE001 - a failed reload must not end the service
                log.exception("reload failed unexpectedly; keeping the running config")
                result = ReloadResult(False, f"reload failed: {exc}")
            self.last = result
            if result.ok:
                self.reloads += 1
            else:
                self.failures += 1
            if notifier is not None:
                notifier.reloaded("" if result.ok else result.message)
            return result

    def status(self) -> Dict[str, Any]:
        """Reload counters and the last outcome."""
        return {
            "reloads": self.reloads,
            "reload_failures": self.failures,
            "last_reload": self.last.message if self.last else "",
        }

    def _reload(self, runner: Any) -> ReloadResult:
        if not self.path:
            msg = "reload: segcam was started without --config; nothing to re-read"
            log.warning(msg)
            return ReloadResult(False, msg)
        log.info("reload: re-reading %s", self.path)
        try:
            new = self._loader(self.path, self.overrides)
        except ConfigError as exc:
            msg = f"reload rejected, keeping the running config: {exc.message}"
            log.error("%s%s", msg, f" ({exc.hint})" if exc.hint else "")
            return ReloadResult(False, msg)
        old: Config = getattr(runner, "config", None) or new
        changes = diff_configs(old, new)
        if not changes:
            msg = "reload: no changes"
            log.info(msg)
            return ReloadResult(True, msg)
        extensions = [e for e in _extensions(runner) if callable(getattr(e, "reconfigure", None))]
        plan = plan_reload(changes, new, bool(_thermal_extensions(extensions)))
        if plan.background:
            # The compositor would refuse a missing image or an undecodable video on the
            # frame thread: refuse it here, where the reload can still say so.
            from segcam.compose import check_background

            try:
                for stream in stream_configs(new):  # every stream's own background
                    check_background(stream.cfg.composite.background)
            except ConfigError as exc:
                msg = f"reload rejected, keeping the running config: {exc.message}"
                log.error("%s%s", msg, f" ({exc.hint})" if exc.hint else "")
                return ReloadResult(False, msg)
        applied: List[str] = []
        effective = effective_config(old, new, plan.restart_keys)
        if plan.knob_keys:
            # Each stream takes its own values (its inputs entry may override refine or
            # background), so the host derives them from the effective config.
            runner.apply_config_knobs(effective, plan.knob_keys)
        if plan.log_level:
            from segcam.log import setup_logging

            setup_logging(plan.log_level)
        runner.set_config(effective)
        for ext in extensions:
            try:
                ext.reconfigure(effective)
            except Exception as exc:  # noqa: BLE001 - one extension must not stop the reload
                log.error("reload: %s could not apply the new config: %s", ext.name, exc)
        for key, (before, after) in changes.items():
            if key in plan.restart_keys:
                log.warning(
                    "reload: %s changed (%r -> %r): needs a restart "
                    "(systemctl restart segcam); still running with %r",
                    key,
                    before,
                    after,
                    before,
                )
            else:
                applied.append(key)
                log.info("reload: %s %r -> %r applied", key, before, after)
        msg = f"reloaded: {len(applied)} change(s) applied"
        if plan.restart_keys:
            msg += f", {len(plan.restart_keys)} need a restart"
        log.info("%s", msg)
        return ReloadResult(True, msg, applied, list(plan.restart_keys))


def overrides_from_args(args: Any) -> List[str]:
    """The command line's config changes as ``--set`` overrides, re-applied on reload.

    ``--set`` items as given, plus ``--input``/``--output`` as ``input.uri``/
    ``output.uris`` (JSON is valid YAML, so any URI survives quoting).
    """
    out = list(getattr(args, "overrides", None) or [])
    inputs = getattr(args, "input", None)
    if isinstance(inputs, str):
        inputs = [inputs]
    if inputs and len(inputs) == 1:
        out.append("input.uri=" + json.dumps(str(inputs[0])))
        out.append("inputs=[]")
    elif inputs:
        out.append("inputs=" + json.dumps([{"uri": str(u)} for u in inputs]))
    if getattr(args, "output", None):
        out.append("output.uris=" + json.dumps([str(o) for o in args.output]))
    return out


def build_hup_handler(cfg: Config, args: Any = None) -> ConfigReloader:
    """The SIGHUP handler of ``segcam run`` for a config loaded from ``cfg.source_path``."""
    overrides = overrides_from_args(args) if args is not None else []
    return ConfigReloader(cfg.source_path or None, overrides)


def _notifier(runner: Any) -> Any:
    for ext in _extensions(runner):
        if callable(getattr(ext, "reloading", None)) and callable(getattr(ext, "reloaded", None)):
            return ext
    return None


def _extensions(runner: Any) -> List[Any]:
    return list(runner.extensions)


def _thermal_extensions(extensions: Sequence[Any]) -> List[Any]:
    return [e for e in extensions if "therm" in str(getattr(e, "name", "")).lower()]
