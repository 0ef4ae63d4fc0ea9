"""Install and uninstall segcam as a systemd service.

Install is a list of :class:`Action` s, each described in one line, so that ``--dry-run``
prints exactly what a real run does, and a real run is idempotent: a step whose result
already exists says so and changes nothing. ``root`` installs below another directory
(tests, image building): there the user is not created and systemctl is not run, and
the output says so.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

from segcam.errors import SegcamError, ServiceError
from segcam.fileio import write_atomic

if TYPE_CHECKING:
    from segcam.config import Config

UNIT_NAME = "segcam.service"
CONFIG_DIR = "/etc/segcam"
CONFIG_FILE = "/etc/segcam/config.yaml"
STATE_DIR = "/var/lib/segcam"
CACHE_DIR = "/var/cache/segcam"
UNIT_DIR = "/etc/systemd/system"
# Device groups the service user joins where they exist: video (V4L2 cameras; Jetson's
# /dev/nvhost-*, /dev/nvmap, /dev/nvgpu/*), render (/dev/dri/renderD*), jtop (the jtop
# service's socket).
DEVICE_GROUPS = ("video", "render", "jtop")
# Only these may be SupplementaryGroups= of the unit: a missing group there makes the
# unit fail to start, so the unit lists those present (jtop access comes from membership).
UNIT_GROUPS = ("video", "render")
# ProtectHome=yes hides these from the service: a segcam installed there cannot start.
HIDDEN_PREFIXES = ("/home/", "/root/", "/run/user/")


@dataclass
class Action:
    """One step: a line for the user and the function that performs it (None = report only)."""

    text: str
    run: Optional[Callable[[], None]] = None


@dataclass
class Options:
    """What ``segcam service install/uninstall`` was asked to do."""

    user: str = "segcam"
    config: Optional[str] = None
    dry_run: bool = False
    root: str = "/"
    purge: bool = False
    executable: Optional[str] = None
    out: Callable[[str], None] = print

    @property
    def rooted(self) -> bool:
        """True when installing below another root (no useradd, no systemctl)."""
        return os.path.abspath(self.root) != "/"


@dataclass
class Plan:
    """The actions of one install/uninstall and notes shown before them."""

    actions: List[Action] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def add(self, text: str, run: Optional[Callable[[], None]] = None) -> None:
        """Append an action."""
        self.actions.append(Action(text, run))


def _path(opts: Options, path: str) -> Path:
    return Path(opts.root) / path.lstrip("/")


# --------------------------------------------------------------------------- unit text


def packaged_unit_text() -> str:
    """The unit shipped with segcam (``systemd/segcam.service``)."""
    here = Path(__file__).resolve().parent
    for cand in (here / "systemd" / UNIT_NAME, here.parent / "systemd" / UNIT_NAME):
        if cand.is_file():
            return cand.read_text(encoding="utf-8")
    raise ServiceError(
        f"cannot find segcam's {UNIT_NAME}", "reinstall segcam (pip install .) so that it ships"
    )


def render_unit(template: str, executable: str, user: str, groups: Sequence[str]) -> str:
    """The unit for this machine: ExecStart= path, User=/Group=, SupplementaryGroups=."""
    out = []
    for line in template.splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={executable} run --config {CONFIG_FILE}"
        elif line.startswith("User="):
            line = f"User={user}"
        elif line.startswith("Group="):
            line = f"Group={user}"
        elif line.startswith("SupplementaryGroups="):
            if not groups:
                continue
            line = "SupplementaryGroups=" + " ".join(groups)
        out.append(line)
    return "\n".join(out) + "\n"


def find_executable() -> str:
    """Absolute path of the installed ``segcam`` console script."""
    candidates = [Path(sys.executable).parent / "segcam"]
    found = shutil.which("segcam")
    if found:
        candidates.append(Path(found))
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "segcam":
        candidates.insert(0, argv0)
    for cand in candidates:
        if cand.is_file() and os.access(str(cand), os.X_OK):
            return str(cand.absolute())
    raise ServiceError(
        "cannot find the installed `segcam` script",
        "install segcam (pip install .) into a virtual environment outside /home, "
        "e.g. /opt/segcam, and run its bin/segcam",
    )


# --------------------------------------------------------------------------- helpers


def _group_exists(name: str, opts: Options) -> bool:
    if opts.rooted:
        group_file = _path(opts, "/etc/group")
        if group_file.is_file():
            names = [ln.split(":", 1)[0] for ln in group_file.read_text().splitlines()]
            return name in names
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _run(cmd: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True)
    except FileNotFoundError:
        raise ServiceError(f"{cmd[0]} not found", "is this a systemd-based Linux?") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ServiceError(
            f"`{' '.join(cmd)}` failed ({proc.returncode}): {detail[-1] if detail else ''}",
            "see the message above; fix it and run the command again (it is idempotent)",
        )
    return proc


def _bind(func: Callable[..., object], *args: object) -> Callable[[], None]:
    def call() -> None:
        func(*args)

    return call


def _make_dir(path: Path, mode: int, owner: Optional[str], group: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(str(path), mode)
    if owner is not None:
        shutil.chown(str(path), owner, group)


def _foreign_entries(path: Path, user: str) -> int:
    """How many entries below ``path`` are not owned by ``user`` (all, if it does not exist)."""
    try:
        uid: Optional[int] = pwd.getpwnam(user).pw_uid
    except KeyError:
        uid = None
    count = 0
    for top, dirs, files in os.walk(str(path)):
        for name in dirs + files:
            try:
                if uid is None or os.lstat(os.path.join(top, name)).st_uid != uid:
                    count += 1
            except OSError:
                continue
    return count


def _chown_tree(path: Path, user: str, group: str) -> None:
    """Give everything below ``path`` to ``user``:``group``, never following symlinks."""
    uid = pwd.getpwnam(user).pw_uid
    gid = grp.getgrnam(group).gr_gid
    for top, dirs, files in os.walk(str(path)):
        for name in dirs + files:
            os.lchown(os.path.join(top, name), uid, gid)


def _install_file(path: Path, text: str, mode: int, owner: Optional[str], group: str) -> None:
    write_atomic(path, text, mode)
    if owner is not None:
        shutil.chown(str(path), owner, group)


def _check_privileges(opts: Options) -> None:
    if opts.dry_run or opts.rooted:
        return
    if os.geteuid() != 0:
        raise ServiceError(
            "installing the service needs root", "run it with sudo: sudo segcam service install"
        )
    if not Path("/run/systemd/system").is_dir():
        raise ServiceError(
            "systemd is not running on this machine",
            "use --root DIR to prepare an image, or run segcam without the service",
        )


# --------------------------------------------------------------------------- install


def plan_install(opts: Options) -> Plan:
    """Work out every step of an install (nothing is changed yet)."""
    from segcam.config import configs_dir, load_config

    _check_privileges(opts)
    plan = Plan()
    exe = opts.executable or find_executable()
    if exe.startswith(HIDDEN_PREFIXES):
        msg = f"{exe} is under a home directory, which the service cannot see (ProtectHome=yes)"
        hint = "install segcam into e.g. /opt/segcam (python3 -m venv /opt/segcam)"
        if not opts.dry_run:
            raise ServiceError(msg, hint)
        plan.notes.append(f"warning: {msg}; {hint}")

    src = Path(opts.config).expanduser() if opts.config else configs_dir() / "default.yaml"
    installed = load_config(src)  # refuse to install a config that would not start
    if installed.input.uri == "demo" and not _path(opts, CONFIG_FILE).exists():
        plan.notes.append(
            f"note: the config reads the built-in demo scene; set input.uri (csi://0, "
            f"/dev/video0, rtsp://...) in {CONFIG_FILE}, then: systemctl restart segcam"
        )
    cannot_start = _start_problem(opts, installed)
    if cannot_start and opts.rooted:
        plan.notes.append(f"warning: {cannot_start}; the service would not start with it")
    elif cannot_start:
        plan.notes.append(
            f"warning: {cannot_start}; the service is enabled but not started (it would "
            f"only fail and restart): fix it, then: systemctl restart segcam"
        )
    user = opts.user
    groups = [g for g in DEVICE_GROUPS if _group_exists(g, opts)]
    unit_groups = [g for g in UNIT_GROUPS if g in groups]
    if opts.rooted:
        plan.notes.append(
            f"--root {opts.root}: not creating user {user!r} and not running systemctl "
            "(do that on the target machine, or run install there again)"
        )

    # 1. the user
    if opts.rooted:
        plan.add(f"skip: create system user {user!r} (--root given)")
    elif _user_exists(user):
        plan.add(f"ok: user {user!r} exists")
    else:
        cmd = [
            "useradd",
            "--system",
            "--user-group",
            "--home-dir",
            STATE_DIR,
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "segcam service",
            user,
        ]
        plan.add("run: " + " ".join(cmd), _bind(_run, cmd))
    for group in groups:
        if opts.rooted:
            plan.add(f"skip: add {user!r} to group {group!r} (--root given)")
            continue
        member = _user_exists(user) and user in grp.getgrnam(group).gr_mem
        if member:
            plan.add(f"ok: {user!r} is in group {group!r}")
        else:
            cmd_g = ["usermod", "--append", "--groups", group, user]
            plan.add("run: " + " ".join(cmd_g), _bind(_run, cmd_g))

    # 2. directories. Models and engines copied in by root (an offline device, an engine
    # built with build_engine.sh) are handed to the service user, which must read them.
    owned = not opts.rooted  # chown needs the user, which --root does not create
    for path, mode, own, tree in (
        (CONFIG_DIR, 0o750, "root", False),
        (STATE_DIR, 0o750, user, False),
        (STATE_DIR + "/engines", 0o750, user, True),
        (STATE_DIR + "/models", 0o750, user, True),
        (CACHE_DIR, 0o750, user, False),
    ):
        target = _path(opts, path)
        group = user
        owner_text = f" owner {own}:{group}" if owned else ""
        if target.is_dir():
            plan.add(
                f"ensure directory {target} mode {mode:o}{owner_text} (exists)",
                _bind(_make_dir, target, mode, own if owned else None, group),
            )
        else:
            plan.add(
                f"create directory {target} mode {mode:o}{owner_text}",
                _bind(_make_dir, target, mode, own if owned else None, group),
            )
        foreign = _foreign_entries(target, own) if owned and tree and target.is_dir() else 0
        if foreign:
            plan.add(
                f"give the {foreign} entries below {target} to {own}:{group}",
                _bind(_chown_tree, target, own, group),
            )

    # 3. the config, never overwritten
    dest = _path(opts, CONFIG_FILE)
    if dest.exists():
        same = dest.read_bytes() == src.read_bytes()
        plan.add(
            f"keep: {dest} exists" + ("" if same else f" (differs from {src}; not overwritten)")
        )
    else:
        text = src.read_text(encoding="utf-8")
        plan.add(
            f"install config {src} -> {dest} mode 640",
            _bind(_install_file, dest, text, 0o640, "root" if owned else None, user),
        )

    # 4. the unit
    unit = render_unit(packaged_unit_text(), exe, user, unit_groups)
    unit_path = _path(opts, UNIT_DIR + "/" + UNIT_NAME)
    changed = not unit_path.is_file() or unit_path.read_text(encoding="utf-8") != unit
    existed = unit_path.is_file()
    if changed:
        plan.add(
            f"{'update' if existed else 'install'} unit {unit_path} "
            f"(ExecStart={exe}, User={user}, SupplementaryGroups={' '.join(unit_groups) or '-'})",
            _bind(write_atomic, unit_path, unit, 0o644),
        )
    else:
        plan.add(f"ok: unit {unit_path} is up to date")

    # 5. systemd
    if opts.rooted:
        plan.add("skip: systemctl daemon-reload, enable --now segcam (--root given)")
    else:
        reload_cmd = ["systemctl", "daemon-reload"]
        plan.add("run: " + " ".join(reload_cmd), _bind(_run, reload_cmd))
        if cannot_start:
            enable_cmd = ["systemctl", "enable", UNIT_NAME]
            plan.add("run: " + " ".join(enable_cmd), _bind(_run, enable_cmd))
            return plan
        enable_cmd = ["systemctl", "enable", "--now", UNIT_NAME]
        plan.add("run: " + " ".join(enable_cmd), _bind(_run, enable_cmd))
        if changed and existed:
            # enable --now leaves a running service alone; a changed unit needs a restart.
            restart_cmd = ["systemctl", "try-restart", UNIT_NAME]
            plan.add("run: " + " ".join(restart_cmd), _bind(_run, restart_cmd))
    return plan


def _start_problem(opts: Options, installed: Config) -> str:
    """Why the service could not start with the config it will read ("" when it can).

    That is the existing /etc/segcam/config.yaml (never overwritten) or the one being
    installed. Checked: the config loads, and the demo source has scikit-image.
    """
    from segcam.config import load_config
    from segcam.demo_scene import missing_dependency
    from segcam.errors import ConfigError
    from segcam.sources import parse_uri

    existing = _path(opts, CONFIG_FILE)
    cfg = installed
    if existing.exists():
        try:
            cfg = load_config(existing)
        except ConfigError as exc:
            return f"the existing {existing} is invalid: {exc.message}"
    try:
        kind = parse_uri(cfg.input.uri).kind
    except SegcamError:
        return ""  # the service reports a bad input itself
    missing = missing_dependency() if kind == "demo" else None
    if missing is not None:
        return f"input.uri is the demo scene, but {missing.message} ({missing.hint})"
    return ""


# --------------------------------------------------------------------------- uninstall


def plan_uninstall(opts: Options) -> Plan:
    """Every step of an uninstall: unit removed; config and engines kept unless purge."""
    _check_privileges(opts)
    plan = Plan()
    unit_path = _path(opts, UNIT_DIR + "/" + UNIT_NAME)
    if opts.rooted:
        plan.notes.append(f"--root {opts.root}: not running systemctl and not removing users")
        plan.add("skip: systemctl disable --now segcam (--root given)")
    else:
        cmd = ["systemctl", "disable", "--now", UNIT_NAME]
        plan.add("run: " + " ".join(cmd), _bind(_run, cmd, unit_path.exists()))
    if unit_path.exists():
        plan.add(f"remove unit {unit_path}", unit_path.unlink)
    else:
        plan.add(f"ok: no unit at {unit_path}")
    if not opts.rooted:
        reload_cmd = ["systemctl", "daemon-reload"]
        plan.add("run: " + " ".join(reload_cmd), _bind(_run, reload_cmd))
    for path, what in (
        (CONFIG_DIR, "config"),
        (STATE_DIR, "models, engines, state"),
        (CACHE_DIR, "compile caches"),
    ):
        target = _path(opts, path)
        if not target.exists():
            plan.add(f"ok: {target} does not exist")
        elif opts.purge:
            plan.add(f"remove {target} (--purge)", _bind(shutil.rmtree, str(target)))
        else:
            plan.add(f"keep: {target} ({what}; --purge removes it)")
    if opts.purge and not opts.rooted:
        if _user_exists(opts.user):
            cmd_u = ["userdel", opts.user]
            plan.add("run: " + " ".join(cmd_u) + " (--purge)", _bind(_run, cmd_u))
        else:
            plan.add(f"ok: no user {opts.user!r}")
    return plan


def execute(plan: Plan, opts: Options) -> None:
    """Print every note and action; perform the actions unless ``dry_run``."""
    for note in plan.notes:
        opts.out(note)
    prefix = "would " if opts.dry_run else ""
    for action in plan.actions:
        opts.out(f"{prefix}{action.text}" if action.run is not None else action.text)
        if not opts.dry_run and action.run is not None:
            try:
                action.run()
            except OSError as exc:
                raise ServiceError(
                    f"{action.text}: {exc}", "fix the cause and run the command again"
                ) from None


# --------------------------------------------------------------------------- status


def service_state() -> dict:
    """Key properties of the installed unit from ``systemctl show``."""
    props = "LoadState,ActiveState,SubState,StatusText,NRestarts,WatchdogUSec,MainPID,Result"
    proc = _run(["systemctl", "show", UNIT_NAME, "--property", props], check=False)
    if proc.returncode != 0 and not proc.stdout.strip():
        detail = (proc.stderr.strip().splitlines() or ["no output"])[0]
        raise ServiceError(
            f"cannot ask systemd about {UNIT_NAME}: {detail}",
            "segcam service status works on a machine booted with systemd",
        )
    state = {}
    for line in proc.stdout.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            state[key] = value
    return state
