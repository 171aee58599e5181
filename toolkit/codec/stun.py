"""STUN messages: header, type bits, encode/decode, integrity, fingerprint and Tailscale's builders.

Follows RFC 8489 (§5 header and type bits, §6 framing, §9 credentials, §14.5-§14.7 integrity and
fingerprint) and RFC 5780 (CHANGE-REQUEST, RESPONSE-ORIGIN, OTHER-ADDRESS, RESPONSE-PORT,
PADDING); Tailscale's request and response are byte-exact as in protocols.md §3.1 and §3.2, and
:func:`is_stun` and :attr:`Message.mapped_endpoint` follow Tailscale's client (protocols.md §3.3).
The attribute dataclasses live in :mod:`toolkit.codec.stun_attrs` and are re-exported here.

Decoding keeps every attribute in wire order, also those after MESSAGE-INTEGRITY (which a receiver
must ignore, RFC 8489 §14.5) and unknown ones; checking integrity and fingerprint is a separate
step (:func:`verify_integrity`, :func:`verify_fingerprint`) on the received bytes.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import stringprep
import struct
import unicodedata
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TypeVar

# fmt: off
# isort: off
from toolkit.codec.stun_attrs import (
    MAGIC_COOKIE, REGISTRY, AlternateServer, Attribute, AttrType, ChangedAddress, ChangeRequest,
    ErrorCode, Fingerprint, IceControlled, IceControlling, MappedAddress, MessageIntegrity,
    MessageIntegritySha256, Nonce, OtherAddress, Padding, Priority, Realm, ResponseOrigin,
    ResponsePort, Software, SourceAddress, StunAttribute, UnknownAttribute, UnknownAttributes,
    UseCandidate, Username, XorMappedAddress, XorMappedAddressAlt, XorPeerAddress, XorRelayedAddress,
    attr_name, decode_attribute, encode_attribute,
)
# isort: on
# fmt: on
from toolkit.errors import BadLengthError, BadMagicError, BadValueError, TruncatedError
from toolkit.types import Endpoint, TxID

HEADER_LEN = 20
FINGERPRINT_XOR = 0x5354554E
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
_A = TypeVar("_A", bound=StunAttribute)


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


def _header(msg_type: int, body_len: int, txid: TxID) -> bytes:
    if body_len > 0xFFFF:
        raise BadLengthError(f"STUN message body of {body_len} bytes exceeds 65535")
    return struct.pack("!HHI", msg_type, body_len, MAGIC_COOKIE) + txid.raw


def _with_length(prefix: bytes, body_len: int) -> bytes:
    """``prefix`` with its header length field replaced (RFC 8489 §14.5-§14.7 "adjusted length")."""
    return prefix[:2] + body_len.to_bytes(2, "big") + prefix[4:]


def _hmac_sha1(prefix: bytes, key: bytes) -> bytes:
    # RFC 8489 §14.5: length counts up to the end of MESSAGE-INTEGRITY (4 + 20 bytes)
    return hmac.new(key, _with_length(prefix, len(prefix) - HEADER_LEN + 24), hashlib.sha1).digest()


def _hmac_sha256(prefix: bytes, key: bytes, size: int = 32) -> bytes:
    # RFC 8489 §14.6: same rule, the attribute being 4 + size bytes (truncation keeps the first bytes)
    mac = hmac.new(key, _with_length(prefix, len(prefix) - HEADER_LEN + 4 + size), hashlib.sha256).digest()
    return mac[:size]


def _crc(prefix: bytes) -> int:
    # RFC 8489 §14.7: CRC-32 (ISO 3309 / zlib) over the message up to FINGERPRINT, length including it
    return (binascii.crc32(_with_length(prefix, len(prefix) - HEADER_LEN + 8)) ^ FINGERPRINT_XOR) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Message:
    """A STUN message. ``wire`` holds the bytes a decoded message came from (not compared); :meth:`summary`
    checks FINGERPRINT against them, or against :meth:`encode` when they no longer match the fields."""

    msg_class: Class
    method: int
    txid: TxID
    attributes: tuple[StunAttribute, ...] = ()
    wire: bytes | None = field(default=None, compare=False, repr=False)

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
        body = b"".join(encode_attribute(a, self.txid) for a in self.attributes)
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


def _parse(data: bytes) -> tuple[int, TxID, list[tuple[int, int, bytes]]]:
    """Validate the header (RFC 8489 §6) and walk the TLVs: (type, [(attr type, offset, value)])."""
    data = bytes(data)
    if len(data) < HEADER_LEN:
        raise TruncatedError(f"a STUN message has a 20-byte header, got {len(data)} bytes")
    msg_type, length = struct.unpack_from("!HH", data)
    if msg_type & 0xC000:
        raise BadMagicError("not STUN: the top two bits of the message type are not zero", offset=0)
    if data[4:8] != _COOKIE_BYTES:
        raise BadMagicError(f"not STUN: magic cookie is {data[4:8].hex()}, expected 2112a442", offset=4)
    if length % 4:
        raise BadLengthError(f"STUN length {length} is not a multiple of 4", offset=2)
    end = HEADER_LEN + length
    if end > len(data):
        raise TruncatedError(f"STUN header says {length} bytes of attributes, only {len(data) - HEADER_LEN} follow")
    txid = TxID(data[8:20])
    attrs: list[tuple[int, int, bytes]] = []
    pos = HEADER_LEN
    while pos < end:  # bytes beyond `end` are ignored (protocols.md §3.3)
        attr_type, attr_len = struct.unpack_from("!HH", data, pos)
        if pos + 4 + attr_len > end:
            raise TruncatedError(
                f"STUN attribute {attr_type:#06x} of {attr_len} bytes overruns the message", offset=pos
            )
        attrs.append((attr_type, pos, data[pos + 4 : pos + 4 + attr_len]))
        pos += 4 + attr_len + (-attr_len % 4)  # RFC 8489 §14: values are padded to 4 bytes
    return msg_type, txid, attrs


def decode(data: bytes) -> Message:
    """Decode a STUN message (RFC 8489 §6). Raises only :class:`DecodeError` subclasses."""
    msg_type, txid, raw = _parse(data)
    cls, method = decode_type(msg_type)
    attrs = tuple(decode_attribute(t, value, txid) for t, _, value in raw)
    return Message(cls, method, txid, attrs, wire=bytes(data[: HEADER_LEN + int.from_bytes(data[2:4], "big")]))


def is_stun(data: bytes) -> bool:
    """Tailscale's ``stun.Is`` (protocols.md §3.3): 20+ bytes, top two bits zero, magic cookie."""
    return len(data) >= HEADER_LEN and data[0] & 0xC0 == 0 and bytes(data[4:8]) == _COOKIE_BYTES


