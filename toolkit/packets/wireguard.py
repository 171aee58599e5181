"""scapy layers for the four WireGuard messages, laid out as protocols.md §8.1 gives them.

Every message starts with a u32 LE type (a byte 1..4 and three zero bytes); indices are u32 LE,
the transport counter u64 LE (wireguard-go ``device/noise-protocol.go``). The sizes and offsets
are :mod:`toolkit.codec.wireguard`'s constants, and summaries are the codec's (design.md §2).
No cryptography here: the encrypted fields are shown as bytes. (Session keys to decrypt
transport data will come with the WireGuard issue, see :mod:`toolkit.packets.keyring`.)

Dissecting with :class:`WireGuard` picks the class of the type byte; an unknown type stays a
:class:`WireGuard` with the rest as ``data``. Lengths are not checked while dissecting (so a
malformed message is still shown); the summary says what the codec thinks is wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar

from scapy.fields import ByteEnumField, LEIntField, LELongField, X3BytesField, XStrField, XStrFixedLenField
from scapy.packet import Packet

from toolkit.codec import wireguard as codec
from toolkit.errors import DecodeError

TYPE_NAMES = {int(t): "".join(w.capitalize() for w in t.name.split("_")) for t in codec.MsgType}


def _hdr(msg_type: int) -> list[Any]:
    # protocols.md §8.1: 0:4 type, a u32 LE = type byte and three zero bytes
    return [ByteEnumField("message_type", msg_type, TYPE_NAMES), X3BytesField("reserved_zero", 0)]


def _bytes(name: str, size: int) -> XStrFixedLenField:
    return XStrFixedLenField(name, bytes(size), size)


class WireGuard(Packet):
    """A WireGuard message of unknown type (or the dispatcher: ``WireGuard(data)``)."""

    name = "WireGuard"
    fields_desc: ClassVar[list[Any]] = [*_hdr(0), XStrField("data", b"")]
    registry: ClassVar[dict[int, type[WireGuard]]] = {}

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        if cls is WireGuard and _pkt and len(_pkt) >= 4 and _pkt[1:4] == b"\x00\x00\x00":
            found = WireGuard.registry.get(_pkt[0], WireGuard)
            return found if len(_pkt) >= _MIN_LEN.get(found, 0) else WireGuard  # truncated: shown raw
        return cls

    def to_codec(self) -> codec.Message:
        return codec.decode(bytes(self))

    def mysummary(self) -> str:
        try:
            return self.to_codec().summary()
        except DecodeError as exc:
            kind = TYPE_NAMES.get(self.message_type, f"type {self.message_type}")
            return f"WireGuard {kind} (malformed: {exc.reason}: {exc})"


class WireGuardInitiation(WireGuard):
    """Type 1, 148 bytes: sender index, ephemeral, encrypted static, encrypted timestamp, mac1, mac2."""

    name = "WireGuard Handshake Initiation"
    fields_desc: ClassVar[list[Any]] = [
        *_hdr(codec.MsgType.INITIATION),
        LEIntField("sender_index", 0),  # 4:4
        _bytes("ephemeral", codec.KEY_LEN),  # 8:32
        _bytes("encrypted_static", codec.ENCRYPTED_STATIC_LEN),  # 40:48
        _bytes("encrypted_timestamp", codec.ENCRYPTED_TIMESTAMP_LEN),  # 88:28
        _bytes("mac1", codec.MAC_LEN),  # 116:16
        _bytes("mac2", codec.MAC_LEN),  # 132:16
    ]


class WireGuardResponse(WireGuard):
    """Type 2, 92 bytes: sender and receiver index, ephemeral, encrypted nothing (a tag), mac1, mac2."""

    name = "WireGuard Handshake Response"
    fields_desc: ClassVar[list[Any]] = [
        *_hdr(codec.MsgType.RESPONSE),
        LEIntField("sender_index", 0),  # 4:4
        LEIntField("receiver_index", 0),  # 8:4
        _bytes("ephemeral", codec.KEY_LEN),  # 12:32
        _bytes("encrypted_nothing", codec.TAG_LEN),  # 44:16
        _bytes("mac1", codec.MAC_LEN),  # 60:16
        _bytes("mac2", codec.MAC_LEN),  # 76:16
    ]


class WireGuardCookieReply(WireGuard):
    """Type 3, 64 bytes: receiver index, 24-byte nonce, encrypted cookie (16 + tag)."""

    name = "WireGuard Cookie Reply"
    fields_desc: ClassVar[list[Any]] = [
        *_hdr(codec.MsgType.COOKIE_REPLY),
        LEIntField("receiver_index", 0),  # 4:4
        _bytes("nonce", codec.COOKIE_NONCE_LEN),  # 8:24
        _bytes("encrypted_cookie", codec.ENCRYPTED_COOKIE_LEN),  # 32:32
    ]


class WireGuardTransport(WireGuard):
    """Type 4, 32+ bytes: receiver index, counter, ChaCha20-Poly1305 ciphertext with its tag."""

    name = "WireGuard Transport Data"
    fields_desc: ClassVar[list[Any]] = [
        *_hdr(codec.MsgType.TRANSPORT),
        LEIntField("receiver_index", 0),  # 4:4
        LELongField("counter", 0),  # 8:8
        XStrField("encrypted_packet", bytes(codec.TAG_LEN)),  # 16:..
    ]


for _cls in (WireGuardInitiation, WireGuardResponse, WireGuardCookieReply, WireGuardTransport):
    WireGuard.registry[_cls().message_type] = _cls
_MIN_LEN = {c: len(c()) - (codec.TAG_LEN if c is WireGuardTransport else 0) for c in WireGuard.registry.values()}

__all__ = [
    "TYPE_NAMES",
    "WireGuard",
    "WireGuardCookieReply",
    "WireGuardInitiation",
    "WireGuardResponse",
    "WireGuardTransport",
]
