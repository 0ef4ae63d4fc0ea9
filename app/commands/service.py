"""``segcam service``: install, uninstall and inspect the systemd service."""

from __future__ import annotations

import argparse

HELP = "install, uninstall or inspect the systemd service"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Subcommands install / uninstall / status."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    inst = sub.add_parser(
        "install",
        help="create the user and directories, install config and unit, enable and start",
        description=(
            "Install segcam as a systemd service (needs root). Idempotent: run it again "
            "after upgrading segcam. An existing /etc/segcam/config.yaml is never overwritten."
        ),
    )
    inst.add_argument("--user", default="segcam", help="service user (default: segcam)")
    inst.add_argument(
        "--config",
        metavar="FILE",
        help="config to install as /etc/segcam/config.yaml (default: the built-in defaults)",
    )
    _common(inst)

    uninst = sub.add_parser(
        "uninstall",
        help="stop, disable and remove the unit (config and engines stay unless --purge)",
    )
    uninst.add_argument("--user", default="segcam", help="service user (default: segcam)")
    uninst.add_argument(
        "--purge",
        action="store_true",
        help="also remove /etc/segcam, /var/lib/segcam, /var/cache/segcam and the user",
    )
    _common(uninst)

    sub.add_parser("status", help="state, status text, restarts and watchdog of the service")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="print every action, change nothing")
    p.add_argument(
        "--root",
        metavar="DIR",
        default="/",
        help="install below DIR (image building, tests): no useradd, no systemctl",
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch to install / uninstall / status."""
    from segcam import service_install as si

    if args.action == "status":
        return _status(si)
    opts = si.Options(
        user=args.user,
        config=getattr(args, "config", None),
        dry_run=args.dry_run,
        root=args.root,
        purge=getattr(args, "purge", False),
    )
    if args.action == "install":
        plan = si.plan_install(opts)
    else:
        plan = si.plan_uninstall(opts)
    si.execute(plan, opts)
    if opts.dry_run:
        print("dry run: nothing was changed")
    elif args.action == "install" and not opts.rooted:
        print(
            "installed; follow it with: journalctl -u segcam -f   (status: segcam service status)"
        )
    return 0


def _status(si) -> int:
    state = si.service_state()
    if state.get("LoadState") in (None, "", "not-found"):
        print("segcam.service is not installed (sudo segcam service install)")
        return 3
    active = f"{state.get('ActiveState', '?')} ({state.get('SubState', '?')})"
    print(f"segcam.service: {active}")
    if state.get("StatusText"):
        print(f"  status:   {state['StatusText']}")
    print(f"  main pid: {state.get('MainPID', '?')}")
    print(f"  restarts: {state.get('NRestarts', '?')}")
    print(f"  watchdog: {state.get('WatchdogUSec', '?')}")
    if state.get("Result") not in (None, "", "success"):
        print(f"  last result: {state['Result']}")
    print("  logs:     journalctl -u segcam -e")
    return 0 if state.get("ActiveState") == "active" else 3
