"""Small file helpers shared by caches, sidecars and the installer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union


def write_atomic(
    path: Union[str, Path], data: Union[bytes, str], mode: Optional[int] = None
) -> Path:
    """Write ``data`` so that readers see either the old file or the complete new one.

    A unique temporary file in the same directory is written, flushed to disk, given
    ``mode`` (if set) and renamed over ``path``; it is removed if anything fails. Safe
    between threads and processes writing the same cache entry.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
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
