"""The thermal governor: a runner extension that samples sensors and steers the knobs.

Its sampler thread reads the sensor every ``thermal.interval_s`` through a reader thread
with a timeout, so a hung sensor read delays nothing but the governor's own next decision.
The pipeline only ever sees knob updates (a lock swap). Each transition is logged with the
reading that caused it and kept for :meth:`ThermalGovernor.status`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Set

from segcam.config import Config, ThermalAction
from segcam.errors import ThermalError
from segcam.thermal.light import LightModel
from segcam.thermal.nvpmodel import request_nvpmodel
from segcam.thermal.policy import STATES, describe_action, knob_changes, level, next_state
from segcam.thermal.sample import ThermalSample, describe
from segcam.thermal.sensors import is_jetson, open_sensor
from segcam.thermal.sysfs import SysfsSensor

log = logging.getLogger("segcam.thermal")

_BASE_KEYS = ("infer_every", "fps_cap", "profile_override")
JTOP_FAILURES = 3  # consecutive failed jtop reads before switching to sysfs


class SensorTimeout(ThermalError):
    """A sensor read did not finish within ``thermal.read_timeout_s``."""


class TimedReader:
    """Runs ``sensor.read()`` on a daemon thread; :meth:`read` waits at most ``timeout``.

    While a read hangs, later calls fail at once with :class:`SensorTimeout` instead of
    piling up; once the stuck read returns, reading resumes.
    """

    def __init__(self, sensor: Any) -> None:
        self.sensor = sensor
        self._cond = threading.Condition()
        self._pending = False
        self._busy = False
        self._result: Any = None
        self._error: Optional[BaseException] = None
        self._seq = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="thermal-read", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._pending = False
            result: Any = None
            error: Optional[BaseException] = None
            try:
                result = self.sensor.read()
            except Exception as exc:  # noqa: BLE001 - handed to the caller of read()
                error = exc
            with self._cond:
                self._result, self._error = result, error
                self._busy = False
                self._seq += 1
                self._cond.notify_all()

    def read(self, timeout: float) -> ThermalSample:
        """The sensor's next sample; SensorTimeout if it takes longer than ``timeout``."""
        with self._cond:
            if self._busy:
                raise SensorTimeout(
                    f"{self.sensor.name}: the previous read is still hung; skipping this sample"
                )
            self._busy = True
            self._pending = True
            seq = self._seq
            self._cond.notify_all()
            # close() wakes the wait: stopping the governor never waits out a hung read.
            if not self._cond.wait_for(lambda: self._seq != seq or self._closed, timeout):
                raise SensorTimeout(
                    f"{self.sensor.name}: a read took longer than {timeout:g}s; "
                    "the governor keeps its state until a reading arrives"
                )
            if self._seq == seq:
                raise SensorTimeout(f"{self.sensor.name}: the reader was closed")
            if self._error is not None:
                raise self._error
            return self._result

    def close(self) -> None:
        """Stop the reader thread (a hung read is left behind: the thread is a daemon)."""
        with self._cond:
            self._closed = True
            hung = self._busy
            self._cond.notify_all()
        if not hung:  # joining a thread stuck in sensor.read() would only waste the budget
            self._thread.join(timeout=0.5)


