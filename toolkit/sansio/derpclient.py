"""The sans-IO client side of one DERP connection: frames, commands, timers (protocols.md §2).

Tailscale's ``derp/derp_client.go`` (``Send``, ``Recv``, ``SendPing``, ``NotePreferred``, ...) without
I/O (design.md §2). :class:`DerpClientConn` adds the steady state to the handshake of
:class:`toolkit.sansio.derphandshake.DerpHandshake` (states, TRANSITIONS and the handshake rules are
documented there). Inputs: :meth:`~DerpHandshake.start`, :meth:`~DerpClientConn.receive_data`,
:meth:`~DerpClientConn.receive_eof`, :meth:`~DerpClientConn.handle_timer` and the commands; outputs,
pulled: :meth:`~DerpClientConn.data_to_send`, :meth:`~DerpClientConn.get_timer`,
:meth:`~DerpClientConn.next_event` (events: :mod:`toolkit.sansio.derpevents`).

Decisions:

* Bad input never raises. Framing and handshake errors close the connection with a ``Closed`` event
  (reasons: :data:`~toolkit.sansio.derpevents.CLOSE_REASONS`); a frame header announcing more than
  1 MiB closes it, as Go's client does (§2.2). A frame of a known type whose payload is malformed
  and a frame only clients send are skipped, dropped and counted, as Go's ``Recv`` skips them;
  unknown frame types are skipped by length (§2.3) and counted as ``unknown-frame``.
* A server Ping is answered with a Pong at once (``CanAckPings``). A Pong answering one of our last 64
  Pings carries its round-trip time (``now`` of the Pong minus ``now`` of the Ping).
* Sending (``send_packet``, mesh commands) is allowed once ClientInfo is out; before that, and after
  the close, packets are dropped as ``not-connected``. Over the token bucket of ServerInfo they are
  dropped as ``rate-limited``, like Go's client. ``send_packet`` is the hot path: it appends the frame
  bytes directly (the same bytes as :class:`~toolkit.codec.derp.SendPacket`), and RecvPacket frames
  are parsed without building a frame object; frame objects are built only for tracing.
* Timers: ``derp_handshake_timeout`` from :meth:`~DerpHandshake.start` until Connected, then
  ``derp_client_read_timeout`` (120 s, §2.4 step 6) after the last byte received.
"""

from __future__ import annotations

import struct

from toolkit.codec import derp
from toolkit.errors import DecodeError
from toolkit.sansio.derpevents import (
    CLOSE_REASONS,
    DerpEvent,
    HealthChanged,
    KeepAliveReceived,
    PacketReceived,
    PeerGoneReceived,
    PeerPresentReceived,
    PingReceived,
    PongReceived,
    RestartingReceived,
)
from toolkit.sansio.derphandshake import HANDSHAKING, SENDING, TRANSITIONS, DerpHandshake, State
from toolkit.types import NodePublicKey

_HDR = struct.Struct(">BI")
_KEY = derp.KEY_LEN
_SEND_PACKET = int(derp.FrameType.SEND_PACKET)
_RECV_PACKET = int(derp.FrameType.RECV_PACKET)
_MAX_RECV = _KEY + derp.MAX_PACKET_SIZE
_FRAME_OVERHEAD = derp.FRAME_HEADER_LEN + _KEY  # what the token bucket charges on top of a packet
_MAX_PINGS = 64  # outstanding Pings remembered for RTTs
_KEY_CACHE = 4096  # source keys kept as NodePublicKey objects for the receive path


