"""A minimal but real TCP for the simulator (RFC 9293 subset): the stream transport under DERP (issue 6).

Segments are :meth:`~toolkit.lab.sim.packet.Packet.tcp` packets with real headers and checksums, so
captures show them and the NAT engine translates them like any other packet. What is implemented:

* **Open** (RFC 9293 §3.5): :func:`connect` sends a SYN from an ephemeral port; a :class:`TcpListener`
  answers with a SYN-ACK and hands the connection to ``on_accept`` when the final ACK arrives (before any
  data that came with it). Initial sequence numbers come from the lab's seeded stream
  ``tcp-isn:MACHINE`` (§3.4.1 asks for a clock-driven ISN; the seed keeps runs identical).
* **Data** (§3.8, §3.10): segments of at most ``mss`` bytes (1460 over IPv4, 1440 over IPv6: a 1500-byte
  MTU with no IP or TCP options; neither side sends an MSS option because :mod:`.packet` builds 20-byte
  headers, so both assume the lab MTU instead of RFC 9293's 536-byte default); cumulative ACKs, one per
  segment that carries data or a FIN (no delayed ACK); out-of-order segments are kept and delivered in
  order once the gap is filled. Writes made in one event are coalesced: :meth:`TcpConnection.send`
  queues, and the segments leave when the event is over (like a corked socket).
* **Flow control**: a fixed receive window of :data:`WINDOW` bytes (the application always takes data at
  once); the sender keeps at most the peer's advertised window in flight. **No congestion control**
  (no slow start, no cwnd): links in the sim have their own bandwidth model.
* **Retransmission** (RFC 6298, simplified): one timer per connection, a fixed initial RTO of
  :data:`RTO` (200 ms virtual, no RTT estimation), doubled on every timeout, reset by an ACK that
  advances; the oldest unacknowledged segment is sent again on a timeout and on the third duplicate ACK
  (RFC 5681 §3.2 fast retransmit). After :data:`MAX_RETRIES` timeouts in a row the connection is reset
  and closed with reason ``timeout``. A SYN is retransmitted the same way.
* **Close** (§3.6): :meth:`TcpConnection.close` sends a FIN once the send queue is empty; a FIN from
  the peer calls ``on_eof`` (default: close our side too, as asyncio does when ``eof_received`` returns
  False). The side that closes first lingers in TIME-WAIT for :data:`TIME_WAIT` virtual seconds (2 MSL
  shortened for labs), answering a retransmitted FIN. :meth:`TcpConnection.abort` sends a RST.
* **Reset** (§3.5.2): a listener answers a segment for a connection it does not know with a RST (except
  to a RST); a RST closes a connection with reason ``reset`` (``refused`` before it was established).
  RSTs are accepted when their ports match (no in-window check: the sim has no blind attackers).
  Segments to a port nobody holds are dropped by the machine (``port-unreachable``), not reset.

Every connection is a state machine as data: :class:`State` and :data:`TRANSITIONS`. Counters
(:attr:`TcpConnection.counters`) count retransmissions, duplicate ACKs, out-of-order segments.

Modules: this one opens connections (:func:`connect`, :class:`TcpListener`) and re-exports the rest;
:mod:`.tcpconn` is the connection machine (:class:`TcpConnection`); :mod:`.tcpstate` the constants, states
and transition table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from toolkit.lab.sim.net import Machine
from toolkit.lab.sim.packet import TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, Packet, TcpInfo
from toolkit.lab.sim.tcpconn import TcpConnection
from toolkit.lab.sim.tcpstate import (
    MAX_RETRIES,
    MSS,
    RTO,
    SEQ_MOD,
    TIME_WAIT,
    TRANSITIONS,
    WINDOW,
    ConnectedHandler,
    State,
    noop,
)
from toolkit.types import Endpoint


class TcpListener:
    """A listening socket: ``on_accept(conn)`` runs when a connection is established (set its callbacks there)."""

    def __init__(self, machine: Machine, local: Endpoint, on_accept: ConnectedHandler) -> None:
        self.machine = machine
        self.on_accept = on_accept
        self.conns: dict[tuple[Endpoint, Endpoint], TcpConnection] = {}
        self.counters: Counter[str] = Counter()
        self.local = machine.bind(TCP, local, self._packet)
        self.closed = False

    def _packet(self, pkt: Packet) -> None:
        key = (pkt.dst, pkt.src)
        conn = self.conns.get(key)
        if conn is not None:
            conn.segment_arrived(pkt)
            return
        info = pkt.tcp_info
        assert info is not None
        if info.flags & TCP_RST:
            return
        if info.flags & (TCP_SYN | TCP_ACK) != TCP_SYN or self.closed:
            self.counters["reset-sent"] += 1  # RFC 9293 §3.10.7.1/2: no such connection
            ack = (info.seq + len(pkt.payload) + (1 if info.flags & (TCP_SYN | TCP_FIN) else 0)) % SEQ_MOD
            seq = info.ack if info.flags & TCP_ACK else 0
            flags = TCP_RST if info.flags & TCP_ACK else TCP_RST | TCP_ACK
            self.machine.send(Packet.tcp(pkt.dst, pkt.src, b"", TcpInfo(seq, ack, flags, 0)))
            return
        self.counters["syn-received"] += 1
        conn = TcpConnection(self.machine, pkt.dst, pkt.src, State.SYN_RECEIVED, info.seq)
        conn.on_connected = self.on_accept
        conn._nxt = 1  # the SYN-ACK's SYN
        self.conns[key] = conn

        def forget() -> None:
            self.conns.pop(key, None)
            if self.closed and not self.conns:
                self.machine.unbind(TCP, self.local)

        conn._unbind = forget
        conn._segment(TCP_SYN | TCP_ACK, 0, b"")
        conn._arm()

    def close(self) -> None:
        """Stop accepting: new SYNs get a RST; established connections go on until they close (the port
        is released with the last one)."""
        if not self.closed:
            self.closed = True
            if not self.conns:
                self.machine.unbind(TCP, self.local)

    def __repr__(self) -> str:
        return f"<TcpListener {self.machine.name} {self.local} {len(self.conns)} connections>"


def connect(
    machine: Machine,
    remote: Endpoint,
    on_connected: ConnectedHandler | None = None,
    *,
    on_data: Callable[[bytes], None] | None = None,
    on_closed: Callable[[str], None] | None = None,
    local: Endpoint | None = None,
) -> TcpConnection:
    """Open a connection from ``machine`` to ``remote`` (SYN now); ``on_connected(conn)`` once established.
    Raises OSError (ENETUNREACH) without a route, like the kernel."""
    src_ip = local.ip if local is not None and not local.ip.is_unspecified else machine.source_for(remote.ip)
    if src_ip is None:
        raise OSError(101, f"{machine.name}: network is unreachable: {remote}")
    holder: list[TcpConnection] = []
    bound = machine.bind(TCP, Endpoint(src_ip, local.port if local is not None else 0), lambda p: holder[0]._socket(p))
    conn = TcpConnection(machine, bound, remote, State.SYN_SENT, None)
    holder.append(conn)
    conn.on_connected = on_connected or noop
    conn.on_data = on_data or noop
    conn.on_closed = on_closed or noop
    conn._unbind = lambda: machine.unbind(TCP, bound)
    conn._nxt = 1
    conn._segment(TCP_SYN, 0, b"")
    conn._arm()
    return conn


__all__ = [
    "MAX_RETRIES",
    "MSS",
    "RTO",
    "TIME_WAIT",
    "TRANSITIONS",
    "WINDOW",
    "State",
    "TcpConnection",
    "TcpListener",
    "connect",
]
