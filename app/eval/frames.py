"""Frames with their true silhouettes: the demo scene, or a folder of image + mask pairs.

A folder holds pictures (``.png .jpg .jpeg .bmp .webp .tif .tiff``) and, for each, its mask:
``NAME_mask.<ext>`` beside it or ``masks/NAME.<ext>`` (with the pictures in ``images/``
or the folder itself). A mask is a greyscale (or colour, read as grey) image of the
picture's size; values above 127 are the person. Pairs are taken in name order, so the
frames of one video named in order give a meaningful flicker figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np

from segcam.errors import SourceError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MAX_PIXELS = 8192 * 8192  # refuse larger pictures instead of allocating gigabytes


@dataclass
class TruthFrame:
    """One frame (BGR uint8), its true silhouette (uint8 0/1) and a name for reports."""

    name: str
    frame: np.ndarray
    truth: np.ndarray


def demo_frames(width: int, height: int, count: int, start: int = 0) -> Iterator[TruthFrame]:
    """``count`` consecutive frames of the demo scene at ``width`` x ``height``."""
    from segcam.demo_scene import DemoScene

    scene = DemoScene(width, height)
    for i in range(start, start + count):
        frame, truth = scene.render(i)
        yield TruthFrame(f"demo-{width}x{height}-{i:05d}", frame, truth)


def _find_mask(image: Path, root: Path) -> Optional[Path]:
    stem = image.stem
    candidates = [image.with_name(f"{stem}_mask{ext}") for ext in IMAGE_EXTS]
    for masks in (root / "masks", image.parent / "masks"):
        candidates += [masks / f"{stem}{ext}" for ext in IMAGE_EXTS]
    for c in candidates:
        if c.is_file():
            return c
    return None


def folder_pairs(root: Path) -> List[Tuple[Path, Path]]:
    """The (picture, mask) pairs of a folder, in name order (see the module doc)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise SourceError(f"eval folder {root} does not exist or is not a folder")
    image_dir = root / "images" if (root / "images").is_dir() else root
    pairs = []
    missing = []
    for p in sorted(image_dir.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS or not p.is_file() or p.stem.endswith("_mask"):
            continue
        m = _find_mask(p, root)
        if m is None:
            missing.append(p.name)
        else:
            pairs.append((p, m))
    if not pairs:
        extra = f" ({len(missing)} pictures without one, e.g. {missing[0]})" if missing else ""
        raise SourceError(
            f"no image + mask pairs in {root}{extra}",
            "put NAME_mask.png beside each NAME.jpg, or pictures in images/ and masks in masks/",
        )
    return pairs


def _declared_pixels(path: Path) -> int:
    """Pixels the file's header declares (Pillow reads only the header), 0 if unknown.

    A small file can declare a gigantic picture; this refuses it before decoding. Without
    Pillow (matplotlib's dependency) OpenCV's own decoder limit still applies.
    """
    try:
        import PIL.Image
    except ImportError:
        return 0
    try:
        with PIL.Image.open(str(path)) as im:
            return int(im.size[0]) * int(im.size[1])
    except PIL.Image.DecompressionBombError:
        return MAX_PIXELS + 1
    except (OSError, ValueError):  # not a format Pillow knows: OpenCV decides
        return 0


def _read(path: Path, flags: int) -> np.ndarray:
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc}") from None
    if _declared_pixels(path) > MAX_PIXELS:
        raise SourceError(f"{path} is larger than {MAX_PIXELS} pixels", "scale it down first")
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise SourceError(f"{path} is not a picture OpenCV can decode", "check the file")
    return img


def folder_frames(root: Path) -> Iterator[TruthFrame]:
    """The folder's pairs as :class:`TruthFrame` (errors name the file at fault)."""
    for image, mask in folder_pairs(root):
        frame = _read(image, cv2.IMREAD_COLOR)
        truth = _read(mask, cv2.IMREAD_GRAYSCALE)
        if truth.shape != frame.shape[:2]:
            raise SourceError(
                f"mask {mask} is {truth.shape[1]}x{truth.shape[0]} but its picture {image.name} "
                f"is {frame.shape[1]}x{frame.shape[0]}",
                "masks must have their picture's size",
            )
        yield TruthFrame(image.stem, frame, (truth > 127).astype(np.uint8))


__all__ = ["TruthFrame", "demo_frames", "folder_pairs", "folder_frames", "MAX_PIXELS"]
