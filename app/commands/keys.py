"""``segcam keys``: CURVE keypairs for the mask stream."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HELP = "create CURVE keypairs for an authenticated, encrypted mask stream"


def default_keys_dir() -> Path:
    """$XDG_CONFIG_HOME/segcam/keys (else ~/.config/segcam/keys)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "segcam" / "keys"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``keys generate [--dir D] [--name N] [--force]``."""
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION")
    gen = sub.add_parser("generate", help="write NAME.key (public) and NAME.key_secret (0600)")
    gen.add_argument(
        "--dir", default=None, help=f"where to write the files (default: {default_keys_dir()})"
    )
    gen.add_argument(
        "--name",
        default="server",
        help="file name stem: server, or one per client (default: server)",
    )
    gen.add_argument("--force", action="store_true", help="replace existing files of that name")


def run(args: argparse.Namespace) -> int:
    """Generate one keypair and say where each file goes."""
    from segcam.errors import UsageError
    from segcam.publish.curve import generate_keypair

    if getattr(args, "keys_command", None) != "generate":
        raise UsageError("missing action", "use: segcam keys generate [--dir D] [--name N]")
    directory = Path(args.dir).expanduser() if args.dir else default_keys_dir()
    public, secret = generate_keypair(directory, args.name, force=args.force)
    print(f"public key: {public}")
    print(f"secret key: {secret} (mode 0600; keep it on this machine)")
    if args.name == "server":
        print(
            "publisher: set publish.curve.enabled=true, "
            f"publish.curve.server_secret_key={secret}, and publish.curve.authorized_keys_dir "
            "to a directory holding each client's .key; give clients "
            f"{public.name} (segcam subscribe --server-key)"
        )
    else:
        print(
            f"client: copy {public.name} into the publisher's authorized_keys_dir; subscribe "
            f"with --server-key server.key --client-key {secret}"
        )
    return 0
