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
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from enum import Enum

from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.net import Machine
from toolkit.lab.sim.packet import TCP, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Packet, TcpInfo
from toolkit.types import Endpoint

RTO = 0.2  # seconds, virtual; doubled on every timeout in a row
MAX_RETRIES = 8  # timeouts in a row before the connection gives up (0.2 * (2**8 - 1) = 51 s)
WINDOW = 65535  # the fixed receive window every connection advertises
TIME_WAIT = 1.0  # seconds, virtual (2 MSL shortened)
MSS = {4: 1460, 6: 1440}
_MOD = 1 << 32


class State(Enum):
    """RFC 9293 §3.3.2 connection states (LISTEN lives in :class:`TcpListener`)."""

    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"
    CLOSED = "CLOSED"


_S = State
TRANSITIONS: dict[tuple[State, str], State] = {
    (_S.SYN_SENT, "rcv SYN,ACK"): _S.ESTABLISHED,
    (_S.SYN_RECEIVED, "rcv ACK"): _S.ESTABLISHED,
    (_S.ESTABLISHED, "close"): _S.FIN_WAIT_1,
    (_S.ESTABLISHED, "rcv FIN"): _S.CLOSE_WAIT,
    (_S.FIN_WAIT_1, "rcv ACK of FIN"): _S.FIN_WAIT_2,
    (_S.FIN_WAIT_1, "rcv FIN"): _S.CLOSING,
    (_S.FIN_WAIT_2, "rcv FIN"): _S.TIME_WAIT,
    (_S.CLOSING, "rcv ACK of FIN"): _S.TIME_WAIT,
    (_S.CLOSE_WAIT, "close"): _S.LAST_ACK,
    (_S.LAST_ACK, "rcv ACK of FIN"): _S.CLOSED,
    (_S.TIME_WAIT, "2MSL timeout"): _S.CLOSED,
    **{(s, "rcv RST"): _S.CLOSED for s in State if s is not _S.CLOSED},
    **{(s, "abort"): _S.CLOSED for s in State if s is not _S.CLOSED},
    **{(s, "give up"): _S.CLOSED for s in State if s is not _S.CLOSED},
}
_SYNCED = frozenset(State) - {_S.SYN_SENT, _S.SYN_RECEIVED, _S.CLOSED}
_SENDS_FIN = frozenset({_S.FIN_WAIT_1, _S.CLOSING, _S.LAST_ACK})

ConnectedHandler = Callable[["TcpConnection"], None]


def _noop(*_: object) -> None:
    return None


