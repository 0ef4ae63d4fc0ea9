"""``segcam model``: fetch, convert, locate, describe and list segmentation models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from segcam.commands import add_config_options

HELP = "fetch/convert the default model, print its path, describe model files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands: fetch, convert, path, info, list."""
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("fetch", help="download (pip), verify, convert to ONNX and cache a model")
    p.add_argument("name", nargs="?", help="model name (default: the config's model.name)")
    p.add_argument("--all", action="store_true", help="fetch every registered model")
    _cache_option(p)
    p.add_argument("--wheel", metavar="FILE.whl", help="use this downloaded wheel (offline)")
    p.add_argument("--force", action="store_true", help="download and convert again")
    add_config_options(p)

    p = sub.add_parser("convert", help="convert a .tflite file to ONNX (offline)")
    p.add_argument("file", metavar="FILE.tflite")
    p.add_argument(
        "-o",
        "--output",
        metavar="OUT.onnx",
        help="output path (default: into the model cache if FILE is a registered model's "
        ".tflite, else FILE with .onnx)",
    )
    p.add_argument(
        "--dynamic-batch",
        action="store_true",
        help="give the ONNX a dynamic batch dimension (several frames per call; segcam "
        "run makes such a variant by itself when several inputs share the model)",
    )
    _cache_option(p)
    add_config_options(p)

    p = sub.add_parser("path", help="print the cached ONNX path of a model")
    p.add_argument("name", nargs="?", help="model name (default: the config's model.name)")
    _cache_option(p)
    add_config_options(p)

    p = sub.add_parser("info", help="print the inputs, outputs and ops of a .onnx/.tflite")
    p.add_argument("file", metavar="FILE")

    p = sub.add_parser("list", help="list registered models and their cache state")
    _cache_option(p)
    add_config_options(p)


def _cache_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="model cache (default: model.cache_dir / ~/.cache/segcam)",
    )


def _progress(message: str) -> None:
    print(f"segcam: {message}", file=sys.stderr, flush=True)


def _cache_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "cache_dir", None):
        return Path(args.cache_dir).expanduser()
    from segcam.commands import config_from_args
    from segcam.config import model_cache_dir

    return model_cache_dir(config_from_args(args))


def _default_name(args: argparse.Namespace) -> str:
    if args.name:
        return args.name
    from segcam.commands import config_from_args

    return config_from_args(args).model.name


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action; returns the exit code."""
    action = {
        "fetch": _fetch,
        "convert": _convert,
        "path": _path,
        "info": _info,
        "list": _list,
    }[args.model_command]
    return action(args)


def _fetch(args: argparse.Namespace) -> int:
    from segcam.models.registry import ensure_model, list_models

    cache = _cache_dir(args)
    names = [s.name for s in list_models()] if args.all else [_default_name(args)]
    wheel: Optional[Path] = Path(args.wheel) if args.wheel else None
    paths = [ensure_model(n, cache, _progress, wheel=wheel, force=args.force) for n in names]
    for path in paths:
        _progress(f"ready: {path.name}")
    print(paths[-1] if len(paths) == 1 else "\n".join(str(p) for p in paths))
    return 0


def _convert(args: argparse.Namespace) -> int:
    from segcam.errors import ModelError
    from segcam.fileio import write_atomic
    from segcam.models.convert import convert_file
    from segcam.models.registry import onnx_file, spec_for_sha256, tflite_file
    from segcam.models.sidecar import sha256_file

    src = Path(args.file).expanduser()
    if not src.is_file():
        raise ModelError(f"no such file: {src}", "pass the path of a .tflite model")
    source = None
    if args.output:
        out = Path(args.output).expanduser()
    else:
        spec = spec_for_sha256(sha256_file(src))
        if spec is not None:
            cache = _cache_dir(args)
            _progress(f"{src.name} is {spec.name} (sha256 verified): converting into {cache}")
            out = onnx_file(spec.name, cache)
            cached_src = tflite_file(spec.name, cache)
            if cached_src.resolve() != src.resolve():
                write_atomic(cached_src, src.read_bytes())
            source = {
                "wheel": spec.requirement,
                "member": spec.member,
                "model": spec.name,
                "license": spec.license,
                "file": str(src.resolve()),
            }
            src = cached_src
        else:
            out = src.with_suffix(".onnx")
    print(
        convert_file(src, out, source=source, progress=_progress, dynamic_batch=args.dynamic_batch)
    )
    return 0


def _path(args: argparse.Namespace) -> int:
    from segcam.models.registry import model_path

    print(model_path(_default_name(args), _cache_dir(args)))
    return 0


def _info(args: argparse.Namespace) -> int:
    from segcam.models.describe import describe, format_description

    print(format_description(describe(Path(args.file).expanduser())))
    return 0


def _list(args: argparse.Namespace) -> int:
    from segcam.models.registry import cache_state, list_models

    cache = _cache_dir(args)
    # Sizes are width x height everywhere segcam prints them (as in 1920x1080).
    print(f"{'NAME':28} {'INPUT WxH':10} {'CACHE':8} DESCRIPTION")
    for spec in list_models():
        _n, h, w, _c = spec.input_shape
        state = cache_state(spec.name, cache)
        label = {"ok": "ready", "missing": "-", "stale": "stale"}.get(state, "broken")
        print(f"{spec.name:28} {f'{w}x{h}':10} {label:8} {spec.description} [{spec.license}]")
    print(f"cache: {cache}")
    return 0
