"""STUN attributes, part 4: TURN's attributes and the ChannelData message (RFC 8656).

Follows RFC 8656 §18.1 (CHANNEL-NUMBER), §18.4 (LIFETIME), §18.6 (DATA), §18.7 (REQUESTED-TRANSPORT)
and §12.4-§12.6 (ChannelData). The attribute classes register themselves in
:data:`toolkit.codec.stun_attrs.REGISTRY` on import; :mod:`toolkit.codec.stun` re-exports them, so import
from there. The TURN address attributes (XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS) live with the other
addresses in :mod:`toolkit.codec.stun_attrs`.

ChannelData is not a STUN message: a 4-byte header (channel number, length) and the application data,
told apart from STUN by its first byte (0x40-0x4F: the two top bits are 01, RFC 8656 §12, RFC 7983 §7).
RFFU ("reserved for future use") bytes are written as zeros and ignored when read, so a decoded
attribute re-encodes byte-exact when its sender wrote zeros, as every sender does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

from toolkit.codec.stun_attrs import AttrType, StunAttribute, _check_len, _registered
from toolkit.errors import BadLengthError, BadValueError, TruncatedError
from toolkit.types import TxID

CHANNEL_MIN, CHANNEL_MAX = 0x4000, 0x4FFF  # RFC 8656 §12: the channel numbers a client may bind
PROTO_UDP, PROTO_TCP = 17, 6  # REQUESTED-TRANSPORT protocol numbers (IANA; RFC 8656 §18.7, RFC 6062 §6.1)
CHANNEL_DATA_HEADER_LEN = 4
_CHANNEL_HEADER = struct.Struct("!HH")
_PROTO_NAMES = {PROTO_UDP: "udp", PROTO_TCP: "tcp"}


@_registered
@dataclass(frozen=True, slots=True)
class ChannelNumber(StunAttribute):
    """CHANNEL-NUMBER (RFC 8656 §18.1): the number, then 2 RFFU bytes. Any 16-bit value decodes;
    whether it is in 0x4000-0x4FFF is the server's check (it answers 400 otherwise, §12.2)."""

    TYPE: ClassVar[int] = AttrType.CHANNEL_NUMBER
    channel: int

    def __post_init__(self) -> None:
        if not 0 <= self.channel <= 0xFFFF:
            raise BadValueError(f"CHANNEL-NUMBER {self.channel} is not a 16-bit value")

    def value_bytes(self, txid: TxID) -> bytes:
        return self.channel.to_bytes(2, "big") + b"\x00\x00"

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> ChannelNumber:
        _check_len(cls, value, 4)
        return cls(int.from_bytes(value[:2], "big"))

    def describe(self) -> str:
        return f"channel {self.channel:#06x}"


@_registered
@dataclass(frozen=True, slots=True)
class Lifetime(StunAttribute):
    """LIFETIME (RFC 8656 §18.4): seconds until the allocation expires, 32 bits; 0 deletes it (§8)."""

    TYPE: ClassVar[int] = AttrType.LIFETIME
    seconds: int

    def __post_init__(self) -> None:
        if not 0 <= self.seconds <= 0xFFFFFFFF:
            raise BadValueError(f"LIFETIME {self.seconds} is not a 32-bit value")

    def value_bytes(self, txid: TxID) -> bytes:
        return self.seconds.to_bytes(4, "big")

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> Lifetime:
        _check_len(cls, value, 4)
        return cls(int.from_bytes(value, "big"))

    def describe(self) -> str:
        return f"lifetime {self.seconds}s"


@_registered
@dataclass(frozen=True, slots=True)
class Data(StunAttribute):
    """DATA (RFC 8656 §18.6): the application bytes of a Send or Data indication, any length."""

    TYPE: ClassVar[int] = AttrType.DATA
    data: bytes = b""

    def value_bytes(self, txid: TxID) -> bytes:
        return bytes(self.data)

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> Data:
        return cls(bytes(value))

    def describe(self) -> str:
        return f"data {len(self.data)}B"


