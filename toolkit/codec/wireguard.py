"""WireGuard message layouts: the four message types as bytes, no cryptography.

Follows protocols.md §8.1 (wireguard-go ``device/noise-protocol.go``, ``receive.go``). Every
message starts with a u32 LE type, that is a type byte 1..4 and three zero bytes; indices are
u32 LE, the transport counter is u64 LE. The Noise handshake, mac1/mac2 and the transport AEAD
belong to ``toolkit.crypto``; the ``*_OFFSET`` constants below tell it where each field sits.

Sizes: wireguard-go drops a handshake message whose length is not exact, and a transport message
shorter than 32 bytes (header 16 + Poly1305 tag 16, which is a keepalive). It *sends* transport
payloads padded to a multiple of 16 bytes, but it *accepts* any length >= 32; :func:`decode`
does the same, and :attr:`Transport.padded` tells whether a message follows the sending rule.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeAlias

from toolkit.errors import BadLengthError, BadValueError, TruncatedError, UnknownTypeError


class MsgType(IntEnum):
    INITIATION = 1
    RESPONSE = 2
    COOKIE_REPLY = 3
    TRANSPORT = 4


INITIATION_LEN = 148
RESPONSE_LEN = 92
COOKIE_REPLY_LEN = 64
TRANSPORT_HEADER_LEN = 16
TAG_LEN = 16  # Poly1305
TRANSPORT_MIN_LEN = TRANSPORT_HEADER_LEN + TAG_LEN  # 32, also the keepalive size
KEY_LEN = 32
MAC_LEN = 16
COOKIE_NONCE_LEN = 24

# Field offsets (protocols.md §8.1), for the crypto layer (mac1 covers bytes [0:MAC1_OFFSET]).
INITIATION_SENDER_OFFSET = 4
INITIATION_EPHEMERAL_OFFSET = 8
INITIATION_STATIC_OFFSET = 40  # 32 + 16 tag
INITIATION_TIMESTAMP_OFFSET = 88  # 12 (TAI64N) + 16 tag
INITIATION_MAC1_OFFSET = 116
INITIATION_MAC2_OFFSET = 132
RESPONSE_SENDER_OFFSET = 4
RESPONSE_RECEIVER_OFFSET = 8
RESPONSE_EPHEMERAL_OFFSET = 12
RESPONSE_EMPTY_OFFSET = 44  # tag only
RESPONSE_MAC1_OFFSET = 60
RESPONSE_MAC2_OFFSET = 76
COOKIE_RECEIVER_OFFSET = 4
COOKIE_NONCE_OFFSET = 8
COOKIE_COOKIE_OFFSET = 32  # 16 + 16 tag
TRANSPORT_RECEIVER_OFFSET = 4
TRANSPORT_COUNTER_OFFSET = 8
TRANSPORT_CONTENT_OFFSET = 16

ENCRYPTED_STATIC_LEN = INITIATION_TIMESTAMP_OFFSET - INITIATION_STATIC_OFFSET  # 48
ENCRYPTED_TIMESTAMP_LEN = INITIATION_MAC1_OFFSET - INITIATION_TIMESTAMP_OFFSET  # 28
ENCRYPTED_COOKIE_LEN = COOKIE_REPLY_LEN - COOKIE_COOKIE_OFFSET  # 32

_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

_INITIATION = struct.Struct("<II32s48s28s16s16s")
_RESPONSE = struct.Struct("<III32s16s16s16s")
_COOKIE = struct.Struct("<II24s32s")
_TRANSPORT_HEADER = struct.Struct("<IIQ")


def _check(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise BadValueError(f"{name} has {size} bytes, got {len(value)}")


def _check_index(name: str, value: int, limit: int = _U32) -> None:
    if not 0 <= value <= limit:
        raise BadValueError(f"{name} {value} does not fit in {limit.bit_length()} bits")


@dataclass(frozen=True, slots=True)
class Initiation:
    """Handshake initiation (type 1, 148 bytes)."""

    TYPE: ClassVar[MsgType] = MsgType.INITIATION
    sender_index: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes
    mac2: bytes = bytes(MAC_LEN)

    def __post_init__(self) -> None:
        _check_index("sender_index", self.sender_index)
        _check("ephemeral", self.ephemeral, KEY_LEN)
        _check("encrypted_static", self.encrypted_static, ENCRYPTED_STATIC_LEN)
        _check("encrypted_timestamp", self.encrypted_timestamp, ENCRYPTED_TIMESTAMP_LEN)
        _check("mac1", self.mac1, MAC_LEN)
        _check("mac2", self.mac2, MAC_LEN)

    def encode(self) -> bytes:
        return _INITIATION.pack(
            self.TYPE,
            self.sender_index,
            self.ephemeral,
            self.encrypted_static,
            self.encrypted_timestamp,
            self.mac1,
            self.mac2,
        )

    def summary(self) -> str:
        cookie = " mac2" if any(self.mac2) else ""
        return f"WireGuard Initiation sender={self.sender_index:#010x}{cookie}"


@dataclass(frozen=True, slots=True)
class Response:
    """Handshake response (type 2, 92 bytes)."""

    TYPE: ClassVar[MsgType] = MsgType.RESPONSE
    sender_index: int
    receiver_index: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes
    mac2: bytes = bytes(MAC_LEN)

    def __post_init__(self) -> None:
        _check_index("sender_index", self.sender_index)
        _check_index("receiver_index", self.receiver_index)
        _check("ephemeral", self.ephemeral, KEY_LEN)
        _check("encrypted_nothing", self.encrypted_nothing, TAG_LEN)
        _check("mac1", self.mac1, MAC_LEN)
        _check("mac2", self.mac2, MAC_LEN)

    def encode(self) -> bytes:
        return _RESPONSE.pack(
            self.TYPE,
            self.sender_index,
            self.receiver_index,
            self.ephemeral,
            self.encrypted_nothing,
            self.mac1,
            self.mac2,
        )

    def summary(self) -> str:
        cookie = " mac2" if any(self.mac2) else ""
        return f"WireGuard Response sender={self.sender_index:#010x} rx={self.receiver_index:#010x}{cookie}"


@dataclass(frozen=True, slots=True)
class CookieReply:
    """Cookie reply (type 3, 64 bytes): XChaCha20-Poly1305-sealed cookie for a peer under load."""

    TYPE: ClassVar[MsgType] = MsgType.COOKIE_REPLY
    receiver_index: int
    nonce: bytes
    encrypted_cookie: bytes

    def __post_init__(self) -> None:
        _check_index("receiver_index", self.receiver_index)
        _check("nonce", self.nonce, COOKIE_NONCE_LEN)
        _check("encrypted_cookie", self.encrypted_cookie, ENCRYPTED_COOKIE_LEN)

    def encode(self) -> bytes:
        return _COOKIE.pack(self.TYPE, self.receiver_index, self.nonce, self.encrypted_cookie)

    def summary(self) -> str:
        return f"WireGuard CookieReply rx={self.receiver_index:#010x}"


@dataclass(frozen=True, slots=True)
class Transport:
    """Transport data (type 4): receiver index, counter, ChaCha20-Poly1305 ciphertext with its tag."""

    TYPE: ClassVar[MsgType] = MsgType.TRANSPORT
    receiver_index: int
    counter: int
    encrypted_packet: bytes

    def __post_init__(self) -> None:
        _check_index("receiver_index", self.receiver_index)
        _check_index("counter", self.counter, _U64)
        if len(self.encrypted_packet) < TAG_LEN:
            raise BadValueError(
                f"encrypted_packet holds at least the {TAG_LEN}-byte tag, got {len(self.encrypted_packet)}"
            )

    @property
    def is_keepalive(self) -> bool:
        """An empty payload: only the tag (a 32-byte message)."""
        return len(self.encrypted_packet) == TAG_LEN

    @property
    def padded(self) -> bool:
        """Whether the payload is a multiple of 16 bytes, as wireguard-go sends it."""
        return (len(self.encrypted_packet) - TAG_LEN) % 16 == 0

    def encode(self) -> bytes:
        return _TRANSPORT_HEADER.pack(self.TYPE, self.receiver_index, self.counter) + self.encrypted_packet

    def summary(self) -> str:
        size = len(self.encrypted_packet) - TAG_LEN
        what = "keepalive" if self.is_keepalive else f"{size}B"
        return f"WireGuard Transport rx={self.receiver_index:#010x} ctr={self.counter} {what}"


Message: TypeAlias = Initiation | Response | CookieReply | Transport

_EXACT = {MsgType.INITIATION: INITIATION_LEN, MsgType.RESPONSE: RESPONSE_LEN, MsgType.COOKIE_REPLY: COOKIE_REPLY_LEN}


def message_type(data: bytes) -> MsgType | None:
    """The type of a WireGuard-looking message (a byte 1..4 and three zero bytes), else None."""
    if len(data) < 4 or data[1] or data[2] or data[3] or not 1 <= data[0] <= 4:
        return None
    return MsgType(data[0])


def decode(data: bytes) -> Message:
    """Decode one WireGuard message, checking type and size as wireguard-go's receiver does."""
    data = bytes(data)
    if len(data) < 4:
        raise TruncatedError(f"a WireGuard message starts with a 4-byte type, got {len(data)} bytes")
    t = message_type(data)
    if t is None:
        raise UnknownTypeError(f"not a WireGuard message type: {data[:4].hex()} (want 01..04 then 00 00 00)", offset=0)
    if t is MsgType.TRANSPORT:
        if len(data) < TRANSPORT_MIN_LEN:
            raise TruncatedError(f"a WireGuard Transport has at least {TRANSPORT_MIN_LEN} bytes, got {len(data)}")
        _, rx, ctr = _TRANSPORT_HEADER.unpack_from(data)
        return Transport(rx, ctr, data[TRANSPORT_HEADER_LEN:])
    want = _EXACT[t]
    if len(data) != want:
        cls = TruncatedError if len(data) < want else BadLengthError
        raise cls(f"a WireGuard {t.name.title().replace('_', '')} has exactly {want} bytes, got {len(data)}")
    if t is MsgType.INITIATION:
        return Initiation(*_INITIATION.unpack(data)[1:])
    if t is MsgType.RESPONSE:
        return Response(*_RESPONSE.unpack(data)[1:])
    return CookieReply(*_COOKIE.unpack(data)[1:])


__all__ = [
    "COOKIE_REPLY_LEN",
    "INITIATION_LEN",
    "INITIATION_MAC1_OFFSET",
    "INITIATION_MAC2_OFFSET",
    "RESPONSE_LEN",
    "RESPONSE_MAC1_OFFSET",
    "RESPONSE_MAC2_OFFSET",
    "TRANSPORT_HEADER_LEN",
    "TRANSPORT_MIN_LEN",
    "CookieReply",
    "Initiation",
    "Message",
    "MsgType",
    "Response",
    "Transport",
    "decode",
    "message_type",
]
