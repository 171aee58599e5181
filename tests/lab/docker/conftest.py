"""Session fixtures for the docker backend: one engine and one pair of images for the whole session.

``docker_engine`` uses an engine that answers (``$DOCKER_HOST``, the system socket, natkit's socket) or
starts Debian's ``dockerd`` with natkit's flags (toolkit/lab/docker/engine.py) and stops it at the end of
the session, also when tests fail. ``docker_images`` builds the node and router images offline (base from
debootstrap, cached under ~/.cache/natkit/docker: about 45 s the first time on this machine, wheels from
the host), since no registry is reachable in CI (design.md §5).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import require_root, require_tool
from toolkit.lab.docker.engine import Engine
from toolkit.lab.docker.images import Images


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    require_root()
    require_tool("dockerd", "docker.io")
    require_tool("docker", "docker.io")
    from toolkit.lab.docker import engine

    found = engine.find_engine()
    started = found or engine.start_engine()
    if found is None:  # no engine ran, so no lab can be live: what natkit labels carry now is a crashed run's
        _sweep_stale_labs(started)
    try:
        yield started
    finally:
        engine.stop_engine(started)


def _sweep_stale_labs(eng: Engine) -> None:
    """Remove the containers and networks of natkit labs an earlier, crashed run left in the engine's data
    root (it outlives the engine): their subnets would make every new lab fail with "Pool overlaps"."""
    from toolkit.lab.docker.lab import remove_lab

    fmt = '{{.Label "org.natkit.lab"}}'
    labs = set()
    for kind in (["ps", "-a"], ["network", "ls"]):
        labs |= set(eng.docker(*kind, "--filter", "label=org.natkit.lab", "--format", fmt, check=False).stdout.split())
    for lab in sorted(labs):
        remove_lab(eng, lab)


@pytest.fixture(scope="session")
def docker_images(docker_engine: Engine) -> Images:
    require_tool("debootstrap", "debootstrap")
    from toolkit.lab.docker import images

    built = images.ensure_images(docker_engine, offline=True)
    images.prune_images(docker_engine, keep=built)  # tags of older source trees
    return built
