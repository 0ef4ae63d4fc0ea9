"""Fuzzing: malformed messages are counted and skipped, never crash the subscriber.

Hypothesis at the decode-function level (raw bytes, mutated headers, mutated payloads of
every encoding; its shrinking gives a minimal failing message) plus a few hundred sent
over a real loopback socket into a real ``MaskSubscriber``. The bulk of the wire fuzzing,
12,000 structured mutations decoded in a memory-limited subprocess so that a crash fails
the test instead of pytest, is tests/test_fuzz_wire.py.
"""

from __future__ import annotations

import functools
import json
import time

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segcam.publish import protocol
from segcam.publish.subscriber import MaskSubscriber

pytestmark = pytest.mark.fuzz

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# Flat JSON values: nesting is exercised by the raw-bytes fuzzer; flat values keep the
# generator cheap enough for thousands of cases on a 2-core CI machine.
json_values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=6)
    | st.sampled_from([[], {}, [1, 2], {"a": None}, "rle", "png", "raw", "binary", 1])
)


@functools.lru_cache(maxsize=None)
def _valid_cached(encoding: str) -> tuple:
    return tuple(_build_valid(encoding))


def _valid(encoding: str = "rle") -> list:
    """A valid 6x5 binary mask message (built once per encoding)."""
    return list(_valid_cached(encoding))


@functools.lru_cache(maxsize=None)
def _jpeg() -> bytes:
    return protocol.encode_jpeg(np.full((8, 16, 3), 90, np.uint8), 70)


def _build_valid(encoding: str) -> list:
    mask = np.zeros((6, 5), np.uint8)
    mask[1:4, 2:4] = 1
    header = protocol.base_header("cam", "s", 1, encoding)
    header.update(
        frame_id=9,
        capture_ts_ns=1,
        publish_ts_ns=2,
        width=5,
        height=6,
        values="binary",
        model="m",
        threshold=0.5,
    )
    return protocol.pack("mask", header, protocol.encode_mask(mask, encoding))


def _decode_ok_or_protocol_error(frames) -> None:
    try:
        msg = protocol.decode(frames)
    except protocol.ProtocolError as exc:
        assert exc.kind in ("malformed", "unsupported_version", "unsupported_encoding",
                            "unknown_topic")  # fmt: skip
        return
    assert msg.topic in protocol.TOPICS


@settings(FUZZ, max_examples=500)
@given(st.lists(st.binary(max_size=80), max_size=5))
def test_fuzz_raw_parts(frames) -> None:
    _decode_ok_or_protocol_error(frames)


@settings(FUZZ, max_examples=400)
@given(
    topic=st.sampled_from([b"mask", b"frame", b"telemetry"]),
    encoding=st.sampled_from(["raw", "png", "rle"]),
    changes=st.dictionaries(
        st.sampled_from(
            [
                "version",
                "encoding",
                "values",
                "width",
                "height",
                "frame_id",
                "seq",
                "capture_ts_ns",
                "publish_ts_ns",
                "minor",
                "extra",
            ]  # fmt: skip
        ),
        json_values,
        max_size=4,
    ),
    drop=st.lists(st.sampled_from(["version", "encoding", "width", "values"]), max_size=2),
)
def test_fuzz_headers(topic, encoding, changes, drop) -> None:
    frames = _valid(encoding)
    header = json.loads(frames[1])
    header.update(changes)
    for key in drop:
        header.pop(key, None)
    _decode_ok_or_protocol_error([topic, json.dumps(header).encode(), frames[2]])


@settings(FUZZ, max_examples=400)
@given(
    encoding=st.sampled_from(["raw", "png", "rle", "jpeg", "json"]),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    tail=st.binary(max_size=20),
)
def test_fuzz_payloads(encoding, cut, flips, tail) -> None:
    if encoding == "jpeg":
        header = protocol.base_header("cam", "s", 0, "jpeg")
        header.update(frame_id=1, capture_ts_ns=1, width=16, height=8)
        payload = _jpeg()
        topic = b"frame"
    elif encoding == "json":
        header = protocol.base_header("cam", "s", 0, "json")
        payload = json.dumps({"fps": 1.0, "stages": {"infer": {"p50_ms": 3}}}).encode()
        topic = b"telemetry"
    else:
        topic, raw_header, payload = _valid(encoding)
        header = json.loads(raw_header)
    data = bytearray(payload[:cut] if cut < len(payload) else payload)
    for pos, value in flips:
        if data:
            data[pos % len(data)] = value
    data += tail
    _decode_ok_or_protocol_error([topic, json.dumps(header).encode(), bytes(data)])


# --------------------------------------------------------------------------- over a socket


@pytest.fixture(scope="module")
def raw_pub_and_sub():
    """A raw PUB socket (the fuzzer) and a real MaskSubscriber connected to it."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.SNDHWM, 100000)
    pub.bind("tcp://127.0.0.1:*")
    url = pub.getsockopt_string(zmq.LAST_ENDPOINT)
    # Fuzzed timestamps are arbitrary: no age limit, every message reaches the decoder.
    sub = MaskSubscriber(url, list(protocol.TOPICS), rcvhwm=100000, max_age_s=0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # PUB/SUB join: send until the first one arrives
        pub.send_multipart(_valid())
        if sub.recv(timeout=0.05) is not None:
            break
    else:
        pytest.fail("subscriber never connected")
    while sub.recv(timeout=0.2) is not None:
        pass
    yield pub, sub
    sub.close()
    pub.close(0)
    ctx.term()


@settings(FUZZ, max_examples=300)
@given(
    topic=st.sampled_from([b"mask", b"frame", b"telemetry", b"mask\x00junk", b"telemetry2"]),
    parts=st.lists(st.binary(max_size=60), min_size=0, max_size=4),
    header=json_values,
)
def test_fuzz_over_socket_never_breaks_the_subscriber(raw_pub_and_sub, topic, parts, header):
    pub, sub = raw_pub_and_sub
    before = sub.stats
    bad = [topic, json.dumps(header).encode()] + parts if parts else [topic]
    pub.send_multipart(bad)
    sentinel = _valid()
    pub.send_multipart(sentinel)
    got = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = sub.recv(timeout=1.0)
        if msg is not None and msg.payload == sentinel[2] and msg.header.get("seq") == 1:
            got = msg
            break
    assert got is not None, "the subscriber stopped delivering after a malformed message"
    after = sub.stats
    # The malformed message was either counted as an error or (rarely) decoded.
    delta = (after["decode_errors"] - before["decode_errors"]) + (
        sum(after["received"].values()) - sum(before["received"].values()) - 1
    )
    assert delta == 1
