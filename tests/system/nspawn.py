"""A real systemd to test the service in: a Debian root booted with systemd-nspawn.

The root is a minimal Debian bookworm made by ``debootstrap`` from Debian's own packages
and cached between runs (``$SEGCAM_SYSTEM_CACHE``, default ``/var/cache/segcam-ci``),
keyed by a hash of what goes into it, so a changed package list builds a new one. Each
boot uses ``--volatile=overlay``: the cached root is the read-only lower layer and every
change (the venv, the user, the unit) lives in a tmpfs that disappears at power-off.

The container is booted with ``--register=no --keep-unit``: without a system bus on the
host (as on CI machines and in containers) nspawn cannot register with systemd-machined
and stops with "Failed to open system bus". Without registration there is no
``machinectl shell`` or ``systemctl --machine``, so commands run through ``nsenter``
into the namespaces of the container's PID 1: that is a root shell on the booted
system, talking to its systemd as the operator's ``sudo`` would.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

SUITE = "bookworm"
VARIANT = "minbase"
MIRROR = os.environ.get("SEGCAM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the operator's machine needs for docs/service.md: systemd as init, D-Bus for
# systemctl's clients, Python with venv. Nothing else: a unit that needs more (procps's
# /bin/kill, for one) must fail here.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv")
# Bumped when the way the root is made changes (not its package list, which is hashed).
RECIPE = 1
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CannotRun(Exception):
    """This machine cannot build or boot the container (the tests skip with this reason)."""


def cache_dir() -> Path:
    """Where roots and the wheelhouse are kept between runs."""
    return Path(os.environ.get("SEGCAM_SYSTEM_CACHE", "/var/cache/segcam-ci"))


def root_key(packages: Sequence[str] = PACKAGES) -> str:
    """Hash of everything that decides the root's contents."""
    recipe = {"suite": SUITE, "variant": VARIANT, "packages": sorted(packages), "v": RECIPE}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def missing_tools() -> List[str]:
    """Host programs the tier needs that are not installed."""
    return [t for t in ("debootstrap", "systemd-nspawn", "nsenter") if shutil.which(t) is None]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def build_root(packages: Sequence[str] = PACKAGES, timeout_s: float = 900) -> Tuple[Path, bool]:
    """The cached root for ``packages`` (built now if absent); and whether it was built."""
    base = cache_dir()
    root = base / f"debian-{SUITE}-{root_key(packages)}"
    done = root / ".segcam-root-complete"
    if done.is_file():
        return root, False
    with _locked(base / ".build.lock"):
        if done.is_file():  # another run built it meanwhile
            return root, False
        tmp = base / f".{root.name}.partial"
        if tmp.exists():
            shutil.rmtree(str(tmp))
        log = base / f"{root.name}.debootstrap.log"
        cmd = ["debootstrap", f"--variant={VARIANT}", "--include=" + ",".join(packages)]
        cmd += [SUITE, str(tmp), MIRROR]
        with open(log, "w") as out:
            try:
                proc = subprocess.run(
                    cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
                )
            except subprocess.TimeoutExpired:
                raise CannotRun(f"debootstrap took over {timeout_s:.0f} s (see {log})") from None
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise CannotRun(f"debootstrap failed ({proc.returncode}): {' | '.join(tail)}")
        (tmp / done.name).write_text(" ".join(cmd) + "\n")
        if root.exists():
            shutil.rmtree(str(root))
        tmp.rename(root)
    return root, True


class Machine:
    """A booted container: ``sh(...)`` runs a root shell command inside it."""

    def __init__(
        self, root: Path, name: str, binds: Sequence[Tuple[Path, str, bool]], log: Path
    ) -> None:
        self.root = root
        self.name = name
        self.binds = list(binds)
        self.log = log
        self.proc: Optional[subprocess.Popen] = None
        self.leader = 0

    def boot(self, timeout_s: float = 90) -> float:
        """Boot and wait until systemd reports the system running; returns the seconds taken."""
        t0 = time.monotonic()
        cmd = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit"]
        cmd += ["--volatile=overlay", f"--machine={self.name}", "-D", str(self.root)]
        for host, inside, read_only in self.binds:
            cmd.append(f"--bind{'-ro' if read_only else ''}={host}:{inside}")
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = t0 + timeout_s
        while not self.leader:
            if self.proc.poll() is not None:
                raise CannotRun(f"systemd-nspawn exited {self.proc.returncode}: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.shutdown()
                raise CannotRun(f"no container init after {timeout_s:.0f} s: {self._log_tail()}")
            self.leader = self._find_leader()
            time.sleep(0.1)
        # Until systemd listens on its private socket, systemctl fails at once: retry.
        while True:
            left = max(5.0, deadline - time.monotonic())
            state = self.sh("systemctl is-system-running --wait", check=False, timeout=left)
            if state.stdout.strip() in ("running", "degraded"):
                return time.monotonic() - t0
            if time.monotonic() > deadline or self.proc.poll() is not None:
                said = (state.stdout + state.stderr).strip()
                failed = self.sh("systemctl --failed --no-legend", check=False).stdout.strip()
                self.shutdown()
                raise CannotRun(f"the container did not boot ({said}): {failed}")
            time.sleep(0.2)

    def _find_leader(self) -> int:
        # The container's PID 1 among nspawn's descendants: the systemd process whose
        # last NSpid is 1 (nspawn forks helpers on the way, which come and go).
        assert self.proc is not None
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            nspid = [ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")]
            comm = Path(f"/proc/{pid}/comm").read_text().strip() if nspid else ""
            if comm == "systemd" and len(nspid[0]) > 1 and nspid[0][-1] == "1":
                return pid
        return 0

    def _log_tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no output"
        return " | ".join(lines[-4:]) or "no output"

    def _command(self, command: str) -> List[str]:
        cmd = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", "--"]
        cmd += ["env", "-i", f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8", "/bin/sh", "-c"]
        return cmd + [command]

    def spawn(self, command: str) -> subprocess.Popen:
        """Start ``command`` inside the container without waiting (text pipes for output)."""
        return subprocess.Popen(
            self._command(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def sh(
        self, command: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run ``command`` with /bin/sh as root inside the container."""
        proc = subprocess.run(
            self._command(command), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"in the container: `{command}` exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
            )
        return proc

    def unit(self, name: str, *props: str) -> dict:
        """Properties of ``name`` from ``systemctl show``."""
        out = self.sh(f"systemctl show {name} --property={','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def shutdown(self, timeout_s: float = 30) -> None:
        """Power off (SIGTERM makes nspawn shut the container down cleanly), else kill."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
