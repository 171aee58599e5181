"""STUN messages: header type bits, the Message dataclass, encode/decode and Tailscale's builders.

Follows RFC 8489 (§5 header and type bits, §6 framing, §14.5-§14.7 integrity and fingerprint) and
RFC 5780 (CHANGE-REQUEST, RESPONSE-ORIGIN, OTHER-ADDRESS, RESPONSE-PORT, PADDING); Tailscale's
request and response are byte-exact as in protocols.md §3.1 and §3.2, and :func:`is_stun` and
:attr:`Message.mapped_endpoint` follow Tailscale's client (protocols.md §3.3). This is the module to
import: it re-exports the attribute dataclasses of :mod:`toolkit.codec.stun_attrs`,
:mod:`toolkit.codec.stun_attrs_text`, :mod:`toolkit.codec.stun_attrs_ext` and
:mod:`toolkit.codec.stun_attrs_turn` (with TURN's ChannelData), and the byte-level framing, integrity,
fingerprint and credential helpers of :mod:`toolkit.codec.stun_wire`. Classic RFC 3489 messages (no
magic cookie, a 16-byte transaction id) go through :func:`decode_classic` and :func:`encode_classic`.

Decoding keeps every attribute in wire order, also those after MESSAGE-INTEGRITY (which a receiver
must ignore, RFC 8489 §14.5) and unknown ones; checking integrity and fingerprint is a separate
step (:func:`verify_integrity`, :func:`verify_fingerprint`) on the received bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar

# fmt: off
# isort: off
from toolkit.codec.stun_attrs import (
    MAGIC_COOKIE, REGISTRY, AlternateServer, Attribute, AttrType, ChangedAddress, MappedAddress, OtherAddress,
    ResponseOrigin, SourceAddress, StunAttribute, UnknownAttribute, XorMappedAddress, XorMappedAddressAlt,
    XorPeerAddress, XorRelayedAddress, attr_name, encode_attribute,
)
# text before ext: the classes register in RFC 8489 §14 order, as REGISTRY always listed them
from toolkit.codec.stun_attrs_text import ErrorCode, Nonce, Realm, Software, UnknownAttributes, Username
from toolkit.codec.stun_attrs_ext import (
    ChangeRequest, Fingerprint, IceControlled, IceControlling, MessageIntegrity, MessageIntegritySha256, Padding,
    Priority, ResponsePort, UseCandidate,
)
from toolkit.codec.stun_attrs_turn import (
    CHANNEL_MAX, CHANNEL_MIN, PROTO_TCP, PROTO_UDP, ChannelData, ChannelNumber, Data, Lifetime, RequestedTransport,
    is_channel_data,
)
from toolkit.codec.stun_wire import (
    FINGERPRINT_XOR, HEADER_LEN, _crc, _header, _hmac_sha1, _hmac_sha256, _parse, is_stun, long_term_key,
    short_term_key, verify_fingerprint, verify_integrity, verify_integrity_sha256,
)
# isort: on
# fmt: on
from toolkit.errors import BadMagicError, BadValueError, TruncatedError
from toolkit.types import Endpoint, TxID

_A = TypeVar("_A", bound=StunAttribute)
_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")


class Class(IntEnum):
    """The two class bits C1 C0 (RFC 8489 §5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11

    @property
    def label(self) -> str:
        return self.name.capitalize()


class Method(IntEnum):
    """STUN methods (IANA "STUN Methods"). Decoded messages keep unregistered methods as plain ints."""

    BINDING = 0x001  # RFC 8489
    SHARED_SECRET = 0x002  # RFC 3489, reserved since RFC 5389
    ALLOCATE = 0x003  # RFC 8656
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A  # RFC 6062
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C
    GOOG_PING = 0x080  # Google, in the IANA registry


def method_name(m: int) -> str:
    """``Binding``, ``CreatePermission``, ..., or ``Method 0x123`` for an unregistered method."""
    try:
        name = Method(m).name
    except ValueError:
        return f"Method 0x{m:03x}"
    if name == "GOOG_PING":
        return "GOOG-PING"
    return "".join(part.capitalize() for part in name.split("_"))


def encode_type(cls: Class | int, method: int) -> int:
    """The 14-bit message type: method bits M11..M0 interleaved with C1, C0 (RFC 8489 §5)."""
    if not 0 <= method <= 0xFFF:
        raise BadValueError(f"STUN method {method:#x} does not fit 12 bits")
    c = int(cls)
    if not 0 <= c <= 3:
        raise BadValueError(f"STUN class {c} is not 0..3")
    # M0-M3 stay in bits 0-3, C0 is bit 4, M4-M6 go to bits 5-7, C1 is bit 8, M7-M11 go to bits 9-13
    return (method & 0x00F) | ((method & 0x070) << 1) | ((method & 0xF80) << 2) | ((c & 1) << 4) | ((c & 2) << 7)


def decode_type(t: int) -> tuple[Class, int]:
    """Split a message type into (class, method); the method is a :class:`Method` when registered."""
    if not 0 <= t <= 0x3FFF:
        raise BadMagicError(f"STUN message type {t:#06x}: the top two bits must be zero (RFC 8489 §5)")
    cls = Class(((t >> 4) & 1) | ((t >> 7) & 2))
    m = (t & 0x000F) | ((t >> 1) & 0x0070) | ((t >> 2) & 0x0F80)
    return cls, (Method(m) if m in Method._value2member_map_ else m)


@dataclass(frozen=True, slots=True)
class Message:
    """A STUN message. ``wire`` holds the bytes a decoded message came from (not compared); :meth:`summary`
    checks FINGERPRINT against them, or against :meth:`encode` when they no longer match the fields.

    ``paddings`` (not compared) keeps the padding bytes each attribute had on the wire when any of
    them was not zero: receivers ignore them (RFC 8489 §14) but RFC 5769's samples pad with spaces,
    and a decoded message must re-encode to its own bytes, MESSAGE-INTEGRITY included."""

    msg_class: Class
    method: int
    txid: TxID
    attributes: tuple[StunAttribute, ...] = ()
    wire: bytes | None = field(default=None, compare=False, repr=False)
    paddings: tuple[bytes, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "msg_class", Class(self.msg_class))
        if not 0 <= self.method <= 0xFFF:
            raise BadValueError(f"STUN method {self.method:#x} does not fit 12 bits")
        if self.method in Method._value2member_map_:
            object.__setattr__(self, "method", Method(self.method))
        object.__setattr__(self, "attributes", tuple(self.attributes))

    @property
    def msg_type(self) -> int:
        return encode_type(self.msg_class, self.method)

    def encode(
        self,
        *,
        integrity_key: bytes | None = None,
        integrity_sha256_key: bytes | None = None,
        fingerprint: bool = False,
    ) -> bytes:
        """The wire bytes. ``attributes`` are written as they are, in order; the options append a
        computed MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, in that order
        (RFC 8489 §14.5, §14.6, §14.7), each over everything before it."""
        t = self.msg_type
        pads = self.paddings
        body = b"".join(
            encode_attribute(a, self.txid, pads[i] if i < len(pads) else None) for i, a in enumerate(self.attributes)
        )
        if integrity_key is not None:
            mac = _hmac_sha1(_header(t, len(body), self.txid) + body, integrity_key)
            body += encode_attribute(MessageIntegrity(mac), self.txid)
        if integrity_sha256_key is not None:
            mac = _hmac_sha256(_header(t, len(body), self.txid) + body, integrity_sha256_key)
            body += encode_attribute(MessageIntegritySha256(mac), self.txid)
        if fingerprint:
            crc = _crc(_header(t, len(body), self.txid) + body)
            body += encode_attribute(Fingerprint(crc), self.txid)
        return _header(t, len(body), self.txid) + body

    def get(self, attr_cls: type[_A]) -> _A | None:
        """The first attribute of exactly this class, or None."""
        for a in self.attributes:
            if type(a) is attr_cls:
                return a
        return None

    @property
    def mapped_endpoint(self) -> Endpoint | None:
        """XOR-MAPPED-ADDRESS, else the pre-RFC 0x8020 one, else MAPPED-ADDRESS (protocols.md §3.3)."""
        for cls in (XorMappedAddress, XorMappedAddressAlt, MappedAddress):
            a = self.get(cls)
            if a is not None:
                return a.endpoint
        return None

    @property
    def software(self) -> str | None:
        s = self.get(Software)
        return None if s is None else s.value

    def summary(self) -> str:
        """One line for lessons: ``STUN Binding Success  xor-mapped 203.0.113.7:40001``."""
        head = f"STUN {method_name(self.method)} {self.msg_class.label}"
        err = self.get(ErrorCode)
        if err is not None:
            head += f" {err.describe()}"
        parts: list[str] = []
        for a in self.attributes:
            if a is err:
                continue
            if isinstance(a, Fingerprint):
                # the wire bytes, unless the fields changed since (e.g. dataclasses.replace())
                wire = self.wire if self.wire is not None and decode(self.wire) == self else self.encode()
                ok = verify_fingerprint(wire)
                parts.append("fingerprint ok" if ok else "fingerprint bad")
            else:
                parts.append(a.describe())
        return head + ("  " + " ".join(parts) if parts else "")


def decode_attribute(attr_type: int, value: bytes, txid: TxID) -> StunAttribute:
    """Decode one attribute value (without TLV header and padding). Raises DecodeError only.

    :data:`REGISTRY` is complete here: this module imports every attribute module."""
    cls = REGISTRY.get(attr_type)
    if cls is None:
        return UnknownAttribute(attr_type, bytes(value))
    return cls.from_value(bytes(value), txid)


def decode(data: bytes) -> Message:
    """Decode a STUN message (RFC 8489 §6). Raises only :class:`DecodeError` subclasses."""
    msg_type, txid, raw = _parse(data)
    cls, method = decode_type(msg_type)
    attrs = tuple(decode_attribute(t, value, txid) for t, _, value in raw)
    wire = bytes(data[: HEADER_LEN + int.from_bytes(data[2:4], "big")])
    paddings: tuple[bytes, ...] = ()
    if any(len(v) % 4 for _, _, v in raw):  # only then is there padding to keep (the common case has none)
        pads = tuple(wire[pos + 4 + len(v) : pos + 4 + len(v) + (-len(v) % 4)] for _, pos, v in raw)
        paddings = pads if any(any(p) for p in pads) else ()
    return Message(cls, method, txid, attrs, wire=wire, paddings=paddings)


# --- RFC 3489 classic messages ----------------------------------------------------------------------
# RFC 3489 §11.1: a 128-bit transaction id stands where RFC 5389 put the magic cookie and a 96-bit id.
# Plain address attributes do not depend on those bytes (RFC 5389 §12), so a classic message is read
# by putting the cookie in and written by taking it out again.


def decode_classic(data: bytes) -> tuple[bytes, Message]:
    """An RFC 3489 message: its 16-byte transaction id and the decoded message (whose ``txid`` is
    the id's last 12 bytes). XOR addresses and FINGERPRINT read this way mean nothing (RFC 3489 has
    neither). Raises :class:`~toolkit.errors.DecodeError` subclasses only."""
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise TruncatedError(f"an RFC 3489 message has a 20-byte header, got {len(data)} bytes")
    return data[4:20], decode(data[:4] + _COOKIE + data[8:])


def encode_classic(msg: Message, txid16: bytes) -> bytes:
    """``msg`` as an RFC 3489 message with the 16-byte transaction id ``txid16``, whose last 12 bytes
    must be ``msg.txid``. Give plain attributes only: XOR addresses, MESSAGE-INTEGRITY and FINGERPRINT
    depend on the magic cookie, which a classic message does not carry."""
    if len(txid16) != 16 or bytes(txid16[4:]) != msg.txid.raw:
        raise BadValueError("an RFC 3489 transaction id is 16 bytes ending with the message's 12-byte txid")
    wire = msg.encode()
    return wire[:4] + bytes(txid16[:4]) + wire[8:]


# --- builders --------------------------------------------------------------------------------------


def tailnode_request(txid: TxID) -> bytes:
    """Tailscale's 40-byte Binding Request: SOFTWARE "tailnode", then FINGERPRINT (protocols.md §3.1)."""
    return Message(Class.REQUEST, Method.BINDING, txid, (Software("tailnode"),)).encode(fingerprint=True)


def binding_request(
    txid: TxID,
    *,
    software: str | None = None,
    change_ip: bool = False,
    change_port: bool = False,
    response_port: int | None = None,
    padding: int = 0,
    fingerprint: bool = True,
) -> bytes:
    """A Binding Request, with the RFC 5780 probes: CHANGE-REQUEST, RESPONSE-PORT, PADDING (zeros)."""
    attrs: list[StunAttribute] = []
    if software is not None:
        attrs.append(Software(software))
    if change_ip or change_port:
        attrs.append(ChangeRequest(change_ip, change_port))
    if response_port is not None:
        attrs.append(ResponsePort(response_port))
    if padding:
        attrs.append(Padding.zeros(padding))
    return Message(Class.REQUEST, Method.BINDING, txid, tuple(attrs)).encode(fingerprint=fingerprint)


def binding_response(
    txid: TxID,
    mapped: Endpoint,
    *,
    software: str | None = None,
    response_origin: Endpoint | None = None,
    other_address: Endpoint | None = None,
    fingerprint: bool = False,
) -> bytes:
    """A Binding Success; with no options exactly Tailscale's (protocols.md §3.2)."""
    attrs: list[StunAttribute] = [XorMappedAddress(mapped)]
    if response_origin is not None:
        attrs.append(ResponseOrigin(response_origin))
    if other_address is not None:
        attrs.append(OtherAddress(other_address))
    if software is not None:
        attrs.append(Software(software))
    return Message(Class.SUCCESS, Method.BINDING, txid, tuple(attrs)).encode(fingerprint=fingerprint)


def error_response(txid: TxID, method: int, code: int, reason: str, unknown: tuple[int, ...] = ()) -> bytes:
    """An error response: ERROR-CODE, and UNKNOWN-ATTRIBUTES when ``unknown`` is given (RFC 8489 §6.3.4)."""
    attrs: list[StunAttribute] = [ErrorCode(code, reason)]
    if unknown:
        attrs.append(UnknownAttributes(tuple(unknown)))
    return Message(Class.ERROR, method, txid, tuple(attrs)).encode()


# fmt: off
__all__ = [
    "CHANNEL_MAX", "CHANNEL_MIN", "PROTO_TCP", "PROTO_UDP", "ChannelData", "ChannelNumber", "Data", "Lifetime",
    "RequestedTransport", "decode_classic", "encode_classic", "is_channel_data",
    "REGISTRY", "AlternateServer", "AttrType", "Attribute", "ChangeRequest", "ChangedAddress", "ErrorCode",
    "Fingerprint", "IceControlled", "IceControlling", "MappedAddress", "MessageIntegrity",
    "MessageIntegritySha256", "Nonce", "OtherAddress", "Padding", "Priority", "Realm", "ResponseOrigin",
    "ResponsePort", "Software", "SourceAddress", "StunAttribute", "UnknownAttribute", "UnknownAttributes",
    "UseCandidate", "Username", "XorMappedAddress", "XorMappedAddressAlt", "XorPeerAddress", "XorRelayedAddress",
    "attr_name", "decode_attribute", "encode_attribute", "FINGERPRINT_XOR", "HEADER_LEN", "MAGIC_COOKIE", "Class",
    "Message", "Method", "binding_request", "binding_response", "decode", "decode_type", "encode_type",
    "error_response", "is_stun", "long_term_key", "method_name", "short_term_key", "tailnode_request",
    "verify_fingerprint", "verify_integrity", "verify_integrity_sha256",
]
# fmt: on
