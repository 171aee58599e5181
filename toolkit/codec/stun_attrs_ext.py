"""STUN attributes, part 3: integrity, fingerprint, the RFC 5780 probes and ICE.

Follows RFC 8489 §14.5 (MESSAGE-INTEGRITY), §14.6 (MESSAGE-INTEGRITY-SHA256) and §14.7
(FINGERPRINT), RFC 5780 §7.2 (CHANGE-REQUEST), §7.5 (RESPONSE-PORT) and §7.6 (PADDING), and RFC 8445
§16.1 (PRIORITY, USE-CANDIDATE, ICE-CONTROLLED, ICE-CONTROLLING). The classes register themselves in
:data:`toolkit.codec.stun_attrs.REGISTRY` on import; :mod:`toolkit.codec.stun` re-exports them, so
import from there. The integrity and fingerprint classes only carry the values: computing and
checking them over a message is :mod:`toolkit.codec.stun_wire`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from toolkit.codec.stun_attrs import AttrType, StunAttribute, _check_len, _registered, attr_name
from toolkit.errors import BadLengthError, BadValueError
from toolkit.types import TxID

# --- integrity and fingerprint: RFC 8489 §14.5, §14.6, §14.7 -------------------------------------


@_registered
@dataclass(frozen=True, slots=True)
class MessageIntegrity(StunAttribute):
    """MESSAGE-INTEGRITY: the 20-byte HMAC-SHA1 (computed by ``Message.encode(integrity_key=...)``)."""

    TYPE: ClassVar[int] = AttrType.MESSAGE_INTEGRITY
    hmac: bytes

    def __post_init__(self) -> None:
        if len(self.hmac) != 20:
            raise BadLengthError(f"MESSAGE-INTEGRITY is 20 bytes, got {len(self.hmac)}")

    def value_bytes(self, txid: TxID) -> bytes:
        return bytes(self.hmac)

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> MessageIntegrity:
        _check_len(cls, value, 20)
        return cls(value)

    def describe(self) -> str:
        return "integrity"


@_registered
@dataclass(frozen=True, slots=True)
class MessageIntegritySha256(StunAttribute):
    """MESSAGE-INTEGRITY-SHA256: HMAC-SHA256, possibly truncated to 16..32 bytes in steps of 4."""

    TYPE: ClassVar[int] = AttrType.MESSAGE_INTEGRITY_SHA256
    hmac: bytes

    def __post_init__(self) -> None:
        if len(self.hmac) not in (16, 20, 24, 28, 32):
            raise BadLengthError(f"MESSAGE-INTEGRITY-SHA256 is 16..32 bytes in steps of 4, got {len(self.hmac)}")

    def value_bytes(self, txid: TxID) -> bytes:
        return bytes(self.hmac)

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> MessageIntegritySha256:
        _check_len(cls, value, 16, 20, 24, 28, 32)
        return cls(value)

    def describe(self) -> str:
        return "integrity-sha256"


@_registered
@dataclass(frozen=True, slots=True)
class Fingerprint(StunAttribute):
    """FINGERPRINT: CRC-32 of the message up to here, XOR 0x5354554E (RFC 8489 §14.7)."""

    TYPE: ClassVar[int] = AttrType.FINGERPRINT
    crc: int

    def __post_init__(self) -> None:
        if not 0 <= self.crc <= 0xFFFFFFFF:
            raise BadValueError("FINGERPRINT is a 32-bit value")

    def value_bytes(self, txid: TxID) -> bytes:
        return self.crc.to_bytes(4, "big")

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> Fingerprint:
        _check_len(cls, value, 4)
        return cls(int.from_bytes(value, "big"))

    def describe(self) -> str:
        return "fingerprint"


# --- RFC 5780 behaviour discovery ------------------------------------------------------------------


@_registered
@dataclass(frozen=True, slots=True)
class ChangeRequest(StunAttribute):
    """CHANGE-REQUEST (RFC 5780 §7.2): flag A (0x4) = change IP, flag B (0x2) = change port."""

    TYPE: ClassVar[int] = AttrType.CHANGE_REQUEST
    change_ip: bool = False
    change_port: bool = False

    def value_bytes(self, txid: TxID) -> bytes:
        return ((0x4 if self.change_ip else 0) | (0x2 if self.change_port else 0)).to_bytes(4, "big")

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> ChangeRequest:
        _check_len(cls, value, 4)
        flags = value[3]  # every other bit is unused and ignored
        return cls(change_ip=bool(flags & 0x4), change_port=bool(flags & 0x2))

    def describe(self) -> str:
        what = "+".join(n for n, on in (("ip", self.change_ip), ("port", self.change_port)) if on)
        return f"change-request {what or 'none'}"


@_registered
@dataclass(frozen=True, slots=True)
class ResponsePort(StunAttribute):
    """RESPONSE-PORT (RFC 5780 §7.5): a port and 2 bytes of padding, written with length 4 as coturn
    does. A 2-byte value (stuntman) is accepted too and re-encoded with length 4."""

    TYPE: ClassVar[int] = AttrType.RESPONSE_PORT
    port: int

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 0xFFFF:
            raise BadValueError(f"RESPONSE-PORT {self.port} is not in 0..65535")

    def value_bytes(self, txid: TxID) -> bytes:
        return self.port.to_bytes(2, "big") + b"\x00\x00"

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> ResponsePort:
        _check_len(cls, value, 2, 4)
        return cls(int.from_bytes(value[:2], "big"))

    def describe(self) -> str:
        return f"response-port {self.port}"


@_registered
@dataclass(frozen=True, slots=True)
class Padding(StunAttribute):
    """PADDING (RFC 5780 §7.6). Keeps the raw ``data`` (its content is meaningless, but keeping it
    makes re-encoding exact); build one with ``Padding.zeros(n)``; ``length`` is ``len(data)``."""

    TYPE: ClassVar[int] = AttrType.PADDING
    data: bytes = b""

    @classmethod
    def zeros(cls, n: int) -> Padding:
        return cls(bytes(n))

    @property
    def length(self) -> int:
        return len(self.data)

    def value_bytes(self, txid: TxID) -> bytes:
        return bytes(self.data)

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> Padding:
        return cls(value)

    def describe(self) -> str:
        return f"padding {len(self.data)}"


# --- ICE: RFC 8445 §16.1 ---------------------------------------------------------------------------


@_registered
@dataclass(frozen=True, slots=True)
class Priority(StunAttribute):
    TYPE: ClassVar[int] = AttrType.PRIORITY
    value: int

    def __post_init__(self) -> None:
        if not 0 <= self.value <= 0xFFFFFFFF:
            raise BadValueError("PRIORITY is a 32-bit value")

    def value_bytes(self, txid: TxID) -> bytes:
        return self.value.to_bytes(4, "big")

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> Priority:
        _check_len(cls, value, 4)
        return cls(int.from_bytes(value, "big"))

    def describe(self) -> str:
        return f"priority {self.value}"


@_registered
@dataclass(frozen=True, slots=True)
class UseCandidate(StunAttribute):
    TYPE: ClassVar[int] = AttrType.USE_CANDIDATE

    def value_bytes(self, txid: TxID) -> bytes:
        return b""

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> UseCandidate:
        _check_len(cls, value, 0)
        return cls()


@dataclass(frozen=True, slots=True)
class _TieBreaker(StunAttribute):
    tiebreaker: int

    def __post_init__(self) -> None:
        if not 0 <= self.tiebreaker <= 0xFFFFFFFFFFFFFFFF:
            raise BadValueError(f"{attr_name(self.TYPE)} is a 64-bit value")

    def value_bytes(self, txid: TxID) -> bytes:
        return self.tiebreaker.to_bytes(8, "big")

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> _TieBreaker:
        _check_len(cls, value, 8)
        return cls(int.from_bytes(value, "big"))


@_registered
@dataclass(frozen=True, slots=True)
class IceControlled(_TieBreaker):
    TYPE: ClassVar[int] = AttrType.ICE_CONTROLLED


@_registered
@dataclass(frozen=True, slots=True)
class IceControlling(_TieBreaker):
    TYPE: ClassVar[int] = AttrType.ICE_CONTROLLING


# fmt: off
__all__ = [
    "ChangeRequest", "Fingerprint", "IceControlled", "IceControlling", "MessageIntegrity", "MessageIntegritySha256",
    "Padding", "Priority", "ResponsePort", "UseCandidate",
]
# fmt: on
