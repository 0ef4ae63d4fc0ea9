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
import os
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

from segcam.errors import ConfigError

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


# --------------------------------------------------------------------------- sections


@dataclass
class ReconnectConfig:
    """Backoff for lost cameras and streams."""

    initial_s: float = 0.5
    max_s: float = 10.0
    max_attempts: int = 0  # 0 = retry forever


@dataclass
class InputConfig:
    """Where frames come from (jetson-utils style URI) and how to capture them."""

    uri: str = "demo"
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    fourcc: str = ""  # e.g. MJPG for USB cameras; empty = driver default
    loop: bool = False  # files: start again at the end
    realtime: bool = False  # files/images: pace at their fps (and drop) instead of pipeline pace
    flip: Literal["none", "horizontal", "vertical", "both"] = "none"
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)


@dataclass
class ModelConfig:
    """Which model to run and where converted models are cached."""

    name: str = "mediapipe-selfie"  # a profile in configs/models/ (or a path to a profile YAML)
    path: str = ""  # explicit ONNX file; empty = the cached conversion of `name`
    cache_dir: str = ""  # empty = $SEGCAM_CACHE or ~/.cache/segcam
    light_profile: str = ""  # lighter profile the thermal governor may switch to


@dataclass
class InferenceConfig:
    """Backend selection and its settings."""

    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    providers: List[str] = field(default_factory=lambda: ["auto"])
    threads: int = 0  # ORT intra-op threads; 0 = ORT default
    device: Literal["auto", "cpu", "gpu"] = "auto"  # pre/post on GPU when available
    engine: str = ""  # explicit TensorRT engine; empty = look in engine_dir
    engine_dir: str = "engines"
    require_tensorrt: bool = False
    build_engine_on_start: bool = False
    engine_precision: Literal["fp16", "fp32"] = "fp16"  # TensorRT engine to look for / build
    engine_workspace_mib: int = 1024  # TensorRT builder workspace pool


@dataclass
class RefineConfig:
    """Mask refinement between inference and compositing."""

    threshold: float = 0.5
    soft: bool = True  # keep a soft (0..1) mask; False = hard threshold
    feather: int = 3  # edge blur radius in pixels at frame size; 0 = off
    smoothing: float = 0.6  # uncertainty-weighted temporal smoothing strength 0..1; 0 = off
    infer_every: int = 1  # run the model every Nth frame, reuse the mask between
    min_blob_area: float = 0.0  # drop foreground blobs smaller than this fraction of the frame


@dataclass
class BackgroundConfig:
    """What replaces the background."""

    mode: Literal["blur", "color", "image", "video", "none", "overlay"] = "blur"
    color: List[int] = field(default_factory=lambda: [0, 177, 64])  # BGR
    image: str = ""
    video: str = ""
    fit: Literal["cover", "fit"] = "cover"
    blur: int = 45  # blur strength (kernel size in px at frame size)


@dataclass
class CompositeConfig:
    """Compositing settings."""

    background: BackgroundConfig = field(default_factory=BackgroundConfig)


@dataclass
class DisplayConfig:
    """Options of display:// outputs."""

    fullscreen: bool = False
    title: str = "segcam"


@dataclass
class OutputConfig:
    """Where results go; several URIs may be given."""

    uris: List[str] = field(default_factory=lambda: ["none"])
    record_mask: bool = False  # file:// outputs also write <name>.mask.mp4
    codec: str = "mp4v"
    display: DisplayConfig = field(default_factory=DisplayConfig)


@dataclass
class PipelineConfig:
    """Runner shape: slots, queue depth, status cadence."""

    slots: int = 4
    queue_depth: int = 1
    status_interval_s: float = 5.0
    stop_timeout_s: float = 2.0
    cv_threads: int = 0  # OpenCV threads while the pipeline runs; 0 = OpenCV's default


@dataclass
class CurveConfig:
    """ZeroMQ CURVE authentication and encryption."""

    enabled: bool = False
    server_secret_key: str = ""  # path to the server's .key_secret file
    authorized_keys_dir: str = ""  # directory of allowed clients' .key files


