"""STUN attributes, part 1: the type registry, the attribute base class and the address attributes.

Follows RFC 8489 §14 (attribute TLVs), §14.1-§14.2 (MAPPED-ADDRESS, XOR-MAPPED-ADDRESS) and §18.3
(IANA registry), RFC 5780 §7.3-§7.4 (RESPONSE-ORIGIN, OTHER-ADDRESS), RFC 3489 (SOURCE-ADDRESS,
CHANGED-ADDRESS) and RFC 8656 (XOR-PEER-ADDRESS, XOR-RELAYED-ADDRESS). The other attributes live in
:mod:`toolkit.codec.stun_attrs_text` (text and error attributes) and :mod:`toolkit.codec.stun_attrs_ext`
(integrity, fingerprint, RFC 5780 probes, ICE); each class adds itself to :data:`REGISTRY` when its
module is imported. :mod:`toolkit.codec.stun` imports all three, decodes attributes through the
registry and re-exports everything; import from there.

Every attribute class has a class attribute ``TYPE``; :class:`UnknownAttribute` keeps any other
attribute as (``type``, raw ``value``) so nothing is lost. Decoding is strict about lengths and
address families (a malformed known attribute raises a :class:`DecodeError` subclass) and lenient
where the RFCs say "ignore": reserved bits are not kept, so a message re-encodes byte-identically
when its reserved bits are zero, which every sane sender writes. Padding bytes are kept by the
decoded ``Message`` (``paddings``), so RFC 5769's space-padded samples re-encode exactly too.
"""

from __future__ import annotations

import abc
import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar, TypeVar

from toolkit.errors import BadLengthError, BadValueError, UnknownTypeError
from toolkit.types import Endpoint, TxID

MAGIC_COOKIE = 0x2112A442
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")


class AttrType(IntEnum):
    """STUN attribute types (IANA "STUN Attributes"; 0x0000-0x7FFF comprehension-required)."""

    MAPPED_ADDRESS = 0x0001  # RFC 8489 §14.1
    RESPONSE_ADDRESS = 0x0002  # RFC 3489, reserved since RFC 5389
    CHANGE_REQUEST = 0x0003  # RFC 5780 §7.2
    SOURCE_ADDRESS = 0x0004  # RFC 3489, reserved since RFC 5389
    CHANGED_ADDRESS = 0x0005  # RFC 3489, reserved since RFC 5389
    USERNAME = 0x0006  # RFC 8489 §14.3
    PASSWORD = 0x0007  # RFC 3489, reserved
    MESSAGE_INTEGRITY = 0x0008  # RFC 8489 §14.5
    ERROR_CODE = 0x0009  # RFC 8489 §14.8
    UNKNOWN_ATTRIBUTES = 0x000A  # RFC 8489 §14.13
    REFLECTED_FROM = 0x000B  # RFC 3489, reserved
    CHANNEL_NUMBER = 0x000C  # RFC 8656
    LIFETIME = 0x000D  # RFC 8656
    XOR_PEER_ADDRESS = 0x0012  # RFC 8656
    DATA = 0x0013  # RFC 8656
    REALM = 0x0014  # RFC 8489 §14.9
    NONCE = 0x0015  # RFC 8489 §14.10
    XOR_RELAYED_ADDRESS = 0x0016  # RFC 8656
    REQUESTED_ADDRESS_FAMILY = 0x0017  # RFC 8656
    EVEN_PORT = 0x0018  # RFC 8656
    REQUESTED_TRANSPORT = 0x0019  # RFC 8656
    DONT_FRAGMENT = 0x001A  # RFC 8656
    ACCESS_TOKEN = 0x001B  # RFC 7635
    MESSAGE_INTEGRITY_SHA256 = 0x001C  # RFC 8489 §14.6
    PASSWORD_ALGORITHM = 0x001D  # RFC 8489 §14.12
    USERHASH = 0x001E  # RFC 8489 §14.4
    XOR_MAPPED_ADDRESS = 0x0020  # RFC 8489 §14.2
    RESERVATION_TOKEN = 0x0022  # RFC 8656
    PRIORITY = 0x0024  # RFC 8445 §16.1
    USE_CANDIDATE = 0x0025  # RFC 8445 §16.1
    PADDING = 0x0026  # RFC 5780 §7.6
    RESPONSE_PORT = 0x0027  # RFC 5780 §7.5
    CONNECTION_ID = 0x002A  # RFC 6062
    ADDITIONAL_ADDRESS_FAMILY = 0x8000  # RFC 8656
    ADDRESS_ERROR_CODE = 0x8001  # RFC 8656
    PASSWORD_ALGORITHMS = 0x8002  # RFC 8489 §14.11
    ALTERNATE_DOMAIN = 0x8003  # RFC 8489 §14.16
    ICMP = 0x8004  # RFC 8656
    XOR_MAPPED_ADDRESS_ALT = 0x8020  # pre-RFC draft number, still sent by old servers (protocols.md §3.3)
    SOFTWARE = 0x8022  # RFC 8489 §14.14
    ALTERNATE_SERVER = 0x8023  # RFC 8489 §14.15
    TRANSACTION_TRANSMIT_COUNTER = 0x8025  # RFC 7982
    CACHE_TIMEOUT = 0x8027  # RFC 5780 §7.7
    FINGERPRINT = 0x8028  # RFC 8489 §14.7
    ICE_CONTROLLED = 0x8029  # RFC 8445 §16.1
    ICE_CONTROLLING = 0x802A  # RFC 8445 §16.1
    RESPONSE_ORIGIN = 0x802B  # RFC 5780 §7.3
    OTHER_ADDRESS = 0x802C  # RFC 5780 §7.4
    ECN_CHECK = 0x802D  # RFC 6679
    THIRD_PARTY_AUTHORIZATION = 0x802E  # RFC 7635
    MOBILITY_TICKET = 0x8030  # RFC 8016


