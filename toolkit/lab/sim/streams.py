"""Drivers that run natkit's sans-IO stream cores over the simulator's TCP (:mod:`.tcp`): DERP in the sim.

As thin as the asyncio drivers of :mod:`toolkit.services` (design.md §2): feed the core with the virtual
clock's ``now``, write what it returns, close what it asks to close, re-arm one timer. No protocol
decisions here; the cores are the very ones ``natkit derp-server`` and the node's DERP client run.

* :class:`DerpServerDriver` runs :class:`toolkit.sansio.derpserver.DerpServerCore` behind a
  :class:`~toolkit.lab.sim.tcp.TcpListener` (plain HTTP upgrade on the lab's DERP port, protocols.md §2.1);
  each accepted connection gets an integer id. The sim's TCP never pushes back (no send buffer limit),
  so ``pause_writing`` is never fed.
* :class:`DerpClientDriver` runs one :class:`toolkit.sansio.derpclient.DerpClientConn` over a
  :func:`~toolkit.lab.sim.tcp.connect` connection: the handshake starts when TCP is established; the
  peer's FIN is the core's ``receive_eof``; a reset or a TCP timeout closes the core with
  ``transport-error``. Events are kept in :attr:`DerpClientDriver.events` (and handed to ``on_event``);
  received packets also land in :attr:`DerpClientDriver.received` as ``(source key, bytes)``.

The control server and its client (HTTP/1.1 over the same TCP) are in :mod:`.control`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.net import Machine
from toolkit.lab.sim.tcp import TcpConnection, TcpListener, connect
from toolkit.sansio.derpclient import DerpClientConn
from toolkit.sansio.derpevents import DerpEvent, PacketReceived
from toolkit.sansio.derpserver import DerpServerCore
from toolkit.sansio.derpserver_conn import ConnId, DerpServerEvent
from toolkit.types import Endpoint, NodePublicKey


class DerpServerDriver:
    """A :class:`DerpServerCore` listening on ``local`` of ``machine`` (see the module docstring)."""

    def __init__(self, machine: Machine, core: DerpServerCore, local: Endpoint) -> None:
        self.machine = machine
        self.core = core
        self.conns: dict[ConnId, TcpConnection] = {}
        self.events: list[DerpServerEvent] = []
        self._ids = itertools.count(1)
        self._timer: Timer | None = None
        self.listener = TcpListener(machine, local, self._accepted)
        self.local = self.listener.local
        self.running = True

    def _accepted(self, conn: TcpConnection) -> None:
        cid = next(self._ids)
        self.conns[cid] = conn
        now = self.machine.sched.now
        conn.on_data = lambda data: self._data(cid, data)
        conn.on_closed = lambda reason: self._lost(cid)
        self.core.connection_made(cid, conn.remote, now)
        self._pump()

    def _data(self, cid: int, data: bytes) -> None:
        self.core.data_received(cid, data, self.machine.sched.now)
        self._pump()

    def _lost(self, cid: int) -> None:
        if self.conns.pop(cid, None) is not None:
            self.core.connection_lost(cid, self.machine.sched.now)
            self._pump()

    def _pump(self) -> None:
        core = self.core
        for cid, data in core.pending_writes():
            conn = self.conns.get(cid)
            if conn is not None:
                conn.send(data)
        for close in core.connections_to_close():
            conn = self.conns.pop(close.conn_id, None)
            if conn is None:
                continue
            core.connection_lost(close.conn_id, self.machine.sched.now)
            if close.abort:
                conn.abort()
            else:
                conn.close()
        while (event := core.next_event()) is not None:
            self.events.append(event)
        self._rearm()

    def _rearm(self) -> None:
        when = self.core.get_timer()
        if self._timer is not None:
            if when is not None and self._timer.when == when and not self._timer.cancelled:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None and self.running:
            self._timer = self.machine.sched.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.core.handle_timer(self.machine.sched.now)
        self._pump()

    def close(self) -> None:
        """Stop: Restarting to every client (the core's shutdown), close every connection and the listener."""
        if not self.running:
            return
        self.core.shutdown(self.machine.sched.now)
        self._pump()
        self.running = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.listener.close()

    def summary(self) -> str:
        return self.core.summary()


class DerpClientDriver:
    """One DERP client connection from ``machine`` to ``server`` (see the module docstring)."""

    def __init__(
        self,
        machine: Machine,
        core: DerpClientConn,
        server: Endpoint,
        on_event: Callable[[DerpEvent], None] | None = None,
    ) -> None:
        self.machine = machine
        self.core = core
        self.server = server
        self.on_event = on_event
        self.events: list[DerpEvent] = []
        self.received: list[tuple[NodePublicKey, bytes]] = []
        self._timer: Timer | None = None
        self.conn = connect(machine, server, self._connected, on_data=self._data, on_closed=self._closed)
        self.conn.on_eof = self._eof

    @property
    def connected(self) -> bool:
        return self.core.server_info is not None and not self.core.closed

    def send_packet(self, dst: NodePublicKey, data: bytes) -> bool:
        """Queue a packet for ``dst`` through the relay; False when the core dropped it."""
        ok = self.core.send_packet(dst, data, self.machine.sched.now)
        self._pump()
        return ok

    def close(self) -> None:
        if not self.core.closed:
            self.core.close(self.machine.sched.now)
        self._pump()

    def _connected(self, conn: TcpConnection) -> None:
        self.core.start(self.machine.sched.now)
        self._pump()

    def _data(self, data: bytes) -> None:
        self.core.receive_data(data, self.machine.sched.now)
        self._pump()

    def _eof(self) -> None:
        self.core.receive_eof(self.machine.sched.now)
        self._pump()

    def _closed(self, reason: str) -> None:
        if not self.core.closed:
            self.core.close(self.machine.sched.now, "transport-error", f"TCP connection {reason}")
        self._pump()

    def _pump(self) -> None:
        core = self.core
        data = core.data_to_send()
        if data and not self.conn.closed:
            self.conn.send(data)
        for event in core.take_events():
            if isinstance(event, PacketReceived):
                self.received.append((event.src, event.data))
            self.events.append(event)
            if self.on_event is not None:
                self.on_event(event)
        if core.closed:
            if not self.conn.closed:
                self.conn.close()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        when = core.get_timer()
        if self._timer is not None:
            if when is not None and self._timer.when == when:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self.machine.sched.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.core.handle_timer(self.machine.sched.now)
        self._pump()


__all__ = ["DerpClientDriver", "DerpServerDriver"]
