"""CURVE keys and ZAP authentication for the mask stream, through pyzmq's ``zmq.auth``.

Key files are ZeroMQ's certificate format (``NAME.key`` public, ``NAME.key_secret``
public + secret) as ``zmq.auth.create_certificates`` writes them; secret files get mode
0600. The publisher accepts exactly the clients whose public ``.key`` files are in the
authorised-keys directory, and logs every denial.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from segcam.errors import PublishError

log = logging.getLogger("segcam.publish")


def generate_keypair(directory: Path, name: str, force: bool = False) -> Tuple[Path, Path]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) in ``directory``.

    The files are created in a private temporary directory and moved into place, so the
    secret is never readable by others, not even briefly. Refuses to overwrite unless
    ``force``.
    """
    directory = Path(directory).expanduser()
    if not name or "/" in name or name.startswith("."):
        raise PublishError(f"invalid key name {name!r}", "use a plain name such as 'server'")
    public = directory / f"{name}.key"
    secret = directory / f"{name}.key_secret"
    existing = [p for p in (public, secret) if p.exists()]
    if existing and not force:
        raise PublishError(
            f"{existing[0]} already exists", "choose another --name or pass --force to replace"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = Path(tempfile.mkdtemp(prefix=".segcam-keys-", dir=str(directory)))
    except OSError as exc:
        raise PublishError(
            f"cannot write keys in {directory}: {exc}", "pick a writable --dir"
        ) from None
    try:
        pub_tmp, sec_tmp = zmq.auth.create_certificates(str(staging), name)
        os.chmod(sec_tmp, 0o600)
        os.chmod(pub_tmp, 0o644)
        os.replace(sec_tmp, secret)
        os.replace(pub_tmp, public)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return public, secret


def load_public_key(path: str) -> bytes:
    """Z85 public key from a ``.key`` or ``.key_secret`` file (PublishError if unusable)."""
    public, _ = _load(path)
    return public


def load_keypair(path: str) -> Tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` file."""
    public, secret = _load(path)
    if not secret:
        raise PublishError(
            f"{path} holds no secret key",
            "pass the .key_secret file (segcam keys generate writes both)",
        )
    return public, secret


def _load(path: str) -> Tuple[bytes, Optional[bytes]]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise PublishError(f"key file {p} not found", "create keys with: segcam keys generate")
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (OSError, ValueError) as exc:
        raise PublishError(f"cannot read key file {p}: {exc}", "regenerate it") from None
    if not public:
        raise PublishError(f"{p} holds no public key", "regenerate it: segcam keys generate")
    return public, secret


def allowed_keys(directory: str) -> List[bytes]:
    """Z85 public keys of every ``*.key`` file in ``directory``."""
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise PublishError(
            f"authorised keys directory {d} not found",
            "create it and copy the clients' .key files into it",
        )
    return sorted(zmq.auth.load_certificates(str(d)).keys())


def apply_server_keys(sock: zmq.Socket, secret_file: str) -> bytes:
    """Make ``sock`` a CURVE server with the keypair in ``secret_file``; returns the public key."""
    public, secret = load_keypair(secret_file)
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True
    return public


def apply_client_keys(sock: zmq.Socket, server_public: str, client_secret: str) -> None:
    """Make ``sock`` a CURVE client of the server whose public key file is given."""
    sock.curve_serverkey = load_public_key(server_public)
    public, secret = load_keypair(client_secret)
    sock.curve_publickey = public
    sock.curve_secretkey = secret


class _KeyDirectory:
    """ZAP credentials provider: allows the keys in a directory, re-read when it changes."""

    def __init__(self, directory: str, on_denied: Any) -> None:
        self.directory = str(Path(directory).expanduser())
        self._on_denied = on_denied
        self._stamp: Optional[Tuple[float, int]] = None
        self._keys: Dict[bytes, bool] = {}
        self.peer = ""  # address of the peer being authenticated (set by the authenticator)
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = os.stat(self.directory)
            stamp = (st.st_mtime, st.st_nlink)
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._keys = zmq.auth.load_certificates(self.directory)
            except (OSError, ValueError) as exc:
                log.error("cannot read authorised keys in %s: %s", self.directory, exc)
                self._keys = {}

    def callback(self, domain: str, key: bytes) -> bool:
        """True if ``key`` (Z85) is authorised; a denial is logged and counted."""
        self._refresh()
        if self._keys.get(key):
            log.debug("CURVE client %s allowed", key.decode("ascii", "replace"))
            return True
        self._on_denied(key, self.peer)
        return False


class _Authenticator(ThreadAuthenticator):
    """ThreadAuthenticator that remembers the peer address for the denial log."""

    provider: Optional[_KeyDirectory] = None

    async def handle_zap_message(self, msg: List[bytes]) -> None:
        if self.provider is not None and len(msg) > 3:
            self.provider.peer = msg[3].decode("utf-8", "replace")
        await super().handle_zap_message(msg)


class CurveGuard:
    """ZAP authenticator of one context: allowed client keys from a directory.

    Every denial is counted (``denied``); the log gets the first denial of each (peer,
    key) and then at most one line a minute for it, saying how many attempts it made.
    """

    def __init__(self, context: zmq.Context, authorized_keys_dir: str) -> None:
        from segcam.publish.monitor import LogThrottle

        allowed_keys(authorized_keys_dir)  # fail early with a clear message
        self.denied = 0
        self._lock = threading.Lock()
        self._throttle = LogThrottle()
        self._auth = _Authenticator(context, log=logging.getLogger("segcam.publish.zap"))
        self._auth.provider = _KeyDirectory(authorized_keys_dir, self._denied)

    def _denied(self, key: bytes, peer: str) -> None:
        with self._lock:
            self.denied += 1
            n = self.denied
        held = self._throttle.allow((peer, key))
        if held is None:
            return
        log.warning(
            "denied subscriber %s: CURVE key %s is not in %s (denial #%d%s; the client "
            "retries by itself, further denials of it are logged once a minute)",
            peer or "?",
            key.decode("ascii", "replace"),
            self._auth.provider.directory if self._auth.provider else "?",
            n,
            f", {held} attempts since the last warning" if held else "",
        )

    def start(self) -> None:
        """Start the ZAP thread (before the server socket binds)."""
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self._auth.provider)

    def stop(self) -> None:
        """Stop the ZAP thread."""
        self._auth.stop()
