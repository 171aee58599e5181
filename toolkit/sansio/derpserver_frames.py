"""The DERP relay core's frame handling and routing: SendPacket → RecvPacket, mesh frames, PeerGone.

Follows protocols.md §2.3 (frame types and sizes) and §2.4 step 5 (routing, PeerGone), behaving as
Tailscale's ``derpserver.go`` does (``sclient.run``, ``handleFrame*``, ``registerClient``,
``unregisterClient``, ``addWatcher``, ``noteClientActivity``). :class:`FrameHandlers` is the half of
:class:`~toolkit.sansio.derpserver.DerpServerCore` that runs once a client is Connected, with the
per-connection write queues the driver drains (``pending_writes``, ``data_to_send``); the module
docstring of :mod:`toolkit.sansio.derpserver` states the rules.

The hot path (a SendPacket with no tracer set) never builds a frame object: it reads the 5-byte header
and the 32-byte destination key, looks the key up, and queues ``05 ‖ length ‖ src key`` and a view of
the payload, which :meth:`pending_writes` joins once per drain. Every other frame goes through the
codec's :func:`~toolkit.codec.derp.decode_frame`, which validates its length for its type.
"""

from __future__ import annotations

import abc
import struct
from collections import Counter
from collections.abc import Callable

from toolkit.codec import derp
from toolkit.errors import DecodeError
from toolkit.sansio.derpserver_conn import ClientView, Conn, ConnId, DerpLimits, State
from toolkit.sansio.trace import TraceKind, TraceRecord
from toolkit.types import NodePublicKey

_HDR = struct.Struct(">BI")
_U32 = struct.Struct(">I")
_KEY = derp.KEY_LEN
_SEND = int(derp.FrameType.SEND_PACKET)
_RECV = int(derp.FrameType.RECV_PACKET)
_MAX_SEND = _KEY + derp.MAX_PACKET_SIZE
_FT = derp.FrameType
# Frames a client may send and the server acts on; every other type is skipped by length (§2.3).
_HANDLED = frozenset(
    int(t) for t in (_FT.SEND_PACKET, _FT.FORWARD_PACKET, _FT.NOTE_PREFERRED, _FT.WATCH_CONNS, _FT.CLOSE_PEER, _FT.PING)
)
_MESH_ONLY = frozenset(int(t) for t in (_FT.FORWARD_PACKET, _FT.WATCH_CONNS, _FT.CLOSE_PEER))


