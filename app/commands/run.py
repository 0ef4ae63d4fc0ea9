"""``segcam run``: the live pipeline from an input URI to one or more outputs."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from segcam.commands import add_config_options, config_from_args
from segcam.errors import OutputError, UsageError

HELP = "run the pipeline: input -> person mask -> background replacement -> outputs"

log = logging.getLogger("segcam")

HupHandler = Callable[[Any], Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``segcam run``."""
    add_config_options(parser)
    parser.add_argument(
        "--input", "-i", metavar="URI", help="input URI (overrides input.uri), e.g. 0, clip.mp4"
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="URI",
        action="append",
        help="output URI, repeatable: display://0, file://out.mp4, http://0.0.0.0:8080 "
        "(browser preview), none (overrides output.uris)",
    )
    parser.add_argument("--stats-json", metavar="FILE", help="write the final metrics as JSON")
    parser.add_argument("--seconds", type=float, metavar="N", help="stop after N seconds")
    parser.add_argument("--frames", type=int, metavar="N", help="stop after N input frames")


# ------------------------------------------------------------------------ extension hook
def build_extensions(cfg: Any) -> List[Any]:
    """Control-plane extensions started beside the pipeline (see segcam.pipeline.types).

    * the thermal governor (segcam.thermal) when ``cfg.thermal.enabled``;
    * the sd_notify notifier (segcam.service) when run under systemd.
    """
    extensions: List[Any] = []
    if cfg.thermal.enabled:
        from segcam.thermal import ThermalGovernor

        extensions.append(ThermalGovernor(cfg))
    from segcam.service import build_notifier

    notifier = build_notifier(cfg)  # None outside systemd (no NOTIFY_SOCKET)
    if notifier is not None:
        extensions.append(notifier)
    return extensions


def build_hup_handler(cfg: Any, args: Optional[argparse.Namespace] = None) -> HupHandler:
    """What SIGHUP does: ``handler(runner)`` re-reads the config (segcam.reload).

    ``args`` carries the command line's --set/--input/--output, re-applied on reload.
    """
    from segcam.reload import build_hup_handler as reload_handler

    return reload_handler(cfg, args)


