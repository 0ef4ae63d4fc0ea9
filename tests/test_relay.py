"""``segcam relay`` between real ``segcam run`` publishers and many real subscribers.

Every process is real: the devices are ``segcam run`` subprocesses (demo input, small
frames), the relay is a ``segcam relay`` subprocess, and the subscribers are
MaskSubscribers over loopback TCP on ephemeral ports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

import pytest
from stream_helpers import env, finish, free_port, segcam_run

from segcam.publish.subscriber import MaskSubscriber


def relay_proc(tmp_path: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "segcam", "relay", "--status-interval", "0.5", *args]
    cmd += ["--stats-json", str(tmp_path / "relay.json")]
    return subprocess.Popen(
        cmd, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def collect(subs: List[MaskSubscriber], until) -> List[List[Any]]:
    """Read all subscribers round-robin until ``until(got)`` or 60 s."""
    got: List[List[Any]] = [[] for _ in subs]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not until(got):
        for i, sub in enumerate(subs):
            msg = sub.recv(timeout=0.01)
            while msg is not None:
                got[i].append(msg)
                msg = sub.recv(timeout=0)
    return got


def test_relay_fans_two_devices_out_to_many_subscribers(selfie_onnx: Path, tmp_path: Path) -> None:
    """Each device sends one copy (its only subscriber is the relay) while five hosts
    read both streams through the relay, unchanged (same session and seq), telemetry
    included, and the relay reports its own counters on topic ``relay``."""
    dev = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("cam-a", "cam-b")}
    devices = [
        segcam_run(
            tmp_path,
            selfie_onnx,
            url,
            f"publish.stream_id={name}",
            "publish.telemetry_interval_s=0.5",
            seconds=90,
        )  # fmt: skip
        for name, url in dev.items()
    ]
    out_url = f"tcp://127.0.0.1:{free_port()}"
    relay = relay_proc(tmp_path, "--from", dev["cam-a"], "--from", dev["cam-b"],
                       "--bind", out_url, "--name", "relay-test")  # fmt: skip
    subs = [MaskSubscriber(out_url, ["mask", "telemetry", "relay"]) for _ in range(5)]

    def enough(got: List[List[Any]]) -> bool:
        for msgs in got:
            streams = {(m.topic, m.header["stream"]) for m in msgs}
            want = {(topic, cam) for topic in ("mask", "telemetry") for cam in ("cam-a", "cam-b")}
            if not want <= streams:
                return False
            counted = [m for m in msgs if m.topic == "relay" and len(m.data["streams"]) == 2]
            if not counted:  # the relay's status once it has seen both devices
                return False
        return True

    try:
        got = collect(subs, enough)
        stats = [s.stats for s in subs]
    finally:
        for s in subs:
            s.close()
    relay.terminate()
    out, err = relay.communicate(timeout=30)
    texts = [finish(d) for d in devices]
    assert relay.returncode == 0, err
    assert "Traceback" not in err and "relay summary" in out
    assert enough(got), [sorted({(m.topic, m.header["stream"]) for m in g}) for g in got]
    # Unchanged: the same (stream, session, seq) numbers reach every subscriber.
    seen: List[Set[Tuple[str, str, int]]] = [
        {(m.header["stream"], m.header["session"], m.header["seq"]) for m in g if m.topic == "mask"}
        for g in got
    ]
    common = set.intersection(*seen)
    assert len(common) >= 5
    for st in stats:
        assert st["decode_errors"] == 0
        assert st["gaps"] == st["lost_publisher"] + st["lost_transport"]
    # One copy per device: the relay was each device's only subscriber.
    for name in dev:
        tele = [m for m in got[0] if m.topic == "telemetry" and m.header["stream"] == name]
        if tele:
            assert tele[-1].data["publisher"]["connections"] == 1
    # The relay's own counters, on the wire and at exit.
    status = [m for m in got[0] if m.topic == "relay"][-1]
    assert status.header["stream"] == "relay-test"
    body: Dict[str, Any] = status.data
    assert body["subscribers"] >= 5 and set(body["streams"]) == set(dev)
    final = json.loads((tmp_path / "relay.json").read_text())
    for name in dev:
        assert final["streams"][name]["mask"]["messages"] > 0
        assert final["streams"][name]["telemetry"]["messages"] > 0
    assert final["bytes_out"] >= final["bytes_in"] > 0
    assert final["parts_in"] > 0
    for text in texts:
        assert "connections 1" in text  # device exit summary: the relay only


def test_relay_with_curve_on_both_sides(selfie_onnx: Path, tmp_path: Path) -> None:
    """The relay logs in to the device with its own key and admits only the subscribers
    in its own allow-list; an unknown subscriber gets nothing and is counted."""
    from segcam.publish.curve import generate_keypair

    keys = tmp_path / "keys"
    device_allowed, relay_allowed = tmp_path / "device-allowed", tmp_path / "relay-allowed"
    device_allowed.mkdir()
    relay_allowed.mkdir()
    dev_pub, dev_sec = generate_keypair(keys, "device")
    relay_pub, relay_sec = generate_keypair(keys, "relay")
    viewer_pub, viewer_sec = generate_keypair(keys, "viewer")
    _, stranger_sec = generate_keypair(keys, "stranger")
    (device_allowed / "relay.key").write_bytes(relay_pub.read_bytes())
    (relay_allowed / "viewer.key").write_bytes(viewer_pub.read_bytes())
    dev_url = f"tcp://127.0.0.1:{free_port()}"
    device = segcam_run(
        tmp_path, selfie_onnx, dev_url,
        "publish.curve.enabled=true", f"publish.curve.server_secret_key={dev_sec}",
        f"publish.curve.authorized_keys_dir={device_allowed}", seconds=90,
    )  # fmt: skip
    out_url = f"tcp://127.0.0.1:{free_port()}"
    relay = relay_proc(
        tmp_path, "--from", dev_url, "--device-key", str(dev_pub), "--bind", out_url,
        "--key", str(relay_sec), "--authorized-keys", str(relay_allowed),
    )  # fmt: skip
    viewer = MaskSubscriber(out_url, ["mask"], server_key=relay_pub, client_key=viewer_sec)
    stranger = MaskSubscriber(
        out_url, ["mask"], server_key=relay_pub, client_key=stranger_sec, stale_after_s=0.5
    )
    try:
        first = viewer.recv(timeout=90)
        assert first is not None, "the allowed viewer got nothing through the relay"
        end = time.monotonic() + 3
        while time.monotonic() < end:
            assert stranger.recv(timeout=0.1) is None
            viewer.recv(timeout=0)
        stranger_stats = stranger.stats
    finally:
        viewer.close()
        stranger.close()
    relay.terminate()
    out, err = relay.communicate(timeout=30)
    finish(device)
    assert relay.returncode == 0, err
    final = json.loads((tmp_path / "relay.json").read_text())
    assert final["auth_denied"] >= 1
    assert stranger_stats["received"]["mask"] == 0 and stranger_stats["handshake_failures"] >= 1
    assert sum("denied subscriber" in x for x in err.splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--from", "tcp://127.0.0.1:9", "--device-key", "a", "--device-key", "b"],
         "2 --device-key for 1 --from"),
        (["--from", "tcp://127.0.0.1:9", "--authorized-keys", "/nonexistent"],
         "the relay's own key pair"),
        (["--from", "tcp://127.0.0.1:9", "--bind", "bogus"], "cannot bind the relay"),
    ],
)  # fmt: skip
def test_relay_refuses_bad_arguments_with_a_hint(tmp_path: Path, args, message) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "segcam", "relay", *args, "--seconds", "1"],
        env=env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode in (2, 9), proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert "hint:" in proc.stderr
