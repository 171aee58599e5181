"""scapy layers for DERP frames, and a reassembler that turns captured TCP segments into frames.

Follows protocols.md §2.1 (HTTP upgrade, then framing on the same TCP stream), §2.2 (frame =
``type u8 ‖ length u32 BE ‖ payload``) and §2.3 (payload of each type), with the constants and
summaries of :mod:`toolkit.codec.derp` (design.md §2: packets is a view over the codecs).

A DERP frame does not line up with TCP segments: one segment may carry several frames, or a part
of one. So frames are not bound to a TCP port; :class:`DERPReassembler` (re-exported here from
:mod:`toolkit.packets.dissect`, where the sniffer's pipeline uses it without scapy) puts each
direction of a connection back in order and cuts it into frames, which :class:`DERPFrame`
dissects.

The packet inside SendPacket, RecvPacket and ForwardPacket is dissected with the same content
demux as UDP (:func:`toolkit.packets.bind.datagram_class`): disco, WireGuard, STUN.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar

from scapy.fields import (
    ByteEnumField,
    ConditionalField,
    FlagsField,
    IntField,
    PacketListField,
    ShortField,
    StrField,
    XStrField,
    XStrFixedLenField,
)
from scapy.packet import Packet

from toolkit.codec import derp as codec
from toolkit.errors import DecodeError
from toolkit.packets.disco import IP16Field
from toolkit.packets.reassembly import DERPEvent, DERPReassembler

FRAME_NAMES = {int(t): "".join(w.capitalize() for w in t.name.split("_")) for t in codec.FrameType}
_KEY = codec.KEY_LEN


def _key(name: str) -> XStrFixedLenField:
    return XStrFixedLenField(name, bytes(_KEY), _KEY)


class DERPFrame(Packet):
    """One frame header (protocols.md §2.2); the payload layer is the type's body class.

    ``length`` left unset is the size of the body. Bytes after ``length`` are not part of the frame
    (they are the next frame: dissect a whole stream with :class:`DERPStream`).
    """

    name = "DERP frame"
    fields_desc: ClassVar[list[Any]] = [
        ByteEnumField("type", codec.FrameType.KEEP_ALIVE, FRAME_NAMES),
        IntField("length", None),
    ]
    bodies: ClassVar[dict[int, type[Packet]]] = {}

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        if self.length is None:
            p = p[:1] + struct.pack("!I", len(pay)) + p[5:]
        return p + pay

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return s[: self.length], s[self.length :]

    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        return DERPFrame.bodies.get(self.type, super().guess_payload_class(payload))

    def frame_bytes(self) -> bytes:
        raw = bytes(self)
        return raw[: codec.FRAME_HEADER_LEN + struct.unpack("!I", raw[1:5])[0]]

    def to_codec(self) -> codec.Frame:
        return codec.decode(self.frame_bytes())

    def mysummary(self) -> str:
        try:
            return self.to_codec().summary()
        except DecodeError as exc:
            name = FRAME_NAMES.get(self.type, f"type 0x{self.type:02x}")
            return f"DERP {name} (malformed: {exc.reason}: {exc})"


class _Body(Packet):
    """Base of the frame bodies; the frame header says where the body ends."""

    frame_type: ClassVar[int] = -1

    def mysummary(self) -> str:
        if isinstance(self.underlayer, DERPFrame):
            return str(self.underlayer.mysummary())
        return str(self.name)

    @classmethod
    def register(cls) -> None:
        DERPFrame.bodies[cls.frame_type] = cls


def _frame_len(p: Packet) -> int | None:
    under = p.underlayer
    return under.length if isinstance(under, DERPFrame) and under.length is not None else None


class _CarriesDatagram(_Body):
    def guess_payload_class(self, payload: bytes) -> type[Packet]:
        from toolkit.packets.bind import datagram_class

        return datagram_class(payload)


class DERPServerKey(_Body):
    name = "DERP ServerKey"
    frame_type = codec.FrameType.SERVER_KEY
    fields_desc: ClassVar[list[Any]] = [
        XStrFixedLenField("magic", codec.MAGIC, len(codec.MAGIC)),
        _key("key"),
        XStrField("extra", b""),
    ]


class DERPClientInfo(_Body):
    name = "DERP ClientInfo"
    frame_type = codec.FrameType.CLIENT_INFO
    fields_desc: ClassVar[list[Any]] = [
        _key("key"),
        XStrFixedLenField("nonce", bytes(codec.NONCE_LEN), codec.NONCE_LEN),
        XStrField("box", b""),
    ]


class DERPServerInfo(_Body):
    name = "DERP ServerInfo"
    frame_type = codec.FrameType.SERVER_INFO
    fields_desc: ClassVar[list[Any]] = [
        XStrFixedLenField("nonce", bytes(codec.NONCE_LEN), codec.NONCE_LEN),
        XStrField("box", b""),
    ]


class DERPSendPacket(_CarriesDatagram):
    name = "DERP SendPacket"
    frame_type = codec.FrameType.SEND_PACKET
    fields_desc: ClassVar[list[Any]] = [_key("dst")]


class DERPRecvPacket(_CarriesDatagram):
    name = "DERP RecvPacket"
    frame_type = codec.FrameType.RECV_PACKET
    fields_desc: ClassVar[list[Any]] = [_key("src")]


class DERPForwardPacket(_CarriesDatagram):
    name = "DERP ForwardPacket"
    frame_type = codec.FrameType.FORWARD_PACKET
    fields_desc: ClassVar[list[Any]] = [_key("src"), _key("dst")]


class DERPKeepAlive(_Body):
    name = "DERP KeepAlive"
    frame_type = codec.FrameType.KEEP_ALIVE
    fields_desc: ClassVar[list[Any]] = []


class DERPNotePreferred(_Body):
    name = "DERP NotePreferred"
    frame_type = codec.FrameType.NOTE_PREFERRED
    fields_desc: ClassVar[list[Any]] = [ByteEnumField("preferred", 1, {0: "not-home", 1: "home"})]


class DERPPeerGone(_Body):
    """PeerGone: key ‖ reason (old servers omit the reason, protocols.md §2.3)."""

    name = "DERP PeerGone"
    frame_type = codec.FrameType.PEER_GONE
    fields_desc: ClassVar[list[Any]] = [
        _key("key"),
        ConditionalField(
            ByteEnumField("reason", 0, {int(r): r.label for r in codec.PeerGoneReason}),
            lambda p: _frame_len(p) is None or _frame_len(p) > _KEY,  # type: ignore[operator]
        ),
    ]


class DERPPeerPresent(_Body):
    """PeerPresent: key ‖ [IP16 ‖ port] ‖ [flags ‖ extra]; the short forms come from older servers."""

    name = "DERP PeerPresent"
    frame_type = codec.FrameType.PEER_PRESENT
    fields_desc: ClassVar[list[Any]] = [
        _key("key"),
        ConditionalField(IP16Field("ip", "::"), lambda p: _has(p, "ip", _KEY + 18)),
        ConditionalField(ShortField("port", 0), lambda p: _has(p, "ip", _KEY + 18)),
        ConditionalField(
            FlagsField("flags", 0, 8, ["regular", "mesh-peer", "prober", "not-ideal"]),
            lambda p: _has(p, "flags", _KEY + 19),
        ),
        ConditionalField(XStrField("extra", b""), lambda p: _has(p, "flags", _KEY + 20)),
    ]


def _has(p: Packet, name: str, need: int) -> bool:
    """Is this optional part present? From the frame length when dissected, else from the fields set."""
    length = _frame_len(p)
    if length is not None:
        return length >= need
    return p.fields.get(name) is not None


class DERPWatchConns(_Body):
    name = "DERP WatchConns"
    frame_type = codec.FrameType.WATCH_CONNS
    fields_desc: ClassVar[list[Any]] = []


class DERPClosePeer(_Body):
    name = "DERP ClosePeer"
    frame_type = codec.FrameType.CLOSE_PEER
    fields_desc: ClassVar[list[Any]] = [_key("key")]


class DERPPing(_Body):
    name = "DERP Ping"
    frame_type = codec.FrameType.PING
    fields_desc: ClassVar[list[Any]] = [XStrField("data", bytes(codec.PING_LEN))]


class DERPPong(_Body):
    name = "DERP Pong"
    frame_type = codec.FrameType.PONG
    fields_desc: ClassVar[list[Any]] = [XStrField("data", bytes(codec.PING_LEN))]


class DERPHealth(_Body):
    name = "DERP Health"
    frame_type = codec.FrameType.HEALTH
    fields_desc: ClassVar[list[Any]] = [StrField("problem", b"")]


class DERPRestarting(_Body):
    name = "DERP Restarting"
    frame_type = codec.FrameType.RESTARTING
    fields_desc: ClassVar[list[Any]] = [IntField("reconnect_in_ms", 0), IntField("try_for_ms", 0)]


class DERPStream(Packet):
    """Consecutive frames of one direction of a connection (after the HTTP upgrade)."""

    name = "DERP stream"
    fields_desc: ClassVar[list[Any]] = [PacketListField("frames", [], DERPFrame)]

    def mysummary(self) -> str:
        names = [FRAME_NAMES.get(f.type, hex(f.type)) for f in self.frames if isinstance(f, DERPFrame)]
        return f"DERP {len(names)} frames: {' '.join(names)}"


for _cls in (
    DERPServerKey, DERPClientInfo, DERPServerInfo, DERPSendPacket, DERPRecvPacket, DERPForwardPacket,
    DERPKeepAlive, DERPNotePreferred, DERPPeerGone, DERPPeerPresent, DERPWatchConns, DERPClosePeer,
    DERPPing, DERPPong, DERPHealth, DERPRestarting,
):  # fmt: skip
    _cls.register()

__all__ = [
    "FRAME_NAMES",
    "DERPClientInfo",
    "DERPClosePeer",
    "DERPEvent",
    "DERPForwardPacket",
    "DERPFrame",
    "DERPHealth",
    "DERPKeepAlive",
    "DERPNotePreferred",
    "DERPPeerGone",
    "DERPPeerPresent",
    "DERPPing",
    "DERPPong",
    "DERPReassembler",
    "DERPRecvPacket",
    "DERPRestarting",
    "DERPSendPacket",
    "DERPServerInfo",
    "DERPServerKey",
    "DERPStream",
    "DERPWatchConns",
]
