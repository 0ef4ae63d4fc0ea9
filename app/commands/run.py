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
        "--input",
        "-i",
        metavar="URI",
        action="append",
        help="input URI, e.g. 0, clip.mp4; repeat it for several inputs in one process "
        "(overrides input.uri / inputs)",
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
    """Open inputs, outputs and model, run until stopped; return the finished host.

    One input runs as one Runner (its own host); several inputs (``inputs:`` or repeated
    ``--input``) run under a Supervisor with one shared, batched backend. Bad input
    (unknown scheme, missing file, absent camera, unwritable output, no display) raises a
    SegcamError before any thread starts. A pipeline error is raised after the orderly
    stop, the summary and the stats file.
    """
    from segcam.config import stream_configs

    if stats_json:
        _check_stats_path(stats_json)
    if len(stream_configs(cfg)) > 1:
        return _run_streams(cfg, seconds, frames, stats_json, extensions, on_hup, print_summary)
    from segcam.outputs import build_sinks
    from segcam.pipeline.assemble import open_backend, preflight_sinks
    from segcam.pipeline.runner import Runner
    from segcam.sources import open_source

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
    return _finish(runner, runner.error, stats_json, print_summary)


def _run_streams(
    cfg: Any,
    seconds: Optional[float],
    frames: Optional[int],
    stats_json: Optional[str],
    extensions: Sequence[Any],
    on_hup: Optional[HupHandler],
    print_summary: bool,
) -> Any:
    """Several inputs: one Supervisor, one backend (batched), one publisher."""
    from segcam.outputs import build_sinks
    from segcam.pipeline.assemble import open_shared_backend, preflight_sinks
    from segcam.pipeline.supervisor import Supervisor, build_streams
    from segcam.sources import open_source

    publisher = None
    if cfg.publish.enabled:
        from segcam.publish.publisher import MaskPublisher

        publisher = MaskPublisher(cfg.publish)
    specs = build_streams(cfg, build_sinks, open_source, publisher)
    backend = None
    sup = None
    try:
        for spec in specs:
            preflight_sinks(spec.sinks)
        backend, _reason = open_shared_backend(cfg, len(specs))
        sup = Supervisor(cfg, specs, backend, extensions, publisher)
        if publisher is not None:  # telemetry carries every stream; its failure stops all
            publisher.status_fn = sup.status
            publisher.on_error = sup.report_error
        restore = install_signal_handlers(sup, on_hup)
        try:
            sup.run(max_frames=frames, max_seconds=seconds)
        finally:
            restore()
    finally:
        if sup is None:
            for spec in specs:
                spec.source.close()
        if backend is not None:
            backend.close()
    return _finish(sup, sup.first_error(), stats_json, print_summary)


def _finish(host: Any, error: Any, stats_json: Optional[str], print_summary: bool) -> Any:
    """Summary, stats file, then the error (if any) that ended the run."""
    from segcam.pipeline.metrics import summary_table

    status = host.status()
    if print_summary:
        print(summary_table(status), flush=True)
    if stats_json:
        _write_stats(stats_json, host, status, error)
    if error is not None:
        raise error
    log.info("stopped: %s", host.stop_reason or "done")
    return host


def _check_stats_path(path: str) -> None:
    p = Path(path).expanduser()
    if not p.parent.is_dir():
        raise UsageError(
            f"--stats-json {path}: directory {p.parent} does not exist",
            "create it or choose another path",
        )


def _write_stats(path: str, runner: Any, status: Any, error: Any) -> None:
    from segcam.config import config_to_dict

    out = dict(status)
    out["stop_reason"] = runner.stop_reason
    out["error"] = None if error is None else str(error)
    out["exit_code"] = exit_code_of(runner) if error is None else int(error.exit_code) or 1
    out["frames_completed"] = runner.frames_completed
    out["config"] = config_to_dict(runner.config)
    try:
        Path(path).expanduser().write_text(json.dumps(out, indent=2, default=str) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write --stats-json {path}: {exc.strerror or exc}") from None
    log.info("stats written to %s", path)


def apply_io_args(cfg: Any, args: argparse.Namespace) -> None:
    """``--input``/``--output`` override ``input.uri`` (or ``inputs``)/``output.uris``.

    One ``--input`` is the single input (any ``inputs:`` list of the file is replaced);
    several become the ``inputs:`` list, each with the top-level settings.
    """
    from segcam.config import StreamInput, stream_configs

    inputs = getattr(args, "input", None)
    if isinstance(inputs, str):
        inputs = [inputs]
    if inputs:
        if len(inputs) == 1:
            cfg.input.uri = inputs[0]
            cfg.inputs = []
        else:
            cfg.inputs = [StreamInput(uri=u) for u in inputs]
    if getattr(args, "output", None):
        cfg.output.uris = list(args.output)
    for name in ("seconds", "frames"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            raise UsageError(f"--{name} must be positive, got {value}")
    if cfg.inputs:
        stream_configs(cfg)  # --input/--output may clash (two streams, one file)


def exit_code_of(runner: Any) -> int:
    """0 for a clean stop (SIGTERM included: systemd's stop), 130 after SIGINT (Ctrl-C),
    as shells expect of an interrupted command."""
    return 130 if runner.stop_reason == "SIGINT" else 0


def explain_default_outputs(cfg: Any) -> None:
    """Say what a bare ``segcam run`` does: the demo scene into no output at all."""
    if list(cfg.output.uris) != ["none"]:
        return
    uris = [e.uri for e in cfg.inputs] or [cfg.input.uri]
    what = "the demo scene" if uris == ["demo"] else f"input {', '.join(uris)}"
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
