"""Publisher sink and subscriber over real ZeroMQ sockets on loopback (ephemeral ports)."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest
import zmq

from segcam.config import load_config
from segcam.errors import ConfigError, PublishError
from segcam.pipeline.knobs import Knobs, knobs_from_config
from segcam.pipeline.types import FrameResult
from segcam.publish import protocol
from segcam.publish.publisher import exposure_warning, is_loopback_endpoint
from segcam.publish.sink import MaskPublisherSink
from segcam.publish.subscriber import MaskSubscriber

WARMUP_ID = 1_000_000


def make_cfg(*overrides: str):
    return load_config(
        None, ["publish.enabled=true", "publish.bind=['tcp://127.0.0.1:*']", *overrides]
    )


def result(frame_id: int, mask: np.ndarray, frame=None, threshold: float = 0.5) -> FrameResult:
    h, w = mask.shape
    if frame is None:
        frame = np.zeros((h, w, 3), np.uint8)
    return FrameResult(
        frame_id=frame_id,
        capture_ts_ns=time.time_ns(),
        capture_mono_ns=time.monotonic_ns(),
        frame=frame,
        mask=mask,
        model_id="test-model",
        threshold=threshold,
    )


def soft_mask(h: int = 90, w: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.clip(1.3 - np.hypot((xx - w / 2) / (w / 3), (yy - h / 2) / (h / 2.5)), 0, 1)
    m[rng.random((h, w)) < 0.02] = 0.37
    return m.astype(np.float32)


def join(sink: MaskPublisherSink, sub: MaskSubscriber, timeout: float = 10.0) -> None:
    """PUB/SUB slow-joiner: publish warm-up masks until one arrives, then drain."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sink.submit(result(WARMUP_ID, np.zeros((4, 4), np.float32)))
        msg = sub.recv(timeout=0.05)
        if msg is not None:
            while sub.recv(timeout=0.2) is not None:
                pass
            return
    pytest.fail("subscriber never received the warm-up mask")


def submit_and_wait(sink: MaskPublisherSink, res: FrameResult, timeout: float = 10.0) -> None:
    """Submit, then wait until the publisher thread has sent it (so none is replaced)."""
    sent = sink.stats()["sent_mask"]
    sink.submit(res)
    deadline = time.monotonic() + timeout
    while sink.stats()["sent_mask"] == sent and time.monotonic() < deadline:
        time.sleep(0.005)


