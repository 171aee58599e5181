"""STUN attributes, part 2: the UTF-8 text attributes and the two error attributes.

Follows RFC 8489 §14.3 (USERNAME), §14.9 (REALM), §14.10 (NONCE), §14.14 (SOFTWARE), §14.8
(ERROR-CODE) and §14.13 (UNKNOWN-ATTRIBUTES). The classes register themselves in
:data:`toolkit.codec.stun_attrs.REGISTRY` on import; :mod:`toolkit.codec.stun` re-exports them, so
import from there. Text values must be UTF-8 (a :class:`~toolkit.errors.BadValueError` otherwise);
they are kept as sent, trailing NULs included, and only :meth:`describe` hides those NULs.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import ClassVar

from toolkit.codec.stun_attrs import AttrType, StunAttribute, _registered, attr_name
from toolkit.errors import BadLengthError, BadValueError
from toolkit.types import TxID


def _utf8(cls: type[StunAttribute], value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadValueError(f"{attr_name(cls.TYPE)} is not UTF-8: {exc}") from None


# --- UTF-8 text: RFC 8489 §14.3, §14.9, §14.10, §14.14 -------------------------------------------


@dataclass(frozen=True, slots=True)
class _TextAttribute(StunAttribute):
    value: str

    def value_bytes(self, txid: TxID) -> bytes:
        return self.value.encode("utf-8")

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> _TextAttribute:
        return cls(_utf8(cls, value))

    def describe(self) -> str:
        # trailing NULs (some servers count a C string's terminator) are not shown
        return f"{attr_name(self.TYPE).lower()}={json.dumps(self.value.rstrip(chr(0)), ensure_ascii=False)}"


@_registered
@dataclass(frozen=True, slots=True)
class Username(_TextAttribute):
    TYPE: ClassVar[int] = AttrType.USERNAME


@_registered
@dataclass(frozen=True, slots=True)
class Software(_TextAttribute):
    TYPE: ClassVar[int] = AttrType.SOFTWARE


@_registered
@dataclass(frozen=True, slots=True)
class Realm(_TextAttribute):
    TYPE: ClassVar[int] = AttrType.REALM


@_registered
@dataclass(frozen=True, slots=True)
class Nonce(_TextAttribute):
    TYPE: ClassVar[int] = AttrType.NONCE


# --- errors: RFC 8489 §14.8, §14.13 ---------------------------------------------------------------


@_registered
@dataclass(frozen=True, slots=True)
class ErrorCode(StunAttribute):
    """ERROR-CODE: ``code`` 300..699 (class = hundreds, number = the rest), a UTF-8 reason phrase."""

    TYPE: ClassVar[int] = AttrType.ERROR_CODE
    code: int
    reason: str = ""

    def __post_init__(self) -> None:
        if not 300 <= self.code <= 699:
            raise BadValueError(f"STUN error code {self.code} is not in 300..699 (RFC 8489 §14.8)")

    def value_bytes(self, txid: TxID) -> bytes:
        return struct.pack("!HBB", 0, self.code // 100, self.code % 100) + self.reason.encode("utf-8")

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> ErrorCode:
        if len(value) < 4:
            raise BadLengthError(f"ERROR-CODE value has {len(value)} bytes, needs at least 4")
        klass, number = value[2] & 0x07, value[3]  # the 21 bits before the class are reserved
        if number > 99:
            raise BadValueError(f"ERROR-CODE number {number} is not in 0..99")
        return cls(klass * 100 + number, _utf8(cls, value[4:]))

    def describe(self) -> str:
        return f"{self.code} {self.reason.rstrip(chr(0))}".rstrip()  # coturn pads the reason with NULs


@_registered
@dataclass(frozen=True, slots=True)
class UnknownAttributes(StunAttribute):
    """UNKNOWN-ATTRIBUTES: the comprehension-required types a server did not understand."""

    TYPE: ClassVar[int] = AttrType.UNKNOWN_ATTRIBUTES
    types: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", tuple(self.types))
        if any(not 0 <= t <= 0xFFFF for t in self.types):
            raise BadValueError("UNKNOWN-ATTRIBUTES holds 16-bit attribute types")

    def value_bytes(self, txid: TxID) -> bytes:
        return b"".join(t.to_bytes(2, "big") for t in self.types)

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> UnknownAttributes:
        if len(value) % 2:
            raise BadLengthError(f"UNKNOWN-ATTRIBUTES value has an odd length ({len(value)})")
        return cls(tuple(int.from_bytes(value[i : i + 2], "big") for i in range(0, len(value), 2)))

    def describe(self) -> str:
        return "unknown-attributes " + ",".join(f"0x{t:04x}" for t in self.types)


__all__ = ["ErrorCode", "Nonce", "Realm", "Software", "UnknownAttributes", "Username"]
