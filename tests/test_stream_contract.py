"""The mask stream as docs/protocol.md describes it, against a real ``segcam run``.

Each test starts ``segcam run`` (demo input, small frames) in a subprocess publishing on
an ephemeral loopback port and checks one promise of the document with real subscribers:
stalled readers survive (in subprocesses, so a libzmq abort fails the test instead of
killing pytest), every loss is countable, old masks are discarded, a late joiner's start
is unambiguous, refused CURVE clients are logged sparingly, and ``nodrop`` does what the
document says.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import zmq
from stream_helpers import env, finish, free_port, run_stats, segcam_run, wait_first

from segcam.publish import protocol
from segcam.publish.subscriber import MaskSubscriber

REPO = Path(__file__).resolve().parent.parent


# A stalled reader in its own process: connects, reads one mask, stops reading for
# STALL seconds (longer than any heartbeat timeout in play), then reads for a while and
# prints a JSON report. ``mode`` "segcam" uses MaskSubscriber with its defaults; "doc"
# uses a bare pyzmq socket with exactly the settings docs/protocol.md section 1 advises.
_STALLED_READER = textwrap.dedent(
    """
    import json, sys, time
    import zmq
    url, mode, stall = sys.argv[1], sys.argv[2], float(sys.argv[3])
    report = {"after": []}
    if mode == "segcam":
        from segcam.publish.subscriber import MaskSubscriber
        sub = MaskSubscriber(url, ["mask"])
        msg = sub.recv(timeout=90)
        report["first_seq"] = msg.header["seq"]
        time.sleep(stall)
        t0 = time.time_ns()
        end = time.monotonic() + 6
        while time.monotonic() < end:
            msg = sub.recv(timeout=0.5)
            if msg is not None:
                age = (msg.recv_ts_ns - msg.header["publish_ts_ns"]) / 1e9
                report["after"].append([msg.header["seq"], age])
        report["resumed_ns"] = t0
        report["stats"] = sub.stats
        sub.close()
    else:
        s = zmq.Context().socket(zmq.SUB)
        s.setsockopt(zmq.RCVHWM, 16)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        s.setsockopt(zmq.HEARTBEAT_IVL, 0)
        s.setsockopt(zmq.TCP_KEEPALIVE, 1)
        s.setsockopt(zmq.TCP_KEEPALIVE_IDLE, 10)
        s.setsockopt(zmq.MAXMSGSIZE, 96 << 20)
        s.setsockopt(zmq.SUBSCRIBE, b"mask")
        s.connect(url)
        assert s.poll(90000)
        report["first_seq"] = json.loads(s.recv_multipart()[1])["seq"]
        time.sleep(stall)
        end = time.monotonic() + 6
        while time.monotonic() < end:
            if s.poll(500):
                f = s.recv_multipart()
                h = json.loads(f[1])
                report["after"].append([h["seq"], (time.time_ns() - h["publish_ts_ns"]) / 1e9])
    print(json.dumps(report))
    """
)


def test_stalled_readers_survive_and_discard_old_masks(selfie_onnx: Path, tmp_path: Path) -> None:
    """Points 1 and 4: readers that stop for 9 s (past the 6 s heartbeat timeout the
    document used to advise, and past the publisher's own 3 s) neither abort nor hand
    the application masks older than max_age_s once they read again."""
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = segcam_run(tmp_path, selfie_onnx, url, "publish.heartbeat_s=1.0", seconds=60)
    readers = {
        mode: subprocess.Popen(
            [sys.executable, "-c", _STALLED_READER, url, mode, "9"],
            env=env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in ("segcam", "doc")
    }
    reports: Dict[str, Any] = {}
    try:
        for mode, reader in readers.items():
            out, err = reader.communicate(timeout=150)
            # A libzmq assertion aborts the process: SIGABRT, rc -6.
            assert reader.returncode == 0, f"{mode} reader rc {reader.returncode}: {err[-2000:]}"
            reports[mode] = json.loads(out.strip().splitlines()[-1])
    finally:
        for reader in readers.values():
            if reader.poll() is None:
                reader.kill()
        finish(proc)
    for mode, report in reports.items():
        assert report["after"], f"{mode} reader got nothing after the stall"
    seg = reports["segcam"]
    # The project's subscriber hands over only fresh masks after the stall ...
    assert max(age for _, age in seg["after"]) <= 2.0 + 0.5
    st = seg["stats"]
    # ... and says what happened to the rest: the backlog was too old, and what the
    # publisher never sent it (it was cut off as silent) is counted as loss on the way.
    assert st["discarded_old"] > 0
    assert st["lost_transport"] > 0
    assert st["gaps"] == st["lost_publisher"] + st["lost_transport"]
    # The bare client that follows the document gets the old backlog first (the
    # document tells it to discard by age itself).
    assert reports["doc"]["after"][0][1] > 5.0


def test_every_loss_is_counted_by_the_subscriber(selfie_onnx: Path, tmp_path: Path) -> None:
    """Points 2, 3 and 5 from the subscriber's side of a real run: a reader connected
    before the publisher starts accounts for every seq number (received, lost at the
    publisher, lost on the way, or published before it joined), and its publisher-side
    losses are exactly what the publisher counted as dropped."""
    url = f"tcp://127.0.0.1:{free_port()}"
    sub = MaskSubscriber(url, ["mask"], timeout=5, max_age_s=0)
    proc = segcam_run(tmp_path, selfie_onnx, url, "publish.sndhwm=1", seconds=6)
    headers: List[Dict[str, Any]] = []
    try:
        first = wait_first(sub)
        headers.append(first.header)
        slow = 0
        for msg in sub:
            headers.append(msg.header)
            slow += 1
            if slow % 3 == 0:
                time.sleep(0.05)  # a reader a little slower than the stream
        stats = sub.stats
    finally:
        sub.close()
    finish(proc)
    final = run_stats(tmp_path, url)["sinks"]["publish"]
    h0, h1 = headers[0], headers[-1]
    assert h0["minor"] >= 1 and h0["session_start_ns"] <= h0["capture_ts_ns"]
    # 5: the first seq this subscriber saw is reported as "before it joined", not loss.
    assert stats["missed_before_join"] == h0["seq"]
    # 2 + 3: every seq number between the first and the last is accounted for.
    span = h1["seq"] - h0["seq"] + 1
    assert stats["received"]["mask"] + stats["gaps"] == span
    assert stats["gaps"] == stats["lost_publisher"] + stats["lost_transport"]
    assert stats["lost_publisher"] == h1["dropped"] - h0["dropped"]
    # The publisher's drop counters explain the header's ``dropped`` ...
    publisher_drops = final["dropped_busy"] + final["dropped_hwm"] + final["encode_errors"]
    assert h1["dropped"] <= publisher_drops
    total = final["sent_mask"] + publisher_drops
    assert h1["seq"] < total
    print(
        f"seqs {h0['seq']}..{h1['seq']}: received {stats['received']['mask']}, "
        f"lost at the publisher {stats['lost_publisher']}, on the way {stats['lost_transport']}"
        f"; publisher: busy {final['dropped_busy']}, hwm {final['dropped_hwm']}"
    )


def test_busy_drops_take_seq_numbers_and_show_in_dropped(tmp_path: Path) -> None:
    """Point 2 deterministically: jobs offered faster than the publisher sends replace
    each other (dropped_busy), and each leaves a gap that the header's ``dropped``
    attributes to the publisher."""
    from segcam.config import load_config
    from segcam.publish.publisher import MaskPublisher, PublishJob

    cfg = load_config(None, ["publish.enabled=true", "publish.bind=['tcp://127.0.0.1:*']"])
    pub = MaskPublisher(cfg.publish)
    pub.start()
    sub = MaskSubscriber(pub.endpoints[0], ["mask"], max_age_s=0)
    mask = np.zeros((4, 4), np.uint8)

    def job(i: int) -> PublishJob:
        return PublishJob(i, time.time_ns(), mask, None, 4, 4, "m", 0.5, True)

    try:
        deadline = time.monotonic() + 10
        while sub.recv(timeout=0.05) is None:  # PUB/SUB join
            pub.offer(job(0))
            assert time.monotonic() < deadline
        while sub.recv(timeout=0.3) is not None:
            pass
        busy0 = pub.stats()["dropped_busy"]
        for i in range(1, 2001):
            pub.offer(job(i))
        got = []
        while True:
            msg = sub.recv(timeout=1.0)
            if msg is None:
                break
            got.append(msg.header)
        stats = sub.stats
        busy = pub.stats()["dropped_busy"] - busy0
    finally:
        sub.close()
        pub.stop()
    assert busy > 0 and got
    assert got[-1]["frame_id"] == 2000  # the newest job always goes out
    assert stats["lost_publisher"] == busy
    assert stats["lost_transport"] == 0


def test_subscribe_command_stalled_by_sigstop(selfie_onnx: Path, tmp_path: Path) -> None:
    """Points 1 and 4 for ``segcam subscribe``: stopped with SIGSTOP for longer than the
    publisher's heartbeat timeout, it resumes without crashing, prints no mask older than
    --max-age, and its summary counts what it discarded."""
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = segcam_run(tmp_path, selfie_onnx, url, "publish.heartbeat_s=1.0", seconds=60)
    sub = subprocess.Popen(
        [sys.executable, "-m", "segcam", "subscribe", url, "--json", "--max-age", "1",
         "--interval", "0", "--topic", "mask"],
        env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sub.stdout is not None
        line = sub.stdout.readline()  # the first mask: the stream is flowing
        assert json.loads(line)["topic"] == "mask"
        sub.send_signal(signal.SIGSTOP)
        time.sleep(6)
        sub.send_signal(signal.SIGCONT)
        resumed_ns = time.time_ns()
        time.sleep(4)
        sub.send_signal(signal.SIGINT)
        out, err = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
        finish(proc)
    assert sub.returncode == 0, err
    records = [json.loads(x) for x in out.splitlines() if x.strip()]
    masks = [r for r in records if r.get("topic") == "mask"]
    after = [r for r in masks if r["recv_ts_ns"] >= resumed_ns]
    assert after, "no mask after the stall"
    assert max(r["publish_ms"] for r in after) <= 1000.0 + 300
    summary = records[-1]["summary"]
    assert summary["discarded_old"] > 0
    assert summary["gaps"] == summary["lost_publisher"] + summary["lost_transport"]


def test_refused_curve_clients_are_logged_once_and_counted(
    selfie_onnx: Path, tmp_path: Path
) -> None:
    """Points 6 and 8: a plaintext client retries by itself every RECONNECT_IVL, and an
    unknown key is retried whenever its socket is recreated; the publisher logs one line
    for each, counts every attempt, and its exit summary and stats show the same
    auth_denied as its telemetry."""
    from segcam.publish.curve import generate_keypair

    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    server_pub, server_sec = generate_keypair(keys, "server")
    ok_pub, ok_sec = generate_keypair(keys, "ok")
    _, bad_sec = generate_keypair(keys, "bad")
    (allowed / "ok.key").write_bytes(ok_pub.read_bytes())
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = segcam_run(
        tmp_path, selfie_onnx, url,
        "publish.curve.enabled=true", f"publish.curve.server_secret_key={server_sec}",
        f"publish.curve.authorized_keys_dir={allowed}", "publish.telemetry_interval_s=0.5",
        seconds=60,
    )  # fmt: skip
    good = MaskSubscriber(url, ["telemetry"], server_key=server_pub, client_key=ok_sec)
    # libzmq 4.3 does not retry a connection whose key was refused; recreating the socket
    # (stale_after_s) does, as an application would.
    bad = MaskSubscriber(url, ["mask"], server_key=server_pub, client_key=bad_sec,
                         stale_after_s=0.5)  # fmt: skip
    plain = MaskSubscriber(url, ["mask"], reconnect_ivl_max_ms=200)
    try:
        wait_first(good)
        end = time.monotonic() + 5
        while time.monotonic() < end:
            for s in (bad, plain):
                assert s.recv(timeout=0.05) is None
            good.recv(timeout=0.05)
        telemetry = wait_first(good, 10)
        bad_stats, plain_stats = bad.stats, plain.stats
    finally:
        for s in (good, bad, plain):
            s.close()
    text = finish(proc)
    final = run_stats(tmp_path, url)["sinks"]["publish"]
    seen = telemetry.data["publisher"]
    assert final["auth_denied"] >= seen["auth_denied"] >= 3
    assert final["handshake_failures"] >= seen["handshake_failures"] >= 10
    # The exit summary has the final count (it said 0 once the guard had stopped).
    assert f"auth_denied {final['auth_denied']}" in text
    warnings = [x for x in text.splitlines() if "WARNING" in x]
    assert sum("denied subscriber" in x for x in warnings) == 1, warnings
    assert sum("handshake failed" in x for x in warnings) == 1, warnings
    # What a refused client sees: no message, and failed handshakes it can count.
    assert bad_stats["received"]["mask"] == 0 and bad_stats["handshake_failures"] >= 3
    # libzmq decides whether a plaintext client retries by itself: at least the first refusal
    assert plain_stats["received"]["mask"] == 0 and plain_stats["handshake_failures"] >= 1


def test_nodrop_refuses_sends_for_everyone_while_one_queue_is_full(
    selfie_onnx: Path, tmp_path: Path
) -> None:
    """Point 7: with nodrop, a stalled subscriber makes sends fail for all (counted as
    dropped_hwm; a healthy subscriber sees them as losses at the publisher, none on the
    way) until the publisher's heartbeat cuts the silent one off."""
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = segcam_run(
        tmp_path, selfie_onnx, url,
        "publish.nodrop=true", "publish.encoding=raw", "publish.values=probability",
        "publish.sndhwm=1", "publish.heartbeat_s=2.0",
        seconds=60, size=(640, 480),
    )  # fmt: skip
    healthy = MaskSubscriber(url, ["mask"], max_age_s=0)
    ctx = zmq.Context()
    stalled = ctx.socket(zmq.SUB)  # connects, subscribes, never reads
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.RCVBUF, 65536)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.setsockopt(zmq.SUBSCRIBE, b"mask")
    try:
        wait_first(healthy)
        stalled.connect(url)
        end = time.monotonic() + 12
        while time.monotonic() < end:
            healthy.recv(timeout=0.2)
        st = healthy.stats
    finally:
        healthy.close()
        stalled.close(0)
        ctx.term()
    finish(proc)
    final = run_stats(tmp_path, url)["sinks"]["publish"]
    print(f"healthy subscriber: {st}; publisher dropped_hwm {final['dropped_hwm']}")
    assert final["dropped_hwm"] > 0
    assert st["lost_publisher"] > 0
    assert st["lost_transport"] == 0
    assert st["lost_publisher"] <= final["dropped_hwm"] + final["dropped_busy"]
    assert final["disconnects"] >= 1  # the silent one was cut off by the heartbeat


