"""Temperatures, power, GPU load, nvpmodel and jetson_clocks from jetson-stats' jtop.

jtop is a client of ``jtop.service``; the shapes of its properties changed over the years
(read from rbonghi/jetson_stats' sources, tags 3.1.4, 4.2.12 and 7.2.0):

* ``temperature``: 4.x/7.x ``{name: {"temp": float, "online": bool, "max"?, "crit"?}}``
  with offline sensors at ``-256``; 3.x ``{name: float}``. Names come from the thermal
  zone types (``CPU``, ``GPU``, ``SOC0``, ``Tj``, ``cpu``, ``tj``...): match them
  case-insensitively.
* ``power``: 4.x/7.x ``{"rail": {name: {"power": mW, "online": bool, ...}},
  "tot": {"power": mW, ...}}``; 3.x a tuple ``(total, {name: {"cur": mW, "avg": mW}})``.
* ``gpu``: 4.x/7.x a mapping ``{name: {"status": {"load": percent}, ...}}``;
  3.x ``{"val": percent, ...}``.
* ``nvpmodel``: an object whose ``name``/``id`` give the mode (``str()`` in 3.x), or None.
* ``jetson_clocks``: an object whose truth value says whether it is active, or None.

Failure modes turn into :class:`ThermalError` with the fix: the service not running,
no permission on its socket, a client/service version mismatch, ``ok()`` False.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional

from segcam.errors import ThermalError
from segcam.thermal.sample import ThermalSample, plausible

log = logging.getLogger("segcam.thermal")

OFFLINE = -256.0


def explain_jtop_failure(exc: BaseException) -> ThermalError:
    """Map an exception from jtop's start()/ok() to a ThermalError with its fix."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, PermissionError) or "can't access" in low or "permission" in low:
        return ThermalError(
            f"jtop: no permission to reach jtop.service ({_first_line(text)})",
            "add this user to the 'jtop' group (sudo usermod -aG jtop $USER) and log in again",
        )
    if "mismatch" in low:
        return ThermalError(
            f"jtop: {_first_line(text)}",
            "make the jetson-stats client and service the same version: "
            "sudo pip3 install -U jetson-stats, then sudo systemctl restart jtop.service",
        )
    if (
        isinstance(exc, (FileNotFoundError, ConnectionRefusedError))
        or "not active" in low
        or "lost connection" in low
        or "error connection" in low
    ):
        return ThermalError(
            f"jtop: jtop.service is not running ({_first_line(text)})",
            "sudo systemctl restart jtop.service (or sudo jtop --install-service); "
            "segcam falls back to sysfs meanwhile",
        )
    return ThermalError(f"jtop: {exc.__class__.__name__}: {_first_line(text)}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no message"


class JtopSensor:
    """A started jtop client; ``factory`` builds it (default ``jtop.jtop``, tests: a stand-in)."""

    name = "jtop"

    def __init__(self, interval_s: float = 1.0, factory: Optional[Callable[..., Any]] = None):
        if factory is None:
            try:
                from jtop import jtop as factory  # type: ignore[import-not-found,no-redef]
            except ImportError as exc:
                raise ThermalError(
                    "jtop: jetson-stats is not installed",
                    "pip install jetson-stats (segcam[jetson]); sysfs is used meanwhile",
                ) from exc
        try:
            self._jetson = factory(interval=max(0.5, float(interval_s)))
            self._jetson.start()
        except Exception as exc:  # noqa: BLE001 - jtop raises JtopException and OSErrors
            raise explain_jtop_failure(exc) from None
        self.version = _version_of(self._jetson)

    def read(self) -> ThermalSample:
        """A sample of the service's latest data; ThermalError if the client stopped."""
        j = self._jetson
        try:
            alive = j.ok(spin=True)
        except Exception as exc:  # noqa: BLE001 - ok() re-raises whatever its thread caught
            raise explain_jtop_failure(exc) from None
        if not alive:
            raise ThermalError(
                "jtop: the client stopped (ok() is False: the service went away or timed out)",
                "check `systemctl status jtop.service`; segcam keeps its last state",
            )
        sample = ThermalSample(source=self.name, mono_s=time.monotonic())
        self._temperatures(_get(j, "temperature"), sample)
        self._power(_get(j, "power"), sample)
        sample.gpu_load = _gpu_load(_get(j, "gpu"))
        sample.nvpmodel = _nvpmodel_name(_get(j, "nvpmodel"))
        jc = _get(j, "jetson_clocks")
        sample.jetson_clocks = None if jc is None else bool(jc)
        return sample

    @staticmethod
    def _temperatures(temps: Any, sample: ThermalSample) -> None:
        if not isinstance(temps, dict):
            return
        for name, value in temps.items():
            name = str(name)
            if isinstance(value, dict):  # 4.x / 7.x
                online = value.get("online", True)
                raw = value.get("temp")
            else:  # 3.x: a bare number
                online = True
                raw = value
            try:
                celsius = float(raw)
            except (TypeError, ValueError):
                sample.skipped[name] = f"jtop: not a temperature ({raw!r})"
                continue
            if not online or celsius == OFFLINE:
                sample.skipped[name] = "jtop: sensor offline"
                continue
            if not plausible(celsius):
                sample.skipped[name] = f"jtop: implausible {celsius:.1f}C"
                continue
            sample.temps[name] = celsius

    @staticmethod
    def _power(power: Any, sample: ThermalSample) -> None:
        if isinstance(power, dict):  # 4.x / 7.x
            for name, rail in (power.get("rail") or {}).items():
                if isinstance(rail, dict) and rail.get("online", True) and "power" in rail:
                    sample.power_mw[str(name)] = float(rail["power"])
            tot = power.get("tot")
            if isinstance(tot, dict) and "power" in tot:
                sample.power_mw["total"] = float(tot["power"])
        elif isinstance(power, (tuple, list)) and len(power) == 2:  # 3.x
            total, rails = power
            if isinstance(rails, dict):
                for name, rail in rails.items():
                    if isinstance(rail, dict) and "cur" in rail:
                        sample.power_mw[str(name)] = float(rail["cur"])
            if isinstance(total, dict) and "cur" in total:
                sample.power_mw["total"] = float(total["cur"])

    def close(self, timeout: float = 1.0) -> None:
        """Disconnect from the service; bounded, since jtop's close() joins a thread."""

        def _close() -> None:
            try:
                self._jetson.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken client must not raise
                log.debug("jtop close: %s", exc)

        closer = threading.Thread(target=_close, name="jtop-close", daemon=True)
        closer.start()
        closer.join(timeout)


def _get(obj: Any, attr: str) -> Any:
    """A jtop property, or None when this version lacks it or it fails to build."""
    try:
        return getattr(obj, attr)
    except Exception as exc:  # noqa: BLE001 - jtop properties index dicts that may be absent
        log.debug("jtop.%s unavailable: %s", attr, exc)
        return None


def _gpu_load(gpu: Any) -> Optional[float]:
    if gpu is None:
        return None
    try:
        if "val" in gpu:  # 3.x
            return float(gpu["val"])
        loads = [
            float(g["status"]["load"])
            for g in (gpu[k] for k in gpu)
            if isinstance(g, dict) and isinstance(g.get("status"), dict) and "load" in g["status"]
        ]
    except (TypeError, KeyError, ValueError):
        return None
    return max(loads) if loads else None


def _nvpmodel_name(nvp: Any) -> Optional[str]:
    if nvp is None:
        return None
    name = getattr(nvp, "name", None)
    ident = getattr(nvp, "id", None)
    if name is None:
        name = str(nvp)
    return f"{name} (id {ident})" if ident is not None else str(name)


def _version_of(jetson: Any) -> str:
    try:
        import jtop  # type: ignore[import-not-found]

        return str(getattr(jtop, "__version__", "unknown"))
    except ImportError:
        return str(getattr(jetson, "version", "unknown"))