@_registered
@dataclass(frozen=True, slots=True)
class RequestedTransport(StunAttribute):
    """REQUESTED-TRANSPORT (RFC 8656 §18.7): an IANA protocol number (17: UDP), then 3 RFFU bytes."""

    TYPE: ClassVar[int] = AttrType.REQUESTED_TRANSPORT
    protocol: int = PROTO_UDP

    def __post_init__(self) -> None:
        if not 0 <= self.protocol <= 0xFF:
            raise BadValueError(f"REQUESTED-TRANSPORT protocol {self.protocol} is not an 8-bit value")

    def value_bytes(self, txid: TxID) -> bytes:
        return bytes((self.protocol, 0, 0, 0))

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> RequestedTransport:
        _check_len(cls, value, 4)
        return cls(value[0])

    def describe(self) -> str:
        return f"requested-transport {_PROTO_NAMES.get(self.protocol, str(self.protocol))}"


# --- ChannelData: RFC 8656 §12.4 -----------------------------------------------------------------------


def is_channel_data(data: bytes) -> bool:
    """The first byte is 0x40-0x4F: a TURN channel, not STUN (RFC 8656 §12, RFC 7983 §7). A cheap
    classifier, as the demux's are; :meth:`ChannelData.decode` checks the rest."""
    return len(data) > 0 and 0x40 <= data[0] <= 0x4F


@dataclass(frozen=True, slots=True)
class ChannelData:
    """A ChannelData message: ``data`` relayed on ``channel`` (0x4000-0x4FFF, RFC 8656 §12.4)."""

    channel: int
    data: bytes = b""

    def __post_init__(self) -> None:
        if not CHANNEL_MIN <= self.channel <= CHANNEL_MAX:
            raise BadValueError(f"channel number {self.channel:#06x} is outside 0x4000-0x4FFF (RFC 8656 §12)")
        if len(self.data) > 0xFFFF:
            raise BadLengthError(f"ChannelData of {len(self.data)} bytes does not fit the 16-bit length")

    def encode(self, *, pad: bool = False) -> bytes:
        """The wire bytes; ``pad`` adds zeros up to a multiple of 4, which TCP needs and UDP does not (§12.5)."""
        wire = _CHANNEL_HEADER.pack(self.channel, len(self.data)) + bytes(self.data)
        return wire + bytes(-len(wire) % 4) if pad else wire

    @classmethod
    def decode(cls, datagram: bytes) -> ChannelData:
        """Read one message; bytes after the announced length (padding) are ignored (§12.5).
        Raises :class:`~toolkit.errors.DecodeError` subclasses only."""
        datagram = bytes(datagram)
        if len(datagram) < CHANNEL_DATA_HEADER_LEN:
            raise TruncatedError(f"ChannelData needs a 4-byte header, got {len(datagram)} bytes")
        channel, length = _CHANNEL_HEADER.unpack_from(datagram)
        if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
            raise BadValueError(f"channel number {channel:#06x} is outside 0x4000-0x4FFF (RFC 8656 §12)", offset=0)
        if length > len(datagram) - CHANNEL_DATA_HEADER_LEN:
            have = len(datagram) - CHANNEL_DATA_HEADER_LEN
            raise TruncatedError(f"ChannelData says {length} bytes, the datagram has {have}", offset=2)
        return cls(channel, datagram[CHANNEL_DATA_HEADER_LEN : CHANNEL_DATA_HEADER_LEN + length])

    def summary(self) -> str:
        return f"TURN ChannelData channel {self.channel:#06x} {len(self.data)}B"


# fmt: off
__all__ = [
    "CHANNEL_DATA_HEADER_LEN", "CHANNEL_MAX", "CHANNEL_MIN", "PROTO_TCP", "PROTO_UDP", "ChannelData",
    "ChannelNumber", "Data", "Lifetime", "RequestedTransport", "is_channel_data",
]
# fmt: on