def attr_name(t: int) -> str:
    """``XOR-MAPPED-ADDRESS`` for a registered type, ``0x1234`` otherwise."""
    try:
        return AttrType(t).name.replace("_", "-")
    except ValueError:
        return f"0x{t:04x}"


class StunAttribute(abc.ABC):
    """Base of every attribute dataclass: how its value is written and read.

    ``TYPE`` is the attribute type; subclasses implement :meth:`value_bytes` (the value without
    the 4-byte TLV header and without padding), :meth:`from_value` and :meth:`describe`.
    """

    __slots__ = ()
    TYPE: ClassVar[int] = -1

    @property
    def attr_type(self) -> int:
        return self.TYPE

    @abc.abstractmethod
    def value_bytes(self, txid: TxID) -> bytes:
        """The value as written on the wire (no TLV header, no padding)."""

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> StunAttribute:
        """Decode a value (no TLV header, no padding); raises DecodeError subclasses only.

        Every registered attribute overrides this; :class:`UnknownAttribute` is built by the
        message decoder directly, since its type is not known from the value alone."""
        raise UnknownTypeError(f"{cls.__name__} cannot be decoded from a value alone")

    def describe(self) -> str:
        """A short phrase for :meth:`Message.summary`."""
        return attr_name(self.attr_type).lower()


Attribute = StunAttribute

REGISTRY: dict[int, type[StunAttribute]] = {}
"""Attribute type -> the class that decodes it; any other type becomes :class:`UnknownAttribute`.
Filled by ``@_registered`` here, in :mod:`~toolkit.codec.stun_attrs_text` and :mod:`~toolkit.codec.stun_attrs_ext`."""
_S = TypeVar("_S", bound=type[StunAttribute])


def _registered(cls: _S) -> _S:
    REGISTRY[cls.TYPE] = cls
    return cls


