"""``segcam demo``: the whole pipeline on the built-in demo scene, headless-safe.

Writes the composite video and a PNG contact sheet (frame | mask | composite at a few
instants) into ``--output-dir``, prints the summary, and also opens a window where a
display exists.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Callable

from segcam.commands import add_config_options, config_from_args
from segcam.errors import OutputError, UsageError

HELP = "run the full pipeline on a synthetic demo scene; writes a video and a contact sheet"

log = logging.getLogger("segcam")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``segcam demo``."""
    add_config_options(parser)
    parser.add_argument(
        "--seconds", type=float, default=10.0, metavar="N", help="how long to run (default 10)"
    )
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        default="segcam-demo",
        help="where the video and contact sheet go (default ./segcam-demo)",
    )
    parser.add_argument(
        "--no-display", action="store_true", help="never open a window, even with a display"
    )
    parser.add_argument("--stats-json", metavar="FILE", help="write the final metrics as JSON")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``segcam demo``."""
    from segcam.commands.run import (
        build_extensions,
        build_hup_handler,
        exit_code_of,
        run_pipeline,
    )
    from segcam.outputs import ContactSheetSink, display_available

    if args.seconds <= 0:
        raise UsageError(f"--seconds must be positive, got {args.seconds}")
    cfg = config_from_args(args)
    cfg.input.uri = "demo"
    out_dir = Path(args.output_dir).expanduser()
    try:  # the demo's own output folder is made for the user (any other output's is not)
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the demo's output folder {out_dir}: {exc.strerror or exc}",
            "choose another with --output-dir",
        ) from None
    video = out_dir / "segcam-demo.mp4"
    sheet_path = out_dir / "segcam-demo-sheet.png"
    uris = [f"file://{video}"]
    show, why = display_available()
    if show and not args.no_display:
        uris.append("display://0")
        cfg.input.realtime = True  # on screen the scene should move at its natural pace
    else:
        log.info("demo: no window (%s); writing files only", why if not show else "--no-display")
    cfg.output.uris = uris
    rows = 4
    sheet = ContactSheetSink(
        str(sheet_path),
        rows=rows,
        every_s=args.seconds / (rows + 0.5),
        truth=_truth_of(cfg) if not cfg.input.realtime else None,
    )
    runner = run_pipeline(
        cfg,
        seconds=args.seconds,
        stats_json=args.stats_json,
        extensions=build_extensions(cfg),
        extra_sinks=[sheet],
        on_hup=build_hup_handler(cfg),
    )
    print(f"video:         {video} ({runner.frames_completed} frames)")
    if sheet.saved is not None:
        print(f"contact sheet: {sheet.saved}")
    if sheet.ious:
        print(
            f"mask vs the scene's true silhouette: IoU {min(sheet.ious):.2f}-"
            f"{max(sheet.ious):.2f} over {len(sheet.ious)} sampled frames"
        )
    return exit_code_of(runner)


def _truth_of(cfg: Any) -> Callable[[int], Any]:
    """Frame id -> the demo scene's true person silhouette (frame ids = scene indices).

    Only without pacing: then capture takes every frame the scene renders, in order.
    """
    from segcam.demo_scene import DemoScene

    scene = DemoScene(cfg.input.width, cfg.input.height, cfg.input.fps)
    return lambda i: scene.render(i)[1]
