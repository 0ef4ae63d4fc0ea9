"""A deterministic, endless synthetic scene: a real person moving over a moving background.

The person is cut out of a real photograph that scikit-image ships (``astronaut.png``,
NASA's portrait of Eileen Collins, public domain). The cut-out is found once per process:
a hand-traced outline seeds OpenCV's GrabCut, which snaps it to the real edges. Because
each frame pastes exactly that cut-out, the scene knows its own ground truth: ``render``
returns the frame *and* the person's silhouette, so tests can score masks against it.

Only the photograph's head-and-shoulders rows are used (above the helmet she holds, which
is not part of her silhouette), and they are placed with their bottom row on or below the
frame's bottom border: the one edge of the cut-out that is not her outline (where the crop
ends) is where the picture ends, as with a person cut by a camera's frame.

Frame ``i`` depends only on ``i`` and the requested size, never on wall time.
"""

from __future__ import annotations

import math
import threading
from typing import Optional, Tuple

import cv2
import numpy as np

from segcam.errors import SourceError

# Outline of the person in the 512x512 photograph (x, y): head, neck ring, suit; the
# helmet she holds is left out, it is not part of a person silhouette.
_OUTLINE = (
    (225, 12), (270, 18), (300, 50), (305, 110), (272, 138), (266, 165), (300, 185),
    (305, 240),
    (340, 262), (362, 300), (365, 345), (330, 340), (300, 350), (285, 380), (278, 420),
    (275, 470), (270, 512), (18, 512), (18, 300), (45, 250), (110, 215), (125, 182),
    (182, 158), (182, 138), (150, 100), (160, 40),
)  # fmt: skip

# Rows of the photograph the scene uses: head and shoulders, above the helmet.
PORTRAIT_ROWS = 336

_cutout_lock = threading.Lock()
_cutout: Optional[Tuple[np.ndarray, np.ndarray]] = None


def person_cutout() -> Tuple[np.ndarray, np.ndarray]:
    """The portrait (BGR uint8, 512x512) and its person mask (bool), computed once."""
    global _cutout
    with _cutout_lock:
        if _cutout is None:
            _cutout = _compute_cutout()
        return _cutout


def _missing_skimage() -> SourceError:
    return SourceError(
        "the demo source needs scikit-image, which ships the portrait photo it uses",
        'install it with: pip install "segcam[demo]" (from a checkout: pip install -e ".[demo]")',
    )


def missing_dependency() -> Optional[SourceError]:
    """The error the demo source would raise for lack of scikit-image, else None (cheap)."""
    import importlib.util

    return _missing_skimage() if importlib.util.find_spec("skimage") is None else None


def _load_portrait() -> np.ndarray:
    try:
        from skimage import data
    except ImportError:
        raise _missing_skimage() from None
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def _compute_cutout() -> Tuple[np.ndarray, np.ndarray]:
    bgr = _load_portrait()
    size = bgr.shape[0]
    half = size // 2
    # GrabCut at half size: 0.2 s instead of 4 s, and the outline seeds it well enough.
    small = cv2.resize(bgr, (half, half), interpolation=cv2.INTER_AREA)
    poly = (np.array(_OUTLINE, np.int32) * half) // size
    seed = np.full((half, half), cv2.GC_BGD, np.uint8)
    cv2.fillPoly(seed, [poly], cv2.GC_PR_FGD)
    inner = cv2.erode((seed == cv2.GC_PR_FGD).astype(np.uint8), np.ones((15, 15), np.uint8))
    seed[inner > 0] = cv2.GC_FGD
    near = cv2.dilate((seed != cv2.GC_BGD).astype(np.uint8), np.ones((9, 9), np.uint8))
    seed[(near > 0) & (seed == cv2.GC_BGD)] = cv2.GC_PR_BGD
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means starts from OpenCV's RNG: keep it deterministic
    cv2.grabCut(small, seed, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)
    fg = ((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)).astype(np.uint8) * 255
    fg = cv2.resize(fg, (size, size), interpolation=cv2.INTER_LINEAR) > 127
    # Keep the largest component: GrabCut can leave specks in the wall behind her.
    count, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), 8)
    if count > 1:
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        fg = labels == largest
    return bgr, fg


