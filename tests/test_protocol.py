"""Wire protocol codec: exact round trips, header schema, versioning rules, size guards."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segcam.publish import protocol
from segcam.publish.protocol import (
    MalformedMessage,
    UnknownTopic,
    UnsupportedEncoding,
    UnsupportedVersion,
)


def mask_message(mask: np.ndarray, encoding: str, values: str, **extra) -> list:
    """A mask message built by hand; ``extra`` overrides header fields after encoding."""
    header = protocol.base_header("cam", "s1", 7, encoding)
    header.update(
        frame_id=3,
        capture_ts_ns=1_700_000_000_000_000_000,
        publish_ts_ns=1_700_000_000_001_000_000,
        width=mask.shape[1],
        height=mask.shape[0],
        values=values,
        model="m",
        threshold=0.5,
    )
    header.update(extra)
    return protocol.pack("mask", header, protocol.encode_mask(mask, encoding))


ENCODINGS = [("raw", "probability"), ("png", "probability"), ("raw", "binary"),
             ("png", "binary"), ("rle", "binary")]  # fmt: skip


@pytest.mark.parametrize("encoding,values", ENCODINGS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_encoding_roundtrips_exactly(encoding: str, values: str, data) -> None:
    h = data.draw(st.integers(1, 48))
    w = data.draw(st.integers(1, 48))
    top = 255 if values == "probability" else 1
    mask = data.draw(arrays(np.uint8, (h, w), elements=st.integers(0, top)))
    msg = protocol.decode(mask_message(mask, encoding, values))
    assert msg.topic == "mask"
    assert msg.data.dtype == np.uint8 and msg.data.shape == (h, w)
    assert np.array_equal(msg.data, mask)
    assert msg.header["frame_id"] == 3 and msg.header["seq"] == 7


@pytest.mark.parametrize("encoding,values", ENCODINGS)
def test_full_hd_roundtrip(encoding: str, values: str) -> None:
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:1080, 0:1920]
    prob = np.clip(1.2 - np.hypot((xx - 960) / 400, (yy - 540) / 500), 0, 1)
    mask = protocol.quantize(prob.astype(np.float32), values, 0.5)
    if values == "probability":
        mask[rng.random(mask.shape) < 0.01] = 17
    msg = protocol.decode(mask_message(mask, encoding, values))
    assert np.array_equal(msg.data, mask)


def test_quantize() -> None:
    m = np.array([[0.0, 0.2, 0.5, 0.501, 1.0, 1.7, 0.998]], np.float32)
    assert protocol.quantize(m, "probability", 0.5).tolist() == [[0, 51, 128, 128, 255, 255, 254]]
    assert protocol.quantize(m, "binary", 0.5).tolist() == [[0, 0, 1, 1, 1, 1, 1]]
    assert not np.shares_memory(protocol.quantize(m, "binary", 0.5), m)
    u8 = np.array([[0, 127, 128, 255]], np.uint8)
    assert protocol.quantize(u8, "binary", 0.5).tolist() == [[0, 0, 1, 1]]


def test_rle_refuses_probabilities() -> None:
    with pytest.raises(ValueError, match="binary"):
        protocol.encode_mask(np.full((2, 2), 7, np.uint8), "rle")


def test_frame_and_telemetry_roundtrip() -> None:
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, :32] = (255, 0, 0)
    header = protocol.base_header("cam", "s", 0, "jpeg")
    header.update(frame_id=1, capture_ts_ns=5, width=64, height=48)
    msg = protocol.decode(protocol.pack("frame", header, protocol.encode_jpeg(frame, 95)))
    assert msg.data.shape == (48, 64, 3)
    assert np.abs(msg.data.astype(int) - frame.astype(int)).mean() < 3  # JPEG is lossy

    header = protocol.base_header("cam", "s", 0, "json")
    payload = json.dumps({"fps": 29.5, "temperatures": {"gpu": 51.0}}).encode()
    msg = protocol.decode(protocol.pack("telemetry", header, payload))
    assert msg.data == {"fps": 29.5, "temperatures": {"gpu": 51.0}}


# --------------------------------------------------------------------------- rules


def test_unknown_header_fields_and_extra_parts_are_ignored() -> None:
    mask = np.eye(4, dtype=np.uint8)
    frames = mask_message(mask, "rle", "binary", future_field={"x": [1, 2]}, minor=9)
    msg = protocol.decode(frames + [b"a later addition"])
    assert np.array_equal(msg.data, mask)
    assert msg.header["future_field"] == {"x": [1, 2]}


def test_unknown_major_version_is_unsupported() -> None:
    frames = mask_message(np.eye(4, dtype=np.uint8), "rle", "binary", version=2)
    with pytest.raises(UnsupportedVersion):
        protocol.decode(frames)


@pytest.mark.parametrize("field,value", [("encoding", "zstd"), ("values", "logits")])
def test_unknown_encoding_or_values_is_unsupported(field: str, value: str) -> None:
    frames = mask_message(np.eye(4, dtype=np.uint8), "raw", "binary")
    header = json.loads(frames[1])
    header[field] = value
    frames[1] = json.dumps(header).encode()
    with pytest.raises(UnsupportedEncoding):
        protocol.decode(frames)


def test_unknown_topic() -> None:
    frames = mask_message(np.eye(4, dtype=np.uint8), "raw", "binary")
    with pytest.raises(UnknownTopic):
        protocol.decode([b"masks"] + frames[1:])
    with pytest.raises(UnknownTopic):
        protocol.decode(frames, topics=["telemetry"])


@pytest.mark.parametrize(
    "change",
    [
        {"width": 5},  # raw payload length no longer matches
        {"width": 0},
        {"height": 100000},
        {"width": True},
        {"frame_id": "3"},
        {"seq": None},
        {"version": "1"},
    ],
    ids=lambda c: next(iter(c)) + "=" + repr(next(iter(c.values()))),
)
def test_bad_header_values_are_malformed(change) -> None:
    frames = mask_message(np.eye(4, dtype=np.uint8), "raw", "binary", **change)
    with pytest.raises(MalformedMessage):
        protocol.decode(frames)


def test_binary_values_above_one_are_malformed() -> None:
    frames = mask_message(np.full((3, 3), 9, np.uint8), "raw", "binary")
    with pytest.raises(MalformedMessage, match="binary"):
        protocol.decode(frames)


def test_png_bomb_is_refused_before_decoding() -> None:
    """A PNG whose IHDR claims another size than the header is refused unread."""
    frames = mask_message(np.zeros((4, 4), np.uint8), "png", "binary")
    png = bytearray(frames[2])
    png[16:24] = struct.pack(">II", 60000, 60000)
    with pytest.raises(MalformedMessage, match="PNG"):
        protocol.decode(frames[:2] + [bytes(png)])


def test_jpeg_size_mismatch_is_refused_before_decoding() -> None:
    header = protocol.base_header("cam", "s", 0, "jpeg")
    header.update(frame_id=1, capture_ts_ns=5, width=64, height=48)
    jpeg = protocol.encode_jpeg(np.zeros((480, 640, 3), np.uint8), 80)
    with pytest.raises(MalformedMessage, match="JPEG"):
        protocol.decode(protocol.pack("frame", header, jpeg))


def test_header_is_compact_ascii_json() -> None:
    frames = mask_message(np.eye(2, dtype=np.uint8), "raw", "binary", stream="café")
    assert frames[0] == b"mask"
    frames[1].decode("ascii")
    assert b" " not in frames[1]
    assert json.loads(frames[1])["stream"] == "café"