def _check_len(cls: type[StunAttribute], value: bytes, *allowed: int) -> None:
    if len(value) not in allowed:
        want = " or ".join(str(n) for n in allowed)
        raise BadLengthError(f"{attr_name(cls.TYPE)} value has {len(value)} bytes, expected {want}")


# --- addresses: RFC 8489 §14.1 (plain) and §14.2 (XOR with cookie ‖ TxID) ---------------------


@dataclass(frozen=True, slots=True)
class _AddressAttribute(StunAttribute):
    """An address attribute. ``v4_in_v6`` is True when the wire carried an IPv4 address as an
    IPv4-mapped IPv6 address (family 2): the endpoint is unmapped (protocols.md §3.3), and the
    flag keeps re-encoding byte-exact."""

    endpoint: Endpoint
    v4_in_v6: bool = False
    XOR: ClassVar[bool] = False
    LABEL: ClassVar[str] = "address"

    def __post_init__(self) -> None:
        if self.v4_in_v6 and self.endpoint.is_ipv6:
            raise BadValueError("v4_in_v6 needs an IPv4 endpoint")

    def value_bytes(self, txid: TxID) -> bytes:
        ep = self.endpoint
        if ep.is_ipv6 or self.v4_in_v6:
            family, addr = 0x02, ep.packed16()
        else:
            family, addr = 0x01, ep.ip.packed
        port = ep.port
        if self.XOR:  # RFC 8489 §14.2: port XOR top 16 bits of the cookie, address XOR cookie ‖ TxID
            port ^= MAGIC_COOKIE >> 16
            addr = bytes(a ^ b for a, b in zip(addr, _COOKIE_BYTES + txid.raw, strict=False))
        return struct.pack("!BBH", 0, family, port) + addr

    @classmethod
    def from_value(cls, value: bytes, txid: TxID) -> _AddressAttribute:
        if len(value) < 4:
            raise BadLengthError(f"{attr_name(cls.TYPE)} value has {len(value)} bytes, needs at least 8")
        family = value[1]  # byte 0 is reserved and ignored (RFC 8489 §14.1)
        port = int.from_bytes(value[2:4], "big")
        addr = value[4:]
        if family == 0x01:
            _check_len(cls, value, 8)
        elif family == 0x02:
            _check_len(cls, value, 20)
        else:
            raise BadValueError(f"{attr_name(cls.TYPE)} has address family {family:#04x}, expected 0x01 or 0x02")
        if cls.XOR:
            port ^= MAGIC_COOKIE >> 16
            addr = bytes(a ^ b for a, b in zip(addr, _COOKIE_BYTES + txid.raw, strict=False))
        if family == 0x01:
            return cls(Endpoint(ipaddress.IPv4Address(addr), port))
        ip6 = ipaddress.IPv6Address(addr)
        return cls(Endpoint(ip6, port), v4_in_v6=ip6.ipv4_mapped is not None)

    def describe(self) -> str:
        return f"{self.LABEL} {self.endpoint}"


@_registered
@dataclass(frozen=True, slots=True)
class MappedAddress(_AddressAttribute):
    TYPE: ClassVar[int] = AttrType.MAPPED_ADDRESS
    LABEL: ClassVar[str] = "mapped"


@_registered
@dataclass(frozen=True, slots=True)
class XorMappedAddress(_AddressAttribute):
    TYPE: ClassVar[int] = AttrType.XOR_MAPPED_ADDRESS
    XOR: ClassVar[bool] = True
    LABEL: ClassVar[str] = "xor-mapped"


@_registered
@dataclass(frozen=True, slots=True)
class XorMappedAddressAlt(_AddressAttribute):
    """XOR-MAPPED-ADDRESS under its pre-RFC number 0x8020 (same format)."""

    TYPE: ClassVar[int] = AttrType.XOR_MAPPED_ADDRESS_ALT
    XOR: ClassVar[bool] = True
    LABEL: ClassVar[str] = "xor-mapped(0x8020)"