def _background_texture(width: int, height: int) -> np.ndarray:
    """A seamless-in-x landscape, twice the frame width so a slice scrolls without wrap."""
    tex_w = width * 2
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 2.0 * math.pi * 2, tex_w, endpoint=False, dtype=np.float32)[None, :]
    sky_b = 235 - 80 * y
    sky_g = 200 - 90 * y
    sky_r = 150 - 100 * y
    tex = np.empty((height, tex_w, 3), np.float32)
    tex[..., 0] = sky_b
    tex[..., 1] = sky_g
    tex[..., 2] = sky_r
    # Two rows of hills; integer frequencies keep the texture periodic over its width.
    for amp, base, freq, colour in (
        (0.08, 0.62, 3, (70, 120, 60)),
        (0.06, 0.78, 5, (40, 90, 40)),
    ):
        ridge = base + amp * np.sin(freq * x) + 0.3 * amp * np.sin(3 * freq * x + 1.0)
        below = y >= ridge
        for c in range(3):
            tex[..., c] = np.where(below, colour[c] + 25 * np.sin(7 * x + 9 * y), tex[..., c])
    rng = np.random.RandomState(7)
    out = np.clip(tex, 0, 255).astype(np.uint8)
    # Houses: coloured boxes with windows give the model edges that are not a person.
    for _ in range(max(4, width // 160)):
        w = int(rng.randint(width // 20, width // 8))
        h = int(rng.randint(height // 10, height // 4))
        x0 = int(rng.randint(0, tex_w - w))
        y1 = int(height * rng.uniform(0.7, 0.9))
        colour = tuple(int(v) for v in rng.randint(60, 220, 3))
        cv2.rectangle(out, (x0, y1 - h), (x0 + w, y1), colour, -1)
        for wx in range(x0 + w // 8, x0 + w - w // 8, max(4, w // 4)):
            cv2.rectangle(
                out, (wx, y1 - h + h // 5), (wx + w // 10, y1 - h + h // 3), (40, 40, 40), -1
            )
    out[:, width:] = out[:, :width]  # exact copy so any slice of width `width` is seamless
    return out


class DemoScene:
    """Renders frame ``i`` of the demo at ``width`` x ``height``: ``(frame, truth)``.

    ``truth`` is the person's silhouette as a uint8 0/1 array: the pixels that came from
    the cut-out. The person walks left and right, bobs a little, and the landscape behind
    scrolls; a ball crosses the scene in front of the background.
    """

    def __init__(self, width: int = 1280, height: int = 720, fps: float = 30.0) -> None:
        if width < 64 or height < 64:
            raise SourceError(
                f"demo: {width}x{height} is too small", "ask for at least 64x64 pixels"
            )
        self.width = width
        self.height = height
        self.fps = fps
        portrait, mask = person_cutout()
        portrait, mask = portrait[:PORTRAIT_ROWS], mask[:PORTRAIT_ROWS]
        scale = 0.8 * height / PORTRAIT_ROWS  # head and shoulders, as in a video call
        ph = max(8, int(round(PORTRAIT_ROWS * scale)))
        pw = max(8, int(round(portrait.shape[1] * scale)))
        self._person = cv2.resize(portrait, (pw, ph), interpolation=cv2.INTER_AREA)
        m = cv2.resize(mask.astype(np.uint8) * 255, (pw, ph), interpolation=cv2.INTER_LINEAR)
        self._person_mask = m > 127
        self._texture = _background_texture(width, height)

    def person_box(self, i: int) -> Tuple[int, int]:
        """Top-left (x, y) of the person's picture at frame ``i`` (its bottom is at or
        below the frame's bottom border; it may be partly outside at the sides)."""
        t = i / self.fps
        ph, pw = self._person.shape[:2]
        cx = self.width / 2 + 0.22 * self.width * math.sin(2 * math.pi * t / 8.0)
        bob = 0.02 * self.height * math.sin(2 * math.pi * t / 1.5)
        x0 = int(round(cx - pw / 2))
        y0 = int(round(self.height - ph + abs(bob)))
        return x0, y0

    def render(
        self, i: int, out: Optional[np.ndarray] = None, truth: Optional[np.ndarray] = None
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Draw frame ``i`` into ``out`` (allocated if None); return ``(frame, truth)``."""
        h, w = self.height, self.width
        if out is None:
            out = np.empty((h, w, 3), np.uint8)
        if truth is None:
            truth = np.empty((h, w), np.uint8)
        offset = int(i * max(1.0, w / 400.0)) % w
        np.copyto(out, self._texture[:, offset : offset + w])
        # A ball that passes behind the person: motion in the background, not a person.
        t = i / self.fps
        bx = int((0.1 + 0.8 * (0.5 + 0.5 * math.sin(2 * math.pi * t / 5.0))) * w)
        by = int(h * (0.3 + 0.1 * math.cos(2 * math.pi * t / 2.5)))
        cv2.circle(out, (bx, by), max(4, h // 18), (30, 60, 220), -1, cv2.LINE_AA)
        truth.fill(0)
        x0, y0 = self.person_box(i)
        ph, pw = self._person.shape[:2]
        fx0, fy0 = max(0, x0), max(0, y0)
        fx1, fy1 = min(w, x0 + pw), min(h, y0 + ph)
        if fx1 > fx0 and fy1 > fy0:
            px0, py0 = fx0 - x0, fy0 - y0
            src = self._person[py0 : py0 + fy1 - fy0, px0 : px0 + fx1 - fx0]
            sel = self._person_mask[py0 : py0 + fy1 - fy0, px0 : px0 + fx1 - fx0]
            np.copyto(out[fy0:fy1, fx0:fx1], src, where=sel[:, :, None])
            truth[fy0:fy1, fx0:fx1] = sel
        return out, truth
