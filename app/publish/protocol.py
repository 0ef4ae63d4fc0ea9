"""segcam's mask-stream wire protocol: message layout, header schema, payload codecs.

A message is three ZeroMQ frames ``[topic, header, payload]``: the topic in ASCII
(``mask``, ``frame`` or ``telemetry``), the header as a UTF-8 JSON object and the payload
as bytes whose meaning the header's ``encoding`` names. ``docs/protocol.md`` is the
normative description; this module is the reference implementation of both sides.

Decoding never trusts the sender: sizes are bounded before anything is allocated and
every failure is a :class:`ProtocolError` subclass whose ``kind`` says how a reader
should count it (``malformed``, ``unsupported_version``, ``unsupported_encoding``,
``unknown_topic``).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from segcam.errors import ProtocolError
from segcam.publish import rle
from segcam.publish.limits import DEFAULT_LIMITS, MAX_WIRE_INT, SubscriberLimits

PROTOCOL_VERSION = 1  # major: a reader skips messages of any other major version
PROTOCOL_MINOR = 1  # minor: additions only; readers ignore fields they do not know
# 1.1 added the header fields ``dropped`` and ``session_start_ns`` and the topic ``relay``.
CLOCK = "realtime"  # timestamps are CLOCK_REALTIME ns since 1970-01-01T00:00:00Z

TOPIC_MASK = "mask"
TOPIC_FRAME = "frame"
TOPIC_TELEMETRY = "telemetry"
TOPIC_RELAY = "relay"  # a relay's own counters (protocol 1.1), JSON like telemetry
TOPICS = (TOPIC_MASK, TOPIC_FRAME, TOPIC_TELEMETRY, TOPIC_RELAY)

MASK_ENCODINGS = ("raw", "png", "rle")
FRAME_ENCODINGS = ("jpeg",)
TELEMETRY_ENCODINGS = ("json",)
VALUES = ("probability", "binary")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Adam7 passes: (x0, y0, dx, dy)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))  # fmt: skip


class MalformedMessage(ProtocolError):
    """The message breaks the protocol (wrong part count, bad JSON, bad payload)."""

    kind = "malformed"


class UnsupportedVersion(ProtocolError):
    """The header's major ``version`` is not one this reader understands."""

    kind = "unsupported_version"


class UnsupportedEncoding(ProtocolError):
    """The header names an ``encoding`` (or ``values``) this reader does not know."""

    kind = "unsupported_encoding"


class UnknownTopic(ProtocolError):
    """The topic frame is not one of ``mask``, ``frame``, ``telemetry``."""

    kind = "unknown_topic"


@dataclass
class Message:
    """One decoded message.

    ``data`` is a uint8 ndarray for ``mask`` (H x W) and ``frame`` (H x W x 3, BGR) and a
    dict for ``telemetry``; ``payload`` is the payload as received (e.g. the JPEG bytes);
    ``nbytes`` counts all three frames; ``recv_ts_ns`` is set by the receiver.
    """

    topic: str
    header: Dict[str, Any]
    data: Any
    payload: bytes = b""
    nbytes: int = 0
    recv_ts_ns: int = 0
    extra: Dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- encoding


def quantize(mask: np.ndarray, values: str, threshold: float) -> np.ndarray:
    """A new uint8 H x W array for the wire: probability 0..255 or binary 0/1.

    ``mask`` is float in [0, 1] (or uint8 0..255). Probability is ``round(p * 255)``
    saturated to 0..255 (OpenCV's ``convertScaleAbs``: one fast pass; the refiner keeps
    masks in [0, 1]); binary is ``p >= threshold``. Never returns a view of ``mask``.
    """
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.dtype == np.uint8:
        if values == "binary":
            return (mask >= int(round(threshold * 255))).view(np.uint8)
        return mask.copy()
    if values == "binary":
        return (mask >= threshold).view(np.uint8)
    import cv2

    if mask.dtype not in (np.float32, np.float64):
        mask = mask.astype(np.float32)
    return cv2.convertScaleAbs(mask, alpha=255.0)


