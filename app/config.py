"""Configuration: dataclasses, YAML loading and validation with precise errors.

A config file is YAML whose keys mirror the dataclasses below. Loading checks every key
and value against the dataclass field types and reports the first problem with its key
path and line (``pipeline.queue_depth (line 12): expected an integer, got 'two'``), plus a
close-match suggestion for unknown keys. ``--set a.b=value`` overrides are parsed with
``yaml.safe_load`` and validated the same way.

Each section belongs to one part of the program; a field's comment in
``configs/default.yaml`` says what it does.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import os
import re
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import (  # all present since 3.8
    Any,
    Dict,
    List,
    Literal,
    Optional,
    Sequence,
    Tuple,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml

from segcam.errors import ConfigError, OutputError

PACKAGE_DIR = Path(__file__).resolve().parent
# Installed layouts put configs/ inside the package data; a source checkout has it beside app/.
_CONFIG_CANDIDATES = (PACKAGE_DIR / "configs", PACKAGE_DIR.parent / "configs")


def configs_dir() -> Path:
    """Directory holding default.yaml, device presets and models/*.yaml profiles."""
    for cand in _CONFIG_CANDIDATES:
        if (cand / "default.yaml").is_file():
            return cand
    raise ConfigError(
        "cannot find segcam's configs/ directory",
        "reinstall segcam (pip install .) so that its configs are installed",
    )


def preset_names() -> List[str]:
    """Device presets that ship inside the package (``configs/devices/NAME.yaml``)."""
    return sorted(p.stem for p in (configs_dir() / "devices").glob("*.yaml"))


def resolve_config_path(name: Union[str, Path]) -> Path:
    """A config file's path: an existing file, else a packaged preset of that name.

    ``--config orin-nano`` (or ``orin-nano.yaml``) works from any folder; a path that
    exists always wins over a preset of the same name.
    """
    p = Path(name).expanduser()
    if p.is_file() or p.parent != Path("."):
        return p
    stem = p.stem if p.suffix in (".yaml", ".yml") else p.name
    preset = configs_dir() / "devices" / f"{stem}.yaml"
    if stem == "default":
        preset = configs_dir() / "default.yaml"
    return preset if preset.is_file() else p


def default_cache_dir() -> Path:
    """Model cache: $SEGCAM_CACHE, else $XDG_CACHE_HOME/segcam, else ~/.cache/segcam."""
    env = os.environ.get("SEGCAM_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "segcam"


# --------------------------------------------------------------------------- bounds

# Hard limits of the YAML reader: a config is a few KiB, a handful of levels deep.
MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_DEPTH = 32  # nesting of mappings/sequences
MAX_NODES = 100_000  # scalars after alias expansion (a "billion laughs" has 10**9)
MAX_NUMBER_CHARS = 40  # characters of one int/float scalar (digits, sign, exponent)
MAX_STRING = 4096  # characters of any string value unless its key says less (PATH_MAX)
MAX_NAME = 255  # bytes of one path component (NAME_MAX)
MAX_ITEMS = 64  # items of any list value unless its key says less


@dataclass(frozen=True)
class Bounds:
    """Allowed values of one config key, declared once in the field's metadata.

    Numbers: ``lo`` ..= ``hi``, or exactly ``off`` (a value outside the range that
    switches the feature off or means "the library's default"). Strings and lists:
    at most ``max_len`` characters/items; ``path`` strings also keep every path
    component within NAME_MAX. ``configs/default.yaml`` states the same ranges in
    brackets (``[lo .. hi]``); a test keeps them in agreement.
    """

    lo: Optional[float] = None
    hi: Optional[float] = None
    off: Optional[float] = None
    max_len: Optional[int] = None
    min_len: int = 0
    path: bool = False

    def check_number(self, value: float) -> bool:
        """True if ``value`` is allowed (finite, in range or the off value)."""
        if not math.isfinite(value):
            return False
        if self.off is not None and value == self.off:
            return True
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)

    def text(self) -> str:
        """The range as written in configs/default.yaml, e.g. ``0 | 0.1 .. 1000``."""
        rng = f"{_num_text(self.lo)} .. {_num_text(self.hi)}"
        return rng if self.off is None else f"{_num_text(self.off)} | {rng}"


def _num_text(value: Optional[float]) -> str:
    if value is None:
        return "?"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _num(default: Any, lo: float, hi: float, off: Optional[float] = None) -> Any:
    """A numeric field with its allowed range."""
    return field(default=default, metadata={"bounds": Bounds(lo=lo, hi=hi, off=off)})


def _path(default: str = "") -> Any:
    """A string field that names a file or directory."""
    return field(default=default, metadata={"bounds": Bounds(max_len=MAX_STRING, path=True)})


def _text(default: str, max_len: int) -> Any:
    """A string field of at most ``max_len`` characters."""
    return field(default=default, metadata={"bounds": Bounds(max_len=max_len)})


def _list(factory: Any, max_len: int, lo: Optional[float] = None, hi: Optional[float] = None,
          min_len: int = 0) -> Any:  # fmt: skip
    """A list field: item count, and the range of numeric items."""
    bounds = Bounds(lo=lo, hi=hi, max_len=max_len, min_len=min_len)
    return field(default_factory=factory, metadata={"bounds": bounds})


def field_bounds(cls: Any, name: str) -> Optional[Bounds]:
    """The :class:`Bounds` declared for field ``name`` of config dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return f.metadata.get("bounds")
    return None


# --------------------------------------------------------------------------- sections


@dataclass
class ReconnectConfig:
    """Backoff for lost cameras and streams."""

    initial_s: float = _num(0.5, 0.01, 3600.0)
    max_s: float = _num(10.0, 0.01, 3600.0)
    max_attempts: int = _num(0, 0, 1_000_000)  # 0 = retry forever


@dataclass
class InputConfig:
    """Where frames come from (jetson-utils style URI) and how to capture them."""

    uri: str = _text("demo", MAX_STRING)
    width: int = _num(1280, 64, 7680)
    height: int = _num(720, 64, 4320)
    fps: float = _num(30.0, 0.1, 1000.0)
    fourcc: str = _text("", 4)  # e.g. MJPG for USB cameras; empty = driver default
    loop: bool = False  # files: start again at the end
    realtime: bool = False  # files/images: pace at their fps (and drop) instead of pipeline pace
    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)


@dataclass
class ModelConfig:
    """Which model to run and where converted models are cached."""

    # a profile in configs/models/ (or a path to a profile YAML)
    name: str = _path("mediapipe-selfie")
    path: str = _path()  # explicit ONNX file; empty = the cached conversion of `name`
    cache_dir: str = _path()  # empty = $SEGCAM_CACHE or ~/.cache/segcam
    light_profile: str = _path()  # lighter profile the thermal governor may switch to


@dataclass
class InferenceConfig:
    """Backend selection and its settings."""

    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    providers: List[str] = _list(lambda: ["auto"], 8)
    threads: int = _num(0, 1, 64, off=0)  # ORT intra-op threads; 0 = ORT default
    device: Literal["auto", "cpu", "gpu"] = "auto"  # pre/post on GPU when available
    engine: str = _path()  # explicit TensorRT engine; empty = look in engine_dir
    engine_dir: str = _path("engines")
    require_tensorrt: bool = False
    build_engine_on_start: bool = False
    engine_precision: Literal["fp16", "fp32"] = "fp16"  # TensorRT engine to look for / build
    engine_workspace_mib: int = _num(1024, 16, 65536)  # TensorRT builder workspace pool


@dataclass
class RefineConfig:
    """Mask refinement between inference and compositing."""

    threshold: float = _num(0.5, 0.0, 1.0)
    soft: bool = True  # keep a soft (0..1) mask; False = hard threshold
    feather: int = _num(-1, 0, 255, off=-1)  # edge blur radius at frame size; 0 = off; -1 auto
    # uncertainty-weighted temporal smoothing strength 0..1; 0 = off
    smoothing: float = _num(0.6, 0.0, 1.0)
    infer_every: int = _num(1, 1, 1000)  # run the model every Nth frame, reuse the mask between
    # drop foreground blobs smaller than this fraction of the frame
    min_blob_area: float = _num(0.0, 0.0, 0.999)
    # auto: guided on GPU stages, bilinear on CPU stages (segcam.refine.resolve_upsample)
    upsample: Literal["auto", "bilinear", "guided"] = "auto"
    guided_radius: int = _num(3, 1, 8)  # guided: window radius in model-resolution pixels
    guided_eps: float = _num(1e-3, 1e-6, 1.0)  # guided: regularisation (larger = smoother)


@dataclass
class BackgroundConfig:
    """What replaces the background."""

    mode: Literal["blur", "color", "image", "video", "none", "overlay"] = "blur"
    color: List[int] = _list(lambda: [0, 177, 64], 3, lo=0, hi=255, min_len=3)  # BGR
    image: str = _path()
    video: str = _path()
    fit: Literal["cover", "fit"] = "cover"
    blur: int = _num(45, 1, 255)  # blur strength (kernel size in px at frame size)


@dataclass
class CompositeConfig:
    """Compositing settings."""

    background: BackgroundConfig = field(default_factory=BackgroundConfig)


@dataclass
class DisplayConfig:
    """Options of display:// outputs."""

    fullscreen: bool = False
    title: str = _text("segcam", 256)


@dataclass
class RecordConfig:
    """How file:// outputs are recorded: writer, crash safety, encoder tuning, segments, budget."""

    recorder: Literal["auto", "gstreamer", "pyav", "opencv"] = "auto"
    flush_interval_s: float = _num(1.0, 0.1, 60.0)  # keyframe + fragment + fsync cadence
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = (
        "ultrafast"  # x264 (PyAV and x264enc)
    )
    threads: int = _num(1, 1, 16)  # encoder threads (PyAV); the pipeline keeps the other cores
    crf: int = _num(23, 0, 51)  # constant quality (x264 CRF; libvpx CRF + 8); lower = better
    bitrate_kbps: int = _num(0, 100, 200_000, off=0)  # 0 = constant quality / ~0.1 bit/pixel
    segment_s: float = _num(0.0, 1.0, 86_400.0, off=0.0)  # new file every N s; 0 = one file
    max_mib: float = _num(0.0, 1.0, 1e9, off=0.0)  # segments' total cap (oldest go); 0 = none
    min_free_mib: float = _num(256.0, 0.0, 1e7)  # free space kept (oldest removed, then stop)


@dataclass
class OutputConfig:
    """Where results go; several URIs may be given."""

    uris: List[str] = _list(lambda: ["none"], 16)
    record_mask: bool = False  # file:// outputs also write <name>.mask.<suffix>
    codec: str = _text("auto", 16)  # auto | h264 | vp9 | vp8 | mp4v | mjpg | a FOURCC (OpenCV)
    record: RecordConfig = field(default_factory=RecordConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)


@dataclass
class PipelineConfig:
    """Runner shape: slots, queue depth, status cadence."""

    slots: int = _num(4, 2, 64)
    queue_depth: int = _num(1, 1, 8)
    status_interval_s: float = _num(5.0, 0.1, 86400.0, off=0.0)
    stop_timeout_s: float = _num(2.0, 0.1, 600.0)
    # OpenCV threads while the pipeline runs; 0 = OpenCV's default
    cv_threads: int = _num(0, 1, 64, off=0)


@dataclass
class CurveConfig:
    """ZeroMQ CURVE authentication and encryption."""

    enabled: bool = False
    server_secret_key: str = _path()  # path to the server's .key_secret file
    authorized_keys_dir: str = _path()  # directory of allowed clients' .key files


@dataclass
class PublishConfig:
    """Mask stream over ZeroMQ PUB."""

    enabled: bool = False
    bind: List[str] = _list(lambda: ["tcp://127.0.0.1:5555"], 16)
    encoding: Literal["raw", "png", "rle"] = "rle"
    values: Literal["probability", "binary"] = "binary"  # rle carries binary masks only
    every_n: int = _num(1, 1, 10000)
    max_fps: float = _num(0.0, 0.01, 1000.0, off=0.0)  # 0 = no cap
    downscale: int = _num(1, 1, 64)  # send masks at 1/N of frame size
    sndhwm: int = _num(2, 1, 100_000)
    nodrop: bool = False  # True: a full subscriber queue makes sends fail (counted) for all
    # ZMTP heartbeat interval; 0 = off (dead peers linger)
    heartbeat_s: float = _num(2.0, 0.1, 3600.0, off=0.0)
    frame_topic: bool = False  # also publish the composed frame as JPEG
    jpeg_quality: int = _num(80, 1, 100)
    telemetry_interval_s: float = _num(1.0, 0.05, 3600.0, off=0.0)
    stream_id: str = _text("", 256)  # empty = hostname
    curve: CurveConfig = field(default_factory=CurveConfig)


@dataclass
class ThermalThresholds:
    """Entry temperatures (deg C) of each heat state."""

    warm: float = _num(70.0, -40.0, 150.0)
    hot: float = _num(80.0, -40.0, 150.0)
    critical: float = _num(90.0, -40.0, 150.0)


@dataclass
class ThermalAction:
    """What the governor does while in a state."""

    infer_every: int = _num(1, 1, 1000)
    fps_cap: float = _num(0.0, 0.1, 1000.0, off=0.0)  # 0 = uncapped
    light_profile: bool = False
    pause: bool = False
    nvpmodel: int = _num(-1, 0, 63, off=-1)  # -1 = leave alone


@dataclass
class ThermalActions:
    """Actions per state."""

    normal: ThermalAction = field(default_factory=ThermalAction)
    warm: ThermalAction = field(default_factory=lambda: ThermalAction(infer_every=2))
    hot: ThermalAction = field(
        default_factory=lambda: ThermalAction(infer_every=3, fps_cap=15.0, light_profile=True)
    )
    critical: ThermalAction = field(
        default_factory=lambda: ThermalAction(infer_every=3, fps_cap=5.0, pause=True)
    )


@dataclass
class ThermalConfig:
    """Temperature sensors and the governor."""

    enabled: bool = True
    sensor: Literal["auto", "jtop", "sysfs", "none"] = "auto"
    sysfs_root: str = _path("/")
    interval_s: float = _num(1.0, 0.05, 3600.0)
    # a sensor read slower than this is reported and skipped
    read_timeout_s: float = _num(2.0, 0.05, 600.0)
    sensors: List[str] = _list(lambda: ["cpu", "gpu", "soc", "tj"], 32)
    thresholds: ThermalThresholds = field(default_factory=ThermalThresholds)
    hysteresis: float = _num(5.0, 0.0, 50.0)
    pause_mode: Literal["last_mask", "background"] = "last_mask"
    allow_nvpmodel: bool = False
    actions: ThermalActions = field(default_factory=ThermalActions)


@dataclass
class ServiceConfig:
    """systemd integration."""

    watchdog: bool = True
    state_dir: str = _path("/var/lib/segcam")


@dataclass
class LoggingConfig:
    """Log level and format."""

    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass
class StreamInput:
    """One entry of ``inputs:``: a camera or file of a multi-input run.

    Only ``uri`` is needed. ``outputs``, ``background`` (keys of composite.background),
    ``refine`` (keys of refine) and ``input`` (capture keys of input: width, height, fps,
    fourcc, loop, realtime, flip, reconnect) replace the top-level values they name; what
    an entry leaves out comes from the top level. ``{id}`` in an output URI is replaced by
    the stream id, so one top-level ``file://rec-{id}.mp4`` records every stream apart.
    """

    uri: str = _text("", MAX_STRING)
    id: str = _text("", 64)  # stream id on the mask stream and in status; empty = stream<N>
    # higher keeps its rate longer when streams.shed is "priority"
    priority: int = _num(0, -1000, 1000)
    outputs: Optional[List[str]] = None
    background: Any = None  # a mapping of composite.background keys
    refine: Any = None  # a mapping of refine keys
    input: Any = None  # a mapping of input keys (not uri)


@dataclass
class StreamsConfig:
    """How several inputs share one process (used when ``inputs:`` lists more than one)."""

    on_error: Literal["continue", "stop"] = "continue"  # a failed stream: others go on?
    shed: Literal["all", "priority"] = "all"  # thermal actions: on every stream, or the
    # lower-priority streams first (warm: all but the highest priority; hotter: all)
    # frames of different streams in one inference call (1 = no batching)
    batch_max: int = _num(4, 1, 64)
    # how long the first frame of a batch waits for others
    batch_wait_ms: float = _num(4.0, 0.0, 100.0)


@dataclass
class Config:
    """The whole segcam configuration."""

    input: InputConfig = field(default_factory=InputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    thermal: ThermalConfig = field(default_factory=ThermalConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    inputs: List[StreamInput] = field(default_factory=list)  # several inputs in one process
    streams: StreamsConfig = field(default_factory=StreamsConfig)
    source_path: str = ""  # file the config was loaded from (not a YAML key)


# --------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, List):
        return f"a list of {_type_name(get_args(tp)[0]).replace('an ', '').replace('a ', '')}s"
    if origin is Union:
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _where(path: str, node: Optional[yaml.Node], source: str) -> str:
    where = path or "<top level>"
    if node is not None:
        where += f" (line {node.start_mark.line + 1}"
        where += f" of {source})" if source else ")"
    elif source:
        where += f" (in {source})"
    return where


_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = 6
_REPR.maxlevel = 3


def short_repr(value: Any) -> str:
    """``repr(value)`` cut to a readable length (cheap even for huge or nested values)."""
    return _REPR.repr(value)


def _convert(
    tp: Any,
    value: Any,
    node: Optional[yaml.Node],
    path: str,
    source: str,
    bounds: Optional[Bounds] = None,
) -> Any:
    """Check ``value`` against type ``tp`` and ``bounds``; return the converted value or raise."""
    origin = get_origin(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(
            f"{_where(path, node, source)}: expected {expected}, got {short_repr(value)}",
            "fix the value or remove the key to use the default",
        )

    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            raise fail("a mapping of keys")
        return _build(tp, value, node, path, source)
    if origin is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, node, path, source, bounds)
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, (dict, list)) or value not in choices:
            near = []
            if isinstance(value, str) and len(value) <= 100:
                near = difflib.get_close_matches(value, [str(c) for c in choices], n=1)
            hint = f"did you mean {near[0]!r}?" if near else "choose one of the listed values"
            raise ConfigError(
                f"{_where(path, node, source)}: expected one of "
                f"{', '.join(repr(c) for c in choices)}, got {short_repr(value)}",
                hint,
            )
        return value
    if origin in (list, List):
        (item_tp,) = get_args(tp)
        if isinstance(value, (str, int, float)) and item_tp is str:
            value = [value]  # a single URI where a list is expected is what users mean
        if not isinstance(value, list):
            raise fail(_type_name(tp))
        max_len = bounds.max_len if bounds and bounds.max_len is not None else MAX_ITEMS
        min_len = bounds.min_len if bounds else 0
        if not min_len <= len(value) <= max_len:
            count = f"{min_len}" if min_len == max_len else f"{min_len} to {max_len}"
            raise fail(f"{count} items")
        item_bounds = None
        if bounds is not None and (bounds.lo is not None or bounds.hi is not None):
            item_bounds = Bounds(lo=bounds.lo, hi=bounds.hi)
        items = []
        child_nodes = node.value if isinstance(node, yaml.SequenceNode) else [None] * len(value)
        for i, (item, child) in enumerate(zip(value, child_nodes)):
            items.append(_convert(item_tp, item, child, f"{path}[{i}]", source, item_bounds))
        return items
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(_type_name(tp))
        if tp is int and not isinstance(value, int):
            raise fail("an integer")
        if isinstance(value, float) and not math.isfinite(value):
            raise fail(f"a finite {'number' if tp is float else 'integer'}")
        if bounds is not None and not bounds.check_number(value):
            raise fail(_range_text(tp, bounds))
        return float(value) if tp is float else value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # `uri: 0` means camera 0
        if not isinstance(value, str):
            raise fail("a string")
        _check_text(value, bounds, fail)
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{path}: unsupported config type {tp!r}")  # pragma: no cover


def _range_text(tp: Any, bounds: Bounds) -> str:
    kind = "an integer" if tp is int else "a number"
    rng = f"{kind} from {_num_text(bounds.lo)} to {_num_text(bounds.hi)}"
    return rng if bounds.off is None else f"{_num_text(bounds.off)} or {rng}"


def _check_text(value: str, bounds: Optional[Bounds], fail: Any) -> None:
    max_len = bounds.max_len if bounds and bounds.max_len is not None else MAX_STRING
    if len(value) > max_len:
        raise fail(f"at most {max_len} characters (got {len(value)})")
    if "\x00" in value:
        raise fail("text without NUL characters")
    if bounds is not None and bounds.path:
        longest = max(len(part.encode("utf-8", "surrogateescape")) for part in value.split("/"))
        if longest > MAX_NAME:
            raise fail(f"a path whose every name is at most {MAX_NAME} bytes")


def _mapping_nodes(node: Optional[yaml.Node]) -> Dict[str, Tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


@functools.lru_cache(maxsize=None)
def _schema(cls: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(type hints, fields by name) of a config dataclass, evaluated once."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source_path"}
    return get_type_hints(cls), fields


def _build(cls: Any, data: Dict[str, Any], node: Optional[yaml.Node], path: str, source: str):
    hints, fields = _schema(cls)
    names = list(fields)
    nodes = _mapping_nodes(node)
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        name = key if isinstance(key, str) else short_repr(key)
        key_node, value_node = nodes.get(name, (None, None))
        sub = f"{path}.{name[:80]}" if path else name[:80]
        if name not in fields:
            near = []
            if len(name) <= 100:
                near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f"did you mean '{near[0]}'?" if near else f"known keys: {', '.join(names)}"
            raise ConfigError(f"{_where(sub, key_node, source)}: unknown key", hint)
        bounds = fields[name].metadata.get("bounds")
        kwargs[name] = _convert(hints[name], value, value_node, sub, source, bounds)
    return cls(**kwargs)


def _cross_checks(cfg: Config) -> None:
    t = cfg.thermal.thresholds
    if not (t.warm < t.hot < t.critical):
        raise ConfigError(
            f"thermal.thresholds: expected warm < hot < critical, got "
            f"{t.warm} / {t.hot} / {t.critical}",
            "order the thresholds from coolest to hottest",
        )
    bg = cfg.composite.background
    if bg.mode == "image" and not bg.image:
        raise ConfigError(
            "composite.background.image: mode is 'image' but no image is given",
            "set composite.background.image to a picture file",
        )
    if bg.mode == "video" and not bg.video:
        raise ConfigError(
            "composite.background.video: mode is 'video' but no video is given",
            "set composite.background.video to a video file",
        )
    if cfg.publish.curve.enabled and not cfg.publish.curve.server_secret_key:
        raise ConfigError(
            "publish.curve.server_secret_key: CURVE is enabled but no server key is set",
            "run `segcam keys generate` and point this key at the .key_secret file",
        )
    from segcam.recording.formats import check_codec_name

    try:
        check_codec_name(cfg.output.codec)
    except OutputError as exc:
        raise ConfigError(exc.message, exc.hint) from None
    if cfg.publish.encoding == "rle" and cfg.publish.values != "binary":
        raise ConfigError(
            f"publish.values: encoding 'rle' carries binary masks only, got {cfg.publish.values!r}",
            "set publish.values=binary, or publish.encoding=png (or raw) for probabilities",
        )
    if cfg.inputs:
        stream_configs(cfg)  # every entry must resolve to a config that runs


# YAML 1.2 reads 1e-3 and 2E6 as numbers; YAML 1.1 (PyYAML) needs a dot and reads them as
# strings, which surprises everyone who writes `--set refine.threshold=5e-1`.
_FLOAT_12 = re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$")


try:  # libyaml's scanner and parser: about 8x faster than PyYAML's pure-Python ones
    from yaml._yaml import CParser as _CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _CParser = None


if _CParser is not None:

    class _SafeBase(yaml.composer.Composer, _CParser, yaml.constructor.SafeConstructor,
                    yaml.resolver.Resolver):  # fmt: skip
        """PyYAML's SafeLoader with libyaml's parser below PyYAML's (Python) composer,
        so that nodes are composed where the depth limit below can see them."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            yaml.composer.Composer.__init__(self)

else:  # pragma: no cover
    _SafeBase = yaml.SafeLoader  # type: ignore[misc,assignment]


class _BoundedLoader(_SafeBase):  # type: ignore[misc,valid-type]
    """SafeLoader with hard limits: nesting depth, characters per number, and every
    failure of a tag's constructor (``!!bool maybe``, ``!!int abc``) as a YAML error."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - PyYAML hook
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nesting deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Any) -> Any:  # noqa: D102 - PyYAML hook
        try:
            return super().construct_document(node)
        except yaml.YAMLError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError, IndexError, AttributeError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value ({type(exc).__name__})", node.start_mark
            ) from None

    def construct_object(self, node: Any, deep: bool = False) -> Any:  # noqa: D102
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, KeyError, TypeError, OverflowError, IndexError, AttributeError):
            value = node.value if isinstance(node, yaml.ScalarNode) else "..."
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read {short_repr(value)} as {node.tag.rsplit(':', 1)[-1]}",
                node.start_mark,
            ) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # noqa: D102
        # PyYAML keeps the last of two equal keys; in a config that silently drops a section.
        first: Dict[Any, int] = {}
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            if key_node.value in first:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {short_repr(key_node.value)} appears twice (first on line "
                    f"{first[key_node.value] + 1}): the second would replace the first; "
                    "merge them",
                    key_node.start_mark,
                )
            first[key_node.value] = key_node.start_mark.line
        return super().construct_mapping(node, deep)

    def _bounded_number(self, node: Any) -> None:
        if len(str(node.value)) > MAX_NUMBER_CHARS:
            raise yaml.constructor.ConstructorError(
                None, None, f"a number longer than {MAX_NUMBER_CHARS} characters", node.start_mark
            )

    def construct_bounded_int(self, node: Any) -> int:
        """An int scalar of at most MAX_NUMBER_CHARS characters (any base)."""
        self._bounded_number(node)
        return super().construct_yaml_int(node)

    def construct_bounded_float(self, node: Any) -> float:
        """A float scalar of at most MAX_NUMBER_CHARS characters."""
        self._bounded_number(node)
        return super().construct_yaml_float(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_bounded_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_bounded_float)
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def _compose(text: str, source: str) -> Tuple[Any, Optional[yaml.Node]]:
    """Parse YAML text once with the bounded loader: (plain data, composed node)."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise ConfigError(
            f"{source or 'config'}: {len(text)} characters, more than the "
            f"{MAX_DOCUMENT_BYTES} a config may have",
            "a segcam config is a few KiB; check that this is the right file",
        )
    try:
        return _load_yaml(text, source)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{source or 'config'}: invalid YAML{_yaml_problem(exc)}",
            "check indentation and quoting on that line",
        ) from None


def _load_yaml(text: str, source: str) -> Tuple[Any, Optional[yaml.Node]]:
    """(data, node) from the bounded loader; raises yaml.YAMLError or ConfigError."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        data = None
        if node is not None:
            _check_expanded_size(node, source)
            data = loader.construct_document(node)
    finally:
        loader.dispose()
    return data, node


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """`` at line L, column C: problem`` of a YAML error, cut to a readable length."""
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{where}: {str(problem)[:200]}"


def _check_expanded_size(root: yaml.Node, source: str) -> None:
    """Refuse documents whose aliases expand to more than MAX_NODES nodes, or loop."""
    sizes: Dict[int, Optional[int]] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            known = sizes[key]
            if known is None:
                raise ConfigError(
                    f"{source or 'config'}: an alias refers to the node that contains it "
                    f"(line {node.start_mark.line + 1})",
                    "remove the recursive alias",
                )
            return known
        sizes[key] = None
        if isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            n = 1
        n = min(n, MAX_NODES + 1)
        sizes[key] = n
        return n

    if size(root) > MAX_NODES:
        raise ConfigError(
            f"{source or 'config'}: aliases expand to more than {MAX_NODES} values",
            "a segcam config is small; remove the anchors/aliases that multiply it",
        )


def parse_config(text: str, source: str = "") -> Config:
    """Validate YAML text into a :class:`Config` (no overrides)."""
    data, node = _compose(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source or 'config'}: the top level must be a mapping of sections")
    cfg = _build(Config, data, node, "", source)
    _cross_checks(cfg)
    cfg.source_path = source
    return cfg


def _parse_override(text: str) -> Tuple[List[str], Any]:
    if "=" not in text:
        raise ConfigError(
            f"--set {short_repr(text)}: expected KEY=VALUE",
            "for example --set refine.threshold=0.6",
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"--set {short_repr(text)}: empty key", "for example --set refine.threshold=0.6"
        )
    if len(text) > MAX_STRING * 4:
        raise ConfigError(f"--set {short_repr(text)}: longer than {MAX_STRING * 4} characters")
    if not raw.strip():
        return key.split("."), ""
    try:
        value, _ = _load_yaml(raw, "")
    except (yaml.scanner.ScannerError, yaml.parser.ParserError):
        value = raw  # text that is not YAML (`a: b: c`) is taken as a string; typing checks it
    except yaml.YAMLError as exc:  # a tag that does not fit its value, an overlong number
        raise ConfigError(
            f"--set {key}: invalid value{_yaml_problem(exc)}",
            "quote the value to pass it as text, or fix it",
        ) from None
    except ConfigError as exc:
        raise ConfigError(f"--set {key}: {exc.message}", exc.hint) from None
    return key.split("."), value


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Merge ``a.b=value`` overrides into a raw config mapping (values via safe_load)."""
    for text in overrides:
        parts, value = _parse_override(text)
        cursor = data
        for part in parts[:-1]:
            nxt = cursor.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                cursor[part] = nxt
            cursor = nxt
        cursor[parts[-1]] = value
    return data


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """Load and validate a config file (default: built-in defaults) plus overrides.

    Raises :class:`ConfigError` naming the key path, the line and what was expected.
    """
    text = ""
    source = ""
    if path:
        p = resolve_config_path(path)
        source = str(p)
        try:
            with open(p, "rb") as fh:
                raw = fh.read(MAX_DOCUMENT_BYTES + 1)
            if len(raw) > MAX_DOCUMENT_BYTES:
                raise ConfigError(
                    f"config file {source} is larger than {MAX_DOCUMENT_BYTES} bytes",
                    "a segcam config is a few KiB; check that this is the right file",
                )
            text = raw.decode("utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"config file {source} does not exist",
                "pass --config with an existing file or a packaged preset ("
                + ", ".join(preset_names())
                + "; `segcam config list`), or omit it to use the defaults",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {source}: {exc}") from None
    data, node = _compose(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source or 'config'}: the top level must be a mapping of sections")
    if overrides:
        # Overrides have no line; validate them on their own first so errors name --set.
        alone = apply_overrides({}, overrides)  # its own errors already name --set
        try:
            _build(Config, alone, None, "", "")
        except ConfigError as exc:
            raise ConfigError(f"--set {exc.message}", exc.hint) from None
        data = apply_overrides(data, overrides)
    cfg = _build(Config, data, node, "", source)
    _cross_checks(cfg)
    cfg.source_path = source
    return cfg


@dataclass
class StreamConfig:
    """One input of a run: its stream id, priority and the whole config it runs with."""

    id: str
    priority: int
    cfg: Config


def _merged(cls: Any, base: Any, extra: Any, prefix: str, key: str, source: str) -> Any:
    """``base`` (a dataclass) with the keys of mapping ``extra`` replaced, validated.

    ``key`` is the top-level section (``refine``) whose value ranges apply; errors name
    the entry's own path (``inputs[1].refine.threshold``).
    """
    if extra is None:
        return copy.deepcopy(base)
    if not isinstance(extra, dict):
        raise ConfigError(
            f"{_where(prefix + key, None, source)}: expected a mapping of keys, got {extra!r}",
            "give the keys to change, e.g. {threshold: 0.6}",
        )
    data = dataclasses.asdict(base)
    data.update(extra)
    try:
        return _build(cls, data, None, key, "")
    except ConfigError as exc:
        where = f" (in {source})" if source else ""
        raise ConfigError(f"{prefix}{exc.message}{where}", exc.hint) from None


def stream_configs(cfg: Config) -> List[StreamConfig]:
    """The configs of every input: one per ``inputs:`` entry, or ``input`` alone.

    Each entry's own outputs, background, refine and input keys replace the top-level
    ones; ``{id}`` in output URIs becomes the stream id; with several inputs each
    stream's ``publish.stream_id`` is its id. Raises ConfigError for an entry without a
    URI, duplicate ids, bad keys, or two streams writing one output.
    """
    if not cfg.inputs:
        return [StreamConfig(cfg.publish.stream_id, 0, cfg)]
    source = cfg.source_path
    multi = len(cfg.inputs) > 1
    out: List[StreamConfig] = []
    seen_ids: Dict[str, int] = {}
    for i, entry in enumerate(cfg.inputs):
        path = f"inputs[{i}]"
        if not entry.uri:
            raise ConfigError(
                f"{_where(path + '.uri', None, source)}: every input needs a uri",
                "e.g. inputs: [{uri: 0, id: door}, {uri: clip.mp4, id: replay}]",
            )
        sid = entry.id or (f"stream{i}" if multi else cfg.publish.stream_id)
        if sid and sid in seen_ids:
            raise ConfigError(
                f"{_where(path + '.id', None, source)}: stream id {sid!r} is also "
                f"inputs[{seen_ids[sid]}]'s",
                "give every input its own id",
            )
        seen_ids[sid] = i
        if entry.input is not None and isinstance(entry.input, dict) and "uri" in entry.input:
            raise ConfigError(
                f"{_where(path + '.input.uri', None, source)}: set the entry's uri instead",
                f"{path}.uri",
            )
        one = copy.deepcopy(cfg)
        one.inputs = []
        prefix = path + "."
        one.input = _merged(InputConfig, cfg.input, entry.input, prefix, "input", source)
        one.input.uri = entry.uri
        one.refine = _merged(RefineConfig, cfg.refine, entry.refine, prefix, "refine", source)
        one.composite.background = _merged(
            BackgroundConfig,
            cfg.composite.background,
            entry.background,
            prefix,
            "composite.background",
            source,
        )
        uris = list(entry.outputs) if entry.outputs is not None else list(cfg.output.uris)
        one.output.uris = [u.replace("{id}", sid) for u in uris]
        if multi:
            one.publish.stream_id = sid
            one.output.display.title = f"{cfg.output.display.title} {sid}"  # one window each
        try:
            _cross_checks(one)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc.message}", exc.hint) from None
        out.append(StreamConfig(sid, entry.priority, one))
    _check_shared_outputs(out)
    return out


def _check_shared_outputs(streams: List[StreamConfig]) -> None:
    """Two streams must not write one file or serve one port: say which and how to fix."""
    owner: Dict[str, str] = {}
    for st in streams:
        for uri in st.cfg.output.uris:
            key = str(uri).strip()
            if key in ("", "none", "null", "none://") or key.startswith("display://"):
                continue  # each stream opens its own window (titled with its id)
            if key in owner and owner[key] != st.id:
                raise ConfigError(
                    f"output {key} is used by streams {owner[key]!r} and {st.id!r}",
                    "give each input its own outputs, or put {id} in the URI (file://rec-{id}.mp4)",
                )
            owner[key] = st.id


def config_to_dict(cfg: Config) -> Dict[str, Any]:
    """Plain-dict view of a config (for --stats-json, doctor and diffs on reload)."""
    out = dataclasses.asdict(cfg)
    out.pop("source_path", None)
    return out


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """SafeDumper that quotes strings the loader would read as numbers (``'1e3'``)."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def dump_config(cfg: Config) -> str:
    """The effective config as YAML (reads back as the same config)."""
    return yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False)


def model_cache_dir(cfg: Config) -> Path:
    """The model cache of this config (``model.cache_dir`` or the default)."""
    return Path(cfg.model.cache_dir).expanduser() if cfg.model.cache_dir else default_cache_dir()


# ------------------------------------------------------------- helpers for other YAML files


def parse_yaml_dataclass(cls: Any, text: str, source: str = "") -> Tuple[Any, Optional[yaml.Node]]:
    """Validate YAML text into dataclass ``cls`` with the same precise errors as configs.

    Used for other YAML files that follow this module's rules (model profiles). Returns
    the instance and the composed YAML node so callers can point further checks at a line.
    """
    data, node = _compose(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source or 'YAML'}: the top level must be a mapping of keys")
    return _build(cls, data, node, "", source), node


def yaml_key_where(node: Optional[yaml.Node], path: str, source: str = "") -> str:
    """``path (line N of source)`` for a dotted key path inside a composed YAML mapping."""
    cursor = node
    found: Optional[yaml.Node] = None
    for part in path.split("."):
        entry = _mapping_nodes(cursor).get(part)
        if entry is None:
            found = None
            break
        found, cursor = entry[1], entry[1]
    return _where(path, found, source)
