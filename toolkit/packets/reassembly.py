"""TCP segments back into DERP frames: the sniffer's stream reassembly (protocols.md §2.1, §2.2).

DERP runs over TCP (plain HTTP in labs, TLS otherwise), so a captured segment may hold part of a
frame or several frames. :class:`DERPReassembler` keeps each direction of each connection in
sequence order (reordering, retransmits and sequence wraparound are handled), finds the HTTP
upgrade (``Upgrade: DERP`` request, ``101`` answer) or a fast-start ServerKey, and then feeds
the codec's :class:`~toolkit.codec.derp.FrameDecoder`. A connection whose start was not captured
cannot be cut into frames and is ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from toolkit.codec import derp as derp_codec
from toolkit.errors import BadLengthError, DecodeError, TruncatedError
from toolkit.types import Endpoint

if TYPE_CHECKING:
    from scapy.packet import Packet


_SEQ_MASK = 0xFFFFFFFF
_MAX_PENDING = 4 << 20  # out-of-order bytes held per direction before the stream is given up
_SYN, _FIN, _RST = 0x02, 0x01, 0x04


@dataclass(slots=True)
class DERPEvent:
    """What :class:`DERPReassembler` found in one direction of a connection.

    ``kind`` is ``upgrade-request``, ``upgrade-response`` (``raw`` is the HTTP head), ``frame``
    (``raw`` is the whole frame, ``frame`` the codec's dataclass) or ``error`` (``error`` says why;
    ``raw`` holds the frame when its bytes were complete).
    """

    src: Endpoint
    dst: Endpoint
    kind: str
    raw: bytes
    frame: derp_codec.Frame | None = None
    error: DecodeError | None = None
    text: str = ""

    def summary(self) -> str:
        if self.frame is not None:
            return self.frame.summary()
        if self.error is not None:
            return f"DERP malformed ({self.error.reason}): {self.error}"
        return self.text

    def packet(self) -> Packet:
        """The scapy view: a :class:`~toolkit.packets.derp.DERPFrame` for frames, the HTTP head as Raw."""
        from scapy.packet import Raw

        from toolkit.packets.derp import DERPFrame

        return DERPFrame(self.raw) if self.kind in ("frame", "error") and self.raw else Raw(self.raw)


class _Direction:
    __slots__ = ("buf", "next_seq", "pending", "pending_bytes", "state")

    def __init__(self) -> None:
        self.next_seq: int | None = None
        self.pending: dict[int, bytes] = {}
        self.pending_bytes = 0
        self.buf = bytearray()
        self.state = "start"  # -> "frames" | "ignore"

    def push(self, seq: int, flags: int, payload: bytes) -> bytes | None:
        """Add a segment; return the bytes now in order, or None when a gap is too large."""
        if flags & _SYN:
            self.next_seq = (seq + 1) & _SEQ_MASK
            seq = (seq + 1) & _SEQ_MASK
        if not payload:
            return b""
        if self.next_seq is None:
            self.next_seq = seq  # capture started after the handshake
        if len(payload) > len(self.pending.get(seq, b"")):
            self.pending_bytes += len(payload) - len(self.pending.get(seq, b""))
            self.pending[seq] = payload
        out = bytearray()
        progress = True
        while progress and self.pending:
            progress = False
            for start in list(self.pending):
                behind = (self.next_seq - start) & _SEQ_MASK
                if behind >= 1 << 31:
                    continue  # starts after a hole
                data = self.pending.pop(start)
                self.pending_bytes -= len(data)
                if behind < len(data):  # skip what a retransmission repeats
                    out += data[behind:]
                    self.next_seq = (self.next_seq + len(data) - behind) & _SEQ_MASK
                progress = True
        if self.pending_bytes > _MAX_PENDING:
            return None
        return bytes(out)


class _Flow:
    __slots__ = ("closed", "derp", "dirs")

    def __init__(self) -> None:
        self.dirs: dict[tuple[Endpoint, Endpoint], _Direction] = {}
        self.derp = False
        self.closed: set[tuple[Endpoint, Endpoint]] = set()


class DERPReassembler:
    """Puts TCP segments back in order per direction and cuts DERP connections into frames.

    Feed every TCP segment with :meth:`add_segment`, in capture order; it returns the events
    completed by that segment. Retransmissions and reordering are handled; a connection whose
    beginning was not captured is ignored (frame boundaries cannot be found), and so is a gap of
    more than 4 MiB. ``max_flows`` bounds the memory: the oldest connection is forgotten first.
    """

    def __init__(self, max_flows: int = 4096) -> None:
        self.max_flows = max_flows
        self._flows: dict[tuple[Endpoint, Endpoint], _Flow] = {}

    def add_segment(self, src: Endpoint, dst: Endpoint, seq: int, flags: int, payload: bytes) -> list[DERPEvent]:
        key = (src, dst) if (src, dst) <= (dst, src) else (dst, src)
        flow = self._flows.get(key)
        if flow is None:
            if flags & _RST:
                return []
            if len(self._flows) >= self.max_flows:
                del self._flows[next(iter(self._flows))]
            flow = self._flows[key] = _Flow()
        d = flow.dirs.setdefault((src, dst), _Direction())
        events: list[DERPEvent] = []
        if d.state != "ignore":
            data = d.push(seq, flags, bytes(payload))
            if data is None:
                gap = TruncatedError("more than 4 MiB wait behind a gap in the TCP stream (segments lost?)")
                events.append(DERPEvent(src, dst, "error", b"", error=gap))
                d.state, d.pending, d.pending_bytes = "ignore", {}, 0
            elif data:
                d.buf += data
                events = self._cut(flow, d, src, dst)
        if flags & _RST:
            del self._flows[key]
        elif flags & _FIN:
            flow.closed.add((src, dst))
            if len(flow.closed) == 2:
                del self._flows[key]
        return events

    def _cut(self, flow: _Flow, d: _Direction, src: Endpoint, dst: Endpoint) -> list[DERPEvent]:
        events: list[DERPEvent] = []
        buf = d.buf
        while d.state == "start":
            if buf[:4] == b"GET " or buf[:5] == b"HTTP/":
                try:
                    split = derp_codec.split_http_head(bytes(buf))
                    if split is None:
                        return events
                    head, rest = split
                    text = self._upgrade_text(head)
                except DecodeError:
                    text = None
                if text is None:
                    d.state = "ignore"  # plain HTTP (a probe, a 426), or garbage
                    break
                flow.derp = True
                kind = "upgrade-request" if head.startswith(b"GET ") else "upgrade-response"
                events.append(DERPEvent(src, dst, kind, head, text=text))
                d.state = "frames"
                buf[:] = rest
            elif len(buf) < 5 and (b"GET ".startswith(buf) or b"HTTP/".startswith(buf)):
                return events  # maybe the start of an HTTP head: wait for more bytes
            elif len(buf) >= derp_codec.FRAME_HEADER_LEN + len(derp_codec.MAGIC) or flow.derp:
                fast_start = buf[0] == derp_codec.FrameType.SERVER_KEY and buf[5:13] == derp_codec.MAGIC
                d.state = "frames" if fast_start or flow.derp else "ignore"
                flow.derp = flow.derp or fast_start
            else:
                return events
        while d.state == "frames" and len(buf) >= derp_codec.FRAME_HEADER_LEN:
            frame_type, length = buf[0], struct.unpack_from("!I", buf, 1)[0]
            if length > derp_codec.WRITE_MAX_FRAME:
                err = BadLengthError(f"DERP frame announces {length} bytes (limit {derp_codec.WRITE_MAX_FRAME})")
                events.append(DERPEvent(src, dst, "error", bytes(buf[: derp_codec.FRAME_HEADER_LEN]), error=err))
                d.state = "ignore"
                break
            end = derp_codec.FRAME_HEADER_LEN + length
            if len(buf) < end:
                break
            raw = bytes(buf[:end])
            del buf[:end]
            try:
                events.append(DERPEvent(src, dst, "frame", raw, frame=derp_codec.decode_frame(frame_type, raw[5:])))
            except DecodeError as exc:
                events.append(DERPEvent(src, dst, "error", raw, error=exc))
        if d.state == "ignore":
            buf.clear()
        return events

    @staticmethod
    def _upgrade_text(head: bytes) -> str | None:
        """A one-line lesson for a DERP upgrade head, or None when it is not one (§2.1)."""
        if head.startswith(b"GET "):
            req = derp_codec.parse_upgrade_request(head)
            if not req.is_derp_upgrade:
                return None
            fast = " (fast start: no 101 expected)" if req.fast_start else ""
            return f"DERP upgrade request {req.method} {req.path} Upgrade: DERP{fast}"
        resp = derp_codec.parse_upgrade_response(head)
        if not resp.is_upgrade:
            return None
        key = f" server {resp.server_key.short()}" if resp.server_key is not None else ""
        return f"DERP upgrade response {resp.status} {resp.reason}, version {resp.version}{key}"


__all__ = ["DERPEvent", "DERPReassembler"]
