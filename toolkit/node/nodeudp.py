"""The node's one UDP socket: dual-stack, non-blocking, read in bursts (protocols.md §4.11).

magicsock sends STUN, disco and WireGuard from one socket, so the NAT mapping STUN discovers is the
one peers reach (issue 6). :class:`NodeSocket` binds ``[::]:PORT`` with ``IPV6_V6ONLY`` off, so IPv4
peers appear as v4-mapped IPv6 addresses (unmapped by :class:`~toolkit.types.Endpoint`) and IPv4
destinations are sent to as ``::ffff:a.b.c.d``; in a namespace without IPv6 it binds ``0.0.0.0:PORT``
and counts IPv6 destinations as ``udp-no-ipv6``. A port in use is a
:class:`~toolkit.errors.UsageError` (:func:`toolkit.services.runner.bind_error`). Send errors (an
unreachable network, a full buffer) are counted: a lost datagram, which the core's timers retry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections import Counter
from collections.abc import Callable

from toolkit.services.runner import bind_error
from toolkit.types import Endpoint

BURST = 64  # datagrams read per wakeup before the loop gets a turn


class NodeSocket:
    """One bound UDP socket feeding ``receive(data, src, now)`` and calling ``done()`` after each burst."""

    def __init__(self, receive: Callable[[bytes, Endpoint, float], None], done: Callable[[], None]) -> None:
        self.receive = receive
        self.done = done
        self.sock: socket.socket | None = None
        self.counters: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, port: int) -> Endpoint:
        """Bind ``[::]:port`` (``0.0.0.0:port`` without IPv6) and start reading; the bound endpoint."""
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            host = ipaddress.ip_address("::")
        except OSError:  # no IPv6 in this namespace
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            host = ipaddress.ip_address("0.0.0.0")
        try:
            sock.bind((str(host), port))
        except OSError as exc:
            sock.close()
            raise bind_error("udp", Endpoint(host, port), exc) from None
        sock.setblocking(False)
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        return Endpoint(host, sock.getsockname()[1])

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1]) if self.sock is not None else 0

    @property
    def ipv6(self) -> bool:
        return self.sock is not None and self.sock.family == socket.AF_INET6

    def close(self) -> None:
        if self.sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        for _ in range(BURST):
            try:
                data, address = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ICMP errors surface here (ECONNREFUSED ...)
                self.counters["udp-recv-error"] += 1
                break
            try:
                src = Endpoint(ipaddress.ip_address(address[0].split("%")[0]), address[1])
            except ValueError:
                continue
            self.counters["udp-in"] += 1
            self.receive(data, src, time.monotonic())
        self.done()

    def send(self, data: bytes, ep: Endpoint) -> None:
        sock = self.sock
        if sock is None:
            return
        if sock.family == socket.AF_INET6:
            address = (f"::ffff:{ep.ip}" if ep.ip.version == 4 else str(ep.ip), ep.port)
        elif ep.ip.version == 6:
            self.counters["udp-no-ipv6"] += 1
            return
        else:
            address = ep.as_tuple()
        try:
            sock.sendto(data, address)
            self.counters["udp-out"] += 1
        except OSError as exc:
            self.counters[f"udp-send-error-{exc.errno}"] += 1


__all__ = ["BURST", "NodeSocket"]
