"""COCO compressed RLE in numpy: the string form that ``pycocotools.mask.decode`` reads.

A binary H x W mask is flattened in column-major (Fortran) order and described by run
lengths that alternate 0-runs and 1-runs, starting with a (possibly empty) run of 0s.
Each count is then written as a string of printable ASCII characters:

* from the fourth count on (index >= 3) the value written is ``count[i] - count[i-2]``
  (a signed delta), the first three are written as they are;
* the value is cut into 5-bit groups, least significant first; each group becomes one
  character ``48 + group + (0x20 if another group follows)``; the last group's bit 0x10
  is the sign (the value ends once the remaining bits are all 0 for a non-negative value
  or all 1 for a negative one, as in signed LEB128).

Implemented here from that description, vectorised; ``docs/protocol.md`` states the same
rules byte by byte and the tests check this module against pycocotools.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from segcam.errors import ProtocolError

_MAX_GROUPS = 7  # 7 x 5 bits covers every signed delta of a 32-bit count
_MAX_VALUES = 1 << 28  # values per string: 2**28 x 2**34 (largest delta) < 2**63


def mask_to_counts(mask: np.ndarray) -> np.ndarray:
    """Run lengths (int64) of a 2-D mask in column-major order, first run of zeros."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    flat = (np.asarray(mask) != 0).ravel(order="F")
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(edges).astype(np.int64)
    if flat[0]:
        counts = np.concatenate(([0], counts))  # COCO always starts with a 0-run
    return counts


def counts_to_mask(counts: Any, height: int, width: int) -> np.ndarray:
    """Rebuild the uint8 (0/1) H x W mask from run lengths; they must cover it exactly.

    Every bound is checked with exact integers before anything is allocated: no run is
    negative or longer than H*W, there are at most H*W + 1 runs, and they add up to H*W.
    (A sum taken in int64 could wrap around to H*W and make ``np.repeat`` write past
    its buffer.)
    """
    total = int(height) * int(width)
    if int(height) < 0 or int(width) < 0:
        raise ProtocolError(f"RLE mask size {height}x{width} is negative")
    counts = _checked_counts(counts, total)
    if counts.size > total + 1:
        raise ProtocolError(
            f"RLE has {counts.size} runs, more than a {height}x{width} mask can have"
        )
    if counts.size and int(counts.min()) < 0:
        raise ProtocolError("RLE has a negative run length")
    if counts.size and int(counts.max()) > total:
        raise ProtocolError(f"RLE has a run longer than the {height}x{width} mask")
    # Each run <= total and at most total + 1 runs: the int64 sum is exact while
    # (total + 1) * total < 2**63; beyond that Python ints add them.
    if (total + 1) * total < (1 << 63):
        covered = int(counts.sum(dtype=np.int64))
    else:  # pragma: no cover - needs a mask of more than 3 Gpx
        covered = sum(int(c) for c in counts.tolist())
    if covered != total:
        raise ProtocolError(f"RLE runs cover {covered} pixels, expected {height}x{width}={total}")
    values = (np.arange(counts.size) & 1).astype(np.uint8)
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape(width, height).T)


def _checked_counts(counts: Any, total: int) -> np.ndarray:
    """``counts`` as int64 without wrapping: larger values are refused first."""
    # A Python sequence stays Python ints: numpy would turn big ones into float64.
    arr = counts if isinstance(counts, np.ndarray) else np.array(list(counts), dtype=object)
    arr = arr.ravel()
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype.kind == "u":
        if int(arr.max()) > total:
            raise ProtocolError(f"RLE has a run longer than the mask ({total} pixels)")
        return arr.astype(np.int64)
    if arr.dtype.kind == "i":
        return arr.astype(np.int64)
    if arr.dtype.kind == "O":  # Python ints of any size
        values = arr.tolist()
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise ProtocolError("RLE run lengths must be integers")
        if any(v < 0 for v in values):
            raise ProtocolError("RLE has a negative run length")
        if any(v > total for v in values):
            raise ProtocolError(f"RLE has a run longer than the mask ({total} pixels)")
        return np.array(values, dtype=np.int64)
    raise ProtocolError(f"RLE run lengths must be integers, got {arr.dtype}")


