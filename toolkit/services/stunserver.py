"""The STUN server as an asyncio service: UDP (and TCP) sockets around :class:`StunServerCore`.

A thin driver (design.md §2): every protocol decision (what to answer, from which socket, to where,
how a TCP stream frames, when a connection is garbage or idle) is the sans-IO core's, in
:mod:`toolkit.sansio.stunserver`; this module binds sockets, feeds the core and sends what it says.

* ``StunServer(listen)`` binds UDP on every address, and TCP on the same address and port unless
  ``tcp=False`` (RFC 8489 §6.2.2: messages framed by the header's length). Port 0 is resolved to one
  port free for both UDP and TCP; :attr:`StunServer.endpoints` lists the bound UDP addresses.
* Two addresses with different IPs and different ports of one family (A:P and B:Q) make an RFC 5780
  server: it binds A:P, A:Q, B:P and B:Q and answers CHANGE-REQUEST from the matching socket. Any
  other set of addresses is that many independent basic servers sharing one core and its counters.
* IPv6 sockets are IPv6-only (``IPV6_V6ONLY``, as asyncio does for TCP, :mod:`toolkit.services.sockets`),
  so ``0.0.0.0:P`` and ``[::]:P`` can be given together. A TCP connection idle for
  ``Timing.stun_tcp_idle_timeout``, or not reading its answers for as long, is closed.
* It implements :class:`toolkit.services.runner.Service`: ``natkit stun-server`` runs it with
  :func:`~toolkit.services.runner.run_service`, the ``sim`` backend and tests start it in-process with
  ``await server.start()`` / ``await server.stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import socket
from collections.abc import Sequence
from typing import Any

from toolkit.errors import UsageError
from toolkit.sansio.stunserver import DEFAULT_PADDING, StunServerCore, rfc5780_pair
from toolkit.sansio.trace import Tracer
from toolkit.services.runner import bind_error
from toolkit.services.sockets import bound_socket, endpoint_of
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint

_PORT_TRIES = 20  # port 0: how many kernel-chosen UDP ports to try until TCP gets the same one


def _socket(ep: Endpoint, kind: socket.SocketKind) -> socket.socket:
    return bound_socket(ep.family, str(ep.ip), ep.port, kind, listen=kind == socket.SOCK_STREAM)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: StunServer, local: Endpoint) -> None:
        self.server = server
        self.local = local

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._datagram(data, endpoint_of(addr), self.local)

    def error_received(self, exc: Exception) -> None:
        # an ICMP error for an earlier reply (e.g. RESPONSE-PORT to a closed port): nothing to do
        self.server.send_errors += 1


class StunServer:
    """``natkit stun-server``: see the module docstring. ``core`` is the sans-IO server."""

    name = "stun-server"

    def __init__(
        self,
        listen: Sequence[Endpoint],
        *,
        tcp: bool = True,
        software: str = "natkit",
        tracer: Tracer | None = None,
        padding_size: int = DEFAULT_PADDING,
        timing: Timing = DEFAULT,
    ) -> None:
        if not listen:
            raise UsageError("the STUN server needs at least one address to listen on")
        self.listen = list(listen)
        self.tcp = tcp
        pair = rfc5780_pair(self.listen)
        primary, alternate = pair if pair is not None else (self.listen[0], None)
        self.core = StunServerCore(
            primary,
            alternate,
            software=software,
            tracer=tracer,
            padding_size=padding_size,
            timing=timing,
        )
        self.endpoints: list[Endpoint] = []
        self.send_errors = 0
        self._udp: dict[Endpoint, asyncio.DatagramTransport] = {}
        self._servers: list[asyncio.Server] = []
        self._conns: set[asyncio.Task[Any]] = set()

    @property
    def mode(self) -> str:
        return self.core.mode

    async def start(self) -> list[str]:
        """Bind every socket (all or nothing: a failure closes what was bound and raises UsageError)."""
        wanted = list(self.core.local_endpoints) if self.core.alternate is not None else self.listen
        try:
            for ep in wanted:
                await self._bind(ep)
        except BaseException:
            await self.stop()
            raise
        where = [f"{kind} {ep}" for ep in self.endpoints for kind in (("udp", "tcp") if self.tcp else ("udp",))]
        if self.core.alternate is not None:
            where.append(f"RFC 5780 mode (primary {self.core.primary}, other address {self.core.alternate})")
        else:
            where.append("basic mode (RFC 5780 needs two addresses A:P and B:Q)")
        return where

    async def _bind(self, ep: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(_PORT_TRIES if ep.port == 0 else 1):
            try:
                usock = _socket(ep, socket.SOCK_DGRAM)
            except OSError as exc:
                raise bind_error("udp", ep, exc) from None
            bound = Endpoint(ep.ip, usock.getsockname()[1])
            tsock = None
            if self.tcp:
                try:
                    tsock = _socket(bound, socket.SOCK_STREAM)
                except OSError as exc:
                    usock.close()
                    if ep.port == 0 and exc.errno == errno.EADDRINUSE:
                        continue  # the kernel's UDP port is taken for TCP: try another one
                    raise bind_error("tcp", bound, exc) from None
            try:
                transport, _ = await loop.create_datagram_endpoint(functools.partial(_Udp, self, bound), sock=usock)
            except BaseException:
                usock.close()
                if tsock is not None:
                    tsock.close()
                raise
            self._udp[bound] = transport
            if tsock is not None:
                self._servers.append(await asyncio.start_server(self._serve_tcp, sock=tsock))
            self.endpoints.append(bound)
            return
        raise UsageError(f"cannot listen on {ep}: no port was free for both udp and tcp (try --no-tcp)")

    def _datagram(self, data: bytes, src: Endpoint, local: Endpoint) -> None:
        for reply in self.core.handle(data, src, local, "udp", asyncio.get_running_loop().time()):
            transport = self._udp.get(reply.from_local)
            if transport is None:  # the core never names a socket it does not own; be safe anyway
                continue
            transport.sendto(reply.data, reply.to.as_tuple())

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conns.add(task)
        loop = asyncio.get_running_loop()
        stream = self.core.open_stream(
            endpoint_of(writer.get_extra_info("peername")), endpoint_of(writer.get_extra_info("sockname")), loop.time()
        )
        try:
            while stream.close_reason is None:
                deadline = stream.get_timer()
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    data = await asyncio.wait_for(reader.read(65536), timeout)
                except TimeoutError:
                    stream.handle_timer(loop.time())
                    continue
                if not data:
                    stream.close("eof", loop.time())
                    break
                for reply in stream.receive_data(data, loop.time()):
                    writer.write(reply.data)
                try:  # a client that sends but never reads is idle too
                    await asyncio.wait_for(writer.drain(), self.core.timing.stun_tcp_idle_timeout)
                except TimeoutError:
                    stream.close("idle", loop.time())
        except OSError:
            stream.close("reset", loop.time())
        finally:
            writer.close()
            if task is not None:
                self._conns.discard(task)

    async def stop(self) -> None:
        """Close every socket and connection; safe to call twice, and after a failed start."""
        for transport in self._udp.values():
            transport.close()
        self._udp.clear()
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        conns = list(self._conns)
        for task in conns:
            task.cancel()
        if conns:
            await asyncio.gather(*conns, return_exceptions=True)
        for server in servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    def summary(self) -> str:
        return self.core.summary()


__all__ = ["StunServer"]
