"""Model profiles: how to feed a segmentation model and how to read its answer.

A profile is a small YAML file (``configs/models/<name>.yaml``) that an integrator writes
for their own ONNX model. It says which input to feed (name, layout, size, colour order,
normalisation, dtype) and what the chosen output means (``output_kind``). The loader
validates every key with the same line-precise errors as the main config.

Normalisation: for a uint8 pixel value ``x`` (0..255) in the profile's colour order, the
model sees ``(x * scale - mean[c]) / std[c]`` for channel ``c``. Common conventions:

=====================  =========  ==========================  ==========================
convention             scale      mean                        std
=====================  =========  ==========================  ==========================
[0, 1]                 1/255      0                           1
[-1, 1]                1/255      0.5                         0.5
ImageNet (RGB)         1/255      0.485, 0.456, 0.406         0.229, 0.224, 0.225
=====================  =========  ==========================  ==========================

``scale`` may be written as a fraction string (``"1/255"``); ``mean`` and ``std`` as a
list of one number (all channels) or three (per channel, in the profile's colour order).

Resampling: ``resample`` names how the frame is resized to the model input, as the model
was trained (:mod:`segcam.inference.resample`): ``bilinear_half_pixel`` (cv2.resize, the
default), ``bilinear_top_left`` (MediaPipe's ImageToTensor) or ``bilinear_align_corners``.

Output kinds:

- ``probability``: one channel, already in [0, 1] (sigmoid inside the model); clipped.
- ``logits``: one channel of raw scores; sigmoid is applied.
- ``multiclass``: C channels along ``class_axis``; softmax over classes (unless
  ``scores: probabilities`` says the model already did it), and the foreground probability
  is the sum over ``foreground_classes``.
- ``matte``: one channel alpha matte in [0, 1]; clipped.

Recurrent models (e.g. Robust Video Matting) declare their extra inputs under
``state_inputs``: each has a name, an initial shape and fill value, and the output that
feeds it on the next call (empty for a constant input such as RVM's
``downsample_ratio``). The ONNX Runtime backend carries these between calls.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import List, Literal, Tuple, Union

import numpy as np

from segcam.config import configs_dir, parse_yaml_dataclass, yaml_key_where
from segcam.errors import ConfigError

Layout = Literal["NCHW", "NHWC"]
Resample = Literal["bilinear_half_pixel", "bilinear_top_left", "bilinear_align_corners"]
OutputKind = Literal["probability", "logits", "multiclass", "matte"]


@dataclass
class StateInput:
    """An extra model input carried between calls (recurrent state) or held constant."""

    name: str = ""
    shape: List[int] = field(default_factory=lambda: [1])  # initial shape
    dtype: Literal["float32", "float16"] = "float32"
    value: float = 0.0  # initial fill value (constant inputs keep it)
    output: str = ""  # model output that becomes this input next call; "" = constant


@dataclass
class ModelProfile:
    """How to feed a model and read its answer (see the module docstring)."""

    name: str = ""
    model_id: str = ""  # identifies the model in mask headers; "" = name
    description: str = ""
    source: str = ""  # where the model comes from (URL, paper, package)
    licence: str = ""
    input_name: str = ""  # "" = the model's only (non-state) input
    layout: Layout = "NCHW"
    width: int = 0
    height: int = 0
    color_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1.0 / 255.0
    mean: List[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    dtype: Literal["float32", "float16"] = "float32"
    resample: Resample = "bilinear_half_pixel"  # resize convention (segcam.inference.resample)
    output_name: str = ""  # "" = use output_index
    output_index: int = 0  # position among the model's outputs; -1 = last
    output_kind: OutputKind = "probability"
    scores: Literal["logits", "probabilities"] = "logits"  # multiclass only
    foreground_classes: List[int] = field(default_factory=lambda: [1])  # multiclass only
    num_classes: int = 0  # multiclass: expected number of classes; 0 = any
    class_axis: int = 1  # multiclass: axis of the classes in the output (1 NCHW, -1 NHWC)
    state_inputs: List[StateInput] = field(default_factory=list)
    path: str = ""  # file the profile was loaded from (not a YAML key)

    @property
    def input_shape(self) -> Tuple[int, int, int, int]:
        """Batch-1 input shape in the profile's layout."""
        if self.layout == "NCHW":
            return (1, 3, self.height, self.width)
        return (1, self.height, self.width, 3)

    @property
    def np_dtype(self) -> np.dtype:
        """numpy dtype of the input tensor."""
        return np.dtype(np.float16 if self.dtype == "float16" else np.float32)

    @property
    def size(self) -> Tuple[int, int]:
        """(width, height) of the model input, as OpenCV wants it."""
        return (self.width, self.height)

    def identity(self) -> str:
        """The model id that goes into mask headers."""
        return self.model_id or self.name


