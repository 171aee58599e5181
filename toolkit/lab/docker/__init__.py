"""The ``docker`` lab backend: engine, offline images, compose rendering, :class:`DockerLab` (issue 5).

:mod:`~toolkit.lab.docker.engine` finds or starts a Docker engine, :mod:`~toolkit.lab.docker.images` builds
the node and router images (docker/Dockerfile.*), :mod:`~toolkit.lab.docker.compose` renders a topology as a
compose project, :mod:`~toolkit.lab.docker.lab` runs it. ``DockerLab`` is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.lab.docker.lab import DockerLab


def __getattr__(name: str) -> Any:
    if name == "DockerLab":
        from toolkit.lab.docker.lab import DockerLab

        return DockerLab
    raise AttributeError(name)


__all__ = ["DockerLab"]