def _find(data: bytes, attr_type: int) -> tuple[bytes, int, bytes, bool] | None:
    """The first attribute of ``attr_type``: (message prefix before it, its index, value, is last)."""
    _, _, attrs = _parse(data)
    for i, (t, off, value) in enumerate(attrs):
        if t == attr_type:
            return bytes(data[:off]), i, value, i == len(attrs) - 1
    return None


def verify_fingerprint(data: bytes) -> bool | None:
    """None without FINGERPRINT; False unless it is the last attribute and its CRC matches
    (RFC 8489 §14.7). Raises DecodeError if ``data`` is not STUN framing."""
    found = _find(data, AttrType.FINGERPRINT)
    if found is None:
        return None
    prefix, _, value, last = found
    return last and len(value) == 4 and int.from_bytes(value, "big") == _crc(prefix)


def verify_integrity(data: bytes, key: bytes) -> bool | None:
    """Check the first MESSAGE-INTEGRITY with ``key`` (RFC 8489 §14.5); None when there is none."""
    found = _find(data, AttrType.MESSAGE_INTEGRITY)
    if found is None:
        return None
    prefix, _, value, _ = found
    return len(value) == 20 and hmac.compare_digest(value, _hmac_sha1(prefix, key))


def verify_integrity_sha256(data: bytes, key: bytes) -> bool | None:
    """Check the first MESSAGE-INTEGRITY-SHA256 (possibly truncated) with ``key`` (RFC 8489 §14.6)."""
    found = _find(data, AttrType.MESSAGE_INTEGRITY_SHA256)
    if found is None:
        return None
    prefix, _, value, _ = found
    if len(value) not in (16, 20, 24, 28, 32):
        return False
    return hmac.compare_digest(value, _hmac_sha256(prefix, key, len(value)))


# --- credentials: RFC 8489 §9.1.2, §9.2.2, §18.5.1 -------------------------------------------------


def _opaque_string(s: str) -> str:
    """RFC 8265 §4.2 OpaqueString, simplified: non-ASCII spaces become U+0020, then NFC.
    Disallowed code points are not rejected. ASCII passwords pass through unchanged."""
    s = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in s)
    return unicodedata.normalize("NFC", s)


def _saslprep(s: str) -> str:
    """RFC 4013 SASLprep (what RFC 5389 and the RFC 5769 vectors use), simplified: drop the
    "mapped to nothing" characters (RFC 3454 B.1), non-ASCII spaces (C.1.2) to U+0020, NFKC.
    Prohibited-output and bidi checks are not done."""
    s = "".join(" " if stringprep.in_table_c12(ch) else ch for ch in s if not stringprep.in_table_b1(ch))
    return unicodedata.normalize("NFKC", s)


def short_term_key(password: str, *, saslprep: bool = False) -> bytes:
    """The HMAC key for short-term credentials: OpaqueString(password) in UTF-8 (RFC 8489 §9.1.2);
    ``saslprep=True`` uses RFC 5389's SASLprep instead."""
    return (_saslprep(password) if saslprep else _opaque_string(password)).encode("utf-8")


def long_term_key(username: str, realm: str, password: str, *, algorithm: str = "md5", saslprep: bool = False) -> bytes:
    """The long-term credential key (RFC 8489 §9.2.2): MD5(username ":" realm ":" password), realm
    and password through OpaqueString (or SASLprep). ``algorithm="sha256"`` gives the SHA-256 key of
    PASSWORD-ALGORITHM 0x0002 (RFC 8489 §18.5.1.2)."""
    prep = _saslprep if saslprep else _opaque_string
    text = f"{username}:{prep(realm)}:{prep(password)}".encode()
    if algorithm == "md5":
        return hashlib.md5(text, usedforsecurity=False).digest()
    if algorithm == "sha256":
        return hashlib.sha256(text).digest()
    raise BadValueError(f"unknown STUN password algorithm {algorithm!r}: use 'md5' or 'sha256'")


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
