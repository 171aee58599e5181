"""Before ``natkit bench lab`` times anything: which backends can run here, and the docker preparation (issue 5).

:func:`check_backend` raises :class:`Skipped` for a backend that cannot run on this machine (not root, a tool
missing, no Docker engine), with one line saying why and how to enable it; nothing is started.

Docker preparation happens before any timing and is reported apart: the engine (one that answers, else
Debian's ``dockerd`` started by the bench and stopped at the end), then the node and router images
(:func:`toolkit.lab.docker.images.ensure_images`). Offline or online images (:func:`docker_offline`):
``$NATKIT_DOCKER_OFFLINE`` (1/yes or 0/no) decides when set; else online if ``python:3.11-slim`` is already
in the engine or a registry answers (TCP to registry-1.docker.io:443 within 3 s), offline otherwise.

The caller (:mod:`toolkit.lab.benchlab`) reports skipped backends and decides the exit status.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.errors import NatkitError, UsageError

BACKENDS = ("sim", "netns", "docker")
REGISTRY = ("registry-1.docker.io", 443)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Skipped(Exception):
    """A backend that cannot run here: why, and how to enable it."""

    backend: str
    reason: str

    def __str__(self) -> str:
        return f"{self.backend}: skipped: {self.reason}"


def check_backend(name: str) -> None:
    """Raise :class:`Skipped` if backend ``name`` cannot run on this machine (cheap checks, nothing started)."""
    if name == "netns":
        if os.geteuid() != 0:
            raise Skipped(name, "needs root (network namespaces, nftables): run `sudo natkit bench lab`")
        for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
            if shutil.which(tool) is None:
                raise Skipped(name, f"`{tool}` is missing: install the Debian package {pkg}")
    elif name == "docker":
        from toolkit.lab.docker import engine

        if shutil.which("docker") is None:
            raise Skipped(name, "no docker client: install the Debian package docker.io (or Docker)")
        if shutil.which("docker-compose") is None and not _compose_plugin():
            raise Skipped(name, "no compose: install the Debian package docker-compose")
        if engine.find_engine() is None and (os.geteuid() != 0 or shutil.which("dockerd") is None):
            raise Skipped(
                name,
                "no Docker engine answers: start one (systemctl start docker), or run as root with the Debian "
                "package docker.io installed so the bench starts dockerd itself",
            )
    elif name != "sim":
        raise UsageError(f"unknown lab backend {name!r}; backends: {', '.join(BACKENDS)}")


def split_backends(
    backends: Sequence[str] | None, allowed: Sequence[str], command: str
) -> tuple[list[str], dict[str, str]]:
    """The backends of ``backends`` (default ``allowed``) that can run here, and why the others cannot.

    A name outside ``allowed`` is a UsageError; the skip reasons name ``natkit bench COMMAND``."""
    wanted = list(dict.fromkeys(backends or allowed))
    for name in wanted:
        if name not in allowed:
            if name not in BACKENDS:
                raise UsageError(f"unknown lab backend {name!r}; backends: {', '.join(BACKENDS)}")
            raise UsageError(f"`natkit bench {command}` runs on {', '.join(allowed)}, not {name!r}")
    runnable: list[str] = []
    skipped: dict[str, str] = {}
    for name in wanted:
        try:
            check_backend(name)
            runnable.append(name)
        except Skipped as exc:
            skipped[name] = exc.reason.replace("natkit bench lab", f"natkit bench {command}")
    return runnable, skipped


def _compose_plugin() -> bool:
    try:
        done = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def registry_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to Docker Hub's registry succeeds within ``timeout`` seconds."""
    try:
        socket.create_connection(REGISTRY, timeout).close()
    except OSError:
        return False
    return True


def docker_offline(eng: Any) -> tuple[bool, str]:
    """(offline?, why) for building the docker images with engine ``eng`` (rules in the module docstring)."""
    from toolkit.lab.docker import images

    env = os.environ.get("NATKIT_DOCKER_OFFLINE", "").strip().lower()
    if env in {"1", "yes", "true"}:
        return True, "NATKIT_DOCKER_OFFLINE=1"
    if env in {"0", "no", "false"}:
        return False, "NATKIT_DOCKER_OFFLINE=0"
    if images.image_exists(eng, images.ONLINE_BASE):
        return False, f"{images.ONLINE_BASE} is in the engine"
    if registry_reachable():
        return False, f"{REGISTRY[0]} answers"
    return True, f"no registry reachable ({REGISTRY[0]}); base from debootstrap"


@dataclass
class DockerPrep:
    """What the bench set up for docker before timing: the engine, the offline choice, the images."""

    engine: Any
    started: bool
    engine_seconds: float
    offline: bool
    offline_reason: str
    images: Any
    images_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine.host,
            "engine_version": self.engine.version,
            "engine_started_by_bench": self.started,
            "engine_seconds": round(self.engine_seconds, 3),
            "offline": self.offline,
            "offline_reason": self.offline_reason,
            "images": [self.images.node, self.images.router],
            "images_seconds": round(self.images_seconds, 3),
            "images_build_seconds": {k: round(v, 3) for k, v in self.images.seconds.items()},
        }


def prepare_docker(progress: Progress) -> DockerPrep:
    """Engine (found or started) and images (built if missing), before any timing; :class:`Skipped` on failure."""
    from toolkit.lab.docker import engine as engine_mod
    from toolkit.lab.docker import images

    started = time.perf_counter()
    eng, own = engine_mod.find_engine(), False
    if eng is None:
        progress("docker: no engine answers; starting dockerd ...")
        try:
            eng, own = engine_mod.start_engine(), True
        except NatkitError as exc:
            raise Skipped("docker", str(exc)) from None
    engine_seconds = time.perf_counter() - started
    progress(f"docker: engine {eng.host} (docker {eng.version}{', started by the bench' if own else ''})")
    try:
        offline, why = docker_offline(eng)
        progress(f"docker: building images if missing ({'offline' if offline else 'online'}: {why}) ...")
        started = time.perf_counter()
        imgs = images.ensure_images(eng, offline=offline)
    except (NatkitError, OSError) as exc:
        engine_mod.stop_engine(eng)
        hint = "set NATKIT_DOCKER_OFFLINE=0 with a registry, or install debootstrap (offline base)"
        raise Skipped("docker", f"the node/router images cannot be built: {exc} ({hint})") from None
    images_seconds = time.perf_counter() - started
    progress(f"docker: images {imgs.node}, {imgs.router} ready in {images_seconds:.1f} s")
    return DockerPrep(eng, own, engine_seconds, offline, why, imgs, images_seconds)


__all__ = [
    "BACKENDS",
    "REGISTRY",
    "DockerPrep",
    "Progress",
    "Skipped",
    "check_backend",
    "docker_offline",
    "prepare_docker",
    "registry_reachable",
]