@dataclass
class PublishConfig:
    """Mask stream over ZeroMQ PUB."""

    enabled: bool = False
    bind: List[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5555"])
    encoding: Literal["raw", "png", "rle"] = "rle"
    values: Literal["probability", "binary"] = "binary"  # rle carries binary masks only
    every_n: int = 1
    max_fps: float = 0.0  # 0 = no cap
    downscale: int = 1  # send masks at 1/N of frame size
    sndhwm: int = 2
    nodrop: bool = False  # True: a full subscriber queue makes sends fail (counted) for all
    heartbeat_s: float = 2.0  # ZMTP heartbeat interval; 0 = off (dead peers linger)
    frame_topic: bool = False  # also publish the composed frame as JPEG
    jpeg_quality: int = 80
    telemetry_interval_s: float = 1.0
    stream_id: str = ""  # empty = hostname
    curve: CurveConfig = field(default_factory=CurveConfig)


@dataclass
class ThermalThresholds:
    """Entry temperatures (deg C) of each heat state."""

    warm: float = 70.0
    hot: float = 80.0
    critical: float = 90.0


@dataclass
class ThermalAction:
    """What the governor does while in a state."""

    infer_every: int = 1
    fps_cap: float = 0.0
    light_profile: bool = False
    pause: bool = False
    nvpmodel: int = -1  # -1 = leave alone


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
    sysfs_root: str = "/"
    interval_s: float = 1.0
    read_timeout_s: float = 2.0  # a sensor read slower than this is reported and skipped
    sensors: List[str] = field(default_factory=lambda: ["cpu", "gpu", "soc", "tj"])
    thresholds: ThermalThresholds = field(default_factory=ThermalThresholds)
    hysteresis: float = 5.0
    pause_mode: Literal["last_mask", "background"] = "last_mask"
    allow_nvpmodel: bool = False
    actions: ThermalActions = field(default_factory=ThermalActions)


@dataclass
class ServiceConfig:
    """systemd integration."""

    watchdog: bool = True
    state_dir: str = "/var/lib/segcam"


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

    uri: str = ""
    id: str = ""  # stream id on the mask stream and in status; empty = stream<N>
    priority: int = 0  # higher keeps its rate longer when streams.shed is "priority"
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
    batch_max: int = 4  # frames of different streams in one inference call (1 = no batching)
    batch_wait_ms: float = 4.0  # how long the first frame of a batch waits for others


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


# Range checks that types alone cannot express: key path -> (predicate, expectation).
_RULES: Dict[str, Tuple[Any, str]] = {
    "input.width": (lambda v: v > 0, "a positive integer"),
    "input.height": (lambda v: v > 0, "a positive integer"),
    "input.fps": (lambda v: v > 0, "a positive number"),
    "refine.threshold": (lambda v: 0.0 <= v <= 1.0, "a number between 0 and 1"),
    "refine.feather": (lambda v: v >= 0, "0 or more pixels"),
    "refine.smoothing": (lambda v: 0.0 <= v <= 1.0, "a number between 0 and 1"),
    "refine.infer_every": (lambda v: v >= 1, "an integer of 1 or more"),
    "refine.min_blob_area": (lambda v: 0.0 <= v < 1.0, "a fraction of the frame in [0, 1)"),
    "composite.background.color": (
        lambda v: len(v) == 3 and all(0 <= c <= 255 for c in v),
        "three integers 0-255 (B, G, R)",
    ),
    "composite.background.blur": (lambda v: v >= 1, "an integer of 1 or more"),
    "pipeline.slots": (lambda v: v >= 2, "an integer of 2 or more"),
    "pipeline.queue_depth": (lambda v: 1 <= v <= 8, "an integer from 1 to 8"),
    "pipeline.stop_timeout_s": (lambda v: v > 0, "a positive number of seconds"),
    "pipeline.cv_threads": (lambda v: v >= 0, "0 (OpenCV's default) or a thread count"),
    "publish.every_n": (lambda v: v >= 1, "an integer of 1 or more"),
    "publish.max_fps": (lambda v: v >= 0, "0 (no cap) or a positive number"),
    "publish.downscale": (lambda v: v >= 1, "an integer of 1 or more"),
    "publish.sndhwm": (lambda v: v >= 1, "an integer of 1 or more"),
    "publish.heartbeat_s": (lambda v: v >= 0, "0 (off) or a positive number of seconds"),
    "publish.jpeg_quality": (lambda v: 1 <= v <= 100, "an integer from 1 to 100"),
    "thermal.interval_s": (lambda v: v > 0, "a positive number of seconds"),
    "thermal.read_timeout_s": (lambda v: v > 0, "a positive number of seconds"),
    "thermal.hysteresis": (lambda v: v >= 0, "0 or more degrees"),
    "inference.threads": (lambda v: v >= 0, "0 (default) or a positive integer"),
    "inference.engine_workspace_mib": (lambda v: v >= 16, "at least 16 (MiB)"),
    "streams.batch_max": (lambda v: 1 <= v <= 64, "an integer from 1 to 64"),
    "streams.batch_wait_ms": (lambda v: 0 <= v <= 100, "0 to 100 milliseconds"),
}


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


def _convert(tp: Any, value: Any, node: Optional[yaml.Node], path: str, source: str) -> Any:
    """Check ``value`` against type ``tp``; return the converted value or raise."""
    origin = get_origin(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(
            f"{_where(path, node, source)}: expected {expected}, got {value!r}",
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
        return _convert(args[0], value, node, path, source)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f"did you mean {near[0]!r}?" if near else "choose one of the listed values"
            raise ConfigError(
                f"{_where(path, node, source)}: expected one of "
                f"{', '.join(repr(c) for c in choices)}, got {value!r}",
                hint,
            )
        return value
    if origin in (list, List):
        (item_tp,) = get_args(tp)
        if isinstance(value, (str, int, float)) and item_tp is str:
            value = [value]  # a single URI where a list is expected is what users mean
        if not isinstance(value, list):
            raise fail(_type_name(tp))
        items = []
        child_nodes = node.value if isinstance(node, yaml.SequenceNode) else [None] * len(value)
        for i, (item, child) in enumerate(zip(value, child_nodes)):
            items.append(_convert(item_tp, item, child, f"{path}[{i}]", source))
        return items
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `uri: 0` means camera 0
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{path}: unsupported config type {tp!r}")  # pragma: no cover


def _mapping_nodes(node: Optional[yaml.Node]) -> Dict[str, Tuple[yaml.Node, yaml.Node]]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


def _build(cls: Any, data: Dict[str, Any], node: Optional[yaml.Node], path: str, source: str):
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source_path"]
    nodes = _mapping_nodes(node)
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        key_node, value_node = nodes.get(str(key), (None, None))
        sub = f"{path}.{key}" if path else str(key)
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f"did you mean '{near[0]}'?" if near else f"known keys: {', '.join(names)}"
            raise ConfigError(f"{_where(sub, key_node, source)}: unknown key", hint)
        value = _convert(hints[key], value, value_node, sub, source)
        rule = _RULES.get(sub)
        if rule is not None and value is not None and not rule[0](value):
            raise ConfigError(
                f"{_where(sub, value_node, source)}: expected {rule[1]}, got {value!r}",
                "fix the value or remove the key to use the default",
            )
        kwargs[key] = value
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
    if cfg.publish.encoding == "rle" and cfg.publish.values != "binary":
        raise ConfigError(
            f"publish.values: encoding 'rle' carries binary masks only, got {cfg.publish.values!r}",
            "set publish.values=binary, or publish.encoding=png (or raw) for probabilities",
        )
    if cfg.inputs:
        stream_configs(cfg)  # every entry must resolve to a config that runs


def _compose(text: str, source: str) -> Tuple[Any, Optional[yaml.Node]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{source or 'config'}: invalid YAML{where}: {problem}",
            "check indentation and quoting on that line",
        ) from None
    return data, node


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
            f"--set {text!r}: expected KEY=VALUE", "for example --set refine.threshold=0.6"
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key", "for example --set refine.threshold=0.6")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # an unparsable value is taken as a plain string; typing then checks it
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
            text = p.read_text(encoding="utf-8")
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
        try:
            _build(Config, apply_overrides({}, overrides), None, "", "")
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


def dump_config(cfg: Config) -> str:
    """The effective config as YAML."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


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