class DerpClientConn(DerpHandshake):
    """One DERP client connection without I/O; the module docstrings have the rules.

    Constructor arguments (see :class:`DerpHandshake`): ``private_key``, ``rng`` (bytes for nonces),
    ``host`` (the Host header), ``path``, ``fast_start``, ``server_key`` (known up front), ``mesh_key``,
    ``is_prober``, ``app_name``, ``preferred``, ``watch_conns``, ``timing``, ``tracer``, ``name``.
    """

    max_frame_len = derp.CLIENT_MAX_FRAME

    # --- inputs -------------------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the server, in any split."""
        if self.closed or not data:
            return
        self._now = self._last_recv = now
        if self.state is State.IDLE:
            self._close(now, "bad-upgrade", "the server sent data before the upgrade request")
            return
        self._buf += data
        if self.state is State.AWAITING_UPGRADE and not self._read_upgrade(now):
            return
        with memoryview(self._buf) as view:
            used = self._read_frames(view, now)
        if self.closed:
            self._buf.clear()
        else:
            del self._buf[:used]

    def receive_eof(self, now: float) -> None:
        """The server closed its side of the connection."""
        self._close(now, "eof", "the server closed the connection")

    def close(self, now: float, reason: str = "closed", message: str = "closed locally") -> None:
        """End the connection: locally, or because the transport failed (``transport-error``)."""
        if reason not in CLOSE_REASONS:
            raise ValueError(f"unknown close reason {reason!r}; use one of {sorted(CLOSE_REASONS)}")
        self._close(now, reason, message)

    def handle_timer(self, now: float) -> None:
        """Fire the handshake or read timeout if it is due."""
        self._now = max(self._now, now)
        if self.state in HANDSHAKING and now >= self._deadline:
            self._close(now, "handshake-timeout", f"no handshake within {self.timing.derp_handshake_timeout:g} s")
        elif self.state is State.CONNECTED and now >= self._last_recv + self.timing.derp_client_read_timeout:
            self._close(now, "read-timeout", f"nothing received for {self.timing.derp_client_read_timeout:g} s")

    # --- outputs ------------------------------------------------------------------------------
    def data_to_send(self) -> bytes:
        """Everything queued for the server since the last call."""
        if not self._out:
            return b""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet taken with :meth:`data_to_send`."""
        return len(self._out)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next, or None."""
        if self.state in HANDSHAKING:
            return self._deadline
        if self.state is State.CONNECTED:
            return self._last_recv + self.timing.derp_client_read_timeout
        return None

    def next_event(self) -> DerpEvent | None:
        return self._events.popleft() if self._events else None

    def take_events(self) -> list[DerpEvent]:
        """Every pending event at once (what a driver calls after each input)."""
        events = list(self._events)
        self._events.clear()
        return events

    # --- commands -----------------------------------------------------------------------------
    def send_packet(self, dst: NodePublicKey, data: bytes, now: float | None = None) -> bool:
        """Queue a SendPacket to ``dst``; False when dropped (``not-connected``, ``too-large``, ``rate-limited``).

        ``now`` feeds the token bucket; None means the latest ``now`` this core has seen.
        """
        if self.state not in SENDING:
            return self._drop_send("not-connected", dst, data)
        n = len(data)
        if n > derp.MAX_PACKET_SIZE:
            return self._drop_send("too-large", dst, data)
        if now is not None and now > self._now:
            self._now = now
        if self.bucket is not None and not self.bucket.allow(n + _FRAME_OVERHEAD, self._now):
            return self._drop_send("rate-limited", dst, data)
        out = self._out
        out += _HDR.pack(_SEND_PACKET, n + _KEY)
        out += dst.raw
        out += data
        self.packets_sent += 1
        self.bytes_sent += n
        if self.tracer is not None:
            frame = derp.SendPacket(dst, bytes(data))
            self._trace("sent", self._now, frame.summary(), raw=frame.encode(), peer=dst)
        return True

    def send_ping(self, data: bytes, now: float) -> bool:
        """Send a Ping (8 to 1000 bytes); the Pong's event carries the RTT."""
        if self.state not in SENDING:
            return self._drop_send("not-connected", None, data)
        frame = derp.Ping(bytes(data))
        pings = self._pings
        pings[frame.data[: derp.PING_LEN]] = now
        while len(pings) > _MAX_PINGS:
            del pings[next(iter(pings))]
        self._emit_frame(frame, now)
        return True

    def note_preferred(self, preferred: bool) -> None:
        """Tell the server whether it is our home region (now, and after every new handshake)."""
        self.preferred = preferred
        if self.state in SENDING:
            self._emit_frame(derp.NotePreferred(preferred), self._now)

    def watch_conns(self) -> None:
        """Subscribe to PeerPresent/PeerGone for every client of the server (mesh-key clients only)."""
        self.watching = True
        if self.state in SENDING:
            self._emit_frame(derp.WatchConns(), self._now)

    def close_peer(self, key: NodePublicKey) -> bool:
        """Ask the server to close ``key``'s connection (mesh-key clients only)."""
        if self.state not in SENDING:
            return self._drop_send("not-connected", key, b"")
        self._emit_frame(derp.ClosePeer(key), self._now)
        return True

    def forward_packet(self, src: NodePublicKey, dst: NodePublicKey, data: bytes) -> bool:
        """Forward a packet from ``src`` to ``dst`` through this server (mesh-key clients only)."""
        if self.state not in SENDING:
            return self._drop_send("not-connected", dst, data)
        if len(data) > derp.MAX_PACKET_SIZE:
            return self._drop_send("too-large", dst, data)
        self._emit_frame(derp.ForwardPacket(src, dst, bytes(data)), self._now)
        return True

    # --- frames ---------------------------------------------------------------------------------
    def _read_frames(self, view: memoryview, now: float) -> int:
        """Handle every complete frame in ``view``; returns the number of bytes used."""
        pos, n = 0, len(view)
        unpack = _HDR.unpack_from
        events = self._events
        while n - pos >= derp.FRAME_HEADER_LEN:
            ftype: int
            length: int
            ftype, length = unpack(view, pos)
            if length > self.max_frame_len:
                what = derp.type_name(ftype)
                self._close(now, "frame-too-large", f"a {what} frame announces {length} bytes (limit 1 MiB)")
                return pos
            start = pos + derp.FRAME_HEADER_LEN
            end = start + length
            if end > n:
                break
            pos = end
            if ftype == _RECV_PACKET and _KEY <= length <= _MAX_RECV and self.state in SENDING:
                raw = bytes(view[start : start + _KEY])  # the hot path: no frame object
                src = self._keys.get(raw)
                if src is None:
                    if len(self._keys) >= _KEY_CACHE:
                        self._keys.clear()
                    src = self._keys[raw] = NodePublicKey(raw)
                data = bytes(view[start + _KEY : end])
                self.packets_received += 1
                self.bytes_received += len(data)
                events.append(PacketReceived(src, data))
                if self.tracer is not None:
                    frame = derp.RecvPacket(src, data)
                    self._trace("received", now, frame.summary(), raw=frame.encode(), peer=src)
                continue
            self._frame(ftype, bytes(view[start:end]), now)
            if self.closed:
                return pos
        return pos

    def _frame(self, ftype: int, payload: bytes, now: float) -> None:
        raw = _HDR.pack(ftype, len(payload)) + payload if self.tracer is not None else b""
        if self.state is State.AWAITING_SERVER_KEY:
            self._server_key_frame(ftype, payload, raw, now)
            return
        try:
            frame = derp.decode_frame(ftype, payload)
        except DecodeError as exc:
            self._drop("bad-frame", now, f"{derp.type_name(ftype)}: {exc}", raw)
            return
        if isinstance(frame, derp.UnknownFrame):
            self.counters["unknown-frame"] += 1
            self._trace("received", now, frame.summary(), raw=raw)
            return
        self._trace("received", now, frame.summary(), raw=raw)
        events = self._events
        if isinstance(frame, derp.ServerInfo):
            self._server_info(frame, now)
        elif isinstance(frame, derp.KeepAlive):
            events.append(KeepAliveReceived())
        elif isinstance(frame, derp.PeerGone):
            events.append(PeerGoneReceived(frame.key, frame.reason))
        elif isinstance(frame, derp.PeerPresent):
            events.append(PeerPresentReceived(frame.key, frame.endpoint, frame.flags))
        elif isinstance(frame, derp.Ping):
            self._emit_frame(frame.pong(), now)  # CanAckPings: answer at once
            events.append(PingReceived(frame.data))
        elif isinstance(frame, derp.Pong):
            sent = self._pings.pop(frame.data[: derp.PING_LEN], None)
            events.append(PongReceived(frame.data, None if sent is None else now - sent))
        elif isinstance(frame, derp.Health):
            events.append(HealthChanged(frame.problem))
        elif isinstance(frame, derp.Restarting):
            events.append(RestartingReceived(frame.reconnect_in_ms / 1000, frame.try_for_ms / 1000))
        elif isinstance(frame, derp.ServerKey):  # after a start with the key known up front: must agree
            if frame.key != self.server_key:
                self._close(now, "key-mismatch", f"ServerKey {frame.key} is not the expected {self.server_key}")
        else:  # SendPacket, ClientInfo, NotePreferred, ForwardPacket, WatchConns, ClosePeer, RecvPacket too early
            self._drop("unexpected-frame", now, f"{frame.summary()} (not a server frame now)", raw)

    def _drop_send(self, reason: str, dst: NodePublicKey | None, data: bytes) -> bool:
        self._drop(reason, self._now, f"not sent: {len(data)}B", bytes(data) if self.tracer else b"", dst)
        return False


__all__ = ["TRANSITIONS", "DerpClientConn", "State"]
