"""Find a Docker engine, or start Debian's ``dockerd`` for natkit and stop it again (design.md §5).

:func:`find_engine` looks for an engine that answers: ``$DOCKER_HOST``, the system socket
(``/var/run/docker.sock``), then natkit's own socket. :func:`start_engine` starts ``dockerd`` (Debian
package ``docker.io``) as root with its own state, so it never touches a system engine:

* ``--host unix:///run/natkit/docker/docker.sock``, ``--exec-root``/``--pidfile`` under ``/run/natkit/docker``;
* ``--data-root`` under the cache (``$NATKIT_CACHE/docker/engine``, by default ``~/.cache/natkit``) so the
  imported base image and the built node/router images survive between test sessions (built once per machine);
* ``--iptables=false --ip-masq=false --ip-forward=false --bridge=none --userland-proxy=false``: natkit
  renders NAT itself inside the router containers (the same nftables rules as ``netns``), so the engine
  needs no iptables rules of its own. With these flags the engine leaves the root namespace's firewall,
  FORWARD policy and ``ip_forward`` alone (design.md §5: a default engine sets FORWARD to DROP) and makes
  no ``docker0``; it only adds one bridge per lab segment, which containers reach at layer 2.
* the storage driver is the engine's choice (``overlay2`` where the cache's filesystem supports it);
  ``$NATKIT_DOCKER_STORAGE_DRIVER`` (e.g. ``vfs``) overrides it. cgroups: the ``cgroupfs`` driver.

:class:`Engine` runs the ``docker`` CLI against the engine it describes (``DOCKER_HOST`` set). With an
engine natkit started it prefers Debian's ``/usr/bin/docker`` (the client of the same release) to a newer
client elsewhere on ``PATH``; builds use the classic builder (``DOCKER_BUILDKIT=0``: no buildx needed).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import NatkitError

STATE_DIR = Path("/run/natkit/docker")
SYSTEM_SOCKET = "unix:///var/run/docker.sock"
DEBIAN_CLI = "/usr/bin/docker"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def cache_dir() -> Path:
    """natkit's docker cache: ``$NATKIT_CACHE/docker`` (default ``${XDG_CACHE_HOME:-~/.cache}/natkit/docker``)."""
    base = os.environ.get("NATKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "natkit"
    )
    return Path(base) / "docker"


