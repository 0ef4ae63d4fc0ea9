"""CPU postprocessing: a model's raw output -> person probability, HxW float32 in [0, 1].

The result stays at model resolution; refinement (segcam.refine) upsamples it. Accepted
output shapes: ``[1, 1, H, W]``, ``[1, H, W, 1]``, ``[1, H, W]`` and ``[H, W]`` for the
one-channel kinds; ``[1, C, H, W]`` or ``[1, H, W, C]`` (``class_axis`` says which; also
without the batch axis) for ``multiclass``.

Arithmetic per kind (float32 throughout; float16 outputs are widened first):

- ``probability`` and ``matte``: ``clip(v, 0, 1)``.
- ``logits``: ``1 / (1 + exp(-v))``.
- ``multiclass`` with ``scores: logits``: ``m = max_c v_c``; ``e_c = exp(v_c - m)``;
  ``p = sum_{c in fg} e_c / sum_c e_c`` (numerically stable softmax). With
  ``scores: probabilities``: ``p = clip(sum_{c in fg} v_c, 0, 1)``.
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from segcam.errors import ModelError
from segcam.inference.profile import ModelProfile


def _single_channel(output: np.ndarray, profile: ModelProfile) -> np.ndarray:
    shape = output.shape
    squeezed = None
    if output.ndim == 4 and shape[0] == 1:
        if shape[1] == 1:
            squeezed = output[0, 0]
        elif shape[3] == 1:
            squeezed = output[0, :, :, 0]
    elif output.ndim == 3:
        if shape[0] == 1:
            squeezed = output[0]
        elif shape[2] == 1:
            squeezed = output[:, :, 0]
    elif output.ndim == 2:
        squeezed = output
    if squeezed is None:
        raise ModelError(
            f"model output has shape {list(shape)}, but profile {profile.name!r} "
            f"(output_kind {profile.output_kind}) expects one channel: [1,1,H,W], [1,H,W,1], "
            "[1,H,W] or [H,W]",
            "use output_kind multiclass for several channels, or pick another output",
        )
    return squeezed


def _class_first(output: np.ndarray, profile: ModelProfile) -> np.ndarray:
    """View of a multiclass output as [C, H, W] (no copy)."""
    x = output
    axis = profile.class_axis
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ModelError(f"model output has batch {x.shape[0]}; segcam runs batch 1")
        x = x[0]
        axis = axis - 1 if axis > 0 else axis
    if x.ndim != 3:
        raise ModelError(
            f"model output has shape {list(output.shape)}, but profile {profile.name!r} "
            "(multiclass) expects [1,C,H,W] or [1,H,W,C]",
            "check output_name/output_index and class_axis in the profile",
        )
    axis = axis % 3
    if axis not in (0, 2):
        raise ModelError(
            f"profile {profile.name!r}: class_axis {profile.class_axis} points at a spatial "
            f"axis of output shape {list(output.shape)}",
            "use class_axis 1 for [1,C,H,W] or -1 for [1,H,W,C]",
        )
    if profile.num_classes and x.shape[axis] != profile.num_classes:
        raise ModelError(
            f"model output has {x.shape[axis]} classes on axis {profile.class_axis} "
            f"(shape {list(output.shape)}), profile {profile.name!r} says num_classes "
            f"{profile.num_classes}",
            "fix num_classes or class_axis in the profile",
        )
    if max(profile.foreground_classes) >= x.shape[axis]:
        raise ModelError(
            f"profile {profile.name!r}: foreground class {max(profile.foreground_classes)} "
            f"but the output has only {x.shape[axis]} classes",
            "fix foreground_classes in the profile",
        )
    return np.moveaxis(x, 2, 0) if axis == 2 else x


def to_probability(
    output: np.ndarray, profile: ModelProfile, out: Optional[np.ndarray] = None
) -> np.ndarray:
    """Turn a raw model output into an HxW float32 person probability in [0, 1].

    Writes into ``out`` (HxW float32) when given. See the module docstring for the
    arithmetic of each ``output_kind``.
    """
    kind = profile.output_kind
    if kind == "multiclass":
        x = _class_first(output, profile)
        h, w = x.shape[1], x.shape[2]
        if out is None:
            out = np.empty((h, w), dtype=np.float32)
        fg = set(profile.foreground_classes)
        if profile.scores == "probabilities":
            out.fill(0.0)
            for c in sorted(fg):
                np.add(out, x[c], out=out, dtype=np.float32)
            return np.clip(out, 0.0, 1.0, out=out)
        # Stable softmax one class plane at a time: no [C, H, W] temporaries.
        m = np.max(x, axis=0).astype(np.float32, copy=False)
        den = np.zeros((h, w), dtype=np.float32)
        out.fill(0.0)
        e = np.empty((h, w), dtype=np.float32)
        for c in range(x.shape[0]):
            np.subtract(x[c], m, out=e, dtype=np.float32)
            cv2.exp(e, dst=e)  # inputs <= 0; OpenCV's SIMD exp is ~4x numpy's, same accuracy
            den += e
            if c in fg:
                out += e
        return np.divide(out, den, out=out)
    v = _single_channel(output, profile)
    if out is None:
        out = np.empty(v.shape, dtype=np.float32)
    if kind == "logits":
        # sigmoid(v) = 1 / (1 + exp(-v)), computed in place in float32.
        np.negative(v, out=out, dtype=np.float32)
        with np.errstate(over="ignore"):  # exp overflow -> inf -> probability 0, as meant
            np.exp(out, out=out)
        np.add(out, np.float32(1.0), out=out)
        return np.reciprocal(out, out=out)
    # probability / matte
    return np.clip(v, 0.0, 1.0, out=out)


__all__ = ["to_probability"]
