"""Fuzz tier, wire: >= 10,000 structured mutations of valid messages, decoded in a
limited subprocess (tests/fuzz_worker.py); only the project's ProtocolError may come out.

Mutations know the format: header fields set to hostile JSON values or dropped, header
text spliced (NaN, 30-digit integers, deep nesting, broken UTF-8), RLE run lengths
changed and re-encoded with exact integers (huge, negative, sums that wrap int64), PNG
chunks rebuilt with valid CRCs (other sizes, depths, interlace, filter bytes, IDAT that
inflates too far), JPEG frame headers resized, topics and part counts changed, and
plain byte flips, cuts and random bytes.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from typing import Any, Callable, Dict, List, Tuple

import fuzz_support
import numpy as np
import pytest
from wire_hostile import coco_string, png_chunk, wrapping_counts

from segcam.publish import protocol, rle

pytestmark = pytest.mark.fuzz

CASES_PER_SEED = 6000

HOSTILE_JSON: List[Any] = [
    0, -1, 1, 2, 7, 255, 256, 16384, 16385, 1 << 25, (1 << 25) + 1, 2**31, 2**63 - 1, 2**63,
    2**64 + 5, -(2**63), 10**19, 1.5, -0.0, 1e308, "", "x", "rle", "png", "raw", "jpeg",
    "json", "binary", "probability", "mask", None, True, False, [], {}, [1, 2, 3],
    {"a": {"b": [None]}}, "\u0000", "\ud7ff" * 3,
]  # fmt: skip
HEADER_KEYS = [
    "version", "minor", "encoding", "values", "width", "height", "frame_id", "seq",
    "capture_ts_ns", "publish_ts_ns", "stream", "session", "threshold", "frame_width",
]  # fmt: skip
TEXT_SPLICES = [
    b"NaN", b"Infinity", b"-Infinity", b"1e999", b"1" + b"0" * 30, b"[" * 3000,
    b'{"a":' * 500, b"\xff\xfe", b"\xc3", b'"\\ud800"', b"null", b",,", b"}",
]  # fmt: skip


def _randbytes(rng: random.Random, n: int) -> bytes:
    """``n`` random bytes (Random.randbytes is 3.9+)."""
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n > 0 else b""


def _mask(rng: random.Random, h: int, w: int, values: str) -> np.ndarray:
    nprng = np.random.default_rng(rng.getrandbits(32))
    if values == "binary":
        return (nprng.random((h, w)) < rng.random()).astype(np.uint8)
    return nprng.integers(0, 256, (h, w), dtype=np.uint8)


def _base(rng: random.Random) -> Tuple[List[bytes], Dict[str, Any], str]:
    """A valid message: (frames, header dict, description)."""
    topic = rng.choices(["mask", "frame", "telemetry"], [8, 1, 1])[0]
    if topic == "telemetry":
        header = protocol.base_header("cam", "s", rng.randrange(100), "json")
        payload = json.dumps({"fps": 30.0, "stages": {"infer": {"p50_ms": 3}}}).encode()
        return protocol.pack("telemetry", header, payload), header, "telemetry"
    h, w = rng.randint(1, 40), rng.randint(1, 40)
    if topic == "frame":
        header = protocol.base_header("cam", "s", rng.randrange(100), "jpeg")
        header.update(frame_id=1, capture_ts_ns=1, width=w, height=h)
        frame = np.full((h, w, 3), rng.randrange(256), np.uint8)
        return protocol.pack("frame", header, protocol.encode_jpeg(frame, 70)), header, "frame"
    encoding = rng.choice(["raw", "png", "rle"])
    values = "binary" if encoding == "rle" else rng.choice(["binary", "probability"])
    mask = _mask(rng, h, w, values)
    header = protocol.base_header("cam", "s", rng.randrange(100), encoding)
    header.update(frame_id=rng.randrange(1000), capture_ts_ns=1, publish_ts_ns=2, width=w,
                  height=h, values=values)  # fmt: skip
    frames = protocol.pack("mask", header, protocol.encode_mask(mask, encoding))
    return frames, header, f"mask {encoding} {values} {w}x{h}"


# --------------------------------------------------------------------------- mutators


def m_header_set(rng, frames, header):
    key = rng.choice(HEADER_KEYS + ["extra"])
    header[key] = rng.choice(HOSTILE_JSON)
    return _repack(frames, header), f"{key}={header[key]!r}"[:60]


def m_header_drop(rng, frames, header):
    key = rng.choice(HEADER_KEYS)
    header.pop(key, None)
    return _repack(frames, header), f"drop {key}"


def m_header_text(rng, frames, header):
    text = bytearray(frames[1])
    pos = rng.randrange(len(text) + 1)
    splice = rng.choice(TEXT_SPLICES)
    if rng.random() < 0.5:  # replace a value: find a ':' and put the splice after it
        colons = [i for i, c in enumerate(text) if c == ord(":")]
        if colons:
            pos = rng.choice(colons) + 1
            end = pos
            while end < len(text) and text[end] not in b",}":
                end += 1
            text[pos:end] = splice
            return [frames[0], bytes(text), frames[2]], f"header value <- {splice[:20]!r}"
    text[pos:pos] = splice
    return [frames[0], bytes(text), frames[2]], f"header splice {splice[:20]!r}"


def m_dims(rng, frames, header):
    if "width" not in header:
        return m_header_set(rng, frames, header)
    header["width"], header["height"] = rng.choice(
        [(header["height"], header["width"]), (header["width"] + 1, header["height"]),
         (16384, 2048), (1, header["width"] * header["height"]), (8192, 8192), (0, 5)]
    )  # fmt: skip
    return _repack(frames, header), f"dims {header['width']}x{header['height']}"


def m_bytes(rng, frames, header):
    i = rng.choice([0, 1, 2, 2, 2])
    data = bytearray(frames[i])
    op = rng.choice(["flip", "cut", "extend", "random"])
    if op == "flip" and data:
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif op == "cut":
        del data[rng.randrange(len(data) + 1) :]
    elif op == "extend":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        data = bytearray(_randbytes(rng, rng.randint(0, 200)))
    out = list(frames)
    out[i] = bytes(data)
    return out, f"part {i} {op}"


def m_parts(rng, frames, header):
    op = rng.choice(["fewer", "more", "topic"])
    if op == "fewer":
        return frames[: rng.randrange(3)], "fewer parts"
    if op == "more":
        return frames + [_randbytes(rng, rng.randint(0, 20))] * rng.randint(1, 3), "more parts"
    topic = rng.choice([b"", b"mask\x00", b"masks", b"MASK", b"\xff", b"frame", b"telemetry"])
    return [topic] + frames[1:], f"topic {topic!r}"


_WRAP: Dict[int, bytes] = {}


def m_rle(rng, frames, header):
    if header.get("encoding") != "rle":
        return m_bytes(rng, frames, header)
    h, w = header["height"], header["width"]
    total = h * w
    try:
        counts = [int(c) for c in rle.string_to_counts(frames[2])]
    except protocol.ProtocolError:  # an earlier step broke it already
        return m_bytes(rng, frames, header)
    op = rng.choice(["huge", "negative", "extra", "drop", "wrap", "shift", "zeros"])
    if op == "huge" and counts:
        counts[rng.randrange(len(counts))] = rng.choice([2**34 - 1, 2**40, 2**62, total + 1])
    elif op == "negative" and counts:
        counts[rng.randrange(len(counts))] = -rng.randint(1, 2**33)
    elif op == "extra":
        counts += [rng.randint(0, 5) for _ in range(rng.randint(1, 5))]
    elif op == "drop" and counts:
        counts.pop(rng.randrange(len(counts)))
    elif op == "wrap":
        if total not in _WRAP and len(_WRAP) < 3:
            _WRAP[total] = coco_string(wrapping_counts(total))
        if total in _WRAP:
            return _with_payload(frames, _WRAP[total]), "rle counts sum to 2**64 + H*W"
        counts = [(1 << 64) - 1, total + 1]
    elif op == "shift" and len(counts) > 1:
        i = rng.randrange(len(counts) - 1)
        d = rng.randint(1, 2**33)
        counts[i] += d
        counts[i + 1] -= d
    else:
        counts = [0] * rng.randint(total + 2, total + 10) + [total]
    return _with_payload(frames, coco_string(counts)), f"rle {op}"


def m_png(rng, frames, header):
    if header.get("encoding") != "png":
        return m_bytes(rng, frames, header)
    h, w = header["height"], header["width"]
    ihdr = bytearray(struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    lines = bytearray()
    for _ in range(h):
        lines.append(rng.choice([0, 0, 2, 1, 3, 4]))
        lines += _randbytes(rng, w)
    op = rng.choice(["dims", "depth", "colour", "interlace", "filter", "bomb", "short",
                     "two_idat", "no_iend", "chunk_len", "garbage_idat"])  # fmt: skip
    idat = [zlib.compress(bytes(lines))]
    tail = png_chunk(b"IEND", b"")
    if op == "dims":
        struct.pack_into(">II", ihdr, 0, rng.choice([w + 1, 0, 2**31, 16384]), h)
    elif op == "depth":
        ihdr[8] = rng.choice([1, 2, 4, 16, 0, 255])
    elif op == "colour":
        ihdr[9] = rng.choice([2, 3, 4, 6, 7])
    elif op == "interlace":
        ihdr[12] = rng.choice([1, 2])
    elif op == "filter":
        lines[0] = rng.choice([5, 9, 255])
        idat = [zlib.compress(bytes(lines))]
    elif op == "bomb":
        idat = [zlib.compress(bytes(len(lines) * rng.choice([2, 10, 1000])))]
    elif op == "short":
        idat = [zlib.compress(bytes(lines[: rng.randrange(len(lines))]))]
    elif op == "two_idat":
        z = idat[0]
        cut = rng.randrange(len(z) + 1)
        idat = [z[:cut], z[cut:]]
    elif op == "no_iend":
        tail = b""
    elif op == "garbage_idat":
        idat = [_randbytes(rng, rng.randint(0, 64))]
    body = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", bytes(ihdr))
    body += b"".join(png_chunk(b"IDAT", z) for z in idat) + tail
    if op == "chunk_len":
        body = body[:33] + struct.pack(">I", rng.choice([2**31, 2**32 - 1])) + body[37:]
    return _with_payload(frames, body), f"png {op}"


def m_jpeg(rng, frames, header):
    if frames[0] != b"frame":
        return m_bytes(rng, frames, header)
    data = bytearray(frames[2])
    i = data.find(b"\xff\xc0")
    if i >= 0 and i + 9 <= len(data):
        struct.pack_into(">HH", data, i + 5, rng.randrange(65536), rng.randrange(65536))
    return _with_payload(frames, bytes(data)), "jpeg sof size"


MUTATORS: List[Tuple[Callable, int]] = [
    (m_header_set, 4), (m_header_drop, 1), (m_header_text, 2), (m_dims, 2), (m_bytes, 3),
    (m_parts, 1), (m_rle, 3), (m_png, 3), (m_jpeg, 1),
]  # fmt: skip


def _repack(frames, header):
    text = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    return [frames[0], text] + list(frames[2:])


def _with_payload(frames, payload):
    return [frames[0], frames[1], payload] + list(frames[3:])


def generate(seed: int, n: int) -> Tuple[List[List[bytes]], List[str]]:
    """``n`` messages from ``seed``: 3% valid, 2% random bytes, the rest mutated."""
    rng = random.Random(seed)
    fns, weights = zip(*MUTATORS)
    cases, descriptions = [], []
    for _ in range(n):
        frames, header, what = _base(rng)
        roll = rng.random()
        if roll < 0.03:
            desc = f"valid {what}"
        elif roll < 0.05:
            frames = [_randbytes(rng, rng.randint(0, 100)) for _ in range(rng.randint(0, 4))]
            desc = "random parts"
        else:
            steps = []
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                frames, step = rng.choices(fns, weights)[0](rng, list(frames), dict(header))
                steps.append(step)
                if len(frames) < 3:
                    break  # later mutators work on complete messages
            desc = f"{what}: " + "; ".join(steps)
        cases.append(frames)
        descriptions.append(desc)
    return cases, descriptions


def test_fuzz_wire_messages() -> None:
    results, descriptions = fuzz_support.run_tier(
        "wire", generate, CASES_PER_SEED, case_s=5.0, wrap=lambda frames: ("wire", frames, {})
    )
    valid = [r for r, d in zip(results, descriptions) if d.startswith("valid")]
    assert valid and all(r["result"] == "ok" for r in valid), "a valid message was refused"
    kinds = {r["kind"] for r in results if r["result"] == "project"}
    assert {"malformed", "unknown_topic"} <= kinds
