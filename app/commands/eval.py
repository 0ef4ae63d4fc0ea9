"""``segcam eval``: cut quality against the truth, per refinement setting.

Scores the configured model on the demo scene (which knows every frame's silhouette) at
one or more sizes, or on a folder of image + mask pairs, under the settings ``raw``
(bilinear upsampling only), ``refine`` (the config's refinement, bilinear, 3 px feather)
and ``guided`` (the config's refinement with edge-aware upsampling): IoU, boundary F
within a band, mean alpha error in that band, flicker. Prints a table and writes
``eval.json``, ``eval-plot.png`` (when matplotlib is installed) and
``eval-worst-edges.png`` into ``--output-dir``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Tuple

from segcam.commands import add_config_options, config_from_args
from segcam.errors import OutputError, UsageError

HELP = "measure cut quality (IoU, boundary F, edge error, flicker) against true silhouettes"

log = logging.getLogger("segcam")


def _size(text: str) -> Tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}"
        ) from None
    if not (64 <= w <= 7680 and 64 <= h <= 4320):
        raise argparse.ArgumentTypeError(f"{text}: sizes from 64x64 to 7680x4320")
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``segcam eval``."""
    add_config_options(parser)
    src = parser.add_mutually_exclusive_group()
    src.add_argument(
        "--demo",
        type=_size,
        action="append",
        metavar="WxH",
        help="score the demo scene at this size (repeatable; default 1280x720 and 1920x1080)",
    )
    src.add_argument("--folder", metavar="DIR", help="score image + mask pairs from DIR")
    parser.add_argument(
        "--frames", type=int, default=60, metavar="N", help="demo frames per size (default 60)"
    )
    parser.add_argument(
        "--sequence",
        action="store_true",
        help="the folder's pictures are consecutive video frames (smoothing and flicker apply)",
    )
    parser.add_argument(
        "--settings",
        default="raw,refine,guided",
        help="settings to compare, comma-separated (default raw,refine,guided)",
    )
    parser.add_argument(
        "--band", type=float, default=3.0, metavar="PX", help="edge band half-width (default 3)"
    )
    parser.add_argument(
        "--crops", type=int, default=4, metavar="N", help="worst-edge crops per source (default 4)"
    )
    parser.add_argument(
        "--output-dir", default="segcam-eval", metavar="DIR", help="default ./segcam-eval"
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``segcam eval``."""
    from segcam.eval import report
    from segcam.eval.frames import demo_frames, folder_frames
    from segcam.eval.run import EvalResult, Evaluator, model_from_config
    from segcam.eval.settings import parse_settings, setting_configs

    if args.frames < 2 or args.frames > 100000:
        raise UsageError(f"--frames must be 2..100000, got {args.frames}")
    if not 0.5 <= args.band <= 64:
        raise UsageError(f"--band must be 0.5..64 pixels, got {args.band}")
    if not 0 <= args.crops <= 64:
        raise UsageError(f"--crops must be 0..64, got {args.crops}")
    names = parse_settings(args.settings)
    cfg = config_from_args(args)
    out_dir = Path(args.output_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create --output-dir {out_dir}: {exc}") from None
    model, model_line = model_from_config(cfg)
    print(f"model: {model_line}")
    settings = setting_configs(cfg.refine, names)
    results: List[EvalResult] = []
    if args.folder:
        ev = Evaluator(model, settings, args.band, args.crops, sequence=args.sequence)
        results.append(ev.run(folder_frames(Path(args.folder)), f"folder {args.folder}"))
    else:
        ev = Evaluator(model, settings, args.band, args.crops, sequence=True)
        for w, h in args.demo or [(1280, 720), (1920, 1080)]:
            results.append(ev.run(demo_frames(w, h, args.frames), f"demo {w}x{h}"))
    for r in results:
        print(report.table(r))
    report.write_json(out_dir / "eval.json", report.to_json(results, {"model": model_line}))
    why = report.plot(results, out_dir / "eval-plot.png")
    if why:
        print(f"plot skipped: {why}")
    sheet = out_dir / "eval-worst-edges.png"
    if report.crop_sheet(results, sheet):
        print(f"wrote {out_dir / 'eval.json'}, {sheet}" + ("" if why else ", eval-plot.png"))
    else:
        print(f"wrote {out_dir / 'eval.json'}")
    return 0
