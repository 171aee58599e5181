"""Build natkit's node and router images, online (public base) or offline (debootstrap base) (design.md §5).

Both images come from the Dockerfiles in the repository's ``docker/`` folder:

* ``natkit/node``: a Python 3.11 base + iproute2 + natkit installed from wheels in a venv (``/opt/natkit``);
* ``natkit/router``: the node image + nftables + conntrack.

The build context is a temporary folder with the Dockerfiles, ``natkit-entry.sh`` and ``wheels/``: the
project and its dependencies built on the host with ``pip wheel`` (dependency wheels are cached under
:func:`~toolkit.lab.docker.engine.cache_dir`), so the ``docker build`` itself needs no network.

The base (build ARG ``BASE``) is ``python:3.11-slim`` online (users, a registry reachable), or offline
``natkit/base:bookworm``: a ``debootstrap --variant=minbase bookworm`` root filesystem with python3,
python3-venv, iproute2, nftables, conntrack imported with ``docker import`` (``docker/build-base.sh``;
the root filesystem tarball is cached, so debootstrap runs once per machine).

Images are tagged with a hash of their inputs (natkit's sources, the Dockerfiles, the base image id):
:func:`ensure_images` builds only when that tag is missing, and also tags ``:latest`` for compose files.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import NatkitError
from toolkit.lab.docker.engine import Engine, cache_dir

OFFLINE_BASE = "natkit/base:bookworm"
ONLINE_BASE = "python:3.11-slim"
NODE_REPO = "natkit/node"
ROUTER_REPO = "natkit/router"
PROJECT_ROOT = Path(__file__).resolve().parents[3]
DOCKER_DIR = PROJECT_ROOT / "docker"
BUILD_FILES = ("Dockerfile.node", "Dockerfile.router", "natkit-entry.sh")


@dataclass(frozen=True, slots=True)
class Images:
    """The image references a lab's containers use, and what building them took (seconds; 0 = cached)."""

    node: str
    router: str
    base: str
    seconds: dict[str, float]


def _check_sources() -> None:
    if not (PROJECT_ROOT / "pyproject.toml").exists() or not DOCKER_DIR.is_dir():
        raise NatkitError(f"building natkit images needs a natkit source checkout (no docker/ under {PROJECT_ROOT})")


def image_exists(engine: Engine, ref: str) -> bool:
    return engine.docker("image", "inspect", "--format", "{{.Id}}", ref, check=False).returncode == 0


def image_id(engine: Engine, ref: str) -> str:
    return engine.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def ensure_base(engine: Engine, offline: bool = True) -> tuple[str, float]:
    """The base image reference, imported from the debootstrap tarball (offline) or pulled on first use."""
    ref = OFFLINE_BASE if offline else ONLINE_BASE
    if image_exists(engine, ref):
        return ref, 0.0
    started = time.monotonic()
    if offline:
        _check_sources()
        tarball = cache_dir() / "bookworm-minbase.tar"
        script = DOCKER_DIR / "build-base.sh"
        proc = engine.run(["sh", str(script), str(tarball), ref], check=False, timeout=1800)
        if proc.returncode != 0 or not image_exists(engine, ref):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise NatkitError(f"building the offline base image failed: {' | '.join(tail)}")
    else:
        engine.docker("pull", ref, timeout=900)
    return ref, time.monotonic() - started


def source_hash(base_id: str) -> str:
    """A short hash of everything an image is built from: natkit's sources, the docker/ files, the base."""
    h = hashlib.sha256(base_id.encode())
    files = [PROJECT_ROOT / "pyproject.toml", *(DOCKER_DIR / f for f in BUILD_FILES)]
    files += sorted((PROJECT_ROOT / "toolkit").rglob("*.py"))
    for path in files:
        h.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def build_wheels(dest: Path) -> None:
    """``dest/natkit``: natkit's wheel; ``dest/deps``: its dependencies' wheels (cached between builds)."""
    cache = cache_dir() / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    natkit_dir, deps_dir = dest / "natkit", dest / "deps"
    natkit_dir.mkdir(parents=True)
    deps_dir.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel", "--quiet"]
    # Dependencies: wheels already in the cache are reused (--find-links), new ones are downloaded once.
    _run([*pip, "--wheel-dir", str(cache), "--find-links", str(cache), str(PROJECT_ROOT)], "pip wheel")
    for wheel in cache.glob("*.whl"):
        if wheel.name.startswith("natkit-"):
            shutil.move(str(wheel), natkit_dir / wheel.name)
        else:
            shutil.copy2(wheel, deps_dir / wheel.name)


def _run(argv: list[str], what: str, timeout: float = 900) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise NatkitError(f"{what} failed: {' | '.join(tail)}")


def ensure_images(engine: Engine, offline: bool = True, force: bool = False) -> Images:
    """The node and router images for this source tree, built if missing (see the module docstring)."""
    _check_sources()
    base, base_seconds = ensure_base(engine, offline)
    tag = source_hash(image_id(engine, base))
    node, router = f"{NODE_REPO}:{tag}", f"{ROUTER_REPO}:{tag}"
    seconds = {"base": base_seconds, "wheels": 0.0, "node": 0.0, "router": 0.0}
    if force or not (image_exists(engine, node) and image_exists(engine, router)):
        with tempfile.TemporaryDirectory(prefix="natkit-docker-") as tmp:
            ctx = Path(tmp)
            for name in BUILD_FILES:
                shutil.copy2(DOCKER_DIR / name, ctx / name)
            started = time.monotonic()
            build_wheels(ctx / "wheels")
            seconds["wheels"] = time.monotonic() - started
            started = time.monotonic()
            _build(engine, ctx, "Dockerfile.node", node, {"BASE": base})
            seconds["node"] = time.monotonic() - started
            started = time.monotonic()
            _build(engine, ctx, "Dockerfile.router", router, {"NODE": node})
            seconds["router"] = time.monotonic() - started
    engine.docker("tag", node, f"{NODE_REPO}:latest")
    engine.docker("tag", router, f"{ROUTER_REPO}:latest")
    return Images(node=node, router=router, base=base, seconds=seconds)


def prune_images(engine: Engine, keep: Images) -> None:
    """Untag images of older source trees (their layers go when no container uses them; errors ignored)."""
    for repo in (NODE_REPO, ROUTER_REPO):
        refs = engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}", repo, check=False).stdout.split()
        stale = [r for r in refs if r not in (keep.node, keep.router) and not r.endswith(":latest")]
        if stale:
            engine.docker("rmi", *stale, check=False)


def _build(engine: Engine, ctx: Path, dockerfile: str, tag: str, args: dict[str, str]) -> None:
    argv = ["build", "--quiet", "--file", str(ctx / dockerfile), "--tag", tag, "--label", "org.natkit.build=1"]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    proc = engine.docker(*argv, str(ctx), check=False, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise NatkitError(f"docker build {dockerfile} failed: {' | '.join(tail)}")


__all__ = [
    "OFFLINE_BASE",
    "ONLINE_BASE",
    "Images",
    "build_wheels",
    "ensure_base",
    "ensure_images",
    "image_exists",
    "prune_images",
    "source_hash",
]