@dataclass
class _ProfileFile(ModelProfile):
    """The YAML view of a profile: ``scale`` may be a fraction string such as "1/255"."""

    scale: str = "1/255"  # type: ignore[assignment]


def _rules(p: ModelProfile) -> List[Tuple[str, bool, str]]:
    n = len(p.mean)
    return [
        ("width", p.width > 0, "a positive integer (model input width in pixels)"),
        ("height", p.height > 0, "a positive integer (model input height in pixels)"),
        ("scale", p.scale > 0, "a positive number such as 1/255"),
        ("mean", n in (1, 3), "one number or three (per channel)"),
        ("std", len(p.std) in (1, 3), "one number or three (per channel)"),
        ("std", all(s != 0 for s in p.std), "non-zero standard deviations"),
        (
            "foreground_classes",
            p.output_kind != "multiclass" or len(p.foreground_classes) > 0,
            "at least one class index for a multiclass model",
        ),
        (
            "foreground_classes",
            all(c >= 0 for c in p.foreground_classes)
            and (p.num_classes == 0 or all(c < p.num_classes for c in p.foreground_classes)),
            "class indices from 0 to num_classes-1",
        ),
        ("num_classes", p.num_classes >= 0, "0 (any) or the number of classes"),
    ]


def parse_profile(text: str, source: str = "", name: str = "") -> ModelProfile:
    """Validate profile YAML text into a :class:`ModelProfile` (errors name key and line)."""
    raw, node = parse_yaml_dataclass(_ProfileFile, text, source)
    try:
        scale = float(Fraction(str(raw.scale).strip()))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            f"{yaml_key_where(node, 'scale', source)}: expected a number or a fraction "
            f"such as 1/255, got {raw.scale!r}",
            "fix the model profile",
        ) from None
    values = {f.name: getattr(raw, f.name) for f in dataclasses.fields(ModelProfile)}
    values["scale"] = scale
    prof = ModelProfile(**values)
    for key, ok, expected in _rules(prof):
        if not ok:
            value = getattr(prof, key)
            raise ConfigError(
                f"{yaml_key_where(node, key, source)}: expected {expected}, got {value!r}",
                "fix the model profile (the shipped ones in configs/models/ are examples)",
            )
    for i, st in enumerate(prof.state_inputs):
        if not st.name:
            raise ConfigError(
                f"{yaml_key_where(node, 'state_inputs', source)}: state input #{i} has no name",
                "give each state input the model's input name",
            )
    prof.mean = [float(v) for v in (prof.mean * 3 if len(prof.mean) == 1 else prof.mean)]
    prof.std = [float(v) for v in (prof.std * 3 if len(prof.std) == 1 else prof.std)]
    if not prof.name:
        prof.name = name or (Path(source).stem if source else "")
    prof.path = source
    return prof


def profiles_dir() -> Path:
    """Directory of the shipped profiles (configs/models)."""
    return configs_dir() / "models"


def available_profiles() -> List[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def load_profile(name_or_path: Union[str, Path]) -> ModelProfile:
    """Load a shipped profile by name (``mediapipe-selfie``) or a profile YAML by path.

    Raises :class:`ConfigError` for an unknown name (with the closest shipped name), an
    unreadable file, or an invalid key (naming the file, key and line).
    """
    text_name = str(name_or_path)
    looks_like_path = (
        isinstance(name_or_path, Path)
        or text_name.endswith((".yaml", ".yml"))
        or "/" in text_name
        or "\\" in text_name
    )
    if looks_like_path:
        path = Path(text_name).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"model profile {path} does not exist",
                "pass the path of a profile YAML, or a shipped name: "
                + ", ".join(available_profiles()),
            )
    else:
        path = profiles_dir() / f"{text_name}.yaml"
        if not path.is_file():
            names = available_profiles()
            near = difflib.get_close_matches(text_name, names, n=1)
            hint = f"did you mean {near[0]!r}?" if near else "known profiles: " + ", ".join(names)
            raise ConfigError(f"unknown model profile {text_name!r}", hint)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read model profile {path}: {exc}") from None
    return parse_profile(text, str(path), name=path.stem)


def profile_summary(p: ModelProfile) -> str:
    """One line describing a profile (for logs and `segcam model info`)."""
    return (
        f"{p.name}: {p.layout} {p.width}x{p.height} {p.color_order} {p.dtype} {p.resample}, "
        f"x*{p.scale:.6g} - {p.mean} / {p.std}, output {p.output_name or p.output_index} "
        f"({p.output_kind})"
    )


def replace(p: ModelProfile, **changes: object) -> ModelProfile:
    """A copy of a profile with some fields changed (e.g. tests, `--set`-like tweaks)."""
    return dataclasses.replace(p, **changes)


__all__ = [
    "ModelProfile",
    "StateInput",
    "load_profile",
    "parse_profile",
    "available_profiles",
    "profiles_dir",
    "profile_summary",
    "replace",
]
