"""Hostile wire messages and a runner that decodes them in a limited subprocess.

Shared by the hostile-input tests and the fuzz tier. The payload builders use Python
ints only, so they can express what an int64 encoder cannot (run lengths whose sum
wraps around 2**64).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from segcam.publish import protocol

WORKER = Path(__file__).resolve().parent / "fuzz_worker.py"


def coco_string(counts: Sequence[int]) -> bytes:
    """COCO compressed RLE of arbitrary Python-int run lengths (no overflow checks)."""
    out = bytearray()
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i >= 3 else c
        more = True
        while more:
            g = x & 0x1F
            x >>= 5
            more = (x != -1) if (g & 0x10) else (x != 0)
            out.append(48 + g + (0x20 if more else 0))
    return bytes(out)


def wrapping_counts(total: int) -> List[int]:
    """Non-negative run lengths, each a valid 7-character COCO value, that add up to
    2**64 + ``total``: an int64 sum sees exactly ``total``."""
    d = (1 << 34) - 1  # largest delta in 7 characters
    target = (1 << 64) + total
    counts, s, level = [0, 0, 0], 0, 0  # the first three are written raw; deltas from index 3
    while True:
        nxt = level + d
        k = nxt // d
        descent = 2 * (k * nxt - d * k * (k + 1) // 2)
        if s + 2 * nxt + descent > target:
            break
        level = nxt
        counts += [level, level]
        s += 2 * level
    while level > 0:
        level = max(0, level - d)
        counts += [level, level]
        s += 2 * level
    rest = target - s
    while rest > 0:
        c = min(rest, d)
        counts.append(c)
        rest -= c
    assert sum(counts) == target
    return counts


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def grey_png(width: int, height: int, scanlines: bytes, interlace: int = 0) -> bytes:
    """An 8-bit greyscale PNG around already filtered ``scanlines`` (deflated here)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, interlace)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(scanlines, 9))
        + png_chunk(b"IEND", b"")
    )


def png_bomb(width: int, height: int, inflated: int) -> bytes:
    """A PNG of ``width`` x ``height`` whose IDAT inflates to ``inflated`` zero bytes."""
    comp = zlib.compressobj(9)
    block = bytes(1 << 20)
    data = bytearray()
    left = inflated
    while left > 0:
        n = min(left, len(block))
        data += comp.compress(block[:n])
        left -= n
    data += comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", bytes(data))
        + png_chunk(b"IEND", b"")
    )


def mask_message(
    payload: bytes,
    width: int,
    height: int,
    encoding: str = "rle",
    values: str = "binary",
    seq: Any = 0,
    stream: str = "cam",
    session: str = "s",
) -> List[bytes]:
    """A mask message with a complete header around ``payload``."""
    header = protocol.base_header(stream, session, 0, encoding)
    now = time.time_ns()  # fresh: readers may discard messages older than a few seconds
    header.update(
        seq=seq,
        frame_id=0,
        capture_ts_ns=now,
        publish_ts_ns=now,
        width=width,
        height=height,
        values=values,
    )
    text = json.dumps(header, separators=(",", ":"))
    return [b"mask", text.encode(), payload]


def run_in_worker(
    cases: Iterable[Tuple[str, Any, Any]],
    as_mib: int = 3072,
    case_s: float = 10.0,
    timeout: float = 600.0,
) -> List[Dict[str, Any]]:
    """Run ``(kind, data, options)`` cases in one limited worker (tests/fuzz_worker.py).

    Raises AssertionError naming the case if the worker dies (a segfault, the memory
    limit) or exits non-zero.
    """
    blob = bytearray()
    n = 0
    for case in cases:
        rec = pickle.dumps(case)
        blob += struct.pack(">I", len(rec)) + rec
        n += 1
    env = dict(os.environ, PYTHONFAULTHANDLER="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(as_mib), str(case_s)],
        input=bytes(blob),
        capture_output=True,
        timeout=timeout,
        env=env,
    )
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    if proc.returncode != 0 or len(lines) != n:
        raise AssertionError(
            f"worker died (exit {proc.returncode}) at case {len(lines)} of {n}; "
            f"stderr: {proc.stderr.decode(errors='replace')[-2000:]}"
        )
    return lines


def decode_in_subprocess(
    cases: Iterable[Sequence[bytes]],
    limits: Optional[Dict[str, int]] = None,
    as_mib: int = 3072,
    case_s: float = 10.0,
) -> List[Dict[str, Any]]:
    """Decode each message in one limited worker process; one result dict per case."""
    work = [("wire", [bytes(f) for f in frames], dict(limits or {})) for frames in cases]
    results = run_in_worker(work, as_mib=as_mib, case_s=case_s)
    for res in results:  # the hostile-input tests speak of protocol errors
        if res["result"] == "project":
            res["result"] = "protocol"
    return results