class TcpConnection:
    """One end of a TCP connection. Callbacks: ``on_data(bytes)``, ``on_eof()``, ``on_closed(reason)``,
    ``on_connected(conn)``. Reasons: ``closed`` (both FINs), ``reset``, ``refused``, ``timeout``, ``aborted``."""

    def __init__(self, machine: Machine, local: Endpoint, remote: Endpoint, state: State, irs: int | None) -> None:
        self.machine = machine
        self.sched = machine.sched
        self.local, self.remote = local, remote
        self.state = state
        self.mss = MSS[remote.ip.version]
        self.on_data: Callable[[bytes], None] = _noop
        self.on_eof: Callable[[], None] | None = None
        self.on_closed: Callable[[str], None] = _noop
        self.on_connected: ConnectedHandler = _noop
        self.counters: Counter[str] = Counter()
        self.close_reason: str | None = None
        self.bytes_sent = self.bytes_received = 0
        self._iss = self.sched.rng_for(f"tcp-isn:{machine.name}").getrandbits(32)
        # sequence offsets relative to the ISS / IRS (SYN = 0, data byte i = 1 + i), unwrapped
        self._una = 0  # oldest unacknowledged
        self._nxt = 0  # next to send
        self._buf = bytearray()  # data from offset una (+1 for the SYN until it is acked) on
        self._buf_start = 1  # the offset of _buf[0]
        self._fin_queued = False
        self._irs = irs
        self._rcv_nxt = 1 if irs is not None else 0
        self._ooo: dict[int, bytes] = {}
        self._ooo_fin: int | None = None
        self._peer_window = WINDOW
        self._retries = 0
        self._dupacks = 0
        self._rto_timer: Timer | None = None
        self._flush_timer: Timer | None = None
        self._unbind: Callable[[], None] = _noop

    # --- commands ---------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue ``data``; it leaves in MSS-sized segments when the current event is over."""
        if not data:
            return
        if self._fin_queued or self.state is State.CLOSED:
            self.counters["send-after-close"] += 1
            return
        self._buf += data
        self._schedule_flush()

    def close(self) -> None:
        """Send a FIN after everything queued (half-close: data may still arrive until the peer's FIN)."""
        if self._fin_queued or self.state is State.CLOSED:
            return
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            self.abort()
            return
        self._fin_queued = True
        self._move("close")
        self._schedule_flush()

    def abort(self) -> None:
        """Reset the connection now (RST), dropping what is unsent."""
        if self.state is State.CLOSED:
            return
        self._segment(TCP_RST | TCP_ACK, self._nxt, b"")
        self._finish("abort", "aborted")

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def established(self) -> bool:
        return self.state in _SYNCED

    @property
    def in_flight(self) -> int:
        return self._nxt - self._una

    # --- output -----------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if self._flush_timer is None:
            self._flush_timer = self.sched.call_at(self.sched.now, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        if self.state not in _SYNCED:
            return
        end_data = self._buf_start + len(self._buf)  # offset after the last queued byte
        limit = self._una + self._peer_window
        while self._nxt < end_data and self._nxt < limit:
            start = self._nxt
            n = min(self.mss, end_data - start, limit - start)
            chunk = bytes(self._buf[start - self._buf_start : start - self._buf_start + n])
            self._segment(TCP_ACK | TCP_PSH, start, chunk)
            self._nxt += n
            self.bytes_sent += n
        if self._fin_queued and self._nxt == end_data and self.state in _SENDS_FIN:
            self._segment(TCP_FIN | TCP_ACK, self._nxt, b"")
            self._nxt += 1
        if self._nxt > self._una and self._rto_timer is None:
            self._arm()

    def _segment(self, flags: int, offset: int, payload: bytes) -> None:
        ack = (self._irs + self._rcv_nxt) % _MOD if self._irs is not None and flags & TCP_ACK else 0
        info = TcpInfo((self._iss + offset) % _MOD, ack, flags, WINDOW)
        self.machine.send(Packet.tcp(self.local, self.remote, payload, info))

    def _send_ack(self) -> None:
        self._segment(TCP_ACK, self._nxt, b"")

    def _retransmit(self) -> None:
        """Send the oldest unacknowledged segment again (SYN, SYN-ACK, data or FIN)."""
        self.counters["retransmitted"] += 1
        if self.state is State.SYN_SENT:
            self._segment(TCP_SYN, 0, b"")
        elif self.state is State.SYN_RECEIVED:
            self._segment(TCP_SYN | TCP_ACK, 0, b"")
        else:
            end_data = self._buf_start + len(self._buf)
            if self._una < end_data:
                n = min(self.mss, end_data - self._una)
                i = self._una - self._buf_start
                self._segment(TCP_ACK | TCP_PSH, self._una, bytes(self._buf[i : i + n]))
            elif self._fin_queued:
                self._segment(TCP_FIN | TCP_ACK, end_data, b"")

    def _arm(self) -> None:
        if self._rto_timer is not None:
            self._rto_timer.cancel()
        self._rto_timer = self.sched.call_later(RTO * (2**self._retries), self._timeout)

    def _timeout(self) -> None:
        self._rto_timer = None
        if self.state is State.CLOSED or self._nxt == self._una:
            return
        self._retries += 1
        if self._retries > MAX_RETRIES:
            if self.state is not State.SYN_SENT:
                self._segment(TCP_RST | TCP_ACK, self._nxt, b"")
            self._finish("give up", "timeout")
            return
        self._retransmit()
        self._arm()

    # --- input (RFC 9293 §3.10.7, condensed) --------------------------------------------------------

    def segment_arrived(self, pkt: Packet) -> None:
        info = pkt.tcp_info
        assert info is not None
        flags = info.flags
        if self.state is State.CLOSED:
            return
        if flags & TCP_RST:
            self._finish("rcv RST", "refused" if self.state is State.SYN_SENT else "reset")
            return
        if self.state is State.SYN_SENT:
            if flags & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK or (info.ack - self._iss) % _MOD != 1:
                self.counters["bad-syn-ack"] += 1
                return
            self._irs, self._rcv_nxt = info.seq, 1
            self._acked(1, info.window)
            self._move("rcv SYN,ACK")
            self._send_ack()
            self.on_connected(self)
            self._schedule_flush()
            return
        assert self._irs is not None
        if flags & TCP_SYN:  # a retransmitted SYN (our SYN-ACK was lost) or SYN-ACK (our ACK was lost)
            self.counters["duplicate-syn"] += 1
            if self.state is State.SYN_RECEIVED:
                self._segment(TCP_SYN | TCP_ACK, 0, b"")
            else:
                self._send_ack()
            return
        if not flags & TCP_ACK:
            return
        ack = self._unwrap(info.ack, self._iss, self._una)
        if ack > self._nxt:
            self.counters["ack-of-unsent"] += 1
            self._send_ack()
            return
        if self.state is State.SYN_RECEIVED:
            if ack < 1:
                return
            self._move("rcv ACK")
            self.on_connected(self)
        if ack > self._una:
            self._acked(ack, info.window)
        elif ack == self._una and not pkt.payload and not flags & TCP_FIN and self._nxt > self._una:
            self._dupacks += 1
            self.counters["duplicate-ack"] += 1
            if self._dupacks == 3:  # RFC 5681 §3.2
                self.counters["fast-retransmit"] += 1
                self._retransmit()
        else:
            self._peer_window = info.window
        if self.closed:
            return
        seq = self._unwrap(info.seq, self._irs, self._rcv_nxt)
        if pkt.payload or flags & TCP_FIN:
            self._receive(seq, pkt.payload, bool(flags & TCP_FIN))
        if not self.closed:
            self._schedule_flush()

    def _socket(self, pkt: Packet) -> None:
        """A segment to the port :func:`connect` bound (only this connection's remote may use it)."""
        if pkt.src == self.remote:
            self.segment_arrived(pkt)
        else:
            self.counters["wrong-remote"] += 1

    def _acked(self, ack: int, window: int) -> None:
        """An ACK that advances: drop acknowledged bytes, reset the backoff, move on FIN states."""
        self._peer_window = window
        self._dupacks = 0
        self._retries = 0
        end_data = self._buf_start + len(self._buf)
        drop = min(ack, end_data) - self._buf_start
        if drop > 0:
            del self._buf[:drop]
            self._buf_start += drop
        self._una = ack
        if self._rto_timer is not None:
            self._rto_timer.cancel()
            self._rto_timer = None
        if self._nxt > self._una:
            self._arm()
        fin_acked = self._fin_queued and ack == end_data + 1
        if fin_acked and self.state in _SENDS_FIN:
            self._move("rcv ACK of FIN")
            if self.state is State.CLOSED:
                self._finish(None, "closed")
            elif self.state is State.TIME_WAIT:
                self._enter_time_wait()

    def _receive(self, seq: int, data: bytes, fin: bool) -> None:
        if seq > self._rcv_nxt:  # a gap: keep it for later (RFC 9293 §3.10.7.4, "eighth")
            self.counters["out-of-order"] += 1
            if data:
                self._ooo.setdefault(seq, data)
            if fin:
                self._ooo_fin = seq + len(data)
            self._send_ack()  # a duplicate ACK tells the sender about the hole
            return
        fin_seen = False
        if seq + len(data) > self._rcv_nxt:
            self._deliver(data[self._rcv_nxt - seq :])
            while self._ooo:
                nxt = min(self._ooo)
                if nxt > self._rcv_nxt:
                    break
                chunk = self._ooo.pop(nxt)
                if nxt + len(chunk) > self._rcv_nxt:
                    self._deliver(chunk[self._rcv_nxt - nxt :])
        elif data:
            self.counters["duplicate-data"] += 1
        if (fin and seq + len(data) == self._rcv_nxt) or self._ooo_fin == self._rcv_nxt:
            fin_seen = self.state in (State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2)
            if fin_seen:
                self._rcv_nxt += 1
                self._ooo_fin = None
        self._send_ack()
        if fin_seen:
            self._move("rcv FIN")
            if self.state is State.TIME_WAIT:
                self._enter_time_wait()
            elif self.state is State.CLOSE_WAIT:
                if self.on_eof is not None:
                    self.on_eof()
                else:
                    self.close()

    def _deliver(self, data: bytes) -> None:
        self._rcv_nxt += len(data)
        self.bytes_received += len(data)
        if data and self.state is not State.CLOSED:
            self.on_data(data)

    # --- state ------------------------------------------------------------------------------------

    def _enter_time_wait(self) -> None:
        self.sched.call_later(TIME_WAIT, self._time_wait_over)

    def _time_wait_over(self) -> None:
        if self.state is State.TIME_WAIT:
            self._move("2MSL timeout")
            self._finish(None, "closed")

    def _move(self, label: str) -> None:
        new = TRANSITIONS.get((self.state, label))
        if new is not None:
            self.state = new

    def _finish(self, label: str | None, reason: str) -> None:
        if label is not None:
            self._move(label)
        self.state = State.CLOSED
        for t in (self._rto_timer, self._flush_timer):
            if t is not None:
                t.cancel()
        self._rto_timer = self._flush_timer = None
        self._unbind()
        if self.close_reason is None:
            self.close_reason = reason
            self.on_closed(reason)

    @staticmethod
    def _unwrap(value: int, base: int, near: int) -> int:
        """The unwrapped offset of 32-bit sequence number ``value`` closest to offset ``near``."""
        delta = (value - base - near) % _MOD
        if delta >= _MOD // 2:
            delta -= _MOD
        return near + delta

    def __repr__(self) -> str:
        return f"<TcpConnection {self.machine.name} {self.local} -> {self.remote} {self.state.value}>"


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
            ack = (info.seq + len(pkt.payload) + (1 if info.flags & (TCP_SYN | TCP_FIN) else 0)) % _MOD
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
    conn.on_connected = on_connected or _noop
    conn.on_data = on_data or _noop
    conn.on_closed = on_closed or _noop
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
