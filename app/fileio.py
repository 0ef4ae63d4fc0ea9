"""Small file helpers shared by caches, sidecars and the installer."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Optional, Tuple, Union

_ATTEMPTS = 100  # random temporary names tried before giving up


def write_atomic(
    path: Union[str, Path], data: Union[bytes, str], mode: Optional[int] = None
) -> Path:
    """Write ``data`` so that readers see either the old file or the complete new one.

    A unique temporary file in the same directory is written, flushed to disk, given
    ``mode`` (if set) and renamed over ``path``; it is removed if anything fails. Safe
    between threads and processes writing the same cache entry.

    Without ``mode`` the file gets 0666 minus the process umask (0644 with the usual
    022) and missing directories 0777 minus the umask (0755), like any other file the
    process creates: caches prepared by root or an operator stay readable by the
    service's own user. (``tempfile.mkstemp`` would make every file 0600.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _create_temp(path: Path) -> Tuple[int, str]:
    """(fd, name) of a new, exclusively created temporary file beside ``path``.

    Created with 0666 so that the kernel applies the umask (reading the umask would need
    ``os.umask``, which changes it for every thread for a moment).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_ATTEMPTS):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file beside {path}")
