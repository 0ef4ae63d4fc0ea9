"""Hostile wire messages: each is counted as malformed, never a crash or a runaway cost.

Decoding of the hostile bytes runs in a subprocess (tests/wire_worker.py) under a memory
limit, so a segfault or a blown allocation fails the test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import zmq
from wire_hostile import (
    coco_string,
    decode_in_subprocess,
    grey_png,
    mask_message,
    png_bomb,
    wrapping_counts,
)

from segcam.publish import protocol, rle
from segcam.publish.limits import MAX_WIRE_INT, SubscriberLimits
from segcam.publish.subscriber import MaskSubscriber

# --------------------------------------------------------------------------- RLE


@pytest.fixture(scope="module")
def wrapping_rle() -> bytes:
    """~690 KB of COCO RLE whose run lengths add up to 2**64 + 30."""
    return coco_string(wrapping_counts(30))


def test_rle_whose_int64_sum_wraps_is_malformed_not_a_segfault(wrapping_rle: bytes) -> None:
    # 6x5: refused by length; 16384x2048 (the pixel budget): refused by the per-run bound.
    cases = [
        mask_message(wrapping_rle, 5, 6),
        mask_message(wrapping_rle, 2048, 16384),
    ]
    results = decode_in_subprocess(cases)
    for res in results:
        assert res["result"] == "protocol" and res["kind"] == "malformed", res
        assert "RLE" in res["error"]


def test_rle_bounds_are_checked_with_exact_integers() -> None:
    with pytest.raises(protocol.ProtocolError, match="longer than"):
        rle.counts_to_mask([(1 << 64) - 2, 32], 6, 5)  # wraps to 30 in int64
    with pytest.raises(protocol.ProtocolError, match="longer than"):
        rle.counts_to_mask(np.array([(1 << 64) - 2, 32], np.uint64), 6, 5)
    with pytest.raises(protocol.ProtocolError, match="runs"):
        rle.counts_to_mask([0] * 40, 6, 5)  # more runs than pixels + 1
    with pytest.raises(protocol.ProtocolError, match="negative"):
        rle.counts_to_mask([40, -10], 6, 5)
    ok = rle.counts_to_mask([3, 27], 6, 5)
    assert ok.shape == (6, 5) and int(ok.sum()) == 27


# --------------------------------------------------------------------------- PNG


def test_png_decompression_bomb_is_refused_without_inflating_it() -> None:
    bomb = png_bomb(5, 6, 1 << 30)  # ~1 MiB that inflates to 1 GiB
    assert len(bomb) < 1100 * 1024
    (res,) = decode_in_subprocess([mask_message(bomb, 5, 6, "png", "probability")])
    assert res["result"] == "protocol" and res["kind"] == "malformed", res
    assert "inflates past" in res["error"]


def test_png_pixel_budget_is_configurable() -> None:
    side = 8192  # 64 Mpx: over the default budget of 32 Mpx, a valid all-zero image
    big = png_bomb(side, side, side * (side + 1))
    msg = mask_message(big, side, side, "png", "probability")
    (default,) = decode_in_subprocess([msg])
    (raised,) = decode_in_subprocess([msg], limits={"max_pixels": 1 << 26})
    assert default["result"] == "protocol" and "limits" in default["error"], default
    assert raised["result"] == "ok" and raised["shape"] == [side, side], raised


def test_message_size_limit() -> None:
    mask = np.zeros((60, 80), np.uint8)
    msg = mask_message(protocol.encode_mask(mask, "raw"), 80, 60, "raw", "probability")
    small = decode_in_subprocess([msg], limits={"max_message_bytes": 4000})[0]
    assert small["result"] == "protocol" and "larger than 4000" in small["error"]
    assert decode_in_subprocess([msg])[0]["result"] == "ok"


def _filtered(image: np.ndarray, filters) -> bytes:
    """PNG scanlines of ``image`` with the given filter type per row (0 None, 1 Sub, 2 Up)."""
    out = bytearray()
    prev = np.zeros(image.shape[1], np.int32)
    for row, f in zip(image.astype(np.int32), filters):
        if f == 0:
            line = row
        elif f == 1:
            line = row - np.concatenate(([0], row[:-1]))
        else:
            line = row - prev
        out.append(f)
        out += (line % 256).astype(np.uint8).tobytes()
        prev = row
    return bytes(out)


@pytest.mark.parametrize("pattern", ["none", "up", "mixed", "sub"])
def test_png_unfiltering_matches_libpng(pattern: str) -> None:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (37, 23), dtype=np.uint8)
    h = image.shape[0]
    filters = {
        "none": [0] * h,
        "up": [2] * h,
        "mixed": list(rng.choice([0, 2], h)),
        "sub": list(rng.choice([0, 1, 2], h)),
    }[pattern]
    png = grey_png(23, 37, _filtered(image, filters))
    assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED), image)
    header = json.loads(mask_message(b"", 23, 37, "png", "probability")[1])
    assert np.array_equal(protocol.decode_mask_payload(header, png), image)


def test_png_truncated_or_corrupt_image_data_is_malformed() -> None:
    image = np.arange(20 * 10, dtype=np.uint8).reshape(20, 10)
    lines = _filtered(image, [0] * 20)
    header = json.loads(mask_message(b"", 10, 20, "png", "probability")[1])
    with pytest.raises(protocol.MalformedMessage, match="truncated"):
        protocol.decode_mask_payload(header, grey_png(10, 20, lines[:-5]))
    with pytest.raises(protocol.MalformedMessage, match="filter"):
        protocol.decode_mask_payload(header, grey_png(10, 20, b"\x09" + lines[1:]))


# --------------------------------------------------------------------------- counters


@pytest.fixture
def raw_pub():
    """A raw PUB socket on a loopback ephemeral port: the hostile publisher."""
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    yield pub, pub.getsockopt_string(zmq.LAST_ENDPOINT)
    pub.close(0)
    ctx.term()


def _valid(seq, stream="cam", session="s"):
    mask = np.zeros((6, 5), np.uint8)
    mask[2:4, 1:3] = 1
    return mask_message(rle.encode(mask), 5, 6, seq=seq, stream=stream, session=session)


def _join(pub, sub) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # PUB/SUB join: send until the first one arrives
        pub.send_multipart(_valid(0, stream="join"))
        if sub.recv(timeout=0.05) is not None:
            break
    else:
        pytest.fail("subscriber never connected")
    while sub.recv(timeout=0.2) is not None:
        pass


def test_huge_seq_cannot_break_the_stats(raw_pub) -> None:
    pub, url = raw_pub
    with MaskSubscriber(url, max_age_s=0) as sub:  # the messages carry fixed timestamps
        _join(pub, sub)
        # 4300 digits: what Python's int/str conversion still accepts; twice the gap of it
        # would no longer convert back.
        huge = 10**4299
        for frames in (_valid(0), _valid(huge), _valid(huge * 2 - 1), _valid(MAX_WIRE_INT + 1)):
            pub.send_multipart(frames)
        # Two streams each jump to the largest seq: the gap counter saturates.
        for stream in ("a", "b"):
            pub.send_multipart(_valid(0, stream))
            pub.send_multipart(_valid(MAX_WIRE_INT, stream))
        got = []
        while True:
            msg = sub.recv(timeout=1.0)
            if msg is None:
                break
            got.append(msg)
        stats = sub.stats
    json.dumps(stats)  # must stay serialisable
    assert stats["errors"]["malformed"] == 3
    assert stats["gaps"] == MAX_WIRE_INT
    assert [m.header["seq"] for m in got] == [0, 0, MAX_WIRE_INT, 0, MAX_WIRE_INT]


def test_segcam_subscribe_survives_hostile_messages(raw_pub, wrapping_rle: bytes) -> None:
    """The CLI subscriber gets an RLE that wraps int64, huge seqs, and valid masks."""
    pub, url = raw_pub
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segcam",
            "subscribe",
            url,
            "--topic",
            "mask",
            "--count",
            "4",
            "--json",
            "--timeout",
            "30",
            "--interval",
            "0.2",
            "--max-age",
            "0",  # the messages carry fixed timestamps
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    hostile = [
        mask_message(wrapping_rle, 5, 6),
        mask_message(wrapping_rle, 2048, 16384),
        _valid(10**4299),
        _valid(10**4299 * 2),
    ]
    try:
        seq = 0
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            for frames in hostile:
                pub.send_multipart(frames)
            pub.send_multipart(_valid(seq))
            seq += 1
            time.sleep(0.1)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert summary["received"]["mask"] >= 4
    # The very first messages may be lost while PUB/SUB joins; later ones are counted.
    assert summary["errors"]["malformed"] >= 1


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        SubscriberLimits(max_pixels=0)
    with pytest.raises(ValueError):
        SubscriberLimits(max_message_bytes=1 << 40)


def test_segcam_subscribe_pixel_budget_option(raw_pub) -> None:
    """--max-pixels 20 refuses the 6x5 masks (30 px): counted malformed, none received."""
    pub, url = raw_pub
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segcam",
            "subscribe",
            url,
            "--topic",
            "mask",
            "--count",
            "1",
            "--json",
            "--timeout",
            "4",
            "--max-pixels",
            "20",
            "--max-age",
            "0",  # the test's messages carry a fixed old timestamp
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            pub.send_multipart(_valid(0))
            time.sleep(0.05)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 9, err[-2000:]  # no accepted mask before the timeout
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert summary["received"]["mask"] == 0 and summary["errors"]["malformed"] >= 1
    assert "Traceback" not in err


def _frame_message(jpeg: bytes, w: int, h: int):
    header = protocol.base_header("cam", "s", 0, "jpeg")
    header.update(frame_id=1, capture_ts_ns=1, publish_ts_ns=2, width=w, height=h)
    return protocol.pack("frame", header, jpeg)


def test_jpeg_with_many_scans_is_refused_before_libjpeg() -> None:
    """Each progressive scan is a pass over the image: repeating one makes a cheap payload
    that costs libjpeg a pass per copy. A real progressive JPEG (about 10 scans) decodes."""
    img = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_QUALITY, 60]
    good = cv2.imencode(".jpg", img, params)[1].tobytes()
    sos = [i for i in range(len(good) - 1) if good[i : i + 2] == b"\xff\xda"]
    scan = good[sos[-2] : sos[-1]]
    bad = good[: sos[-1]] + scan * 200 + good[sos[-1] :]
    ok, refused = decode_in_subprocess(
        [_frame_message(good, 128, 96), _frame_message(bad, 128, 96)]
    )
    assert ok["result"] == "ok", ok
    assert refused["result"] == "protocol" and "scans" in refused["error"], refused