def receive(sub: MaskSubscriber, n: int, topic: str = "mask", timeout: float = 10.0) -> List[Any]:
    out: List[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        msg = sub.recv(timeout=0.2)
        if msg is not None and msg.topic == topic and msg.header.get("frame_id") != WARMUP_ID:
            out.append(msg)
    return out


@pytest.fixture
def started():
    """Start sinks and subscribers made in a test; stop/close them afterwards."""
    made: List[Any] = []

    def sink(*overrides: str, runner: Any = None) -> MaskPublisherSink:
        s = MaskPublisherSink(make_cfg(*overrides))
        if runner is not None:
            s.attach(runner)
        s.start()
        made.append(s)
        return s

    def sub(url: Any, topics=("mask",), **kw: Any) -> MaskSubscriber:
        s = MaskSubscriber(url, topics, **kw)
        made.append(s)
        return s

    yield sink, sub
    for obj in reversed(made):
        if isinstance(obj, MaskPublisherSink):
            obj.stop(2.0)
        else:
            obj.close()


@pytest.mark.parametrize(
    "encoding,values",
    [
        ("raw", "probability"),
        ("png", "probability"),
        ("raw", "binary"),
        ("png", "binary"),
        ("rle", "binary"),
    ],  # fmt: skip
)
def test_every_encoding_roundtrips_exactly_over_the_socket(started, encoding, values) -> None:
    make_sink, make_sub = started
    sink = make_sink(f"publish.encoding={encoding}", f"publish.values={values}")
    sub = make_sub(sink.endpoints[0])
    join(sink, sub)
    sent = {}
    for i in range(5):
        mask = soft_mask(seed=i)
        sent[i] = protocol.quantize(mask, values, 0.5)
        submit_and_wait(sink, result(i, mask))  # offered faster, the latest-slot drops
    got = receive(sub, 5)
    assert [m.header["frame_id"] for m in got] == list(range(5))
    for msg in got:
        h = msg.header
        assert (h["encoding"], h["values"], h["model"]) == (encoding, values, "test-model")
        assert (h["width"], h["height"], h["frame_width"], h["frame_height"]) == (120, 90, 120, 90)
        assert h["clock"] == "realtime" and h["publish_ts_ns"] >= h["capture_ts_ns"] > 0
        assert np.array_equal(msg.data, sent[h["frame_id"]])
    seqs = [m.header["seq"] for m in got]
    assert seqs == list(range(seqs[0], seqs[0] + 5))
    assert sub.stats["decode_errors"] == 0


def test_downscale_and_frame_topic(started) -> None:
    make_sink, make_sub = started
    sink = make_sink(
        "publish.downscale=4", "publish.encoding=png", "publish.values=probability",
        "publish.frame_topic=true", "publish.jpeg_quality=95",
    )  # fmt: skip
    sub = make_sub(sink.endpoints[0], ("mask", "frame"))
    join(sink, sub)
    mask = soft_mask(360, 480)
    frame = np.full((360, 480, 3), (10, 200, 30), np.uint8)
    sink.submit(result(7, mask, frame))
    got_mask = receive(sub, 1, "mask")[0]
    expected = protocol.quantize(
        cv2.resize(mask, (120, 90), interpolation=cv2.INTER_AREA), "probability", 0.5
    )
    assert got_mask.header["frame_width"] == 480 and got_mask.header["width"] == 120
    assert np.array_equal(got_mask.data, expected)
    sink.submit(result(8, mask, frame))
    got_frame = receive(sub, 1, "frame")[0]
    assert got_frame.data.shape == (360, 480, 3)
    assert np.abs(got_frame.data.astype(int) - frame.astype(int)).max() <= 8


class StatusSource:
    """Stand-in for the runner's telemetry side (``status``, ``knobs``, ``report_error``):
    the sink uses only these three members; the end-to-end test uses the real runner."""

    def __init__(self, cfg) -> None:
        self.knobs = Knobs(knobs_from_config(cfg))
        self.errors: List[Any] = []

    def status(self) -> Dict[str, Any]:
        return {"fps": 29.5, "stages": {"infer": {"p50_ms": 4.2}}, "temp": float("nan")}

    def report_error(self, exc: BaseException, where: str) -> None:
        self.errors.append((exc, where))


def test_telemetry_about_once_per_interval(started) -> None:
    make_sink, make_sub = started
    cfg = make_cfg("publish.telemetry_interval_s=0.2")
    runner = StatusSource(cfg)
    sink = make_sink("publish.telemetry_interval_s=0.2", runner=runner)
    sub = make_sub(sink.endpoints[0], ("telemetry",))
    got = receive(sub, 3, "telemetry")
    assert len(got) == 3
    status = got[-1].data
    assert status["fps"] == 29.5 and status["stages"]["infer"]["p50_ms"] == 4.2
    assert status["temp"] is None  # NaN is not JSON: sent as null
    assert status["publisher"]["endpoints"] == sink.endpoints
    assert got[-1].header["encoding"] == "json"
    assert runner.errors == []


def test_rate_limit_every_n_follows_the_knob(started) -> None:
    make_sink, _ = started
    cfg = make_cfg("publish.every_n=3")
    runner = StatusSource(cfg)
    sink = make_sink("publish.every_n=3", runner=runner)
    accepted = sum(sink.submit(result(i, soft_mask(8, 8))) or 0 for i in range(30))
    stats = sink.stats()
    assert stats["skipped_rate"] == 20 and stats["submitted"] == 30
    assert accepted + stats["dropped_busy"] == 10
    runner.knobs.update(publish_every=1)  # e.g. SIGHUP reload or the governor
    for i in range(30, 40):
        sink.submit(result(i, soft_mask(8, 8)))
    assert sink.stats()["skipped_rate"] == 20


def test_rate_limit_max_fps(started) -> None:
    make_sink, _ = started
    sink = make_sink("publish.max_fps=5")
    t0 = time.monotonic()
    for i in range(200):
        sink.submit(result(i, soft_mask(8, 8)))
        time.sleep(0.002)
    elapsed = time.monotonic() - t0
    passed = 200 - sink.stats()["skipped_rate"]
    assert 1 <= passed <= 5 * elapsed + 2


def test_latest_only_drains_to_the_newest(started) -> None:
    make_sink, make_sub = started
    sink = make_sink("publish.sndhwm=1000")
    sub = make_sub(sink.endpoints[0], latest_only=True, rcvhwm=1000)
    join(sink, sub)
    for i in range(40):
        sink.submit(result(i, soft_mask(16, 16, seed=i)))
        time.sleep(0.01)
    time.sleep(0.5)  # a viewer that fell behind
    msg = sub.recv(timeout=5)
    assert msg is not None and msg.header["frame_id"] == 39
    assert sub.recv(timeout=0.3) is None
    stats = sub.stats
    assert stats["skipped_stale"] >= 30 and stats["gaps"] == 0


def test_reconnects_after_publisher_restart(started) -> None:
    make_sink, make_sub = started
    first = make_sink()
    url = first.endpoints[0]
    sub = make_sub(url, stale_after_s=0)
    join(first, sub)
    first.submit(result(1, soft_mask()))
    assert receive(sub, 1)[0].header["frame_id"] == 1
    first.stop()
    assert sub.recv(timeout=0.5) is None
    second = make_sink(f"publish.bind=['{url}']")  # same port, new process state
    join(second, sub, timeout=20)
    second.submit(result(2, soft_mask()))
    msg = receive(sub, 1)[0]
    assert msg.header["frame_id"] == 2
    assert msg.header["session"] != first.publisher.session
    assert sub.stats["restarts"] == 1


def test_stale_connection_is_recreated() -> None:
    with MaskSubscriber("tcp://127.0.0.1:9", stale_after_s=0.3) as sub:
        assert sub.recv(timeout=1.2) is None
        assert sub.stats["socket_resets"] >= 2


def test_timeout_ends_iteration_and_stop_from_another_thread() -> None:
    with MaskSubscriber("tcp://127.0.0.1:9", timeout=0.5) as sub:
        t0 = time.monotonic()
        assert list(sub) == []
        assert sub.timed_out and time.monotonic() - t0 < 5
    with MaskSubscriber("tcp://127.0.0.1:9") as sub:  # no timeout: stop() ends it
        threading.Timer(0.3, sub.stop).start()
        assert list(sub) == [] and not sub.timed_out


def test_nodrop_counts_drops_for_a_stalled_subscriber(started) -> None:
    """With publish.nodrop a subscriber that never reads makes sends fail: counted."""
    make_sink, make_sub = started
    sink = make_sink("publish.nodrop=true", "publish.sndhwm=2", "publish.encoding=raw")
    stalled = make_sub(sink.endpoints[0], rcvhwm=2)
    join(sink, stalled)
    big = soft_mask(720, 1280)  # ~1 MB raw: kernel socket buffers fill quickly
    for i in range(60):
        sink.submit(result(i, big))
        time.sleep(0.01)
    deadline = time.monotonic() + 10
    while sink.stats()["dropped_hwm"] == 0 and time.monotonic() < deadline:
        sink.submit(result(99, big))
        time.sleep(0.05)
    assert sink.stats()["dropped_hwm"] > 0


def test_lossy_mode_stalled_subscriber_sees_gaps(started) -> None:
    """Default (lossy) PUB: a stalled subscriber loses its own messages, seen as seq gaps."""
    make_sink, make_sub = started
    sink = make_sink("publish.sndhwm=2", "publish.encoding=raw")
    stalled = make_sub(sink.endpoints[0], rcvhwm=2)
    join(sink, stalled)
    big = soft_mask(720, 1280)  # ~1 MB raw: far more than the socket buffers hold
    deadline, i = time.monotonic() + 30, 0
    while sink.stats()["sent_mask"] < 60 and time.monotonic() < deadline:
        sink.submit(result(i, big))
        i += 1
        time.sleep(0.01)
    sent = sink.stats()["sent_mask"]
    time.sleep(0.5)
    got = receive(stalled, sent, timeout=3)  # the backlog: the oldest messages only
    assert 0 < len(got) < sent
    # The stream goes on; the next message that arrives reveals the loss as a seq gap.
    sink.submit(result(i + 1, big))
    assert receive(stalled, 1, timeout=10)
    assert stalled.stats["gaps"] > 0
    assert sink.stats()["dropped_hwm"] == 0  # PUB drops silently per subscriber


# --------------------------------------------------------------------------- config


def test_exposure_warning() -> None:
    assert exposure_warning(make_cfg()) is None
    exposed = make_cfg("publish.bind=['tcp://0.0.0.0:5555', 'tcp://127.0.0.1:5556']")
    text = exposure_warning(exposed)
    assert text and "0.0.0.0:5555" in text and "5556" not in text and "CURVE" in text
    assert (
        exposure_warning(
            make_cfg(
                "publish.bind=['tcp://*:5555']",
                "publish.curve.enabled=true",
                "publish.curve.server_secret_key=server.key_secret",
            )
        )
        is None
    )
    off = load_config(None, ["publish.bind=['tcp://*:5555']"])
    assert exposure_warning(off) is None  # not publishing: nothing exposed
    for ep, local in [
        ("tcp://127.0.0.1:1", True), ("tcp://[::1]:1", True), ("tcp://localhost:1", True),
        ("ipc:///tmp/x", True), ("tcp://eth0:1", False), ("tcp://192.168.1.2:1", False),
        ("tcp://[::]:1", False), ("epgm://eth0;239.0.0.1:1", False),
    ]:  # fmt: skip
        assert is_loopback_endpoint(ep) is local, ep


def test_exposure_warning_is_logged_at_start(started, caplog) -> None:
    import logging

    make_sink, _ = started
    logger = logging.getLogger("segcam.publish")
    logger.addHandler(caplog.handler)
    try:
        make_sink("publish.bind=['tcp://0.0.0.0:*']")
    finally:
        logger.removeHandler(caplog.handler)
    assert any("without CURVE" in r.getMessage() for r in caplog.records)


def test_rle_with_probabilities_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="binary"):
        make_cfg("publish.encoding=rle", "publish.values=probability")
    cfg = make_cfg("publish.encoding=png", "publish.values=probability")
    cfg.publish.encoding = "rle"  # e.g. changed after loading
    with pytest.raises(ConfigError, match="binary"):
        MaskPublisherSink(cfg)


