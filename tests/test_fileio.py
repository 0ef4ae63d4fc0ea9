"""segcam.fileio.write_atomic: complete files only, and modes other users can read."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from segcam.fileio import write_atomic

NOBODY = 65534  # uid/gid of "nobody" on Debian; any uid other than ours would do


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    saved = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(saved)


@pytest.fixture
def shared_dir():
    """A world-traversable directory under the system temp dir (pytest's tmp_path is 0700)."""
    d = Path(tempfile.mkdtemp(prefix="segcam-fileio-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_modes_follow_the_umask(tmp_path: Path, umask) -> None:
    out = write_atomic(tmp_path / "a" / "b" / "model.onnx", b"x")
    assert _mode(out) == 0o644
    assert _mode(tmp_path / "a") == 0o755 and _mode(tmp_path / "a" / "b") == 0o755
    umask(0o027)
    assert _mode(write_atomic(tmp_path / "c.json", "{}")) == 0o640
    assert _mode(write_atomic(tmp_path / "d.key_secret", "k", mode=0o600)) == 0o600
    assert not [p for p in tmp_path.rglob(".*.tmp")]


def test_replaces_atomically_and_cleans_up_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    write_atomic(target, b"old")
    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def _read_all_as(uid: int, root: Path) -> dict:
    """Read every file under ``root`` in a forked child running as ``uid``.

    A fork rather than a new interpreter: the interpreter may live where the other user
    cannot reach it (e.g. under /root); the child only needs open() and read().
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            seen = {}
            for dirpath, _dirs, files in os.walk(str(root), onerror=_raise):
                for name in files:
                    p = os.path.join(dirpath, name)
                    with open(p, "rb") as fh:
                        seen[os.path.relpath(p, str(root))] = len(fh.read())
            out = {"uid": os.getuid(), "files": seen}
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            os.write(wfd, json.dumps(out).encode())
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    return dict(json.loads(data or b"{}"), status=status)


def _raise(exc: OSError) -> None:
    raise exc


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to switch uid"
)
def test_model_cache_written_by_root_is_readable_by_another_user(
    shared_dir: Path, model_cache: Path, umask
) -> None:
    """The real conversion (tflite -> ONNX + sidecar) as root, then read as uid 65534."""
    from segcam.models.registry import ensure_model, tflite_file

    src = tflite_file("mediapipe-selfie", model_cache)
    if not src.is_file():
        ensure_model("mediapipe-selfie", model_cache)  # downloads the wheel once
    cache = shared_dir / "cache" / "segcam"  # created by write_atomic's mkdir
    write_atomic(tflite_file("mediapipe-selfie", cache), src.read_bytes())
    onnx = ensure_model("mediapipe-selfie", cache)
    assert onnx.is_file() and Path(str(onnx) + ".json").is_file()
    got = _read_all_as(NOBODY, cache)
    assert got["status"] == 0 and got["uid"] == NOBODY, got
    names = set(got["files"])
    assert {"mediapipe-selfie.onnx", "mediapipe-selfie.onnx.json"} <= names, names
    for p in cache.rglob("*"):
        assert _mode(p) == (0o755 if p.is_dir() else 0o644), p
