"""The DERP relay as an asyncio service: ``natkit derp-server``, or in-process for labs and tests.

A thin driver (design.md §2) around :class:`~toolkit.sansio.derpserver.DerpServerCore`, which makes
every protocol decision (protocols.md §2). Each accepted TCP (or TLS) connection is an
:class:`asyncio.Protocol`: its bytes go to the core, and after every input the driver writes what the
core has for each connection (one ``transport.write`` per connection per input, already coalesced),
closes what it must close, and re-arms its one timer (``loop.call_at``).

Flow control: each transport's write buffer has a high-water mark (:data:`WRITE_HIGH_WATER`). Above
it asyncio calls ``pause_writing``: the driver tells the core (which then holds that client's packets
in its bounded queue, and closes the connection if writes stay stalled for ``derp_write_timeout``) and
also stops reading from that client until its buffer drains below :data:`WRITE_LOW_WATER`, so a client
that does not read cannot make the server buffer its requests' answers either.

``on_event`` (optional) gets the core's :class:`~toolkit.sansio.derpserver_conn.ClientConnected` and
:class:`~toolkit.sansio.derpserver_conn.ClientDisconnected` events; ``tracer`` gets its trace records.

TLS: pass an ``ssl.SSLContext`` and the listeners speak HTTPS (``https://.../derp``); the TLS handshake
must finish within ``derp_handshake_timeout``. WebSocket upgrades are answered 426 (not implemented).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import ssl
from collections.abc import Callable

from toolkit.crypto.keys import public_key
from toolkit.sansio.derpserver import DerpServerCore
from toolkit.sansio.derpserver_conn import ClientView, ConnId, DerpLimits, DerpServerEvent
from toolkit.sansio.trace import TraceRecord
from toolkit.services.runner import bind_error
from toolkit.services.sockets import dialable, endpoint_of
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

WRITE_HIGH_WATER = 256 << 10  # bytes buffered in a transport before it counts as stalled
WRITE_LOW_WATER = 64 << 10
STOP_FLUSH_TIMEOUT = 1.0  # seconds stop() waits for Restarting to reach clients before aborting


class _Conn(asyncio.Protocol):
    """One accepted connection; every callback goes straight to the server."""

    __slots__ = ("conn_id", "server", "transport")

    def __init__(self, server: DerpServer) -> None:
        self.server = server
        self.conn_id: ConnId = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._made(self, transport)

    def data_received(self, data: bytes) -> None:
        self.server._received(self.conn_id, data)

    def eof_received(self) -> bool | None:
        return None  # close the transport: a DERP client that half-closes is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._lost(self.conn_id)

    def pause_writing(self) -> None:
        self.server._pause(self.conn_id)

    def resume_writing(self) -> None:
        self.server._resume(self.conn_id)


class DerpServer:
    """``natkit derp-server``: a DERP relay on TCP (or TLS) listeners; see the module docstring."""

    name = "derp-server"

    def __init__(
        self,
        private_key: NodePrivateKey,
        listen: list[Endpoint],
        *,
        ssl_context: ssl.SSLContext | None = None,
        mesh_key: str = "",
        limits: DerpLimits | None = None,
        timing: Timing = DEFAULT,
        tracer: Callable[[TraceRecord], None] | None = None,
        on_event: Callable[[DerpServerEvent], None] | None = None,
    ) -> None:
        self.core = DerpServerCore(
            private_key, rng=os.urandom, timing=timing, limits=limits, mesh_key=mesh_key, tracer=tracer
        )
        self.public_key: NodePublicKey = public_key(private_key)
        self.listen = list(listen)
        self.endpoints: list[Endpoint] = []
        self.ssl_context = ssl_context
        self.timing = timing
        self.on_event = on_event
        self._servers: list[asyncio.Server] = []
        self._conns: dict[ConnId, _Conn] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._all_gone: asyncio.Event | None = None

    # --- Service protocol -----------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Bind every listener; the URLs (``http://127.0.0.1:3340/derp``) and the server key, for the start line."""
        self._loop = asyncio.get_running_loop()
        try:
            for ep in self.listen:
                server = await self._loop.create_server(
                    lambda: _Conn(self),
                    str(ep.ip),
                    ep.port,
                    ssl=self.ssl_context,
                    ssl_handshake_timeout=self.timing.derp_handshake_timeout if self.ssl_context else None,
                    reuse_address=True,
                )
                self._servers.append(server)
                self.endpoints.append(endpoint_of(server.sockets[0].getsockname()))
        except OSError as exc:
            await self._close_listeners()
            raise bind_error("tcp", ep, exc) from None
        return [*(self._url(ep) for ep in self.endpoints), str(self.public_key)]

    async def stop(self, reconnect_in: float | None = None, try_for: float | None = None) -> None:
        """Send Restarting to every client, close every connection (abort after a second), close the listeners.

        ``reconnect_in`` and ``try_for`` default to ``Timing.derp_restart_reconnect_in`` / ``derp_restart_try_for``."""
        if self._loop is None:
            return
        for server in self._servers:
            server.close()
        self.core.shutdown(self._loop.time(), reconnect_in, try_for)
        self._flush()
        if self._conns:
            self._all_gone = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), STOP_FLUSH_TIMEOUT)
            for conn in list(self._conns.values()):
                if conn.transport is not None:
                    conn.transport.abort()
            await asyncio.sleep(0)
        await self._close_listeners()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def summary(self) -> str:
        return self.core.summary()

    # --- public helpers -------------------------------------------------------------------------

    def url(self, i: int = 0) -> str:
        """The URL clients on this machine dial for listener ``i``: a wildcard address becomes loopback.

        The start line shows the bound addresses as they are (``http://0.0.0.0:3340/derp``).
        """
        return self._url(dialable(self.endpoints[i]))

    def _url(self, ep: Endpoint) -> str:
        return f"{'https' if self.ssl_context is not None else 'http'}://{ep}/derp"

    def set_health(self, problem: str) -> None:
        """Send Health(problem) to every client ("" = healthy)."""
        assert self._loop is not None, "start() the server first"
        self.core.set_health(problem, self._loop.time())
        self._flush()

    def clients(self) -> list[ClientView]:
        return self.core.clients()

    # --- protocol callbacks ---------------------------------------------------------------------

    def _made(self, conn: _Conn, transport: asyncio.Transport) -> None:
        assert self._loop is not None
        conn.conn_id = next(self._ids)
        self._conns[conn.conn_id] = conn
        transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)
        remote = endpoint_of(transport.get_extra_info("peername"))
        self.core.connection_made(conn.conn_id, remote, self._loop.time())
        self._flush()

    def _received(self, conn_id: ConnId, data: bytes) -> None:
        assert self._loop is not None
        self.core.data_received(conn_id, data, self._loop.time())
        self._flush()

    def _lost(self, conn_id: ConnId) -> None:
        assert self._loop is not None
        self._conns.pop(conn_id, None)
        self.core.connection_lost(conn_id, self._loop.time())
        self._flush()
        if not self._conns and self._all_gone is not None:
            self._all_gone.set()

    def _pause(self, conn_id: ConnId) -> None:
        assert self._loop is not None
        conn = self._conns.get(conn_id)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.pause_reading()
        self.core.pause_writing(conn_id, self._loop.time())
        self._flush()

    def _resume(self, conn_id: ConnId) -> None:
        assert self._loop is not None
        conn = self._conns.get(conn_id)
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            conn.transport.resume_reading()
        self.core.resume_writing(conn_id, self._loop.time())
        self._flush()

    def _on_timer(self) -> None:
        assert self._loop is not None
        when = self._timer_at or 0.0
        self._timer = self._timer_at = None
        self.core.handle_timer(max(self._loop.time(), when))  # call_at may fire a hair early
        self._flush()

    # --- draining the core ----------------------------------------------------------------------

    def _flush(self) -> None:
        core, conns = self.core, self._conns
        for conn_id, data in core.pending_writes():
            conn = conns.get(conn_id)
            if conn is not None and conn.transport is not None:
                conn.transport.write(data)
        for close in core.connections_to_close():
            conn = conns.get(close.conn_id)
            if conn is None or conn.transport is None:
                continue
            if close.abort:
                conn.transport.abort()
            else:
                conn.transport.close()  # flushes first; a client that never reads is aborted by the timer below
                assert self._loop is not None
                self._loop.call_later(self.timing.derp_write_timeout, conn.transport.abort)
        while (event := core.next_event()) is not None:
            if self.on_event is not None:
                self.on_event(event)
        when = core.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self._loop.call_at(when, self._on_timer) if when is not None and self._loop else None

    async def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()


__all__ = ["WRITE_HIGH_WATER", "WRITE_LOW_WATER", "DerpLimits", "DerpServer"]