def test_bind_conflict_is_a_publish_error(started) -> None:
    make_sink, _ = started
    first = make_sink()
    with pytest.raises(PublishError, match="cannot bind"):
        make_sink(f"publish.bind=['{first.endpoints[0]}']")


def test_bad_subscriber_arguments() -> None:
    with pytest.raises(PublishError):
        MaskSubscriber("nonsense", ["mask"])
    with pytest.raises(PublishError, match="topic"):
        MaskSubscriber("tcp://127.0.0.1:9", ["masks"])
    with pytest.raises(PublishError, match="CURVE"):
        MaskSubscriber("tcp://127.0.0.1:9", ["mask"], server_key="x.key")


def test_zmq_version_has_heartbeats() -> None:
    assert zmq.zmq_version_info() >= (4, 2)


def test_a_decoder_crash_is_counted_not_raised(started, monkeypatch) -> None:
    """A decoder library raising something unexpected is simulated here (no real input is
    known to do it: the fuzz tests found none); the iterator must count it and go on."""
    make_sink, make_sub = started
    sink = make_sink()
    sub = make_sub(sink.endpoints[0])
    join(sink, sub)
    real = protocol.decode
    calls = {"n": 0}

    def flaky(frames, topics=None, limits=protocol.DEFAULT_LIMITS):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("libfoo exploded")
        return real(frames, topics, limits)

    monkeypatch.setattr("segcam.publish.subscriber.protocol.decode", flaky)
    submit_and_wait(sink, result(1, soft_mask()))
    sink.submit(result(2, soft_mask()))
    got = receive(sub, 1)
    assert got and got[0].header["frame_id"] == 2
    assert sub.stats["errors"]["malformed"] == 1
