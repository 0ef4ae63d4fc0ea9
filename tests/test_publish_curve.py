"""CURVE: keys on disk with safe modes; an allowed key receives, others receive nothing."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from segcam.config import load_config
from segcam.errors import PublishError
from segcam.pipeline.types import FrameResult
from segcam.publish.curve import generate_keypair, load_keypair
from segcam.publish.sink import MaskPublisherSink
from segcam.publish.subscriber import MaskSubscriber

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq built without CURVE")


def _result(i: int) -> FrameResult:
    mask = np.zeros((24, 32), np.float32)
    mask[4:20, 8:24] = 1.0
    return FrameResult(
        i, time.time_ns(), time.monotonic_ns(), np.zeros((24, 32, 3), np.uint8), mask
    )


def test_generate_keypair_modes_and_no_overwrite(tmp_path: Path) -> None:
    public, secret = generate_keypair(tmp_path / "keys", "server")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    pub, sec = load_keypair(str(secret))
    assert len(pub) == 40 and len(sec) == 40
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [
        "server.key",
        "server.key_secret",
    ]
    with pytest.raises(PublishError, match="exists"):
        generate_keypair(tmp_path / "keys", "server")
    generate_keypair(tmp_path / "keys", "server", force=True)
    assert load_keypair(str(secret))[0] != pub
    with pytest.raises(PublishError):
        generate_keypair(tmp_path, "../evil")


@pytest.fixture
def curve_setup(tmp_path: Path):
    keys = tmp_path / "keys"
    allowed = tmp_path / "authorized"
    _, server_secret = generate_keypair(keys, "server")
    ok_public, ok_secret = generate_keypair(keys, "viewer")
    _, bad_secret = generate_keypair(keys, "intruder")
    allowed.mkdir()
    (allowed / "viewer.key").write_bytes(ok_public.read_bytes())
    cfg = load_config(
        None,
        [
            "publish.enabled=true",
            "publish.bind=['tcp://127.0.0.1:*']",
            "publish.curve.enabled=true",
            f"publish.curve.server_secret_key={server_secret}",
            f"publish.curve.authorized_keys_dir={allowed}",
        ],
    )
    sink = MaskPublisherSink(cfg)
    sink.start()
    yield sink, keys / "server.key", ok_secret, bad_secret
    sink.stop()


def test_allowed_key_receives_unknown_or_missing_key_receives_nothing(curve_setup, caplog) -> None:
    sink, server_public, ok_secret, bad_secret = curve_setup
    url = sink.endpoints[0]
    logger = logging.getLogger("segcam.publish")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.WARNING, logger="segcam.publish")
    subs = {
        "allowed": MaskSubscriber(url, server_key=server_public, client_key=ok_secret),
        "unknown": MaskSubscriber(url, server_key=server_public, client_key=bad_secret),
        "missing": MaskSubscriber(url),
    }
    counts = {name: 0 for name in subs}
    try:
        deadline = time.monotonic() + 4.0  # publish for a while; everyone had time to join
        i = 0
        while time.monotonic() < deadline:
            sink.submit(_result(i))
            i += 1
            for name, sub in subs.items():
                while sub.recv(timeout=0.01) is not None:
                    counts[name] += 1
    finally:
        for sub in subs.values():
            sub.close()
        logger.removeHandler(caplog.handler)
    assert counts["allowed"] > 10
    assert counts["unknown"] == 0
    assert counts["missing"] == 0
    stats = sink.stats()
    assert stats["auth_denied"] >= 1
    assert stats["handshake_failures"] >= 2  # the unknown key and the plain-text client
    messages = [r.getMessage() for r in caplog.records]
    assert any("denied subscriber" in m and "127.0.0.1" in m for m in messages), messages


def test_curve_config_errors(tmp_path: Path) -> None:
    _, server_secret = generate_keypair(tmp_path, "server")
    cfg = load_config(
        None,
        [
            "publish.enabled=true",
            "publish.bind=['tcp://127.0.0.1:*']",
            "publish.curve.enabled=true",
            f"publish.curve.server_secret_key={server_secret}",
            f"publish.curve.authorized_keys_dir={tmp_path / 'nowhere'}",
        ],
    )
    with pytest.raises(PublishError, match="authorised keys directory"):
        MaskPublisherSink(cfg).start()
    cfg.publish.curve.authorized_keys_dir = str(tmp_path)
    cfg.publish.curve.server_secret_key = str(tmp_path / "server.key")  # public only
    with pytest.raises(PublishError, match="no secret key"):
        MaskPublisherSink(cfg).start()
