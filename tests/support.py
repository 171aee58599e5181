"""Helpers for tests: the CI skip policy for tools and root, free ports, polling.

Import as ``from tests.support import require_tool``. Outside CI a missing tool or missing root
skips with a reason that says how to enable it; with ``CI=true`` it fails, because CI must run
every test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
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


def port_free(ip: str, port: int) -> bool:
    """Whether ``ip:port`` can be bound for both UDP and TCP right now (IPv4)."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((ip, port))
            except OSError:
                return False
    return True


def free_tcp_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class NatkitService:
    """A ``natkit *-server`` child process (see :func:`natkit_service`).

    ``start_line`` is the ``natkit NAME: listening on ...`` line; ``stop()`` sends SIGTERM, waits,
    and returns the exit status; ``output()`` is everything the process wrote (stdout and stderr).
    """

    def __init__(self, args: list[str], netns: str | None, timeout: float) -> None:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        argv = [*prefix, sys.executable, "-m", "toolkit", *args]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True
        )
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(": listening on " in line for line in self._lines):
                break
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise AssertionError(f"natkit {' '.join(args)} exited {self.proc.returncode}: {self.output()}")
            time.sleep(0.02)
        else:
            self.stop()
            raise AssertionError(f"natkit {' '.join(args)} printed no start line in {timeout} s: {self.output()}")
        self.start_line = next(line for line in self._lines if ": listening on " in line)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self._lines)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(2)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()
        return self.proc.returncode


@contextlib.contextmanager
def natkit_service(*args: str, netns: str | None = None, timeout: float = 15.0) -> Iterator[NatkitService]:
    """Run ``python -m toolkit ARGS`` until it prints its start line; SIGTERM it on exit, also on failure."""
    service = NatkitService(list(args), netns, timeout)
    try:
        yield service
    finally:
        service.stop()
