"""The model registry: named models segcam can fetch, convert and cache by itself.

A cached model is ``<cache>/<name>.onnx`` with its sidecar ``<name>.onnx.json`` and the
verified source ``<name>.tflite`` (kept so the ONNX can be rebuilt offline, e.g. after a
converter update). :func:`ensure_model` is idempotent and safe to call from several
processes at once (an advisory file lock serialises fetches into one cache).
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

from segcam.errors import ModelError
from segcam.models.sidecar import read_sidecar, sha256_file
from segcam.models.tflite_onnx import CONVERTER_VERSION

Progress = Callable[[str], None]

MEDIAPIPE_WHEEL = "mediapipe==0.10.14"
_MP_DIR = "mediapipe/modules/selfie_segmentation/"


@dataclass(frozen=True)
class ModelSpec:
    """A model the registry knows: where its .tflite lives and what it looks like."""

    name: str
    description: str
    requirement: str  # the pip requirement whose wheel holds the model
    member: str  # path of the .tflite inside the wheel
    sha256: str  # of the .tflite
    input_shape: Tuple[int, int, int, int]  # NHWC, as the ONNX keeps it
    license: str = "Apache-2.0"


MODELS: Dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="mediapipe-selfie",
            description="MediaPipe Selfie Segmentation (general), 256x256 (WxH)",
            requirement=MEDIAPIPE_WHEEL,
            member=_MP_DIR + "selfie_segmentation.tflite",
            sha256="9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c",
            input_shape=(1, 256, 256, 3),
        ),
        ModelSpec(
            name="mediapipe-selfie-landscape",
            description="MediaPipe Selfie Segmentation (landscape), 256x144 (WxH)",
            requirement=MEDIAPIPE_WHEEL,
            member=_MP_DIR + "selfie_segmentation_landscape.tflite",
            sha256="a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd",
            input_shape=(1, 144, 256, 3),
        ),
    )
}


def list_models() -> List[ModelSpec]:
    """Every registered model, in registry order."""
    return list(MODELS.values())


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name``; ModelError with a close-match suggestion if unknown."""
    if name in MODELS:
        return MODELS[name]
    close = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.5)
    known = ", ".join(MODELS)
    if close:
        raise ModelError(f"unknown model '{name}'", f"did you mean '{close[0]}'? known: {known}")
    raise ModelError(
        f"unknown model '{name}': segcam can fetch only {known}",
        "for a model you bring yourself (BiRefNet, MODNet, ...), export it to ONNX and set "
        "model.path (its profile in configs/models/ says how to feed it)",
    )


def spec_for_sha256(sha256: str) -> Optional[ModelSpec]:
    """The registered model whose .tflite has this sha256, if any."""
    for spec in MODELS.values():
        if spec.sha256 == sha256:
            return spec
    return None


def onnx_file(name: str, cache_dir: Path) -> Path:
    """Where ``name``'s ONNX lives in ``cache_dir`` (whether or not it exists)."""
    return Path(cache_dir).expanduser() / f"{get_spec(name).name}.onnx"


def tflite_file(name: str, cache_dir: Path) -> Path:
    """Where ``name``'s verified source .tflite is kept in ``cache_dir``."""
    return Path(cache_dir).expanduser() / f"{get_spec(name).name}.tflite"


def fetch_command(name: str, cache_dir: Optional[Path] = None) -> str:
    """The command that fetches ``name`` (for hints)."""
    cmd = f"segcam model fetch {name}"
    return f"{cmd} --cache-dir {cache_dir}" if cache_dir is not None else cmd


def _cache_state(spec: ModelSpec, path: Path) -> str:
    """'ok', 'missing', 'stale' (older converter) or a reason it is broken."""
    if not path.is_file():
        return "missing"
    try:
        info = read_sidecar(path)
    except ModelError as exc:
        return exc.message
    if info is None:
        return "has no sidecar"
    if info.get("tflite_sha256") != spec.sha256:
        return "was converted from another .tflite"
    if info.get("onnx_sha256") != sha256_file(path):
        return "does not match the hash in its sidecar (corrupt or modified)"
    if info.get("converter_version") != CONVERTER_VERSION:
        return "stale"
    return "ok"


def cache_state(name: str, cache_dir: Path) -> str:
    """'ok', 'missing', 'stale' (made by an older converter) or why the cached model is broken."""
    return _cache_state(get_spec(name), onnx_file(name, cache_dir))