def test_downscale_floors_and_the_model_id_on_the_wire(selfie_onnx: Path, tmp_path: Path) -> None:
    """Point 8: 160x120 at downscale 3 is 53x40 (floor), frame_width/height keep the full
    size, and the model id is the profile's (mediapipe-selfie-256)."""
    url = f"tcp://127.0.0.1:{free_port()}"
    proc = segcam_run(tmp_path, selfie_onnx, url, "publish.downscale=3", seconds=60)
    try:
        with MaskSubscriber(url, ["mask"], timeout=90) as sub:
            msg = wait_first(sub)
    finally:
        finish(proc)
    h = msg.header
    assert (h["width"], h["height"], h["frame_width"], h["frame_height"]) == (53, 40, 160, 120)
    assert msg.data.shape == (40, 53)
    assert h["model"] == "mediapipe-selfie-256"
    doc = (REPO / "docs" / "protocol.md").read_text()
    assert '"model":"mediapipe-selfie-256"' in doc


@pytest.mark.parametrize("value", [0.5, np.nextafter(np.float32(0.5), np.float32(0))])
def test_binary_is_at_or_above_the_threshold(value: float) -> None:
    """Point 8: a pixel exactly at the threshold is person (>=), just below is not."""
    mask = np.full((2, 2), value, np.float32)
    out = protocol.quantize(mask, "binary", 0.5)
    assert int(out[0, 0]) == (1 if value >= 0.5 else 0)