class ThermalGovernor:
    """Extension that keeps the device out of thermal trouble by lightening the pipeline.

    ``sensor`` may be given (tests, doctor); otherwise it is chosen from ``cfg.thermal``
    at :meth:`start`. ``nvpmodel_runner`` replaces ``subprocess.run`` for the nvpmodel
    action (tests).
    """

    name = "thermal"

    def __init__(
        self,
        cfg: Config,
        sensor: Any = None,
        jtop_factory: Optional[Callable[..., Any]] = None,
        nvpmodel_runner: Optional[Callable[..., Any]] = None,
    ) -> None:
        self.cfg = cfg
        self.tcfg = cfg.thermal
        self.sensor = sensor
        self.sensor_reason = "given" if sensor is not None else ""
        self._jtop_factory = jtop_factory
        self._nvpmodel_runner = nvpmodel_runner
        self._lock = threading.Lock()  # guards what status() reads
        # Serialises knob changes: sampler (transitions), reload thread, light-model builder.
        self._act_lock = threading.RLock()
        self._failures = 0  # consecutive failed reads (jtop falls back to sysfs after a few)
        self.state = "normal"
        self._since = time.monotonic()
        self.latest: Optional[ThermalSample] = None
        self.reading: Optional[Dict[str, Any]] = None  # the reading the policy acted on
        self.transitions: Deque[Dict[str, Any]] = collections.deque(maxlen=20)
        self.transition_count = 0
        self.error: Optional[str] = None
        self.errors = 0
        self.timeouts = 0
        self.nvpmodel_result: Optional[str] = None
        self._fallback_noted = False
        self._skips_logged: Set[str] = set()
        self._runner: Any = None
        self._knobs: Any = None
        self._base: Dict[str, Any] = {}
        self._reader: Optional[TimedReader] = None
        self._light: Optional[LightModel] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ----------------------------------------------------------------- lifecycle

    def start(self, runner: Any) -> None:
        """Open the sensor (if not given), remember the user's knobs, start sampling."""
        self._runner = runner
        self._knobs = getattr(runner, "knobs", None)
        self._remember_base()
        wants_light = any(getattr(self.tcfg.actions, s).light_profile for s in STATES)
        if self.cfg.model.light_profile and wants_light and self._knobs is not None:
            self._light = LightModel(self.cfg, runner, self._light_ready)
            if self._light.error:
                log.warning("light profile disabled: %s", self._light.error)
        if not self.tcfg.enabled:
            self.sensor_reason = "thermal.enabled is false"
            log.info("governor disabled (thermal.enabled: false)")
            return
        self._apply()  # the normal state's own action, if it has one
        if self.sensor is None:
            self.sensor, self.sensor_reason = open_sensor(self.tcfg, self._jtop_factory)
        if self.sensor is None:
            # One clear message; the governor then stays in normal for the whole run. On a
            # desktop, a VM or CI that is expected; on a Jetson it is a fault worth a warning.
            jetson = is_jetson(self.tcfg.sysfs_root)
            (log.warning if jetson else log.info)(
                "no temperature sensors (%s); the governor stays 'normal'%s",
                self.sensor_reason,
                "" if jetson else " (not a Jetson: expected here)",
            )
            return
        log.info("sampling every %gs from %s", self.tcfg.interval_s, self.sensor_reason)
        self._reader = TimedReader(self.sensor)
        self._stop.clear()
        # First reading now (bounded by read_timeout_s) so a device that is already hot
        # is lightened from the first frames on, not one interval later.
        if not self._safe_tick():
            return
        self._thread = threading.Thread(target=self._loop, name="thermal", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and close the sensor (bounded); the knobs stay as they are."""
        self._stop.set()
        # Close the reader first: it wakes a tick waiting on a hung read, so the sampler
        # ends at once instead of after read_timeout_s (longer than the whole shutdown).
        # (A closed reader fails every read at once, so a tick that races with this ends too.)
        if self._reader is not None:
            self._reader.close()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        self._reader = None
        if self.sensor is not None:
            try:
                self.sensor.close()
            except Exception as exc:  # noqa: BLE001 - closing must not fail the shutdown
                log.debug("closing %s: %s", getattr(self.sensor, "name", "?"), exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.tcfg.interval_s):
            if not self._safe_tick():
                return

    def _safe_tick(self) -> bool:
        """One tick; a governor bug goes to the runner (False), sensor trouble does not."""
        try:
            self.tick()
        except Exception as exc:  # noqa: BLE001 - reported to the runner, never swallowed
            log.error("governor failed: %s", exc)
            report = getattr(self._runner, "report_error", None)
            if report is not None:
                report(exc, "thermal")
            return False
        return True

    # ----------------------------------------------------------------- one step

    def tick(self) -> Optional[str]:
        """Take one reading and act on it; returns the state (None without a sensor)."""
        if self.sensor is None:
            return None
        try:
            if self._reader is not None:
                sample = self._reader.read(self.tcfg.read_timeout_s)
            else:
                sample = self.sensor.read()
        except SensorTimeout as exc:
            if self._stop.is_set():
                return self.state  # woken by stop(): not a sensor problem
            self.timeouts += 1
            self._read_failed(str(exc))
            return self.state
        except ThermalError as exc:
            self.errors += 1
            self._read_failed(str(exc))
            return self.state
        except (OSError, ValueError) as exc:
            self.errors += 1
            self._read_failed(f"{getattr(self.sensor, 'name', 'sensor')}: {exc}")
            return self.state
        self._failures = 0
        if self.error is not None:
            log.info("sensor readings are back (%s)", self.sensor_reason)
            self.error = None
        return self.observe(sample)

    def _read_failed(self, message: str) -> None:
        self._failures += 1
        self._note_error(message)
        if getattr(self.sensor, "name", "") == "jtop" and self._failures >= JTOP_FAILURES:
            self._fall_back_to_sysfs(message)

    def _fall_back_to_sysfs(self, why: str) -> None:
        """jtop keeps failing (service stopped, hung): read the kernel's files instead."""
        sysfs = SysfsSensor(self.tcfg.sysfs_root)
        if not sysfs.available:
            return  # nothing better: keep trying jtop, the state holds meanwhile
        log.warning("jtop failed %d times in a row (%s); switching to sysfs", self._failures, why)
        old, old_reader = self.sensor, self._reader
        self.sensor = sysfs
        self.sensor_reason = f"sysfs ({len(sysfs.files)} sensors; jtop failed: {why})"
        self._reader = TimedReader(sysfs) if old_reader is not None else None
        self._failures = 0
        if old_reader is not None:
            old_reader.close()
        try:
            old.close()
        except Exception as exc:  # noqa: BLE001 - a broken jtop client may fail to close
            log.debug("closing jtop: %s", exc)

    def observe(self, sample: ThermalSample) -> str:
        """Apply the policy to one sample (the sampler calls this; tests may too)."""
        with self._lock:
            self.latest = sample
        chosen = sample.hottest(self.tcfg.sensors)
        if chosen is None and sample.temps:
            # None of the configured names exist here (x86 zones are called acpitz,
            # x86_pkg_temp...): watch everything rather than nothing, and say so once.
            if not self._fallback_noted:
                log.warning(
                    "no sensor matches thermal.sensors %s; watching all of: %s",
                    self.tcfg.sensors,
                    ", ".join(sorted(sample.temps)),
                )
                self._fallback_noted = True
            pool = {n: t for n, t in sample.temps.items() if "pmic" not in n.lower()}
            if pool:
                name = max(pool, key=lambda n: pool[n])
                chosen = (name, pool[name])
        if sample.skipped:
            for name, why in sample.skipped.items():
                self._note_skip(name, why)
        if chosen is None:
            return self.state
        name, temp = chosen
        new = next_state(self.state, temp, self.tcfg.thresholds, self.tcfg.hysteresis)
        with self._lock:
            self.reading = {"sensor": name, "temp_c": round(temp, 2), "source": sample.source}
        if new != self.state:
            self._transition(new, name, temp, sample)
        return self.state

    # ----------------------------------------------------------------- reload

    def reconfigure(self, cfg: Config) -> None:
        """A SIGHUP reload (segcam.reload): new thresholds, hysteresis, actions, interval and
        zone names apply from the next reading; the user's stride becomes the reloaded
        ``refine.infer_every`` and the current state's action is applied on top of it.
        """
        with self._act_lock:
            with self._lock:
                self.cfg = cfg
                self.tcfg = cfg.thermal
            if self._knobs is None:
                return
            if self.state == "normal":
                self._remember_base()
                return
            self._base["infer_every"] = cfg.refine.infer_every
            self._apply()

    # ----------------------------------------------------------------- actions

    def _remember_base(self) -> None:
        if self._knobs is None:
            return
        snap = self._knobs.snapshot()
        self._base = {k: getattr(snap, k) for k in _BASE_KEYS}

    def _transition(self, new: str, sensor: str, temp: float, sample: ThermalSample) -> None:
        with self._act_lock:
            old = self.state
            if old == "normal":
                self._remember_base()  # the user's knobs (maybe reloaded) to return to
            self._record(old, new, sensor, temp, sample)

    def _record(self, old: str, new: str, sensor: str, temp: float, sample: ThermalSample) -> None:
        action: ThermalAction = getattr(self.tcfg.actions, new)
        light = self.cfg.model.light_profile
        threshold = (
            getattr(self.tcfg.thresholds, new)
            if level(new) > level(old)
            else getattr(self.tcfg.thresholds, old) - self.tcfg.hysteresis
        )
        record = {
            "from": old,
            "to": new,
            "sensor": sensor,
            "temp_c": round(temp, 2),
            "threshold_c": round(float(threshold), 2),
            "at": time.time(),
            "actions": describe_action(action, light),
        }
        with self._act_lock:
            with self._lock:
                self.state = new
                self._since = time.monotonic()
                self.transitions.append(record)
                self.transition_count += 1
            self._apply()
        word = "above" if level(new) > level(old) else "below"
        logf = log.warning if level(new) > level(old) else log.info
        logf(
            "%s -> %s: %s %.1fC %s %.1fC (all: %s); now %s",
            old,
            new,
            sensor,
            temp,
            word,
            threshold,
            describe(sample.temps),
            record["actions"],
        )
        if action.light_profile and not light and level(new) > level(old):
            log.info("%s asks for a light profile but model.light_profile is empty", new)
        if action.nvpmodel >= 0:
            self._request_nvpmodel(action.nvpmodel)

    def _apply(self) -> None:
        """Set the knobs for the current state (light profile only once its stages exist)."""
        with self._act_lock:
            if self._knobs is None:
                return
            state = self.state
            action: ThermalAction = getattr(self.tcfg.actions, state)
            light = self._light
            if light is not None and state != "normal":
                light.ensure()  # prepare it while warm, before a hotter state needs it
            name = light.name if light is not None and light.ready else ""
            changes = knob_changes(action, self._base, self.tcfg, name)
            # The level lets a host of several streams shed the less important ones first.
            changes["thermal_level"] = level(state)
            self._knobs.update(**changes)

    def _light_ready(self) -> None:
        # Called by the builder thread: switch now if the current state wants the light model.
        with self._act_lock:
            if getattr(self.tcfg.actions, self.state).light_profile:
                self._apply()

    def _request_nvpmodel(self, mode: int) -> None:
        if not self.tcfg.allow_nvpmodel:
            self.nvpmodel_result = f"nvpmodel {mode} not requested: thermal.allow_nvpmodel is false"
            log.info("%s", self.nvpmodel_result)
            return
        try:
            self.nvpmodel_result = request_nvpmodel(mode, runner=self._nvpmodel_runner)
            log.warning("%s", self.nvpmodel_result)
        except ThermalError as exc:
            self.nvpmodel_result = str(exc)
            log.error("%s", exc)

    # ----------------------------------------------------------------- reporting

    def _note_error(self, message: str) -> None:
        # Log a problem when it first appears (not every second), keep it in status.
        if message != self.error:
            log.warning("%s", message)
        self.error = message

    def _note_skip(self, name: str, why: str) -> None:
        key = f"{name}: {why}"
        if key not in self._skips_logged:
            self._skips_logged.add(key)
            log.warning("skipping sensor %s", key)

    def status(self) -> Dict[str, Any]:
        """State, the reading behind it, the last transition and any sensor problem."""
        with self._lock:
            # The status line shows the first few keys: state and the reading behind it.
            out: Dict[str, Any] = {"state": self.state}
            if self.reading:
                out["temp_c"] = self.reading["temp_c"]
                out["sensor"] = self.reading["sensor"]
            out["source"] = getattr(self.sensor, "name", "none") if self.sensor else "none"
            out["level"] = level(self.state)
            out["state_for_s"] = round(time.monotonic() - self._since, 1)
            out["transitions"] = self.transition_count
            if self.latest is not None:
                age = time.monotonic() - self.latest.mono_s
                out["reading_age_s"] = round(age, 1)
                if self.latest.power_mw.get("total") is not None:
                    out["power_mw"] = self.latest.power_mw["total"]
                if self.latest.gpu_load is not None:
                    out["gpu_load"] = self.latest.gpu_load
                if self.latest.skipped:
                    out["skipped_sensors"] = len(self.latest.skipped)
            if self.transitions:
                out["last_transition"] = dict(self.transitions[-1])
            if self.error:
                out["error"] = self.error
            if self.sensor is None:
                out["note"] = self.sensor_reason
            if self.nvpmodel_result:
                out["nvpmodel"] = self.nvpmodel_result
            if self._light is not None and self._light.state != "idle":
                out["light_model"] = self._light.error or self._light.state
            return out

    def history(self) -> List[Dict[str, Any]]:
        """The recent transitions, oldest first."""
        with self._lock:
            return [dict(t) for t in self.transitions]


__all__ = ["STATES", "SensorTimeout", "ThermalGovernor", "TimedReader"]