def counts_to_string(counts: np.ndarray) -> bytes:
    """COCO's compressed string (ASCII bytes) for a sequence of run lengths."""
    cnts = np.asarray(counts, dtype=np.int64)
    if cnts.size == 0:
        return b""
    x = cnts.copy()
    if x.size > 3:
        x[3:] -= cnts[1:-2]
    shifts = 5 * np.arange(_MAX_GROUPS, dtype=np.int64)
    groups = (x[:, None] >> shifts[None, :]) & 0x1F  # numpy >> is arithmetic: sign kept
    rest = x[:, None] >> (shifts[None, :] + 5)
    negative_group = (groups & 0x10) != 0
    more = np.where(negative_group, rest != -1, rest != 0)
    # The value ends at the first group after which nothing more is needed.
    ngroups = np.argmin(more, axis=1) + 1
    k = np.arange(_MAX_GROUPS)[None, :]
    emit = k < ngroups[:, None]
    chars = groups + 48 + np.where(k < (ngroups[:, None] - 1), 0x20, 0)
    return chars[emit].astype(np.uint8).tobytes()


def string_to_counts(data: bytes, max_values: Optional[int] = None) -> np.ndarray:
    """Run lengths from COCO's compressed string; ProtocolError if the bytes are invalid.

    At most ``max_values`` values (and never more than 2**28) are accepted; with 35-bit
    deltas the cumulative sums below then stay far inside int64.
    """
    limit = _MAX_VALUES if max_values is None else min(int(max_values), _MAX_VALUES)
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64)
    if int(raw.min()) < 48 or int(raw.max()) > 111:
        raise ProtocolError("RLE string has a character outside '0'..'o' (48..111)")
    c = raw.astype(np.int64) - 48
    ends = np.flatnonzero((c & 0x20) == 0)
    if ends.size == 0 or ends[-1] != c.size - 1:
        raise ProtocolError("RLE string ends inside a value (last character has bit 0x20)")
    if ends.size > limit:
        raise ProtocolError(f"RLE has {ends.size} values, more than the {limit} allowed")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if int(lengths.max()) > _MAX_GROUPS:
        raise ProtocolError(f"RLE value longer than {_MAX_GROUPS} characters")
    # Position of each character inside its value -> its shift.
    owner = np.repeat(np.arange(ends.size), lengths)
    pos = np.arange(c.size) - starts[owner]
    x = np.zeros(ends.size, dtype=np.int64)
    np.add.at(x, owner, (c & 0x1F) << (5 * pos))
    negative = (c[ends] & 0x10) != 0
    x[negative] -= np.left_shift(np.int64(1), 5 * lengths[negative])
    # Undo the delta coding: index i >= 3 holds count[i] - count[i-2].
    counts = x.copy()
    if counts.size > 1:
        counts[1::2] = np.cumsum(x[1::2])
    if counts.size > 2:
        counts[2::2] = np.cumsum(x[2::2])
    return counts


def encode(mask: np.ndarray) -> bytes:
    """COCO compressed RLE string of a 2-D mask (non-zero = foreground)."""
    return counts_to_string(mask_to_counts(mask))


def decode(data: bytes, height: int, width: int) -> np.ndarray:
    """uint8 0/1 mask of shape (height, width) from a COCO compressed RLE string.

    A mask of N pixels has at most N + 1 runs, and each takes at least one character:
    longer strings are refused before they are parsed.
    """
    total = int(height) * int(width)
    if len(data) > _MAX_GROUPS * (total + 1):
        raise ProtocolError(f"RLE string of {len(data)} bytes is too long for {height}x{width}")
    return counts_to_mask(string_to_counts(data, total + 1), height, width)


def to_coco(mask: np.ndarray) -> dict:
    """The ``{"size": [h, w], "counts": bytes}`` dict that ``pycocotools.mask`` uses."""
    h, w = mask.shape[:2]
    return {"size": [int(h), int(w)], "counts": encode(mask)}


def shape_of(rle: dict) -> Tuple[int, int]:
    """(height, width) of a COCO RLE dict."""
    h, w = rle["size"]
    return int(h), int(w)
