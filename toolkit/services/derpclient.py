"""The asyncio DERP client: one relay connection with reconnects (protocols.md §2; Tailscale ``derphttp``).

A thin driver (design.md §2) around :class:`toolkit.sansio.derpclient.DerpClientConn` that dials
(:mod:`toolkit.services.derpdial`) and turns the core's events into awaitables::

    client = DerpClient("http://127.0.0.1:3340/derp", private_key)
    await client.connect()
    await client.send(peer_key, b"hello")
    src, data = await client.recv()
    rtt = await client.ping()

Decisions:

* :meth:`DerpClient.recv` returns received packets; :meth:`DerpClient.next_event` returns every other
  event (Connected, PeerGoneReceived, PongReceived, HealthChanged, RestartingReceived, Closed, ... and
  this module's :class:`DialFailed`). With ``on_packet`` set, packets go to that callback instead.
* Speed (the relay bench pushes ~100k packets/s): no task or future per packet; writes are batched
  (:mod:`toolkit.services.derpconn`); :meth:`DerpClient.send` waits only while the socket's write buffer
  is full. Past ``max_queued`` unread packets the socket stops reading (TCP back-pressure).
* While the connection is down, :meth:`DerpClient.send` drops the packet and counts ``not-connected``
  (like a UDP socket); after :meth:`close` it raises :class:`DerpClosedError`.
* Reconnects (``reconnect=True``): when a connection that completed its handshake breaks, dial again
  after :class:`~toolkit.sansio.derpbackoff.ReconnectBackoff`'s delay (a Restarting frame sets it), until
  :meth:`close`; NotePreferred is sent again on every new connection. ``connect()`` does not retry.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
from collections import Counter
from collections.abc import Callable

from toolkit.codec.derp import ServerInfoJSON
from toolkit.codec.derp_http import is_mesh_key
from toolkit.codec.derpmap import DERPNode
from toolkit.crypto.keys import public_key
from toolkit.errors import NatkitError, UsageError
from toolkit.sansio.derpbackoff import ReconnectBackoff
from toolkit.sansio.derpclient import DerpClientConn
from toolkit.sansio.derpevents import Closed, Connected, DerpEvent, PacketReceived, PongReceived, RestartingReceived
from toolkit.sansio.trace import TraceRecord
from toolkit.services.derpconn import DerpConnection
from toolkit.services.derpdial import (
    ClientEvent,
    DerpClosedError,
    DerpConnectError,
    DialFailed,
    connect_error,
    handshake_error,
    resolve_target,
)
from toolkit.services.inbox import Inbox
from toolkit.timing import DEFAULT, Timing
from toolkit.types import NodePrivateKey, NodePublicKey

MAX_EVENTS = 1024  # non-packet events kept for next_event(); the oldest go first


class DerpClient:
    """A DERP client with reconnects; see the module docstring. ``target`` is a DERPNode or a URL."""

    def __init__(
        self,
        target: DERPNode | str,
        private_key: NodePrivateKey,
        *,
        timing: Timing = DEFAULT,
        mesh_key: str = "",
        ssl_context: ssl.SSLContext | None = None,
        reconnect: bool = True,
        tracer: Callable[[TraceRecord], None] | None = None,
        preferred: bool = False,
        watch_conns: bool = False,
        fast_start: bool = False,
        server_key: NodePublicKey | None = None,
        on_packet: Callable[[NodePublicKey, bytes], None] | None = None,
        max_queued: int = 8192,
        name: str | None = None,
    ) -> None:
        if mesh_key and not is_mesh_key(mesh_key):
            raise UsageError("mesh_key must be 64 hex digits (the relay's --mesh-key), or empty")
        self.target = resolve_target(target, ssl_context)
        self.public_key: NodePublicKey = public_key(private_key)
        self._private = private_key
        self.timing = timing
        self.mesh_key = mesh_key
        self.reconnect = reconnect
        self.tracer = tracer
        self.preferred = preferred
        self.watching = watch_conns
        self.fast_start = fast_start
        self.expected_key = server_key
        self.on_packet = on_packet
        self.max_queued = max_queued
        self.name = name or f"derp-client {self.public_key.short()}"
        self.server_key: NodePublicKey | None = None
        self.server_info: ServerInfoJSON | None = None
        self.reconnects = 0
        self.last_close: Closed | None = None
        self._conn: DerpConnection | None = None
        self._backoff = ReconnectBackoff(timing)
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closing = False
        self._inbox: Inbox[tuple[NodePublicKey, bytes], ClientEvent] = Inbox(MAX_EVENTS)
        self._pings: dict[bytes, asyncio.Future[float]] = {}
        self._dropped: Counter[str] = Counter()
        self._totals = Counter[str]()

    # --- state and counters ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.target.url

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.established and not self._conn.core.closed

    def _sum(self, name: str) -> int:
        conn = self._conn
        return self._totals[name] + (int(getattr(conn.core, name)) if conn is not None else 0)

    packets_sent = property(lambda self: self._sum("packets_sent"), doc="Packets sent, over every connection.")
    packets_received = property(lambda self: self._sum("packets_received"), doc="Packets received, in total.")
    bytes_sent = property(lambda self: self._sum("bytes_sent"), doc="Packet bytes sent, in total.")
    bytes_received = property(lambda self: self._sum("bytes_received"), doc="Packet bytes received, in total.")

    @property
    def dropped(self) -> Counter[str]:
        """Packets and frames dropped or skipped, by reason (DROP_REASONS), over every connection."""
        out = Counter(self._dropped)
        if self._conn is not None:
            out.update(self._conn.core.counters)
        if self._inbox.events_dropped:
            out["event-overflow"] += self._inbox.events_dropped
        return out

    def counters(self) -> dict[str, int]:
        """sent, received, bytes, reconnects and ``dropped:<reason>`` in one dict."""
        out = {
            "packets_sent": self.packets_sent,
            "packets_received": self.packets_received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "reconnects": self.reconnects,
        }
        out.update({f"dropped:{k}": v for k, v in sorted(self.dropped.items())})
        return out

    # --- connecting -------------------------------------------------------------------------------
    async def connect(self, timeout: float | None = None) -> None:
        """Dial, upgrade and finish the handshake within ``timeout`` (``Timing.derp_handshake_timeout``, 10 s);
        :class:`DerpConnectError` says why not."""
        if timeout is None:
            timeout = self.timing.derp_handshake_timeout
        if self._closing:
            raise DerpClosedError(f"DERP client for {self.url} is closed")
        conn = self._conn
        if conn is not None and not conn.ready.done():  # a dial is under way: wait for its outcome
            async with asyncio.timeout(timeout):
                await asyncio.shield(conn.ready)
        if not self.connected:
            await self._dial(timeout)

    async def _dial(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        t = self.target
        conn = DerpConnection(self, self._new_core())
        try:
            async with asyncio.timeout(timeout):
                try:
                    await loop.create_connection(
                        lambda: conn, t.host, t.port, ssl=t.ssl_context, server_hostname=t.server_hostname
                    )
                except (OSError, ssl.SSLError) as exc:
                    raise connect_error(t, exc) from None
                self._conn = conn
                conn.begin()
                closed = await conn.ready
        except TimeoutError:
            conn.abort("handshake-timeout", f"no DERP handshake within {timeout:g} s")
            raise connect_error(t, TimeoutError()) from None
        except BaseException:
            conn.abort("closed", "connect() was cancelled")
            raise
        if closed is not None:
            raise handshake_error(t, closed)

    def _new_core(self) -> DerpClientConn:
        return DerpClientConn(
            self._private,
            rng=os.urandom,
            host=self.target.host_header,
            path=self.target.path,
            fast_start=self.fast_start,
            server_key=self.expected_key,
            mesh_key=self.mesh_key,
            preferred=self.preferred,
            watch_conns=self.watching,
            timing=self.timing,
            tracer=self.tracer,
            name=self.name,
        )

    async def _reconnect_loop(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff.next_delay(loop.time(), random.random())
        try:
            while not self._closing:
                await asyncio.sleep(delay)
                if self._closing or self._conn is not None:  # closed, or connect() got there first
                    return
                try:
                    await self._dial(self.timing.derp_handshake_timeout)
                except DerpConnectError as exc:
                    delay = self._backoff.next_delay(loop.time(), random.random())
                    self._inbox.put_event(DialFailed(str(exc), exc.reason, delay))
                    continue
                self.reconnects += 1
                if self._conn is not None:
                    return
                delay = self._backoff.next_delay(loop.time(), random.random())  # it broke again already
        finally:
            self._reconnect_task = None

    # --- called by DerpConnection -----------------------------------------------------------------
    def _on_events(self, conn: DerpConnection, events: list[DerpEvent]) -> None:
        packets = self._inbox.packets
        for ev in events:
            if ev.__class__ is PacketReceived:
                assert isinstance(ev, PacketReceived)
                if self.on_packet is not None:
                    self.on_packet(ev.src, ev.data)
                else:
                    packets.append((ev.src, ev.data))
                continue
            if isinstance(ev, Connected):
                self.server_key, self.server_info = ev.server_key, ev.server_info
                self._backoff.connected()
            elif isinstance(ev, PongReceived):
                fut = self._pings.pop(ev.data[:8], None)
                if fut is not None and not fut.done() and ev.rtt is not None:
                    fut.set_result(ev.rtt)
            elif isinstance(ev, RestartingReceived):
                self._backoff.restarting(ev.reconnect_in, ev.try_for)
            elif isinstance(ev, Closed):
                self._on_closed(conn, ev)
                if not conn.established:
                    continue  # a failed dial: connect() raises it, or the reconnect loop reports DialFailed
            self._inbox.put_event(ev)
        if packets:
            if len(packets) >= self.max_queued:
                conn.pause_reading()
            self._inbox.wake_packets()

    def _on_closed(self, conn: DerpConnection, ev: Closed) -> None:
        if conn is not self._conn:
            return
        self.last_close = ev
        core = conn.core
        self._totals.update(
            packets_sent=core.packets_sent,
            packets_received=core.packets_received,
            bytes_sent=core.bytes_sent,
            bytes_received=core.bytes_received,
        )
        self._dropped.update(core.counters)
        self._conn = None
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(NatkitError(f"DERP connection closed before the Pong ({ev})"))
        self._pings.clear()
        if conn.established and self.reconnect and not self._closing and self._reconnect_task is None:
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect_loop())
        self._inbox.wake()

    # --- sending ----------------------------------------------------------------------------------
    def send_nowait(self, dst: NodePublicKey, packet: bytes) -> bool:
        """Queue a packet for ``dst``; False if dropped (not connected, too large, rate-limited)."""
        conn = self._conn
        if conn is None or not conn.established:
            if self._closing:
                raise DerpClosedError(f"DERP client for {self.url} is closed")
            self._dropped["not-connected"] += 1
            return False
        return conn.send_packet(dst, packet)

    async def send(self, dst: NodePublicKey, packet: bytes) -> None:
        """Send a packet to ``dst`` through the relay; waits only for write-buffer space."""
        conn = self._conn
        if conn is not None and conn.write_paused:
            await conn.wait_writable()
        self.send_nowait(dst, packet)

    def note_preferred(self, preferred: bool) -> None:
        """Whether this server is our home region; sent now and after every reconnect."""
        self.preferred = preferred
        if self._conn is not None:
            self._conn.core.note_preferred(preferred)
            self._conn.flush()

    def watch_conns(self) -> None:
        """Subscribe to PeerPresent/PeerGone (mesh-key clients); kept across reconnects."""
        self.watching = True
        if self._conn is not None:
            self._conn.core.watch_conns()
            self._conn.flush()

    async def ping(self, timeout: float = 5.0) -> float:
        """The round-trip time to the server in seconds, by a DERP Ping and its Pong."""
        conn = self._conn
        if conn is None or not conn.established:
            raise NatkitError(f"DERP client for {self.url} is not connected")
        loop = asyncio.get_running_loop()
        data = os.urandom(8)
        fut: asyncio.Future[float] = loop.create_future()
        self._pings[data] = fut
        conn.core.send_ping(data, loop.time())
        conn.flush()
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise NatkitError(f"no DERP Pong from {self.url} within {timeout:g} s") from None
        finally:
            self._pings.pop(data, None)

    # --- receiving ---------------------------------------------------------------------------------
    async def recv(self) -> tuple[NodePublicKey, bytes]:
        """The next packet relayed to us: ``(source key, data)``."""
        if self.on_packet is not None:
            raise UsageError("this DerpClient delivers packets to its on_packet callback; recv() is not used")
        item = await self._inbox.packet(self._check_alive)
        conn = self._conn
        if conn is not None and conn.reading_paused and len(self._inbox.packets) <= self.max_queued // 2:
            conn.resume_reading()
        return item

    async def next_event(self) -> ClientEvent:
        """The next event other than a received packet."""
        return await self._inbox.event(self._check_alive)

    def _check_alive(self) -> None:
        if self._closing:
            raise DerpClosedError(f"DERP client for {self.url} is closed")
        if self._conn is None and self._reconnect_task is None:
            why = f" ({self.last_close})" if self.last_close else ""
            raise DerpClosedError(f"DERP connection to {self.url} is down and does not reconnect{why}")

    # --- closing -----------------------------------------------------------------------------------
    async def close(self) -> None:
        """Close the connection and stop reconnecting; pending recv()/next_event() raise DerpClosedError."""
        self._closing = True
        task = self._reconnect_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        conn = self._conn
        if conn is not None:
            conn.abort("closed", "closed locally")
            await conn.wait_closed(1.0)
        self._inbox.wake()

    async def __aenter__(self) -> DerpClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["ClientEvent", "DerpClient", "DerpClosedError", "DerpConnectError", "DialFailed"]
