"""Running a service as a process: the start line, SIGTERM, and the stop line.

Every ``natkit *-server`` command goes through :func:`run_service` (issue 4): the service binds
everything it was asked to listen on, then one line goes to stderr::

    natkit stun-server: listening on udp 127.0.0.1:3478, tcp 127.0.0.1:3478

SIGTERM or SIGINT stops it cleanly: sockets are closed, state is flushed, a last line says what it
did (``natkit stun-server: stopped after 12.3 s (answered 40, dropped 2)``) and the exit status is
0. A listen address that cannot be bound is a :class:`~toolkit.errors.UsageError`: one line, exit 2.

A service is any object with ``name``, ``async start() -> list[str]`` (what it listens on, one
item per socket), ``async stop()`` and ``summary() -> str``.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Protocol, TextIO

from toolkit.errors import UsageError
from toolkit.types import Endpoint


class Service(Protocol):
    name: str

    async def start(self) -> list[str]: ...

    async def stop(self) -> None: ...

    def summary(self) -> str: ...


def parse_listen(values: Iterable[str] | None, default: str, *, option: str = "--listen") -> list[Endpoint]:
    """``HOST:PORT`` strings (``[v6]:port`` for IPv6) as endpoints; ``default`` when none given.

    Raises :class:`UsageError` naming the option and the bad value.
    """
    texts = list(values or []) or [default]
    out: list[Endpoint] = []
    for text in texts:
        try:
            ep = Endpoint.parse(text)
        except UsageError as exc:
            raise UsageError(f"{option} {text!r}: {exc}") from None
        if ep in out:
            raise UsageError(f"{option} {ep} is given twice: give each address once")
        out.append(ep)
    return out


def bind_error(what: str, ep: Endpoint, exc: OSError) -> UsageError:
    """The one-line error for a socket that cannot be bound, with how to fix it."""
    if exc.errno == errno.EADDRINUSE:
        hint = "something else listens there: stop it or pick another --listen"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "no interface has this address: use one `ip addr` shows"
    elif exc.errno == errno.EACCES:
        hint = "ports below 1024 need root"
    else:
        hint = exc.strerror or str(exc)
    return UsageError(f"cannot listen on {what} {ep}: {hint}")


async def serve_until_signalled(service: Service, *, out: TextIO | None = None) -> None:
    """Start ``service``, print the start line, wait for SIGTERM/SIGINT, stop it, print the stop line."""
    stream = out if out is not None else sys.stderr
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    try:
        where = await service.start()
        print(f"natkit {service.name}: listening on {', '.join(where)}", file=stream, flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await service.stop()
    took = time.monotonic() - started
    print(f"natkit {service.name}: stopped after {took:.1f} s ({service.summary()})", file=stream, flush=True)


def run_service(service: Service) -> int:
    """Run ``service`` as this process's main job; the exit status (0 after a clean stop)."""
    asyncio.run(serve_until_signalled(service))
    return 0


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps the child (the teardown of benchmarks and tests that start servers)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = ["Service", "bind_error", "parse_listen", "run_service", "serve_until_signalled", "stop_process"]
