"""Background replacement on the CPU (the reference the GPU composite kernel matches).

``Compositor(background_cfg).compose(frame, mask, knobs=None, out=None)`` blends the
frame (foreground) over a background where ``mask`` (HxW float32 in [0, 1], 1 = person)
says so.

**Blend arithmetic.** The reference, per pixel and channel, in float32::

    out = uint8(floor(fg * m + bg * (1 - m) + 0.5))      # fg, bg in 0..255, m in [0, 1]

The CPU path computes it with ``cv2.blendLinear(fg, bg, m, 1 - m)`` (about 3x faster than
numpy at 1080p), whose float arithmetic is ``round((fg*m + bg*(1-m)) / (m + (1-m) +
1e-5))``; it differs from the reference by at most one level on a few pixels (a test
checks this). The GPU kernel must match the reference within one level.

Given the mask's :class:`segcam.coverage.Coverage` (``compose(..., coverage=...)``, as
the pipeline passes :attr:`segcam.refine.MaskRefiner.coverage`), only the mixed runs are
blended; runs where the mask is exactly 0 show the background and runs where it is exactly
1 the frame, copied (which is what the blend gives there, byte for byte). A background made
per frame (blur, video) is then written straight into the output, and the frame and the
blend overwrite it where the person is.

**Backgrounds** (``composite.background.mode``):

- ``image``: a picture, scaled to the frame once per frame size and cached. ``cover``
  crops the picture's centre to the frame's aspect ratio, then resizes (INTER_AREA when
  shrinking, INTER_LINEAR when enlarging); ``fit`` resizes it whole into the frame and
  letterboxes with ``color``.
- ``color``: a solid BGR colour.
- ``blur``: the frame itself, blurred with strength ``blur`` (Gaussian kernel size in
  frame pixels). For speed the blur runs at a reduced size: ``d = 4`` for ``blur >= 16``,
  ``2`` for ``blur >= 6``, else 1; the frame is shrunk by ``d`` to ``(ceil(W / d),
  ceil(H / d))`` in 2x INTER_AREA halvings (:func:`shrink`: OpenCV's exact 2x2 average
  ``(a + b + c + d + 2) >> 2`` on even sizes, about 5x cheaper than one 4x4 INTER_AREA
  and within one level of it), blurred with an odd kernel of ``max(3, blur // d | 1)``
  pixels (sigma from OpenCV's rule for that size), and enlarged back (INTER_LINEAR). One
  small blur per frame; nothing runs at full size but the enlargement.
- ``video``: frames of a video file (looped), one per composed frame, scaled like
  ``image``.
- ``none``: the frame unchanged (mask ignored).
- ``overlay``: a visualisation: the person tinted (``m * 50%`` of ``color`` blended over
  the frame) with a 2-pixel outline in ``color`` where the mask crosses ``threshold``
  (morphological gradient of the thresholded mask); the background shows unchanged.

A ``knobs.background`` value (the ``composite.background`` mapping as sorted items, set
by a config reload) replaces the settings at run time; the new background is loaded on
the next frame. If it cannot be loaded (missing picture, undecodable video) the old one
stays, the error is logged and kept in ``Compositor.last_error``: a reload never stops a
running pipeline. :func:`check_background` lets a reloader refuse such a config first.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import cv2
import numpy as np

from segcam.config import BackgroundConfig
from segcam.coverage import BG, FG, MIX, Coverage
from segcam.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)

OVERLAY_ALPHA = 0.5  # tint strength of the overlay visualisation
_KERNEL3 = np.ones((3, 3), np.uint8)


def _reuse(bufs: Optional[Dict[str, np.ndarray]], name: str, shape: Tuple[int, ...]):
    """``bufs[name]`` if it has ``shape`` (a new one is kept there), or None without ``bufs``."""
    if bufs is None:
        return None
    buf = bufs.get(name)
    if buf is None or buf.shape != shape:
        buf = bufs[name] = np.empty(shape, dtype=np.uint8)
    return buf


def _scale_to(
    img: np.ndarray,
    w: int,
    h: int,
    fit: str,
    color: Tuple[int, int, int],
    bufs: Optional[Dict[str, np.ndarray]] = None,
):
    """Resize ``img`` to exactly (w, h) with ``cover`` (crop) or ``fit`` (letterbox).

    With ``bufs`` (a dict kept by the caller) the result and the scratch image are written
    into arrays kept there: a video background then allocates nothing per frame.
    """
    ih, iw = img.shape[:2]
    if fit == "cover":
        # Crop the source to the target aspect ratio, centred, then resize.
        if iw * h > ih * w:
            cw = max(1, round(ih * w / h))
            x0 = (iw - cw) // 2
            img = img[:, x0 : x0 + cw]
        else:
            ch = max(1, round(iw * h / w))
            y0 = (ih - ch) // 2
            img = img[y0 : y0 + ch, :]
        interp = cv2.INTER_AREA if img.shape[1] > w else cv2.INTER_LINEAR
        return cv2.resize(img, (w, h), dst=_reuse(bufs, "out", (h, w, 3)), interpolation=interp)
    s = min(w / iw, h / ih)
    nw, nh = max(1, round(iw * s)), max(1, round(ih * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    small = cv2.resize(img, (nw, nh), dst=_reuse(bufs, "small", (nh, nw, 3)), interpolation=interp)
    canvas = _reuse(bufs, "out", (h, w, 3))
    if canvas is None:
        canvas = np.empty((h, w, 3), dtype=np.uint8)
    canvas[:] = color
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    canvas[y0 : y0 + nh, x0 : x0 + nw] = small
    return canvas


def _as_bgr(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return img


def shrink(img: np.ndarray, d: int, bufs: Optional[Dict[str, np.ndarray]] = None) -> np.ndarray:
    """``img`` reduced by ``d`` (1, 2 or 4) to ``(ceil(w / d), ceil(h / d))``: INTER_AREA
    halvings (OpenCV's exact 2x2 average, ``(a + b + c + d + 2) >> 2``, on even sizes)."""
    n = 0
    while d > 1:
        h, w = img.shape[:2]
        size = ((w + 1) // 2, (h + 1) // 2)
        dst = _reuse(bufs, f"half{n}", (size[1], size[0]) + img.shape[2:])
        img = cv2.resize(img, size, dst=dst, interpolation=cv2.INTER_AREA)
        d //= 2
        n += 1
    return img


def blur_plan(strength: int) -> Tuple[int, int]:
    """(downscale factor, odd kernel size at the reduced size) for a blur strength."""
    d = 4 if strength >= 16 else (2 if strength >= 6 else 1)
    k = max(3, (strength // d) | 1)
    return d, k


class _VideoBackground:
    """Frames of a looping video file (one per call)."""

    def __init__(self, path: str) -> None:
        self.path = path
        if not Path(path).expanduser().is_file():
            raise ConfigError(
                f"composite.background.video: {path} does not exist",
                "set composite.background.video to a readable video file",
            )
        self._cap = cv2.VideoCapture(str(Path(path).expanduser()))
        ok, frame = (False, None)
        if self._cap.isOpened():
            ok, frame = self._cap.read()
        if not ok or frame is None:
            self._cap.release()
            raise ConfigError(
                f"composite.background.video: cannot decode {path}",
                "use a video OpenCV can read (e.g. H.264 .mp4 or MJPEG .avi)",
            )
        self._first = frame
        # Decoded frames go into this one array (the caller scales each before the next).
        self._frame: np.ndarray = frame

    def next(self) -> np.ndarray:
        """The next frame, starting again at the end of the file."""
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        ok, frame = self._cap.read(image=self._frame)
        if not ok:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read(image=self._frame)
            if not ok:
                raise PipelineError(f"background video {self.path} stopped decoding")
        self._frame = frame
        return frame

    def close(self) -> None:
        """Release the decoder."""
        self._cap.release()


class Compositor:
    """Blends frames over the configured background (see the module docstring).

    Not thread-safe: one per composite stage. Buffers and scaled backgrounds are cached
    per frame size.
    """

    def __init__(self, background_cfg: BackgroundConfig) -> None:
        self._video: Optional[_VideoBackground] = None
        self._items: Tuple[Tuple[str, Any], ...] = ()
        self.last_error = ""  # why the last run-time background change was refused
        self._apply(background_cfg)

    # ------------------------------------------------------------------ settings

    def _apply(self, cfg: BackgroundConfig) -> None:
        if cfg.mode == "image":
            if not cfg.image:
                raise ConfigError(
                    "composite.background.image: mode is 'image' but no image is given",
                    "set composite.background.image to a picture file",
                )
            img = cv2.imread(str(Path(cfg.image).expanduser()), cv2.IMREAD_UNCHANGED)
            if img is None:
                raise ConfigError(
                    f"composite.background.image: cannot read {cfg.image}",
                    "use an existing PNG/JPEG file",
                )
            self._image = _as_bgr(img)
        video = None
        if cfg.mode == "video":
            if not cfg.video:
                raise ConfigError(
                    "composite.background.video: mode is 'video' but no video is given",
                    "set composite.background.video to a video file",
                )
            video = _VideoBackground(cfg.video)
        if self._video is not None:
            self._video.close()
        self._video = video
        self.cfg = cfg
        self._color = tuple(int(c) for c in cfg.color)
        self._bg_cache: Dict[Tuple[int, int], np.ndarray] = {}
        self._inv: Optional[np.ndarray] = None
        self._weight: Optional[np.ndarray] = None
        self._scratch: Dict[str, np.ndarray] = {}  # per-frame work arrays, reused
        self.timings_ms: Dict[str, float] = {}  # the last compose's sub-steps

    def follow_knobs(self, knobs: Any) -> None:
        """Apply a run-time ``knobs.background`` change (done by :meth:`compose` itself)."""
        items = getattr(knobs, "background", ()) if knobs is not None else ()
        if not items or items == self._items:
            return
        self._items = items
        values = dict(self.cfg.__dict__)
        values.update(dict(items))
        if "color" in values:
            values["color"] = list(values["color"])
        try:
            new = BackgroundConfig(**values)
        except TypeError as exc:
            self.last_error = f"composite.background: {exc}"
            log.error("background change ignored: %s", self.last_error)
            return
        if new == self.cfg:
            return
        try:
            self._apply(new)
        except ConfigError as exc:
            # A live reload must not take the pipeline down: keep showing the old
            # background and say why the new one was refused.
            self.last_error = str(exc)
            log.error("background change to %r ignored: %s", new.mode, exc)
            return
        self.last_error = ""
        log.info("background: now %s", new.mode)

    @property
    def mode(self) -> str:
        """The background mode in force."""
        return self.cfg.mode

    # ------------------------------------------------------------------ backgrounds

    def background(self, frame: np.ndarray, into: Optional[np.ndarray] = None) -> np.ndarray:
        """The background image for ``frame`` (frame size, BGR uint8).

        Backgrounds made per frame (blur, video) are written into ``into`` when given
        (then the result is ``into``); the others return their cached array.
        """
        h, w = frame.shape[:2]
        mode = self.cfg.mode
        if mode == "blur":
            return self._blurred(frame, into)
        if mode == "video":
            bufs = self._scratch
            if into is not None:
                bufs["out"] = into
            bg = _scale_to(self._video.next(), w, h, self.cfg.fit, self._color, bufs)
            if into is not None:
                del bufs["out"]
            return bg
        if mode in ("none", "overlay"):
            return frame
        bg = self._bg_cache.get((w, h))
        if bg is None:
            if mode == "image":
                bg = _scale_to(self._image, w, h, self.cfg.fit, self._color)
            else:  # color
                bg = np.empty((h, w, 3), dtype=np.uint8)
                bg[:] = self._color
            self._bg_cache = {(w, h): bg}
        return bg

    def _blurred(self, frame: np.ndarray, into: Optional[np.ndarray] = None) -> np.ndarray:
        h, w = frame.shape[:2]
        d, k = blur_plan(self.cfg.blur)
        buf = into
        if buf is None:
            buf = self._bg_cache.get((w, h))
            if buf is None:
                buf = np.empty((h, w, 3), dtype=np.uint8)
                self._bg_cache = {(w, h): buf}
        if d == 1:
            return cv2.GaussianBlur(frame, (k, k), 0, dst=buf)
        small = shrink(frame, d, self._scratch)
        small = cv2.GaussianBlur(small, (k, k), 0, dst=_reuse(self._scratch, "blur", small.shape))
        return cv2.resize(small, (w, h), dst=buf, interpolation=cv2.INTER_LINEAR)

    # ------------------------------------------------------------------ compose

    def compose(
        self,
        frame_bgr: np.ndarray,
        mask: np.ndarray,
        knobs: Any = None,
        out: Optional[np.ndarray] = None,
        coverage: Optional[Coverage] = None,
    ) -> np.ndarray:
        """Blend ``frame_bgr`` over the background with ``mask``; return uint8 BGR.

        ``mask`` is HxW float32 in [0, 1] at frame size. Writes into ``out`` when given.
        ``coverage`` (:class:`segcam.coverage.Coverage` of this mask, as
        :attr:`segcam.refine.MaskRefiner.coverage` gives it) limits the blend to the mixed
        runs; background and person runs are copied.
        """
        self.follow_knobs(knobs)
        self.timings_ms = {}
        h, w = frame_bgr.shape[:2]
        if mask.shape != (h, w):
            raise PipelineError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the frame is {w}x{h}",
                "refine the mask to the frame size before compositing",
            )
        if out is None:
            out = np.empty_like(frame_bgr)
        mode = self.cfg.mode
        if mode == "none":
            np.copyto(out, frame_bgr)
            return out
        if mode == "overlay":
            return self._overlay(frame_bgr, mask, knobs, out, coverage)
        if mask.dtype != np.float32:
            mask = mask.astype(np.float32)
        if self._inv is None or self._inv.shape != mask.shape:
            self._inv = np.empty_like(mask)
        t0 = time.perf_counter()
        if coverage is None or coverage.shape != (h, w):
            bg = self.background(frame_bgr)
            t1 = time.perf_counter()
            np.subtract(np.float32(1.0), mask, out=self._inv)
            cv2.blendLinear(frame_bgr, bg, mask, self._inv, dst=out)
        else:
            bg = self.background(frame_bgr, into=out)
            t1 = time.perf_counter()
            self._blend_runs(frame_bgr, bg, mask, coverage, out)
        self.timings_ms = {"background": (t1 - t0) * 1e3, "blend": (time.perf_counter() - t1) * 1e3}
        return out

    def _blend_runs(
        self, fg: np.ndarray, bg: np.ndarray, mask: np.ndarray, cov: Coverage, out: np.ndarray
    ) -> None:
        """Copy background / person runs, blend only the mixed ones (see segcam.coverage)."""
        bg_in_out = bg is out  # a per-frame background was written straight into out
        inv = self._inv
        for b, runs in enumerate(cov.runs):
            y0, y1 = cov.rows(b)
            for x0, x1, kind in runs:
                if kind == BG:
                    if not bg_in_out:
                        np.copyto(out[y0:y1, x0:x1], bg[y0:y1, x0:x1])
                elif kind == FG:
                    np.copyto(out[y0:y1, x0:x1], fg[y0:y1, x0:x1])
                else:
                    m = mask[y0:y1, x0:x1]
                    i = np.subtract(np.float32(1.0), m, out=inv[y0:y1, x0:x1])
                    src = out if bg_in_out else bg
                    cv2.blendLinear(
                        fg[y0:y1, x0:x1], src[y0:y1, x0:x1], m, i, dst=out[y0:y1, x0:x1]
                    )

    def _overlay(
        self,
        frame: np.ndarray,
        mask: np.ndarray,
        knobs: Any,
        out: np.ndarray,
        coverage: Optional[Coverage] = None,
    ) -> np.ndarray:
        threshold = float(getattr(knobs, "threshold", 0.5)) if knobs is not None else 0.5
        h, w = mask.shape
        tint = self._bg_cache.get((w, h))
        if tint is None:
            tint = np.empty((h, w, 3), dtype=np.uint8)
            tint[:] = self._color
            self._bg_cache = {(w, h): tint}
        if self._inv is None or self._inv.shape != mask.shape:
            self._inv = np.empty_like(mask, dtype=np.float32)
        if self._weight is None or self._weight.shape != mask.shape:
            self._weight = np.empty_like(mask, dtype=np.float32)
        if coverage is None or coverage.shape != mask.shape:
            spans = [(0, h, ((0, w, MIX),))]
        else:
            spans = [coverage.rows(b) + (runs,) for b, runs in enumerate(coverage.runs)]
        for y0, y1, runs in spans:
            for x0, x1, kind in runs:
                if kind == BG:  # no tint: the frame itself
                    np.copyto(out[y0:y1, x0:x1], frame[y0:y1, x0:x1])
                    continue
                m = mask[y0:y1, x0:x1]
                wt = np.multiply(m, np.float32(OVERLAY_ALPHA), out=self._weight[y0:y1, x0:x1])
                inv = np.subtract(np.float32(1.0), wt, out=self._inv[y0:y1, x0:x1])
                cv2.blendLinear(
                    tint[y0:y1, x0:x1], frame[y0:y1, x0:x1], wt, inv, dst=out[y0:y1, x0:x1]
                )
        # Outline: morphological gradient (dilate - erode, 3x3) of the thresholded mask,
        # a 2-pixel band whose cost does not depend on how ragged the mask is.
        above = self._scratch.get("above")
        if above is None or above.shape != mask.shape:
            above = self._scratch["above"] = np.empty(mask.shape, dtype=bool)
        binary = np.greater(mask, np.float32(threshold), out=above).view(np.uint8)
        edge = cv2.morphologyEx(
            binary, cv2.MORPH_GRADIENT, _KERNEL3, dst=_reuse(self._scratch, "edge", mask.shape)
        )
        cv2.copyTo(tint, edge, out)
        return out

    def close(self) -> None:
        """Release a background video."""
        if self._video is not None:
            self._video.close()
            self._video = None


def check_background(background_cfg: BackgroundConfig) -> None:
    """Raise :class:`ConfigError` if the background's image/video cannot be loaded.

    For reload and doctor: validates a new background before it is applied.
    """
    Compositor(background_cfg).close()


def blend_reference(fg: np.ndarray, bg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The reference blend ``floor(fg*m + bg*(1-m) + 0.5)`` in float32 (slow; for tests)."""
    m = mask.astype(np.float32)[:, :, None]
    v = fg.astype(np.float32) * m + bg.astype(np.float32) * (np.float32(1.0) - m)
    return np.floor(v + np.float32(0.5)).clip(0, 255).astype(np.uint8)


__all__ = ["Compositor", "blend_reference", "blur_plan", "check_background", "shrink"]