@dataclass(frozen=True)
class Engine:
    """A Docker engine that answered: where (``host``), which client (``cli``), whether natkit started it."""

    host: str
    cli: str
    version: str
    started: bool = False
    pid: int | None = None
    log: Path | None = None
    compose: str | None = field(default_factory=lambda: shutil.which("docker-compose"))

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env["DOCKER_HOST"] = self.host
        env.setdefault("DOCKER_BUILDKIT", "0")
        env.update(extra)
        return env

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this engine; a :class:`NatkitError` with its stderr when it fails."""
        return self.run([self.cli, *args], check=check, timeout=timeout, input=input)

    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 120.0, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run any program (``docker-compose``, ``docker``) with ``DOCKER_HOST`` pointing at this engine."""
        proc = subprocess.run(
            list(argv),
            env=self.env(),
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise NatkitError(
                f"{' '.join(argv[:3])} ... failed: {' | '.join(detail[-3:]) if detail else proc.returncode}"
            )
        return proc


def _client() -> str | None:
    return shutil.which("docker")


def probe(host: str, cli: str | None = None) -> str | None:
    """The server version of the engine at ``host``, or None when nothing answers."""
    cli = cli or _client()
    if cli is None:
        return None
    env = dict(os.environ, DOCKER_HOST=host)
    try:
        proc = subprocess.run(
            [cli, "version", "--format", "{{.Server.Version}}"],
            env=env, capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    version = proc.stdout.strip()
    return version if proc.returncode == 0 and version else None


def natkit_socket(state_dir: Path = STATE_DIR) -> str:
    return f"unix://{state_dir / 'docker.sock'}"


def find_engine(state_dir: Path = STATE_DIR) -> Engine | None:
    """An engine that answers: ``$DOCKER_HOST``, the system socket, then natkit's; None if none does."""
    candidates = [os.environ.get("DOCKER_HOST", ""), SYSTEM_SOCKET, natkit_socket(state_dir)]
    for host in dict.fromkeys(c for c in candidates if c):
        ours = host == natkit_socket(state_dir)
        cli = DEBIAN_CLI if ours and os.path.exists(DEBIAN_CLI) else _client()
        version = probe(host, cli)
        if version is not None and cli is not None:
            return Engine(host=host, cli=cli, version=version)
    return None


def dockerd_argv(state_dir: Path = STATE_DIR, data_root: Path | None = None) -> list[str]:
    """The ``dockerd`` command line natkit uses (see the module docstring for why each flag)."""
    dockerd = shutil.which("dockerd") or "dockerd"
    argv = [
        dockerd,
        f"--host={natkit_socket(state_dir)}",
        f"--data-root={data_root or cache_dir() / 'engine'}",
        f"--exec-root={state_dir / 'exec'}",
        f"--pidfile={state_dir / 'dockerd.pid'}",
        "--iptables=false",
        "--ip-masq=false",
        "--ip-forward=false",
        "--bridge=none",
        "--userland-proxy=false",
        "--log-level=warn",
    ]
    driver = os.environ.get("NATKIT_DOCKER_STORAGE_DRIVER")
    if driver:
        argv.append(f"--storage-driver={driver}")
    return argv


def start_engine(state_dir: Path = STATE_DIR, data_root: Path | None = None, timeout: float = START_TIMEOUT) -> Engine:
    """Start Debian's ``dockerd`` with natkit's own sockets and state; wait until it answers."""
    if os.geteuid() != 0:
        raise NatkitError("no Docker engine answers and starting dockerd needs root (or start Docker yourself)")
    if shutil.which("dockerd") is None:
        raise NatkitError("no Docker engine answers and dockerd is missing: install the Debian package docker.io")
    cli = DEBIAN_CLI if os.path.exists(DEBIAN_CLI) else _client()
    if cli is None:
        raise NatkitError("no docker client: install the Debian package docker.io")
    state_dir.mkdir(parents=True, exist_ok=True)
    (data_root or cache_dir() / "engine").mkdir(parents=True, exist_ok=True)
    log = state_dir / "dockerd.log"
    with open(log, "ab") as out:
        # A session of its own: Ctrl-C in the caller's terminal does not reach dockerd; stop_engine does.
        proc = subprocess.Popen(
            dockerd_argv(state_dir, data_root), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    host = natkit_socket(state_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        version = probe(host, cli)
        if version is not None:
            return Engine(host=host, cli=cli, version=version, started=True, pid=proc.pid, log=log)
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    raise NatkitError(f"dockerd did not start (log {log}): {' | '.join(tail) or 'no output'}")


def stop_engine(engine: Engine, timeout: float = STOP_TIMEOUT) -> None:
    """Stop an engine natkit started (SIGTERM, then SIGKILL); an engine found running is left alone."""
    if not engine.started or engine.pid is None:
        return
    try:
        os.kill(engine.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(engine.pid, os.WNOHANG)
        except ChildProcessError:  # not our child (another process started it): poll for the pid
            pid = 0 if _alive(engine.pid) else engine.pid
        if pid == engine.pid:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(engine.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(engine.pid, 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def engine(state_dir: Path = STATE_DIR, data_root: Path | None = None) -> Iterator[Engine]:
    """An engine for the duration of a ``with`` block: one that answers, or a ``dockerd`` started (and stopped)."""
    found = find_engine(state_dir)
    if found is not None:
        yield found
        return
    started = start_engine(state_dir, data_root)
    try:
        yield started
    finally:
        stop_engine(started)


__all__ = ["Engine", "cache_dir", "dockerd_argv", "engine", "find_engine", "probe", "start_engine", "stop_engine"]