class FrameHandlers(abc.ABC):
    """Routing state and frame handlers; mixed into DerpServerCore, which sets the attributes below."""

    tracer: Callable[[TraceRecord], None] | None
    limits: DerpLimits
    queue_depth: int
    dropped: Counter[str]
    closed: Counter[str]
    counts: Counter[str]
    _key_raw: bytes
    _conns: dict[ConnId, Conn]
    clients_total: int

    def __init__(self) -> None:
        self._route: dict[bytes, Conn] = {}  # key -> the connection that gets its packets
        self._sets: dict[bytes, list[Conn]] = {}  # key -> its connections, the active one last
        self._watchers: dict[Conn, None] = {}  # mesh clients that sent WatchConns
        self._gone_watch: dict[bytes, set[Conn]] = {}  # sender key -> clients that received from it
        self._dirty: dict[Conn, None] = {}  # connections with bytes in ``out``
        self.packets_relayed = 0
        self.bytes_relayed = 0

    # the core provides these
    @abc.abstractmethod
    def _close(self, c: Conn, reason: str, now: float, detail: str = "", *, abort: bool = False) -> None:
        """Provided by the subclass."""

    @abc.abstractmethod
    def _trace(
        self, kind: TraceKind, c: Conn, now: float, detail: str, reason: str | None = None, raw: bytes = b""
    ) -> None:
        """Provided by the subclass."""

    # --- the frame loop -------------------------------------------------------------------------

    def _frames(self, c: Conn, data: bytes, now: float) -> None:
        """Consume every complete frame of ``c.buf + data``; keep the partial one."""
        buf = c.buf + data if c.buf else data
        c.buf = b""
        view = memoryview(buf)
        n, pos = len(buf), 0
        max_len = self.limits.max_frame_len
        route, dirty, src, bucket = self._route, self._dirty, c.key_raw, c.bucket
        fast = self.tracer is None
        relayed = relayed_bytes = 0
        try:
            while n - pos >= 5:
                ftype, length = _HDR.unpack_from(buf, pos)
                if length > max_len:
                    self._close(c, "frame_too_large", now, f"{derp.type_name(ftype)} frame announces {length} B")
                    return
                end = pos + 5 + length
                if end > n:
                    self._wait_for(c, buf[pos:], end - pos)
                    return
                if c.dup:
                    self._note_activity(c)
                if ftype == _SEND and fast:
                    if length < _KEY or length > _MAX_SEND:
                        self._close(c, "bad_frame", now, f"SEND_PACKET of {length} bytes")
                        return
                    pos += 5
                    if bucket is not None and not bucket.allow(length, now):
                        self.dropped["rate_limited"] += 1
                    elif (dst := route.get(buf[pos : pos + _KEY])) is None:
                        self._unknown_dest(c, buf[pos : pos + _KEY], now, "unknown_dest")
                    else:
                        prefix = _HDR.pack(_RECV, length) + src
                        if dst.paused:
                            self._hold(dst, prefix + view[pos + _KEY : end])
                        else:
                            if not dst.out:
                                dirty[dst] = None
                            dst.out.append(prefix)
                            dst.out.append(view[pos + _KEY : end])
                        if src not in dst.saw_src:
                            self._watch_gone(dst, src)
                        relayed += 1
                        relayed_bytes += length - _KEY
                    pos = end
                    continue
                payload = buf[pos + 5 : end]
                pos = end
                self._frame(c, ftype, payload, now)
                if c.state is State.CLOSED:
                    return
        finally:
            self.packets_relayed += relayed
            self.bytes_relayed += relayed_bytes
        if pos < n:
            c.buf = buf[pos:]

    def _frame(self, c: Conn, ftype: int, payload: bytes, now: float) -> None:
        """One frame other than a fast-path SendPacket."""
        if ftype not in _HANDLED:
            self.dropped["unknown_frame"] += 1
            if self.tracer is not None:
                self._trace("dropped", c, now, f"DERP frame {derp.type_name(ftype)} skipped", "unknown_frame", payload)
            return
        if ftype in _MESH_ONLY and not c.mesh:
            self._close(c, "not_mesh", now, f"{derp.type_name(ftype)} needs the mesh key")
            return
        try:
            frame = derp.decode_frame(ftype, payload)
        except DecodeError as exc:
            self._close(c, "bad_frame", now, str(exc))
            return
        if self.tracer is not None:
            self._trace("received", c, now, frame.summary(), raw=_HDR.pack(ftype, len(payload)) + payload)
        if isinstance(frame, derp.SendPacket):
            if c.bucket is not None and not c.bucket.allow(len(payload), now):
                self._drop(c, now, "rate_limited", payload)
            else:
                self._deliver(c, c.key_raw, frame.dst.raw, frame.packet, now, "unknown_dest")
        elif isinstance(frame, derp.ForwardPacket):
            self.counts["forwarded_in"] += 1
            self._deliver(c, frame.src.raw, frame.dst.raw, frame.packet, now, "unknown_dest_on_fwd")
        elif isinstance(frame, derp.Ping):
            self.counts["pings"] += 1
            if c.paused and c.pong_waiting:
                self._drop(c, now, "pong_limited", payload)
            else:
                c.pong_waiting = c.paused
                self._send_frame(c, frame.pong(), now)
        elif isinstance(frame, derp.NotePreferred):
            self.counts["note_preferred"] += 1
            c.preferred = frame.preferred
        elif isinstance(frame, derp.WatchConns):
            self._add_watcher(c, now)
        elif isinstance(frame, derp.ClosePeer):
            targets = list(self._sets.get(frame.key.raw, ()))
            self.counts["close_peer"] += 1
            for t in targets:
                self._close(t, "closed_by_mesh", now, f"ClosePeer from {c.key.short() if c.key else '?'}")

    def _wait_for(self, c: Conn, partial: bytes, need: int) -> None:
        """Keep ``partial`` until ``need`` bytes are in (see ``data_received``)."""
        c.buf = b""
        c.parts, c.have, c.need = [partial], len(partial), need

    # --- delivery -------------------------------------------------------------------------------

    def _deliver(self, c: Conn, src: bytes, dst_raw: bytes, packet: bytes, now: float, miss: str) -> None:
        """Queue RecvPacket(src, packet) on the destination's active connection (the traced path)."""
        dst = self._route.get(dst_raw)
        if dst is None:
            self._unknown_dest(c, dst_raw, now, miss, packet)
            return
        frame = derp.RecvPacket(NodePublicKey(src), packet).encode()
        if dst.paused:
            self._hold(dst, frame)
        else:
            self._emit(dst, frame, now, "")
        if self.tracer is not None:
            self._trace(
                "sent", dst, now, f"DERP RecvPacket from {NodePublicKey(src).short()} {len(packet)}B", raw=frame
            )
        if src not in dst.saw_src:
            self._watch_gone(dst, src)
        self.packets_relayed += 1
        self.bytes_relayed += len(packet)

    def _hold(self, dst: Conn, frame: bytes) -> None:
        """Queue a packet for a paused connection; a full queue loses its oldest packet (queue_head)."""
        held = dst.held
        if len(held) >= self.queue_depth:
            held.popleft()
            self.dropped["queue_full"] += 1
        held.append(frame)

    def _unknown_dest(self, c: Conn, dst_raw: bytes, now: float, reason: str, packet: bytes = b"") -> None:
        self._drop(c, now, reason, packet, NodePublicKey(dst_raw))
        if c.gone_limiter is not None and c.gone_limiter.allow(1, now):
            self.counts["peer_gone_not_here"] += 1
            self._send_frame(c, derp.PeerGone(NodePublicKey(dst_raw), derp.PeerGoneReason.NOT_HERE), now)
        else:
            self.dropped["peer_gone_limited"] += 1

    def _drop(self, c: Conn, now: float, reason: str, raw: bytes, dst: NodePublicKey | None = None) -> None:
        self.dropped[reason] += 1
        if self.tracer is not None:
            to = f" to {dst.short()}" if dst is not None else ""
            self._trace("dropped", c, now, f"packet of {len(raw)}B{to}", reason, raw)

    def _watch_gone(self, dst: Conn, src: bytes) -> None:
        """``dst`` received from ``src``: it hears PeerGone when ``src`` leaves (Tailscale noteSendFromSrc)."""
        if src == dst.key_raw:
            return
        dst.saw_src.add(src)
        self._gone_watch.setdefault(src, set()).add(dst)

    # --- outputs: what the driver writes ---------------------------------------------------------

    def pending_writes(self) -> list[tuple[ConnId, bytes]]:
        """Every connection with bytes to write and a transport not paused, each with one coalesced chunk."""
        if not self._dirty:
            return []
        out = []
        for c in self._dirty:
            if c.paused or not c.out:
                continue
            chunks = c.out
            out.append((c.id, chunks[0] if len(chunks) == 1 and isinstance(chunks[0], bytes) else b"".join(chunks)))
            c.out = []
        self._dirty.clear()
        return out

    def data_to_send(self, conn_id: ConnId) -> bytes:
        """The bytes waiting for one connection (empty while it is paused)."""
        c = self._conns.get(conn_id)
        if c is None or c.paused or not c.out:
            return b""
        data = b"".join(c.out)
        c.out = []
        self._dirty.pop(c, None)
        return data

    # --- sending control frames -----------------------------------------------------------------

    def _emit(self, c: Conn, data: bytes, now: float, detail: str) -> None:
        if not data:
            return
        if not c.out and not c.paused:
            self._dirty[c] = None
        c.out.append(data)
        if detail and self.tracer is not None:
            self._trace("sent", c, now, detail, raw=data)

    def _send_frame(self, c: Conn, frame: derp.Frame, now: float) -> None:
        self._emit(c, frame.encode(), now, frame.summary())

    # --- who is connected -----------------------------------------------------------------------

    def _register(self, c: Conn, now: float) -> None:
        """Tailscale registerClient: the newest connection for a key is the active one."""
        conns = self._sets.setdefault(c.key_raw, [])
        if conns:
            self.counts["dup_client"] += 1
            c.dup = True
            for other in conns:
                other.dup = True
        conns.append(c)
        self._route[c.key_raw] = c
        for w in self._watchers:
            self._send_frame(w, self._present(c), now)

    def _note_activity(self, c: Conn) -> None:
        """Tailscale noteClientActivity with lastWriterIsActive: the last one to send gets the packets."""
        if self._route.get(c.key_raw) is not c:
            conns = self._sets[c.key_raw]
            conns.remove(c)
            conns.append(c)
            self._route[c.key_raw] = c

    def _unregister(self, c: Conn, now: float) -> None:
        """Tailscale unregisterClient: PeerGone goes out only when the key's last connection is gone."""
        key = c.key_raw
        self._watchers.pop(c, None)
        for src in c.saw_src:
            watchers = self._gone_watch.get(src)
            if watchers is not None:
                watchers.discard(c)
                if not watchers:
                    del self._gone_watch[src]
        c.saw_src.clear()
        conns = self._sets[key]
        conns.remove(c)
        if conns:
            self._route[key] = conns[-1]
            if len(conns) == 1:
                conns[0].dup = False
            return
        del self._sets[key], self._route[key]
        gone = derp.PeerGone(NodePublicKey(key), derp.PeerGoneReason.DISCONNECTED)
        receivers = self._gone_watch.pop(key, set())
        for r in receivers:
            r.saw_src.discard(key)
            self.counts["peer_gone_disconnected"] += 1
            self._send_frame(r, gone, now)
        for w in self._watchers:
            self._send_frame(w, gone, now)

    def _add_watcher(self, c: Conn, now: float) -> None:
        """Tailscale addWatcher: PeerPresent for every active client now, then updates as they come and go."""
        self.counts["watch_conns"] += 1
        if c.key_raw == self._key_raw:
            return  # a mesh connection to ourselves
        for active in list(self._route.values()):
            self._send_frame(c, self._present(active), now)
        self._watchers[c] = None

    def clients(self) -> list[ClientView]:
        """The authenticated connections, oldest first."""
        return [
            ClientView(
                c.id, c.key, c.remote, c.mesh, c.preferred, c.watcher, self._route.get(c.key_raw) is c, c.connected_at
            )
            for c in self._conns.values()
            if c.state is State.CONNECTED and c.key is not None
        ]

    def summary(self) -> str:
        """One line: clients, packets relayed, drops and closes by reason."""

        def by_reason(counter: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in counter.most_common()) or "none"

        return (
            f"{len(self._route)} clients now, {self.clients_total} served; relayed {self.packets_relayed} packets "
            f"({self.bytes_relayed} B); dropped: {by_reason(self.dropped)}; closed: {by_reason(self.closed)}"
        )

    def _present(self, c: Conn) -> derp.PeerPresent:
        flags = derp.PeerPresentFlags(0)
        if c.prober:
            flags |= derp.PeerPresentFlags.PROBER
        if c.mesh:
            flags |= derp.PeerPresentFlags.MESH_PEER
        if c.not_ideal:
            flags |= derp.PeerPresentFlags.NOT_IDEAL
        assert c.key is not None
        return derp.PeerPresent(c.key, c.remote, flags or derp.PeerPresentFlags.REGULAR)


__all__ = ["FrameHandlers"]
