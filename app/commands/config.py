"""``segcam config``: the presets that ship inside the package, and the merged result."""

from __future__ import annotations

import argparse

HELP = "list the packaged config presets; show one merged with --set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``config list`` and ``config show [NAME|FILE] [--set KEY=VALUE ...]``."""
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION")
    sub.add_parser("list", help="the device presets usable as --config NAME from any folder")
    show = sub.add_parser(
        "show",
        help="print the effective config (defaults < preset or file < --set) as YAML",
    )
    show.add_argument(
        "name",
        nargs="?",
        default=None,
        metavar="NAME|FILE",
        help="a preset name (segcam config list) or a YAML file; default: built-in defaults",
    )
    show.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key, as for segcam run (repeatable)",
    )


def run(args: argparse.Namespace) -> int:
    """Print the preset list or one effective config."""
    from segcam.config import configs_dir, dump_config, load_config, preset_names
    from segcam.errors import UsageError

    action = getattr(args, "config_command", None)
    if action == "list":
        devices = configs_dir() / "devices"
        for name in preset_names():
            first = (devices / f"{name}.yaml").read_text(encoding="utf-8").splitlines()[:1]
            title = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
            print(f"{name:<12} {title}")
        print("use: segcam run --config NAME (from any folder); segcam config show NAME")
        return 0
    if action == "show":
        cfg = load_config(args.name, args.overrides)
        print(f"# effective config: {cfg.source_path or 'built-in defaults'}", end="")
        print(f" + --set {' '.join(args.overrides)}" if args.overrides else "")
        print(dump_config(cfg), end="")
        return 0
    raise UsageError("missing action", "use: segcam config list | segcam config show [NAME]")