@_registered
@dataclass(frozen=True, slots=True)
class ResponseOrigin(_AddressAttribute):
    TYPE: ClassVar[int] = AttrType.RESPONSE_ORIGIN
    LABEL: ClassVar[str] = "response-origin"


@_registered
@dataclass(frozen=True, slots=True)
class OtherAddress(_AddressAttribute):
    TYPE: ClassVar[int] = AttrType.OTHER_ADDRESS
    LABEL: ClassVar[str] = "other-address"


@_registered
@dataclass(frozen=True, slots=True)
class SourceAddress(_AddressAttribute):
    """RFC 3489 SOURCE-ADDRESS (old servers still send it; RESPONSE-ORIGIN replaced it)."""

    TYPE: ClassVar[int] = AttrType.SOURCE_ADDRESS
    LABEL: ClassVar[str] = "source-address"


@_registered
@dataclass(frozen=True, slots=True)
class ChangedAddress(_AddressAttribute):
    """RFC 3489 CHANGED-ADDRESS (OTHER-ADDRESS replaced it)."""

    TYPE: ClassVar[int] = AttrType.CHANGED_ADDRESS
    LABEL: ClassVar[str] = "changed-address"


@_registered
@dataclass(frozen=True, slots=True)
class AlternateServer(_AddressAttribute):
    TYPE: ClassVar[int] = AttrType.ALTERNATE_SERVER
    LABEL: ClassVar[str] = "alternate-server"


@_registered
@dataclass(frozen=True, slots=True)
class XorPeerAddress(_AddressAttribute):
    TYPE: ClassVar[int] = AttrType.XOR_PEER_ADDRESS
    XOR: ClassVar[bool] = True
    LABEL: ClassVar[str] = "xor-peer"


@_registered
@dataclass(frozen=True, slots=True)
class XorRelayedAddress(_AddressAttribute):
    TYPE: ClassVar[int] = AttrType.XOR_RELAYED_ADDRESS
    XOR: ClassVar[bool] = True
    LABEL: ClassVar[str] = "xor-relayed"


# --- anything else ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UnknownAttribute(StunAttribute):
    """An attribute this codec does not decode, kept as its ``type`` and raw ``value`` (no padding).
    ``TYPE`` is -1 for this class; the instance's type is ``type`` (and ``attr_type``)."""

    type: int
    value: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFFFF:
            raise BadValueError(f"attribute type {self.type} is not 16-bit")

    @property
    def attr_type(self) -> int:
        return self.type

    @property
    def comprehension_required(self) -> bool:
        """RFC 8489 §14: types 0x0000-0x7FFF must be understood by the receiver."""
        return self.type < 0x8000

    def value_bytes(self, txid: TxID) -> bytes:
        return bytes(self.value)

    def describe(self) -> str:
        return f"{attr_name(self.type).lower()}({len(self.value)}B)"


def encode_attribute(attr: StunAttribute, txid: TxID, padding: bytes | None = None) -> bytes:
    """One TLV: type, length, value, padding to 4 bytes (RFC 8489 §14): zeros, or ``padding`` when it
    has the right length (a decoded message's own padding bytes, see ``Message.paddings``)."""
    value = attr.value_bytes(txid)
    if len(value) > 0xFFFF:
        raise BadLengthError(f"{attr_name(attr.attr_type)} value of {len(value)} bytes does not fit a STUN attribute")
    need = -len(value) % 4
    pad = padding if padding is not None and len(padding) == need else bytes(need)
    return struct.pack("!HH", attr.attr_type, len(value)) + value + pad


# fmt: off
__all__ = [
    "AlternateServer", "AttrType", "Attribute", "ChangedAddress", "MAGIC_COOKIE", "MappedAddress", "OtherAddress",
    "REGISTRY", "ResponseOrigin", "SourceAddress", "StunAttribute", "UnknownAttribute", "XorMappedAddress",
    "XorMappedAddressAlt", "XorPeerAddress", "XorRelayedAddress", "attr_name", "encode_attribute",
]
# fmt: on
