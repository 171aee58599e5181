"""One end of a simulated TCP connection (RFC 9293 subset): :class:`TcpConnection`, the connection machine.

Commands (:meth:`~TcpConnection.send`, :meth:`~TcpConnection.close`, :meth:`~TcpConnection.abort`), the
output side (segments of at most MSS bytes within the peer's window, RFC 9293 §3.8; retransmission with a
doubling RTO, RFC 6298, and fast retransmit on the third duplicate ACK, RFC 5681 §3.2), the input side
(RFC 9293 §3.10.7, condensed: SYN-ACK, ACKs that advance, out-of-order segments kept and reassembled in
order, FIN handling) and the states along :data:`~toolkit.lab.sim.tcpstate.TRANSITIONS`. Opening is
:mod:`toolkit.lab.sim.tcp` (:func:`~toolkit.lab.sim.tcp.connect`, :class:`~toolkit.lab.sim.tcp.TcpListener`),
which also describes the whole TCP.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.net import Machine
from toolkit.lab.sim.packet import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, Packet, TcpInfo
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

_S = State
_SYNCED = frozenset(State) - {_S.SYN_SENT, _S.SYN_RECEIVED, _S.CLOSED}
_SENDS_FIN = frozenset({_S.FIN_WAIT_1, _S.CLOSING, _S.LAST_ACK})


class TcpConnection:
    """One end of a TCP connection. Callbacks: ``on_data(bytes)``, ``on_eof()``, ``on_closed(reason)``,
    ``on_connected(conn)``. Reasons: ``closed`` (both FINs), ``reset``, ``refused``, ``timeout``, ``aborted``."""

    def __init__(self, machine: Machine, local: Endpoint, remote: Endpoint, state: State, irs: int | None) -> None:
        self.machine = machine
        self.sched = machine.sched
        self.local, self.remote = local, remote
        self.state = state
        self.mss = MSS[remote.ip.version]
        self.on_data: Callable[[bytes], None] = noop
        self.on_eof: Callable[[], None] | None = None
        self.on_closed: Callable[[str], None] = noop
        self.on_connected: ConnectedHandler = noop
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
        self._unbind: Callable[[], None] = noop

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
        ack = (self._irs + self._rcv_nxt) % SEQ_MOD if self._irs is not None and flags & TCP_ACK else 0
        info = TcpInfo((self._iss + offset) % SEQ_MOD, ack, flags, WINDOW)
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
            if flags & (TCP_SYN | TCP_ACK) != TCP_SYN | TCP_ACK or (info.ack - self._iss) % SEQ_MOD != 1:
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
        delta = (value - base - near) % SEQ_MOD
        if delta >= SEQ_MOD // 2:
            delta -= SEQ_MOD
        return near + delta

    def __repr__(self) -> str:
        return f"<TcpConnection {self.machine.name} {self.local} -> {self.remote} {self.state.value}>"


__all__ = ["TcpConnection"]
