"""Helpers for tests: the CI skip policy for tools and root, free ports, polling.

Import as ``from tests.support import require_tool``. Outside CI a missing tool or missing root
skips with a reason that says how to enable it; with ``CI=true`` it fails, because CI must run
every test.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ROOT = Path(__file__).resolve().parent.parent
VECTORS = Path(__file__).resolve().parent / "vectors"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true and {reason}: CI must run every test", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, package: str | None = None) -> str:
    """Path of an external program, or skip (fail in CI) with how to install it."""
    path = shutil.which(name)
    if path is None:
        pkg = package or name
        _unavailable(f"needs {name}: run `make test` as root (installs Debian package {pkg})")
    return path  # type: ignore[return-value]


def require_root() -> None:
    if os.geteuid() != 0:
        _unavailable("needs root (network namespaces, raw sockets): run `sudo make test`")


def free_udp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