def encode_mask(mask: np.ndarray, encoding: str, png_level: int = 1) -> bytes:
    """Payload bytes of a uint8 H x W mask in ``raw``, ``png`` or ``rle``."""
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"mask must be uint8 H x W, got {mask.dtype} {mask.shape}")
    if encoding == "raw":
        return np.ascontiguousarray(mask).tobytes()
    if encoding == "png":
        import cv2

        ok, buf = cv2.imencode(".png", mask, _png_params(cv2, mask, png_level))
        if not ok:  # pragma: no cover - OpenCV fails only without a PNG codec
            raise ProtocolError("OpenCV could not encode PNG", "install opencv with PNG support")
        return buf.tobytes()
    if encoding == "rle":
        if mask.size and int(mask.max()) > 1:
            raise ValueError("rle carries binary (0/1) masks only")
        return rle.encode(mask)
    raise ValueError(f"unknown mask encoding {encoding!r}")


def _png_params(cv2: Any, mask: np.ndarray, level: int) -> List[int]:
    """Fast PNG settings for masks: zlib's run-length strategy and a fixed row filter.

    OpenCV's default adaptive filtering costs ~20 ms at 1080p; a fixed filter (none for
    0/1 masks, "up" for probabilities) with Z_RLE takes 4-7 ms and gives smaller files.
    Older OpenCV without IMWRITE_PNG_FILTER keeps its default filtering.
    """
    params = [cv2.IMWRITE_PNG_COMPRESSION, int(level)]
    params += [cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):
        binary = mask.size > 0 and int(mask.max()) <= 1
        params += [
            cv2.IMWRITE_PNG_FILTER,
            cv2.IMWRITE_PNG_FILTER_NONE if binary else cv2.IMWRITE_PNG_FILTER_UP,
        ]
    return params