# ------------------------------------------------------------------------ signals
def install_signal_handlers(runner: Any, on_hup: Optional[HupHandler] = None) -> Callable[[], None]:
    """SIGINT/SIGTERM stop the runner; SIGHUP calls ``on_hup(runner)`` in a thread.

    Returns a function that restores the previous handlers. Only the main thread may
    install handlers; elsewhere (tests driving a runner from a thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}

    def stop(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if runner.stop_event.is_set():
            log.info("%s again: already stopping", name)
        else:
            log.info("%s: stopping", name)
        runner.request_stop(name)

    def hup(_signum: int, _frame: Any) -> None:
        if on_hup is None:
            log.info("SIGHUP: no reload handler in this build; ignored")
            return
        # Reloading reads files and may log: do it outside the signal handler. A daemon:
        # a reload stuck on a file (dead network mount) must not keep segcam alive at exit.
        threading.Thread(
            target=_safe_hup, args=(on_hup, runner), name="segcam-sighup", daemon=True
        ).start()

    wanted: List[Tuple[signal.Signals, Callable[[int, Any], None]]] = [
        (signal.SIGINT, stop),
        (signal.SIGTERM, stop),
    ]
    if hasattr(signal, "SIGHUP"):
        wanted.append((signal.SIGHUP, hup))
    for sig, handler in wanted:
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _safe_hup(on_hup: HupHandler, runner: Any) -> None:
    try:
        on_hup(runner)
    except Exception as exc:  # noqa: BLE001 - a failed reload keeps the pipeline running
        log.error("SIGHUP reload failed: %s", exc)


# ------------------------------------------------------------------------ the pipeline
def run_pipeline(
    cfg: Any,
    seconds: Optional[float] = None,
    frames: Optional[int] = None,
    stats_json: Optional[str] = None,
    extensions: Sequence[Any] = (),
    extra_sinks: Sequence[Any] = (),
    on_hup: Optional[HupHandler] = None,
    print_summary: bool = True,
) -> Any:
    """Open input, outputs and model, run until stopped; return the finished Runner.

    Bad input (unknown scheme, missing file, absent camera, unwritable output, no display)
    raises a SegcamError before any thread starts. A pipeline error is raised after the
    orderly stop, the summary and the stats file.
    """
    from segcam.outputs import build_sinks
    from segcam.pipeline.assemble import open_backend, preflight_sinks
    from segcam.pipeline.metrics import summary_table
    from segcam.pipeline.runner import Runner
    from segcam.sources import open_source

    if stats_json:
        _check_stats_path(stats_json)
    sinks = build_sinks(cfg) + list(extra_sinks)
    preflight_sinks(sinks)
    source = open_source(cfg.input)
    source.open()
    backend = None
    runner = None
    try:
        backend, _reason = open_backend(cfg)
        runner = Runner(cfg, source, backend, sinks, extensions)
        restore = install_signal_handlers(runner, on_hup)
        try:
            runner.run(max_frames=frames, max_seconds=seconds)
        finally:
            restore()
    finally:
        if runner is None:  # otherwise the runner closed it (unless a read is stuck)
            source.close()
        if backend is not None:
            backend.close()
    status = runner.status()
    if print_summary:
        print(summary_table(status), flush=True)
    if stats_json:
        _write_stats(stats_json, runner, status)
    if runner.error is not None:
        raise runner.error
    log.info("stopped: %s", runner.stop_reason or "done")
    return runner


def _check_stats_path(path: str) -> None:
    p = Path(path).expanduser()
    if not p.parent.is_dir():
        raise UsageError(
            f"--stats-json {path}: directory {p.parent} does not exist",
            "create it or choose another path",
        )


def _write_stats(path: str, runner: Any, status: Any) -> None:
    from segcam.config import config_to_dict

    out = dict(status)
    out["stop_reason"] = runner.stop_reason
    out["error"] = None if runner.error is None else str(runner.error)
    out["exit_code"] = exit_code_of(runner) if runner.error is None else runner.error.exit_code
    out["frames_completed"] = runner.frames_completed
    out["config"] = config_to_dict(runner.config)
    try:
        Path(path).expanduser().write_text(json.dumps(out, indent=2, default=str) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write --stats-json {path}: {exc.strerror or exc}") from None
    log.info("stats written to %s", path)


def apply_io_args(cfg: Any, args: argparse.Namespace) -> None:
    """``--input``/``--output`` override ``input.uri``/``output.uris``."""
    if getattr(args, "input", None):
        cfg.input.uri = args.input
    if getattr(args, "output", None):
        cfg.output.uris = list(args.output)
    for name in ("seconds", "frames"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise UsageError(f"--{name} must be positive, got {value}")


def exit_code_of(runner: Any) -> int:
    """0 for a clean stop (SIGTERM included: systemd's stop), 130 after SIGINT (Ctrl-C),
    as shells expect of an interrupted command."""
    return 130 if runner.stop_reason == "SIGINT" else 0


def explain_default_outputs(cfg: Any) -> None:
    """Say what a bare ``segcam run`` does: the demo scene into no output at all."""
    if list(cfg.output.uris) != ["none"]:
        return
    what = "the demo scene" if cfg.input.uri == "demo" else f"input {cfg.input.uri}"
    log.info(
        "running %s with output 'none': nothing is shown or recorded. To see it, add "
        "--output display://0 (a window), --output http://127.0.0.1:8080 (a browser) or "
        "--output file://out.mp4 (a recording); Ctrl-C stops",
        what,
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``segcam run``."""
    cfg = config_from_args(args)
    apply_io_args(cfg, args)
    explain_default_outputs(cfg)
    runner = run_pipeline(
        cfg,
        seconds=args.seconds,
        frames=args.frames,
        stats_json=args.stats_json,
        extensions=build_extensions(cfg),
        on_hup=build_hup_handler(cfg, args),
    )
    sys.stdout.flush()
    return exit_code_of(runner)
