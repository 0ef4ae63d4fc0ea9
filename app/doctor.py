"""``segcam doctor``: is this device fit to run segcam, and if not, what to do.

Each check is a small function ``check(ctx) -> Check``; :data:`CHECKS` lists them in the
order they are printed. Paths go through ``ctx.path()`` (a root prefix for /proc, /etc,
/sys, /dev) and commands through ``ctx.command()`` so tests can point both at fakes.
Status: ``OK``; ``WARN`` for a missing optional piece (segcam still runs, maybe slower or
with less); ``FAIL`` only for what stops ``segcam run`` with this config. A check that
itself breaks reports WARN with the error instead of a traceback.
"""

from __future__ import annotations

import glob
import importlib
import json
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from segcam.config import Config
from segcam.schemes import INPUTS, PREFERRED, REQUIRED, input_needs
from segcam.thermal.sensors import is_jetson

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# L4T release -> JetPack (NVIDIA's JetPack archive / release notes); by (major, minor).
_JETPACK = {
    (32, 5): "4.5",
    (32, 6): "4.6",
    (32, 7): "4.6.x",
    (35, 1): "5.0.2",
    (35, 2): "5.1",
    (35, 3): "5.1.1",
    (35, 4): "5.1.2",
    (35, 5): "5.1.3",
    (35, 6): "5.1.4",
    (36, 2): "6.0 DP",
    (36, 3): "6.0",
    (36, 4): "6.1 / 6.2",
}


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str
    hint: str = ""
    data: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DoctorContext:
    """What the checks look at; tests replace the root, PATH lookup and command runner."""

    cfg: Config
    root: Path = Path("/")
    which: Callable[[str], Optional[str]] = shutil.which
    runner: Callable[..., Any] = subprocess.run
    cache: Dict[str, Any] = field(default_factory=dict)  # shared between checks

    def path(self, absolute: str) -> Path:
        """``absolute`` under the root prefix."""
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> Optional[str]:
        """Text of a file under the root (NULs stripped, as device-tree strings end), or None."""
        try:
            return self.path(absolute).read_text(errors="replace").replace("\x00", "").strip()
        except OSError:
            return None

    def command(self, args: Sequence[str], timeout: float = 5.0) -> Optional[Any]:
        """Run a tool if it is on PATH; the CompletedProcess, or None if absent/hung."""
        if self.which(args[0]) is None:
            return None
        try:
            return self.runner(
                list(args), capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None


def _import(name: str) -> Optional[Any]:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
    except Exception:  # noqa: BLE001 - a broken optional package (bad .so) is "not usable"
        return None


# --------------------------------------------------------------------------- checks


def check_python(ctx: DoctorContext) -> Check:
    """Python version and platform."""
    ver = ".".join(str(v) for v in sys.version_info[:3])
    plat = f"{platform.system()} {platform.release()} {platform.machine()}"
    detail = f"Python {ver} ({sys.executable}) on {plat}"
    if sys.version_info[:2] > (3, 12):
        return Check(
            "python",
            WARN,
            detail + " (newer than the tested 3.8-3.12)",
            "use Python 3.8-3.12 if something misbehaves",
        )
    return Check("python", OK, detail, data={"python": ver, "platform": plat})


def _jetson(ctx: DoctorContext) -> Dict[str, Any]:
    if "jetson" not in ctx.cache:
        model = ctx.read("/proc/device-tree/model")
        release = ctx.read("/etc/nv_tegra_release")
        info: Dict[str, Any] = {"model": model, "l4t": None, "jetpack": None}
        if release:
            m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", release)
            if m:
                major = int(m.group(1))
                rev = m.group(2)
                info["l4t"] = f"{major}.{rev}"
                minor = int(rev.split(".")[0]) if rev.split(".")[0].isdigit() else -1
                info["jetpack"] = _JETPACK.get((major, minor))
        info["is_jetson"] = is_jetson(str(ctx.root))
        ctx.cache["jetson"] = info
    return ctx.cache["jetson"]


def check_jetson(ctx: DoctorContext) -> Check:
    """Jetson model (/proc/device-tree/model) and L4T/JetPack (/etc/nv_tegra_release)."""
    info = _jetson(ctx)
    if not info["is_jetson"]:
        what = f" ({info['model']})" if info["model"] else ""
        return Check(
            "jetson",
            OK,
            f"not a Jetson{what}: segcam uses the CPU/ONNX Runtime path or a desktop GPU",
            data=info,
        )
    if not info["l4t"]:
        return Check(
            "jetson",
            WARN,
            f"{info['model'] or 'Jetson'}: /etc/nv_tegra_release missing or unreadable",
            "install JetPack's L4T packages (nvidia-l4t-core) so TensorRT and CUDA match",
            data=info,
        )
    jp = f", JetPack {info['jetpack']}" if info["jetpack"] else ""
    preset = _preset_for(info["model"] or "")
    tip = f"; preset: --config {preset}" if preset else ""
    return Check("jetson", OK, f"{info['model']}: L4T {info['l4t']}{jp}{tip}", data=info)


def _preset_for(model: str) -> Optional[str]:
    low = model.lower()
    for key, preset in (
        ("orin nano", "orin-nano"),
        ("orin nx", "orin-nx"),
        ("agx orin", "orin-agx"),
        ("xavier nx", "xavier-nx"),
        ("agx xavier", "xavier-agx"),
    ):
        if key in low:
            return preset
    return None


def _gpu(ctx: DoctorContext):
    if "gpu" not in ctx.cache:
        gpu_mod = _import("segcam.gpu")
        if gpu_mod is None or not hasattr(gpu_mod, "probe"):
            ctx.cache["gpu"] = (None, "GPU support (segcam.gpu) is not part of this build")
        else:
            ctx.cache["gpu"] = gpu_mod.probe()
    return ctx.cache["gpu"]


def _nvidia_device(ctx: DoctorContext) -> bool:
    return any(
        ctx.path(p).exists()
        for p in ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/nvhost-ctrl-gpu")
    )


def check_cuda(ctx: DoctorContext) -> Check:
    """CUDA device, cuda-python, and which pipeline path ``segcam run`` would take."""
    info, reason = _gpu(ctx)
    device = ctx.cfg.inference.device
    if info is not None:
        if device == "cpu":
            return Check("cuda", OK, f"{reason}; pipeline: CPU (inference.device: cpu)")
        data = info.as_dict() if hasattr(info, "as_dict") else {}
        if _import("segcam.gpu.stages") is None:
            return Check(
                "cuda",
                WARN,
                f"{reason}; pipeline: CPU stages (GPU stages are not in this build)",
                "update segcam for the fused GPU pre/post-processing",
                data,
            )
        return Check(
            "cuda", OK, f"{reason}; pipeline: GPU stages (inference.device: {device})", data=data
        )
    if device == "gpu":
        return Check(
            "cuda",
            FAIL,
            f"{reason}; inference.device is 'gpu'",
            "set inference.device: auto (or cpu) to run on the CPU, or fix the GPU set-up",
        )
    if _jetson(ctx)["is_jetson"] or _nvidia_device(ctx):
        hint = "pip install 'segcam[gpu]' (cuda-python matching this CUDA driver)"
    else:
        hint = "no NVIDIA GPU here: the CPU path is complete, a GPU only makes it faster"
        reason = reason.split(": pip install")[0]  # installing cuda-python would not help
    return Check("cuda", WARN, f"{reason}; pipeline: CPU (OpenCV/numpy + ONNX Runtime)", hint)


def check_tensorrt(ctx: DoctorContext) -> Check:
    """TensorRT Python bindings and version."""
    trt = _import("tensorrt")
    ctx.cache["tensorrt"] = getattr(trt, "__version__", None) if trt else None
    if trt is None:
        status = FAIL if ctx.cfg.inference.require_tensorrt else WARN
        hint = (
            "on a Jetson: sudo apt install python3-libnvinfer and create the venv with "
            "--system-site-packages; elsewhere ONNX Runtime runs the model"
        )
        return Check("tensorrt", status, "TensorRT not installed", hint)
    return Check("tensorrt", OK, f"TensorRT {trt.__version__}")


def check_onnxruntime(ctx: DoctorContext) -> Check:
    """ONNX Runtime version and its execution providers."""
    ort = _import("onnxruntime")
    if ort is None:
        status = WARN if ctx.cache.get("tensorrt") else FAIL
        return Check(
            "onnxruntime",
            status,
            "ONNX Runtime not installed",
            "pip install onnxruntime (or onnxruntime-gpu / the Jetson Zoo wheel)",
        )
    providers = list(ort.get_available_providers())
    short = ", ".join(p.replace("ExecutionProvider", "") for p in providers)
    detail = f"onnxruntime {ort.__version__}: {short}"
    data = {"version": ort.__version__, "providers": providers}
    gpu_eps = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    cpu_only = not any(p in providers for p in gpu_eps)
    if cpu_only and _jetson(ctx)["is_jetson"] and not ctx.cache.get("tensorrt"):
        return Check(
            "onnxruntime",
            WARN,
            detail,
            "CPU only on a Jetson: install the Jetson Zoo onnxruntime-gpu wheel or use TensorRT",
            data,
        )
    return Check("onnxruntime", OK, detail, data=data)


OPENCV_WHEELS = (
    "opencv-python",
    "opencv-python-headless",
    "opencv-contrib-python",
    "opencv-contrib-python-headless",
)


def installed_opencv_wheels() -> List[str]:
    """The pip OpenCV distributions installed here (more than one overwrite each other)."""
    from importlib import metadata

    names = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
    return [name for name in OPENCV_WHEELS if name in names]


def check_opencv(ctx: DoctorContext) -> Check:
    """OpenCV version and whether it was built with GStreamer (csi:// and gst: need it)."""
    cv2 = _import("cv2")
    uris = input_uris(ctx.cfg)
    if cv2 is None:
        return Check(
            "opencv",
            FAIL,
            "OpenCV (cv2) not importable",
            "on a Jetson use JetPack's python3-opencv (venv with --system-site-packages); "
            "elsewhere install segcam with one OpenCV extra: .[gui] (windows) or .[headless]",
        )
    wheels = installed_opencv_wheels()
    if len(wheels) > 1:
        return Check(
            "opencv",
            WARN,
            f"several OpenCV wheels installed ({', '.join(wheels)}): each overwrites the "
            "other's cv2 folder",
            f"pip uninstall -y {' '.join(wheels)}, then install one: segcam's gui extra "
            "(windows) or headless extra",
            {"wheels": wheels},
        )
    from segcam.sources import gstreamer_support

    has_gst, gst_text = gstreamer_support()
    detail = (
        f"OpenCV {cv2.__version__}, GStreamer: {'yes ' + gst_text[3:].strip() if has_gst else 'no'}"
    )
    data = {"version": cv2.__version__, "gstreamer": has_gst}
    if has_gst:
        return Check("opencv", OK, detail, data=data)
    needs = {uri: input_needs(uri)[0] for uri in uris}
    required = [uri for uri, need in needs.items() if need == REQUIRED]
    if required:
        return Check(
            "opencv",
            FAIL,
            f"{detail}; input {', '.join(required)} needs GStreamer",
            "use JetPack's OpenCV (python3-opencv, built with GStreamer) instead of the pip wheel",
            data,
        )
    preferred = [uri for uri, need in needs.items() if need == PREFERRED]
    hint = (
        "network streams work through FFmpeg; GStreamer gives hardware decode" if preferred else ""
    )
    wanted = " and ".join(
        e.schemes[0] + ("://" if e.kind != "gst" else ":")
        for e in INPUTS
        if e.gstreamer == REQUIRED
    )
    return Check("opencv", OK, f"{detail} (needed only for {wanted} inputs)", hint, data)


def input_uris(cfg: Any) -> List[str]:
    """Every input of the config: the ``inputs:`` entries, else ``input.uri``."""
    entries = getattr(cfg, "inputs", None) or []
    return [e.uri for e in entries] or [cfg.input.uri]


def check_cameras(ctx: DoctorContext) -> Check:
    """Video devices (/dev/video*) and their formats (v4l2-ctl when installed)."""
    devices = sorted(glob.glob(str(ctx.path("/dev/video*"))))
    names = ["/dev/" + Path(d).name for d in devices]
    formats: Dict[str, List[str]] = {}
    for dev, shown in zip(devices, names):
        proc = ctx.command(["v4l2-ctl", "--device", dev, "--list-formats"])
        if proc is not None and proc.returncode == 0:
            formats[shown] = re.findall(r"'(\w{3,4})'", proc.stdout)
    uris = input_uris(ctx.cfg)
    uri = ", ".join(uris)
    data = {"devices": names, "formats": formats}
    wanted = [d for d in (_camera_device(u) for u in uris) if d]
    if not names:
        if wanted:
            return Check(
                "cameras",
                FAIL,
                f"no /dev/video* devices, but input.uri is {uri}",
                "plug in the camera (ls /dev/video*), or set input.uri to a file or demo",
                data,
            )
        return Check("cameras", WARN, f"no /dev/video* devices (input is {uri})", data=data)
    listed = ", ".join(f"{n} [{' '.join(formats[n])}]" if formats.get(n) else n for n in names[:8])
    hint = "" if formats or ctx.which("v4l2-ctl") else "apt install v4l-utils to list formats"
    absent = [d for d in wanted if d not in names]
    if absent:
        return Check(
            "cameras",
            FAIL,
            f"{', '.join(absent)} (input.uri) is absent; present: {listed}",
            hint,
            data,
        )
    return Check("cameras", OK, listed, hint, data)


def _camera_device(uri: str) -> Optional[str]:
    """The /dev/video device of a V4L2 camera input (None for other inputs, csi:// too)."""
    from segcam.errors import SourceError
    from segcam.sources import parse_uri  # imports OpenCV: only once cv2 was checked

    try:
        spec = parse_uri(uri)
    except SourceError:
        return None
    if spec.kind != "camera":
        return None
    return spec.target if spec.target.startswith("/dev/") else f"/dev/video{spec.target}"


def _thermal_cfg(ctx: DoctorContext):
    tcfg = ctx.cfg.thermal
    if str(ctx.root) != "/" and tcfg.sysfs_root in ("", "/"):
        import dataclasses

        tcfg = dataclasses.replace(tcfg, sysfs_root=str(ctx.root))
    return tcfg


def check_thermal(ctx: DoctorContext) -> Check:
    """Temperature sensors, current readings, kernel trip points and the governor's view."""
    from segcam.thermal.policy import next_state
    from segcam.thermal.sample import describe
    from segcam.thermal.sensors import open_sensor
    from segcam.thermal.sysfs import SysfsSensor

    tcfg = _thermal_cfg(ctx)
    if not tcfg.enabled:
        return Check("thermal", WARN, "thermal governor disabled (thermal.enabled: false)")
    sensor, reason = open_sensor(tcfg)
    if sensor is None:
        return Check(
            "thermal",
            WARN,
            f"no temperature sensors ({reason}); the governor will stay 'normal'",
            "normal on VMs and containers; on a Jetson check /sys/class/thermal is mounted",
        )
    try:
        sample = sensor.read()
    finally:
        sensor.close()
    ctx.cache["thermal_sample"] = sample
    data: Dict[str, Any] = {"reason": reason, **sample.as_dict()}
    trips = SysfsSensor(tcfg.sysfs_root).trip_points()
    watched = {z: t for z, t in trips.items() if any(p.lower() in z.lower() for p in tcfg.sensors)}
    data["trip_points"] = {z: [list(t) for t in ts] for z, ts in trips.items()}
    hottest = sample.hottest(tcfg.sensors)
    if hottest is None and sample.temps:
        name = max(sample.temps, key=lambda n: sample.temps[n])
        hottest = (name, sample.temps[name])
    detail = f"{reason.split(';')[0]}: {describe(sample.temps) or 'no readable sensor'}"
    if sample.skipped:
        detail += f"; {len(sample.skipped)} unreadable"
    passive = [t for ts in watched.values() for kind, t in ts if kind in ("passive", "hot")]
    crit = [t for ts in watched.values() for kind, t in ts if kind == "critical"]
    if passive or crit:
        parts = []
        if passive:
            parts.append(f"throttling {min(passive):.1f}C")
        if crit:
            parts.append(f"shutdown {min(crit):.1f}C")
        detail += "; kernel trips: " + ", ".join(parts)
    if hottest is None:
        return Check("thermal", WARN, detail, "no sensor gave a valid reading", data)
    state = next_state("normal", hottest[1], tcfg.thresholds, tcfg.hysteresis)
    data["state"] = state
    detail += f"; governor: {state} ({hottest[0]} {hottest[1]:.1f}C)"
    if passive and tcfg.thresholds.critical >= min(passive):
        return Check(
            "thermal",
            WARN,
            detail,
            f"thermal.thresholds.critical ({tcfg.thresholds.critical:g}C) is not below the "
            f"kernel's throttling trip ({min(passive):.1f}C): lower it or use a device preset",
            data,
        )
    if state != "normal":
        return Check("thermal", WARN, detail, "the device is already hot: check cooling", data)
    return Check("thermal", OK, detail, data=data)


def check_power(ctx: DoctorContext) -> Check:
    """nvpmodel power mode and jetson_clocks (Jetson only)."""
    from segcam.thermal.nvpmodel import query_nvpmodel

    sample = ctx.cache.get("thermal_sample")
    mode = getattr(sample, "nvpmodel", None)
    clocks = getattr(sample, "jetson_clocks", None)
    if mode is None and ctx.which("nvpmodel"):
        mode = query_nvpmodel(runner=ctx.runner)
    if mode is None and not _jetson(ctx)["is_jetson"]:
        return Check("power", OK, "nvpmodel / jetson_clocks: not applicable (not a Jetson)")
    if mode is None:
        return Check(
            "power",
            WARN,
            "power mode unknown (nvpmodel not found or failed)",
            "install nvidia-l4t-tools / jetson-stats to read nvpmodel",
        )
    detail = f"nvpmodel: {mode}"
    if clocks is not None:
        detail += f"; jetson_clocks: {'on' if clocks else 'off'}"
    else:
        detail += "; jetson_clocks: unknown (install jetson-stats to read it)"
    allow = ctx.cfg.thermal.allow_nvpmodel
    detail += f"; governor may change it: {'yes (needs root)' if allow else 'no'}"
    return Check("power", OK, detail, data={"nvpmodel": mode, "jetson_clocks": clocks})


def check_model(ctx: DoctorContext) -> Check:
    """The configured model: profile loads, ONNX present in the cache (or model.path)."""
    from segcam.config import model_cache_dir

    cfg = ctx.cfg
    names = [cfg.model.name] + ([cfg.model.light_profile] if cfg.model.light_profile else [])
    profile_mod = _import("segcam.inference.profile")
    registry = _import("segcam.models.registry")
    notes: List[str] = []
    worst = OK
    hint = ""
    for i, name in enumerate(names):
        role = "model" if i == 0 else "light profile"
        if profile_mod is not None:
            try:
                profile_mod.load_profile(name)
            except Exception as exc:  # noqa: BLE001 - report any profile problem as a line
                return Check("model", FAIL, f"{role} {name!r}: {exc}", "fix model.name")
        if i == 0 and cfg.model.path:
            if Path(cfg.model.path).expanduser().is_file():
                notes.append(f"{name}: {cfg.model.path}")
            else:
                return Check(
                    "model", FAIL, f"model.path {cfg.model.path} does not exist", "fix model.path"
                )
            continue
        if registry is None:
            notes.append(f"{name}: model registry not in this build")
            worst = WARN
            continue
        cache = model_cache_dir(cfg)
        try:
            path = registry.model_path(name, cache)
            notes.append(f"{role} {name}: {path}")
        except Exception as exc:  # noqa: BLE001 - ModelError or an unknown model name
            message = getattr(exc, "message", str(exc))
            notes.append(message if name in message else f"{role} {name}: {message}")
            fetch = getattr(exc, "hint", "") or f"run `segcam model fetch {name}`"
            hint = f"segcam run fetches it on first start (needs the package index), or {fetch}"
            worst = WARN
    return Check("model", worst, "; ".join(notes), hint)


def check_engine(ctx: DoctorContext) -> Check:
    """A TensorRT engine for the model: present, and built for this device and TensorRT."""
    trt_version = ctx.cache.get("tensorrt")
    if not trt_version:
        return Check("engine", OK, "not applicable: no TensorRT (ONNX Runtime runs the model)")
    meta = _import("segcam.inference.engine_meta")
    if meta is None:
        return Check("engine", WARN, "engine checks not available in this build")
    cfg = ctx.cfg
    name = cfg.model.name
    if cfg.inference.engine:
        engines = [Path(cfg.inference.engine)]
    else:
        engines = meta.find_engines(cfg.inference.engine_dir, name)
    rebuild = f"build_engine.sh <model.onnx> --profile {name} --out-dir {cfg.inference.engine_dir}"
    if not engines:
        return Check(
            "engine",
            WARN,
            f"no TensorRT engine for {name} in {cfg.inference.engine_dir}/: ONNX Runtime is used",
            f"build one: {rebuild}",
        )
    info, _ = _gpu(ctx)
    facts = meta.RuntimeFacts(
        tensorrt_version=trt_version,
        device_name=getattr(info, "name", "") if info else "",
        sm=f"{info.sm[0]}{info.sm[1]}" if info else "",
        model=name,
    )
    try:
        found = meta.check_engine(engines[0], facts, rebuild, verify_bytes=False)
    except Exception as exc:  # noqa: BLE001 - EngineError says what does not match
        return Check("engine", WARN, getattr(exc, "message", str(exc)), getattr(exc, "hint", ""))
    return Check(
        "engine",
        OK,
        f"{engines[0]}: {found.precision}, TensorRT {found.tensorrt_version}, "
        f"{found.device_name} (SM {found.sm})",
    )


def check_publish(ctx: DoctorContext) -> Check:
    """ZeroMQ mask stream: exposure beyond loopback and CURVE."""
    pcfg = ctx.cfg.publish
    if not pcfg.enabled:
        return Check("publish", OK, "mask stream disabled (publish.enabled: false)")
    where = ", ".join(pcfg.bind)
    if pcfg.curve.enabled:
        missing = [
            p
            for p in (pcfg.curve.server_secret_key, pcfg.curve.authorized_keys_dir)
            if p and not Path(p).expanduser().exists()
        ]
        if missing:
            return Check(
                "publish",
                FAIL,
                f"CURVE key files missing: {', '.join(missing)}",
                "segcam keys generate, then point publish.curve.* at the files",
            )
    warn_fn = getattr(_import("segcam.publish.publisher"), "exposure_warning", None)
    warning = warn_fn(ctx.cfg) if warn_fn is not None else None
    if warning:
        return Check("publish", WARN, f"bound to {where}", warning)
    curve = "CURVE on" if pcfg.curve.enabled else "loopback only, CURVE off"
    return Check("publish", OK, f"bound to {where} ({curve})")


def check_recorder(ctx: DoctorContext) -> Check:
    """Which writer records file:// outputs here, why, and whether a crash keeps the file."""
    from segcam.errors import OutputError
    from segcam.outputs import parse_output
    from segcam.recording.choice import choose

    files = []
    for uri in ctx.cfg.output.uris:
        try:
            kind, target = parse_output(uri)
        except OutputError:
            continue  # the outputs are checked when segcam run starts
        if kind == "file":
            files.append(target)
    path = Path(files[0]).expanduser() if files else Path("out.mp4")
    rec = ctx.cfg.output.record
    try:
        choice = choose(path, ctx.cfg.output.codec, rec.recorder)
    except OutputError as exc:
        status = FAIL if files else WARN
        return Check("recorder", status, f"{path.name}: {exc.message}", exc.hint)
    lead = f"{path.name}" if files else "no file:// output; a .mp4 would record with"
    detail = f"{lead} {choice.summary()}"
    data = {
        "backend": choice.backend,
        "codec": choice.codec.name if choice.codec else choice.fourcc,
        "container": choice.container.name,
        "crash_safe": choice.crash_safe,
        "flush_interval_s": rec.flush_interval_s,
    }
    if choice.codec is not None and choice.backend == "pyav":
        data["encoder_licence"] = choice.codec.licence
    if not choice.crash_safe:
        return Check(
            "recorder",
            WARN,
            detail,
            "pip install 'segcam[record]' (PyAV) and record to .mp4/.mkv/.webm for files that "
            "survive a crash",
            data,
        )
    return Check("recorder", OK, detail, data=data)


def check_service(ctx: DoctorContext) -> Check:
    """The systemd unit's state when installed."""
    enabled = ctx.command(["systemctl", "is-enabled", "segcam.service"])
    if enabled is None:
        return Check("service", OK, "systemctl not available: service state not checked")
    state = (enabled.stdout or "").strip() or (enabled.stderr or "").strip()
    if enabled.returncode != 0 and ("not-found" in state or "No such file" in state or not state):
        return Check(
            "service", OK, "segcam.service not installed", "sudo segcam service install (optional)"
        )
    active = ctx.command(["systemctl", "is-active", "segcam.service"])
    act = (active.stdout or "").strip() if active is not None else "unknown"
    detail = f"segcam.service: {state}, {act}"
    if act == "failed":
        return Check("service", WARN, detail, "journalctl -u segcam -e shows why")
    return Check("service", OK, detail)


def check_config(ctx: DoctorContext) -> Check:
    """Which config was checked."""
    src = ctx.cfg.source_path or "built-in defaults"
    return Check("config", OK, f"{src}: valid")


CHECKS: List[Callable[[DoctorContext], Check]] = [
    check_config,
    check_python,
    check_jetson,
    check_cuda,
    check_tensorrt,
    check_onnxruntime,
    check_opencv,
    check_cameras,
    check_thermal,
    check_power,
    check_model,
    check_engine,
    check_publish,
    check_recorder,
    check_service,
]


# --------------------------------------------------------------------------- running


def run_checks(
    ctx: DoctorContext, checks: Optional[Sequence[Callable[[DoctorContext], Check]]] = None
) -> List[Check]:
    """Run every check; a check that raises becomes a WARN line naming the error."""
    results: List[Check] = []
    for fn in checks if checks is not None else CHECKS:
        name = fn.__name__.replace("check_", "")
        try:
            results.append(fn(ctx))
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            results.append(
                Check(name, WARN, f"check failed: {type(exc).__name__}: {exc}", "please report")
            )
    return results


def exit_code(results: Sequence[Check]) -> int:
    """1 when any check FAILed, else 0."""
    return 1 if any(r.status == FAIL for r in results) else 0


def format_report(results: Sequence[Check]) -> str:
    """One line per check (hint on the next line, indented), then a summary."""
    width = max((len(r.name) for r in results), default=8)
    lines = []
    for r in results:
        lines.append(f"{r.status:<4}  {r.name:<{width}}  {r.detail}")
        if r.hint and r.status != OK:
            lines.append(f"{'':<4}  {'':<{width}}  -> {r.hint}")
    counts = {s: sum(r.status == s for r in results) for s in (OK, WARN, FAIL)}
    verdict = "not fit to run" if counts[FAIL] else "fit to run"
    lines.append(f"{counts[OK]} ok, {counts[WARN]} warnings, {counts[FAIL]} failures: {verdict}")
    return "\n".join(lines)


def to_json(results: Sequence[Check]) -> str:
    """The report as JSON: {"ok": bool, "counts": {...}, "checks": [...]}."""
    counts = {s: sum(r.status == s for r in results) for s in (OK, WARN, FAIL)}
    doc = {
        "ok": not counts[FAIL],
        "counts": counts,
        "checks": [asdict(r) for r in results],
    }
    return json.dumps(doc, indent=2, default=str)