def model_path(name: str, cache_dir: Path) -> Path:
    """Path of ``name``'s verified ONNX in ``cache_dir``; ModelError if absent or broken.

    A model converted by an older converter version still counts (it is valid; ``fetch``
    refreshes it).
    """
    spec = get_spec(name)
    path = onnx_file(name, cache_dir)
    state = _cache_state(spec, path)
    if state in ("ok", "stale"):
        return path
    if state == "missing":
        raise ModelError(
            f"model '{name}' is not in the cache {Path(cache_dir).expanduser()}",
            f"run `{fetch_command(name, cache_dir)}`",
        )
    raise ModelError(f"cached model {path} {state}", f"run `{fetch_command(name, cache_dir)}`")


@contextlib.contextmanager
def _cache_lock(cache_dir: Path, name: str) -> Iterator[None]:
    """Advisory lock so two processes do not fetch/convert the same model at once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, writes are still atomic renames
        yield
        return
    with open(cache_dir / f".{name}.lock", "w") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def has_verified_source(name: str, cache_dir: Path) -> bool:
    """Whether ``cache_dir`` holds ``name``'s verified .tflite (then no download is needed)."""
    spec = get_spec(name)
    try:
        return _verified(tflite_file(spec.name, cache_dir), spec.sha256)
    except OSError:
        return False  # an unreadable cache: ensure_model names the file and the fix


def _verified(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _wheel_members(spec: ModelSpec, cache: Path) -> List[Tuple[str, str, Path]]:
    """This model's member plus its siblings in the same wheel not yet cached (one download)."""
    members = [(spec.member, spec.sha256, tflite_file(spec.name, cache))]
    for other in MODELS.values():
        src = tflite_file(other.name, cache)
        if other is not spec and other.requirement == spec.requirement:
            if not _verified(src, other.sha256):
                members.append((other.member, other.sha256, src))
    return members


def ensure_model(
    name: str,
    cache_dir: Path,
    progress: Optional[Progress] = None,
    wheel: Optional[Path] = None,
    force: bool = False,
) -> Path:
    """Return the path of ``name``'s ONNX in ``cache_dir``, fetching/converting if needed.

    Cache hit: re-hash the ONNX against its sidecar and return. Otherwise reuse the cached,
    verified .tflite if there is one (offline), else download the wheel with pip
    (or read ``wheel``), verify the sha256, convert, and write ONNX + sidecar. A cache it
    may not read or write raises ModelError naming the file and the fix.
    """
    spec = get_spec(name)
    cache = Path(cache_dir).expanduser()
    try:
        return _ensure(spec, cache, progress, wheel, force)
    except OSError as exc:
        raise cache_access_error(cache, exc) from None


def cache_access_error(cache: Path, exc: OSError) -> ModelError:
    """The error for a model cache segcam may not read or write (owner, mode, read-only)."""
    where = f"{exc.filename}: " if exc.filename else ""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "the user running segcam"
    hint = f"the cache must be readable and writable by {user}, e.g. sudo chown -R {user}: {cache}"
    if exc.errno == errno.EROFS:
        hint = (
            "choose a writable model.cache_dir; under the service only /var/lib/segcam and "
            "/var/cache/segcam are writable (ProtectSystem=strict)"
        )
    return ModelError(f"cannot use the model cache {cache}: {where}{exc.strerror or exc}", hint)


def _ensure(
    spec: ModelSpec,
    cache: Path,
    progress: Optional[Progress],
    wheel: Optional[Path],
    force: bool,
) -> Path:
    from segcam.models.convert import convert_file
    from segcam.models.fetch import fetch_members

    name = spec.name
    out = onnx_file(name, cache)
    say = progress or (lambda _msg: None)
    if not force and _cache_state(spec, out) == "ok":
        return out
    with _cache_lock(cache, spec.name):
        state = _cache_state(spec, out)  # another process may have finished meanwhile
        if state == "ok" and not force:
            return out
        if state not in ("missing", "ok"):
            say(f"cached {out.name} {state}: rebuilding")
        src = tflite_file(name, cache)
        if force or wheel is not None or not _verified(src, spec.sha256):
            fetch_members(spec.requirement, _wheel_members(spec, cache), wheel, progress)
        else:
            say(f"using cached {src.name} (sha256 verified)")
        source = {"wheel": spec.requirement, "member": spec.member, "registry": "PyPI"}
        convert_file(
            src, out, source=dict(source, model=spec.name, license=spec.license), progress=progress
        )
    return out
