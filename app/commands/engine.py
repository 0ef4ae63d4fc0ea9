"""``segcam engine``: build TensorRT engines on the device, inspect and list them.

``build`` uses the TensorRT Python builder API (same recipe as ``build_engine.sh``);
``inspect FILE`` prints an engine's sidecar, its I/O and whether it matches this device;
``list`` shows the engines in the engine directory. ``plan`` and ``sidecar`` are the
helpers ``build_engine.sh`` calls around trtexec (hidden from help).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

from segcam.commands import add_config_options, config_from_args

HELP = "build a TensorRT engine on this device (minutes), inspect or list engines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands: build, inspect, list (+ hidden plan/sidecar for build_engine.sh)."""
    sub = parser.add_subparsers(dest="engine_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("build", help="build an engine with the TensorRT Python API")
    p.add_argument("--onnx", metavar="MODEL.onnx", help="ONNX model (default: the config's)")
    p.add_argument("--profile", help="model profile name or YAML (default: model.name)")
    p.add_argument("--precision", choices=["fp16", "fp32"], help="default: engine_precision")
    p.add_argument("--workspace", type=int, metavar="MiB", help="builder workspace pool")
    p.add_argument("--out-dir", metavar="DIR", help="default: inference.engine_dir")
    p.add_argument("-o", "--output", metavar="FILE", help="engine path (default: canonical name)")
    p.add_argument("--timing-cache", metavar="FILE", help="default: in the engine directory")
    p.add_argument("--dla-core", type=int, default=-1, metavar="N", help="DLA core, GPU fallback")
    p.add_argument("--io-fp16", action="store_true", help="float16 engine inputs/outputs")
    for which in ("min", "opt", "max"):
        p.add_argument(
            f"--{which}-shape",
            metavar="1x3xHxW",
            help=f"{which} shape of a dynamic image input (default: the profile's)",
        )
    add_config_options(p)

    p = sub.add_parser("inspect", help="print an engine's sidecar, I/O and whether it fits here")
    p.add_argument("file", metavar="FILE.engine")
    p.add_argument("--json", action="store_true", help="print the sidecar as JSON")
    p.add_argument("--onnx", metavar="MODEL.onnx", help="also check the engine against this ONNX")
    p.add_argument("--check", action="store_true", help="exit 1 if it does not fit this device")

    p = sub.add_parser("list", help="list engines in the engine directory")
    p.add_argument("--dir", metavar="DIR", help="default: inference.engine_dir")
    add_config_options(p)

    p = sub.add_parser("plan")  # no help=: hidden from the listing
    p.add_argument("onnx")
    p.add_argument("--profile", required=True)
    p.add_argument("--precision", default="fp16")
    p.add_argument("--trt-version", default="")
    p.add_argument("--sm", default="")
    p.add_argument("--max-batch", type=int, default=1)
    for which in ("min", "opt", "max"):
        p.add_argument(f"--{which}-shape", default="")

    p = sub.add_parser("sidecar")
    p.add_argument("engine")
    p.add_argument("--onnx", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--precision", default="fp16")
    p.add_argument("--trt-version", required=True)
    p.add_argument("--sm", required=True)
    p.add_argument("--device-name", default="")
    p.add_argument("--flags", default="")
    p.add_argument("--build-seconds", type=float, default=0.0)
    p.add_argument("--workspace-mib", type=int, default=0)
    p.add_argument("--dla-core", type=int, default=-1)
    for which in ("min", "opt", "max"):
        p.add_argument(f"--{which}-shape", default="")


def run(args: argparse.Namespace) -> int:
    """Dispatch to the chosen action."""
    return {
        "build": _build,
        "inspect": _inspect,
        "list": _list,
        "plan": _plan,
        "sidecar": _sidecar,
    }[args.engine_command](args)


# --------------------------------------------------------------------------- build


def _build(args: argparse.Namespace) -> int:
    from segcam.inference.engine_build import BuildOptions, build_engine, parse_shape
    from segcam.inference.profile import load_profile

    cfg = config_from_args(args)
    if args.profile:
        profile = load_profile(args.profile)
    else:
        profile = load_profile(cfg.model.name)
    if args.onnx:
        onnx = Path(args.onnx).expanduser()
    else:
        from segcam.pipeline.assemble import resolve_model

        onnx = resolve_model(cfg)[1]
    opts = BuildOptions(
        onnx_path=onnx,
        profile=profile,
        precision=args.precision or cfg.inference.engine_precision,
        workspace_mib=args.workspace or cfg.inference.engine_workspace_mib,
        out_dir=Path(args.out_dir or cfg.inference.engine_dir).expanduser(),
        output=Path(args.output).expanduser() if args.output else None,
        timing_cache=Path(args.timing_cache).expanduser() if args.timing_cache else None,
        dla_core=args.dla_core,
        io_fp16=args.io_fp16,
        min_shape=parse_shape(args.min_shape) if args.min_shape else None,
        opt_shape=parse_shape(args.opt_shape) if args.opt_shape else None,
        max_shape=parse_shape(args.max_shape) if args.max_shape else None,
    )

    def say(msg: str) -> None:
        print(f"segcam engine: {msg}", file=sys.stderr, flush=True)

    path, _meta = build_engine(opts, progress=say)
    print(path)
    return 0


# --------------------------------------------------------------------------- inspect / list


def _current_facts(onnx: Optional[Path]) -> Tuple[Any, str]:
    """(RuntimeFacts of this machine or None, why not) without raising."""
    from segcam.inference.engine_meta import RuntimeFacts, sha256_file, sm_string

    try:
        import tensorrt as trt  # noqa: PLC0415 - optional
    except ImportError:
        return None, "TensorRT not installed here"
    from segcam.gpu import probe

    gpu, why = probe()
    if gpu is None:
        return None, why
    return (
        RuntimeFacts(
            tensorrt_version=str(trt.__version__),
            device_name=gpu.name,
            sm=sm_string(gpu.sm),
            onnx_sha256=sha256_file(onnx) if onnx and onnx.is_file() else "",
        ),
        "",
    )


def _inspect(args: argparse.Namespace) -> int:
    from segcam.errors import EngineError
    from segcam.inference.engine_meta import compare, describe, format_meta, read_sidecar

    path = Path(args.file).expanduser()
    if not path.is_file():
        raise EngineError(f"no engine file {path}")
    meta = read_sidecar(path)
    if args.json:
        print(meta.to_json(), end="")
    else:
        print(f"engine:       {path} ({path.stat().st_size / 2**20:.1f} MiB)")
        print(format_meta(meta))
    facts, why = _current_facts(Path(args.onnx).expanduser() if args.onnx else None)
    if facts is None:
        print(f"fits here:    unknown ({why}); I/O above is from the sidecar", file=sys.stderr)
        return 1 if args.check else 0
    problems = compare(meta, facts)
    if problems:
        print(f"fits here:    NO: {describe(problems)}", file=sys.stderr)
        return 1 if args.check else 0
    try:
        from segcam.inference.engine_build import inspect_engine

        inputs, outputs = inspect_engine(path)
    except EngineError as exc:
        print(f"fits here:    NO: {exc.message}", file=sys.stderr)
        return 1 if args.check else 0
    if not args.json:
        for t in inputs + outputs:
            print(f"engine {t.mode}: {t.name} {tuple(t.shape)} {t.dtype}")
    print("fits here:    yes", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    from segcam.errors import EngineError
    from segcam.inference.engine_meta import read_sidecar

    cfg = config_from_args(args)
    d = Path(args.dir or cfg.inference.engine_dir).expanduser()
    engines = sorted(d.glob("*.engine")) if d.is_dir() else []
    if not engines:
        print(f"no engines in {d} (build one: build_engine.sh MODEL.onnx, segcam engine build)")
        return 0
    for path in engines:
        try:
            meta = read_sidecar(path)
            info = (
                f"{meta.model} {meta.precision} TensorRT {meta.tensorrt_version} "
                f"{meta.device_name} SM {meta.sm}, built {meta.built_at}"
            )
        except EngineError as exc:
            info = f"? ({exc.message})"
        print(f"{path.name}: {info}")
    return 0


# ------------------------------------------------------------------ build_engine.sh helpers


def _onnx_graph(onnx: Path) -> Any:
    import onnx as onnx_lib

    from segcam.errors import ModelError

    try:
        return onnx_lib.load(str(onnx), load_external_data=False).graph
    except Exception as exc:  # noqa: BLE001 - any parse failure is the same user error
        raise ModelError(f"cannot read ONNX model {onnx}: {exc}") from None


def _dims(value: Any) -> List[int]:
    return [
        d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim
    ]


def _onnx_inputs(onnx: Path) -> List[Tuple[str, List[int]]]:
    graph = _onnx_graph(onnx)
    inits = {i.name for i in graph.initializer}
    return [(v.name, _dims(v)) for v in graph.input if v.name not in inits]


def _onnx_outputs(onnx: Path) -> List[Tuple[str, List[int]]]:
    return [(v.name, _dims(v)) for v in _onnx_graph(onnx).output]


def _shape_spec(name: str, shape: Tuple[int, ...]) -> str:
    # trtexec splits specs on ':' and ','; names containing them must be quoted.
    quoted = f"'{name}'" if (":" in name or "," in name) else name
    return f"{quoted}:" + "x".join(str(d) for d in shape)


def _plan(args: argparse.Namespace) -> int:
    """Print KEY=value lines for build_engine.sh (shapes, names, hashes)."""
    from segcam.errors import EngineError
    from segcam.inference.engine_build import parse_shape
    from segcam.inference.engine_meta import engine_filename, sha256_file, sm_string
    from segcam.inference.profile import load_profile

    profile = load_profile(args.profile)
    onnx = Path(args.onnx).expanduser()
    if not onnx.is_file():
        raise EngineError(f"no ONNX model at {onnx}")
    inputs = _onnx_inputs(onnx)
    if profile.input_name:
        image = [i for i in inputs if i[0] == profile.input_name]
        if not image:
            raise EngineError(
                f"ONNX inputs {[n for n, _ in inputs]} do not include the profile's input "
                f"{profile.input_name!r}",
                "fix input_name in the profile",
            )
    elif len(inputs) == 1:
        image = inputs
    else:
        raise EngineError(
            f"ONNX has inputs {[n for n, _ in inputs]}; the profile names none",
            "set input_name in the profile",
        )
    name, dims = image[0]
    want = tuple(profile.input_shape)
    dynamic = -1 in dims
    if not dynamic and tuple(dims) != want:
        raise EngineError(
            f"ONNX input {name} is fixed at {tuple(dims)}, profile {profile.name} feeds {want}",
            "fix layout/width/height in the profile",
        )
    batch = max(1, int(getattr(args, "max_batch", 1) or 1))
    if batch > 1 and not (dynamic and dims[0] == -1):
        raise EngineError(
            f"--max-batch {batch}: ONNX input {name} {tuple(dims)} has no dynamic batch axis",
            "make one with `segcam model convert --dynamic-batch` (or export with dynamic_axes)",
        )
    # A dynamic batch: the optimisation profile spans 1..N frames, tuned for N (the
    # shared inference of several streams fills batches up to streams.batch_max).
    batched = (batch,) + tuple(want[1:])
    defaults = (want, batched, batched)
    shapes = [
        parse_shape(s) if s else d
        for s, d in zip((args.min_shape, args.opt_shape, args.max_shape), defaults)
    ]
    sm = sm_string(args.sm) if args.sm else ""
    if not sm:
        from segcam.gpu import probe

        gpu, why = probe()
        if gpu is None:
            raise EngineError(f"cannot tell this GPU's SM: {why}", "pass --sm, e.g. --sm 87")
        sm = sm_string(gpu.sm)
    lines = {
        "MODEL": profile.name,
        "INPUT_NAME": name,
        "DYNAMIC": "1" if dynamic else "0",
        "MIN_SHAPE": _shape_spec(name, shapes[0]),
        "OPT_SHAPE": _shape_spec(name, shapes[1]),
        "MAX_SHAPE": _shape_spec(name, shapes[2]),
        "ONNX_SHA256": sha256_file(onnx),
        "SM": sm,
    }
    if args.trt_version:
        lines["ENGINE_NAME"] = engine_filename(profile.name, args.precision, args.trt_version, sm)
    for key, value in lines.items():
        print(f"{key}={value}")
    return 0


def _sidecar(args: argparse.Namespace) -> int:
    """Write the sidecar of an engine trtexec just built."""
    from segcam import __version__
    from segcam.errors import BackendError
    from segcam.inference.engine_build import inspect_engine
    from segcam.inference.engine_meta import (
        EngineMeta,
        sha256_file,
        sm_string,
        utc_now,
        write_sidecar,
    )
    from segcam.inference.profile import load_profile

    engine = Path(args.engine)
    onnx = Path(args.onnx)
    profile = load_profile(args.profile)
    device_name = args.device_name
    if not device_name:
        from segcam.gpu import probe

        gpu, _why = probe()
        device_name = gpu.name if gpu is not None else ""
    try:
        inputs, outputs = inspect_engine(engine)
        source = "engine"
    except BackendError:
        # TensorRT's Python bindings are not importable here (a venv without
        # --system-site-packages): describe the I/O from the ONNX instead.
        inputs, outputs = _io_from_onnx(onnx, profile, args)
        source = "onnx"
    meta = EngineMeta(
        model=profile.name,
        precision=args.precision,
        tensorrt_version=args.trt_version,
        device_name=device_name,
        sm=sm_string(args.sm),
        onnx_sha256=sha256_file(onnx),
        onnx_path=str(onnx),
        inputs=inputs,
        outputs=outputs,
        builder="trtexec",
        build_flags=args.flags.split(),
        workspace_mib=args.workspace_mib,
        dla_core=args.dla_core,
        built_at=utc_now(),
        build_seconds=round(args.build_seconds, 2),
        engine_bytes=engine.stat().st_size,
        engine_sha256=sha256_file(engine),
        segcam_version=__version__,
    )
    path = write_sidecar(meta, engine)
    print(json.dumps({"sidecar": str(path), "io_from": source}))
    return 0


def _io_from_onnx(
    onnx: Path, profile: Any, args: argparse.Namespace
) -> Tuple[List[Any], List[Any]]:
    """Engine I/O as the ONNX declares it (trtexec keeps names, shapes and float32 I/O)."""
    from segcam.inference.engine_build import parse_shape
    from segcam.inference.engine_meta import TensorMeta

    want = list(profile.input_shape)
    ins = []
    for name, dims in _onnx_inputs(onnx):
        prof: List[List[int]] = []
        if -1 in dims:
            prof = [
                list(parse_shape(s)) if s else want
                for s in (args.min_shape, args.opt_shape, args.max_shape)
            ]
        ins.append(TensorMeta(name, "input", dims, profile.dtype, prof))
    outs = [TensorMeta(name, "output", dims, "float32") for name, dims in _onnx_outputs(onnx)]
    return ins, outs