def encode_jpeg(frame_bgr: np.ndarray, quality: int) -> bytes:
    """Baseline JPEG of a BGR uint8 frame (the ``frame`` topic payload)."""
    import cv2

    ok, buf = cv2.imencode(".jpg", frame_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover
        raise ProtocolError("OpenCV could not encode JPEG", "install opencv with JPEG support")
    return buf.tobytes()


def pack(topic: str, header: Dict[str, Any], payload: bytes) -> List[bytes]:
    """The three frames of a message; the header is compact, ASCII-only JSON."""
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return [topic.encode("ascii"), text.encode("utf-8"), payload]


def base_header(
    stream: str,
    session: str,
    seq: int,
    encoding: str,
    *,
    dropped: int = 0,
    session_start_ns: int = 0,
) -> Dict[str, Any]:
    """Fields every message carries (``publish_ts_ns`` is set right before sending).

    ``dropped``: earlier ``seq`` numbers of this topic that the publisher itself dropped;
    ``session_start_ns``: when the publisher session began (realtime ns).
    """
    return {
        "version": PROTOCOL_VERSION,
        "minor": PROTOCOL_MINOR,
        "stream": stream,
        "session": session,
        "session_start_ns": int(session_start_ns),
        "seq": int(seq),
        "dropped": int(dropped),
        "clock": CLOCK,
        "publish_ts_ns": 0,
        "encoding": encoding,
    }


# --------------------------------------------------------------------------- decoding


def _get(header: Dict[str, Any], key: str, kind: Any) -> Any:
    value = header.get(key)
    if kind is int:
        # Counters and timestamps are 64-bit on the wire: 0 <= value <= 2**63 - 1.
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and not 0 <= value <= MAX_WIRE_INT:
            raise MalformedMessage(f"header field {key!r} outside 0..2**63-1")
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise MalformedMessage(
            f"header field {key!r} missing or not {getattr(kind, '__name__', kind)}"
        )
    return value


def _dims(header: Dict[str, Any], limits: SubscriberLimits) -> Sequence[int]:
    w = _get(header, "width", int)
    h = _get(header, "height", int)
    side = limits.max_side
    if not (1 <= w <= side and 1 <= h <= side) or w * h > limits.max_pixels:
        raise MalformedMessage(
            f"size {w}x{h} is outside this reader's limits "
            f"(sides 1..{side}, at most {limits.max_pixels} pixels)"
        )
    return h, w


def _json_loads(raw: bytes, what: str, limits: SubscriberLimits) -> Any:
    """Strict JSON: no NaN/Infinity, integers of at most ``max_int_digits`` digits.

    Bounding digits keeps int parsing linear on every Python (3.8 has no digit limit,
    3.11+ raises past 4300 digits) and keeps counters built from header values small.
    """

    def bounded_int(text: str) -> int:
        if len(text.lstrip("-")) > limits.max_int_digits:
            raise ValueError(f"integer with more than {limits.max_int_digits} digits")
        return int(text)

    def finite_float(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(f"number {text[:40]} is out of range")
        return value

    def no_constant(text: str) -> Any:
        raise ValueError(f"{text} is not JSON")

    try:
        return json.loads(
            bytes(raw).decode("utf-8"),
            parse_int=bounded_int,
            parse_float=finite_float,
            parse_constant=no_constant,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"{what} is not UTF-8 JSON: {str(exc)[:200]}") from None


def parse_header(raw: bytes, limits: SubscriberLimits = DEFAULT_LIMITS) -> Dict[str, Any]:
    """The header object, after the version check (the first thing a reader does)."""
    if len(raw) > limits.max_header_bytes:
        raise MalformedMessage(f"header larger than {limits.max_header_bytes} bytes")
    header = _json_loads(raw, "header", limits)
    if not isinstance(header, dict):
        raise MalformedMessage("header is not a JSON object")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedMessage("header has no integer 'version'")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion(f"protocol version {version} (this reader: {PROTOCOL_VERSION})")
    return header


def _png_chunks(payload: bytes) -> Tuple[bytes, bytes]:
    """(IHDR body, concatenated IDAT bodies) after checking the chunk structure.

    Every chunk lies inside the payload, has a correct CRC, IHDR comes first and IEND
    ends the file. Checked before anything is inflated: libpng spends seconds on a chunk
    length that points far past the end, which would let one bad message stall a reader.
    """
    if len(payload) < 45 or payload[:8] != _PNG_SIGNATURE:
        raise MalformedMessage("payload is not a PNG")
    pos, end = 8, len(payload)
    ihdr = b""
    idat: List[bytes] = []
    while pos + 12 <= end:
        (length,) = struct.unpack(">I", payload[pos : pos + 4])
        if length > end - pos - 12:
            raise MalformedMessage("PNG chunk runs past the end of the payload")
        body = payload[pos + 4 : pos + 8 + length]
        (crc,) = struct.unpack(">I", payload[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(body) & 0xFFFFFFFF != crc:
            raise MalformedMessage("PNG chunk CRC mismatch")
        kind = body[:4]
        if pos == 8 and (kind != b"IHDR" or length != 13):
            raise MalformedMessage("PNG does not start with a 13-byte IHDR chunk")
        if kind == b"IHDR":
            ihdr = body[4:]
        elif kind == b"IDAT":
            idat.append(body[4:])
        elif kind == b"IEND":
            return ihdr, b"".join(idat)
        pos += 12 + length
    raise MalformedMessage("PNG without IEND")


def _png_scanline_bytes(height: int, width: int, interlaced: bool) -> int:
    """Bytes of filtered scanlines (1 filter byte + 1 byte per pixel) of an 8-bit grey PNG."""
    if not interlaced:
        return height * (1 + width)
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        pw, ph = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pw > 0 and ph > 0:
            total += ph * (1 + pw)
    return total


def _decode_png(payload: bytes, h: int, w: int) -> np.ndarray:
    """The H x W uint8 grey image of a PNG payload, inflating at most its own size.

    The IDAT stream is inflated with ``max_length`` = the scanline bytes that IHDR's
    size implies, plus one to notice more: a small payload that would inflate to
    gigabytes (a decompression bomb) stops there and is refused. Non-interlaced images
    with the filters segcam writes (None, Up) are unfiltered here in numpy; any other
    valid PNG goes to OpenCV, which then cannot inflate more than was checked here.
    """
    ihdr, idat = _png_chunks(payload)
    pw, ph, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", ihdr)
    if (ph, pw) != (h, w) or depth != 8 or colour != 0:
        raise MalformedMessage(
            f"PNG is {pw}x{ph} depth {depth} colour type {colour}, expected {w}x{h} 8-bit greyscale"
        )
    if compression != 0 or filtering != 0 or interlace not in (0, 1):
        raise MalformedMessage("PNG with an unknown compression, filter or interlace method")
    expected = _png_scanline_bytes(h, w, interlace == 1)
    inflater = zlib.decompressobj()
    try:
        lines = inflater.decompress(idat, expected + 1)
    except zlib.error as exc:
        raise MalformedMessage(f"PNG image data does not inflate: {exc}") from None
    if len(lines) > expected:
        raise MalformedMessage(f"PNG image data inflates past the {expected} bytes of {w}x{h}")
    if len(lines) < expected:
        raise MalformedMessage(f"PNG image data is truncated ({len(lines)} of {expected} bytes)")
    if interlace == 0:
        rows = np.frombuffer(lines, dtype=np.uint8).reshape(h, w + 1)
        filters = rows[:, 0]
        if int(filters.max()) > 4:
            raise MalformedMessage(f"PNG row filter {int(filters.max())} (valid: 0..4)")
        if not np.any((filters != 0) & (filters != 2)):
            return _unfilter_none_up(rows[:, 1:], filters)
    import cv2

    mask = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.shape != (h, w) or mask.dtype != np.uint8:
        raise MalformedMessage("PNG payload does not decode to the header's size")
    return mask


def _unfilter_none_up(data: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Undo PNG filters None (0) and Up (2): each Up row adds the row above, mod 256.

    One in-place row add per Up row (uint8 wraps like the filter); faster than a
    cumulative sum along columns, and a None row simply stays as it is.
    """
    out = data.copy()
    for r in np.flatnonzero(filters[1:] == 2) + 1:  # row 0's "above" is all zeros
        np.add(out[r - 1], out[r], out=out[r])
    return out


def _jpeg_size(payload: bytes) -> Sequence[int]:
    """(height, width) from a JPEG's first SOFn marker, without decoding."""
    if len(payload) < 4 or payload[:2] != b"\xff\xd8":
        raise MalformedMessage("payload is not a JPEG")
    i = 2
    while i + 4 <= len(payload):
        if payload[i] != 0xFF:
            raise MalformedMessage("JPEG marker expected")
        marker = payload[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD9:
            i += 2
            continue
        (length,) = struct.unpack(">H", payload[i + 2 : i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(payload):
                break
            height, width = struct.unpack(">HH", payload[i + 5 : i + 9])
            return height, width
        if length < 2:
            raise MalformedMessage("JPEG segment length below 2")
        i += 2 + length
    raise MalformedMessage("JPEG without a frame header")


def decode_mask_payload(
    header: Dict[str, Any], payload: bytes, limits: SubscriberLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """uint8 H x W mask from a ``mask`` message's header and payload."""
    encoding = _get(header, "encoding", str)
    if encoding not in MASK_ENCODINGS:
        raise UnsupportedEncoding(f"mask encoding {encoding!r}")
    values = _get(header, "values", str)
    if values not in VALUES:
        raise UnsupportedEncoding(f"mask values {values!r}")
    h, w = _dims(header, limits)
    if encoding == "raw":
        if len(payload) != h * w:
            raise MalformedMessage(f"raw payload has {len(payload)} bytes, expected {h * w}")
        mask = np.frombuffer(bytes(payload), dtype=np.uint8).reshape(h, w).copy()
    elif encoding == "png":
        mask = _decode_png(bytes(payload), h, w)
    else:
        try:
            mask = rle.decode(payload, h, w)
        except ProtocolError as exc:
            raise MalformedMessage(f"bad RLE payload: {exc.message}") from None
    if values == "binary" and mask.size and int(mask.max()) > 1:
        raise MalformedMessage("binary mask has values other than 0 and 1")
    return mask


def decode_frame_payload(
    header: Dict[str, Any], payload: bytes, limits: SubscriberLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """BGR uint8 H x W x 3 image from a ``frame`` message."""
    encoding = _get(header, "encoding", str)
    if encoding not in FRAME_ENCODINGS:
        raise UnsupportedEncoding(f"frame encoding {encoding!r}")
    h, w = _dims(header, limits)
    jh, jw = _jpeg_size(payload)
    if (jh, jw) != (h, w):
        raise MalformedMessage(f"JPEG is {jw}x{jh}, header says {w}x{h}")
    # Every progressive scan is another pass over the whole image: a small payload of
    # many tiny scans would keep libjpeg busy for seconds. 0xFFDA cannot occur inside
    # entropy-coded data (0xFF is stuffed there), so counting it counts the scans.
    scans = payload.count(b"\xff\xda")
    if scans > limits.max_jpeg_scans:
        raise MalformedMessage(f"JPEG has {scans} scans, more than {limits.max_jpeg_scans}")
    import cv2

    image = cv2.imdecode(np.frombuffer(bytes(payload), dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape[:2] != (h, w):
        raise MalformedMessage("JPEG payload does not decode")
    return image


def decode_telemetry_payload(
    header: Dict[str, Any], payload: bytes, limits: SubscriberLimits = DEFAULT_LIMITS
) -> Dict[str, Any]:
    """The status dict of a ``telemetry`` message."""
    encoding = _get(header, "encoding", str)
    if encoding not in TELEMETRY_ENCODINGS:
        raise UnsupportedEncoding(f"telemetry encoding {encoding!r}")
    if len(payload) > limits.max_telemetry_bytes:
        raise MalformedMessage(f"telemetry payload larger than {limits.max_telemetry_bytes} bytes")
    data = _json_loads(payload, "telemetry", limits)
    if not isinstance(data, dict):
        raise MalformedMessage("telemetry is not a JSON object")
    return data


def decode(
    frames: Sequence[bytes],
    topics: Optional[Sequence[str]] = None,
    limits: SubscriberLimits = DEFAULT_LIMITS,
) -> Message:
    """Decode one multipart message; raises a :class:`ProtocolError` subclass on any fault.

    Parts after the third are ignored (room for later additions). ``topics`` limits the
    accepted topics (default: all known); ``limits`` bounds sizes (see
    :class:`~segcam.publish.limits.SubscriberLimits`).
    """
    if len(frames) < 3:
        raise MalformedMessage(f"expected 3 message parts, got {len(frames)}")
    raw_topic, raw_header, payload = (bytes(f) for f in frames[:3])
    try:
        topic = raw_topic.decode("ascii")
    except UnicodeDecodeError:
        raise UnknownTopic("topic is not ASCII") from None
    if topic not in (topics or TOPICS) or topic not in TOPICS:
        raise UnknownTopic(f"topic {topic[:40]!r}")
    if len(raw_topic) + len(raw_header) + len(payload) > limits.max_message_bytes:
        raise MalformedMessage(f"message larger than {limits.max_message_bytes} bytes")
    header = parse_header(raw_header, limits)
    for key in ("seq", "publish_ts_ns"):
        _get(header, key, int)
    if topic == TOPIC_MASK:
        for key in ("frame_id", "capture_ts_ns"):
            _get(header, key, int)
        data: Any = decode_mask_payload(header, payload, limits)
    elif topic == TOPIC_FRAME:
        for key in ("frame_id", "capture_ts_ns"):
            _get(header, key, int)
        data = decode_frame_payload(header, payload, limits)
    else:
        data = decode_telemetry_payload(header, payload, limits)
    nbytes = len(raw_topic) + len(raw_header) + len(payload)
    return Message(topic=topic, header=header, data=data, payload=payload, nbytes=nbytes)
