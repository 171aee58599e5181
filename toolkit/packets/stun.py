"""scapy layers for STUN: the 20-byte header and the attribute TLV list, every attribute decoded.

Follows RFC 8489 (§5 header and type bits, §14 attribute TLVs padded to 4 bytes, §14.1/§14.2
plain and XOR addresses, §14.5-§14.8 integrity, fingerprint and error code), RFC 5780 §7 (behaviour
discovery) and RFC 8445 §16.1 (ICE), like :mod:`toolkit.codec.stun`, whose constants it uses: this
module is a view over the codec (design.md §2), and ``tests/packets`` check that both give the
same bytes for every golden vector.

Decisions:

* Addresses are shown and set in clear, also for XOR-MAPPED-ADDRESS: ``ip`` and ``port`` are the
  mapped address, the XOR with the cookie (and, for IPv6, the transaction id of the parent
  :class:`STUN`) happens when bytes are read or written. ``family`` left unset follows ``ip``.
* ``length`` left unset is computed; a FINGERPRINT whose ``crc`` is left unset is computed over the
  message before it (RFC 8489 §14.7). MESSAGE-INTEGRITY needs a key: build it with
  :func:`toolkit.packets.crafter.stun_bytes` (which uses the codec) and dissect the result.
* Padding bytes after an attribute value are kept only when they are not zero (RFC 8489 §14 says
  to ignore them), so every real message re-encodes byte-identically.
* The layer is not bound to port 3478: :mod:`toolkit.packets.bind` finds it by content.
"""

from __future__ import annotations

import binascii
import struct
from typing import Any, ClassVar

from scapy.fields import (
    BitField,
    ByteEnumField,
    ByteField,
    ConditionalField,
    FieldListField,
    IntField,
    IP6Field,
    IPField,
    MultipleTypeField,
    PacketListField,
    ShortEnumField,
    ShortField,
    StrField,
    XIntField,
    XLongField,
    XShortEnumField,
    XShortField,
    XStrField,
    XStrFixedLenField,
)
from scapy.packet import Packet

from toolkit.codec import stun as codec
from toolkit.errors import DecodeError
from toolkit.types import TxID

AT = codec.AttrType
ATTR_NAMES = {int(t): codec.attr_name(t) for t in AT}
_COOKIE = codec.MAGIC_COOKIE.to_bytes(4, "big")
_FAMILIES = {1: "IPv4", 2: "IPv6"}


def type_label(t: int) -> str:
    """``Binding Success`` for 0x0101 (RFC 8489 §5), via the codec's type bits."""
    try:
        cls, method = codec.decode_type(t)
    except DecodeError:
        return f"type {t:#06x} (top bits set: not STUN)"
    return f"{codec.method_name(method)} {cls.label}"


def _parse_type(text: str) -> int:
    """``"Binding Request"`` -> 0x0001; the inverse of :func:`type_label`."""
    method_text, _, class_text = text.strip().rpartition(" ")
    for cls in codec.Class:
        if cls.label.lower() == class_text.lower():
            for m in codec.Method:
                if codec.method_name(m).lower() == method_text.lower():
                    return codec.encode_type(cls, m)
    raise ValueError(f"{text!r} is not a STUN message type like 'Binding Request'")


class _TypeField(XShortField):
    """The 14-bit message type; shown as ``0x0101 (Binding Success)``, settable by that label."""

    def any2i(self, pkt: Packet | None, x: Any) -> Any:
        return _parse_type(x) if isinstance(x, str) else super().any2i(pkt, x)

    def i2repr(self, pkt: Packet | None, x: Any) -> str:
        return "None" if x is None else f"{x:#06x} ({type_label(x)})"


def _txid_of(pkt: Packet) -> bytes:
    parent = pkt.parent
    txid = getattr(parent, "txid", None) if parent is not None else None
    return bytes(txid) if isinstance(txid, bytes | bytearray) and len(txid) == 12 else bytes(12)


def _xor(data: bytes, key: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, key, strict=False))


class _XorPortField(ShortField):
    """Port XOR the top 16 bits of the magic cookie (RFC 8489 §14.2)."""

    def i2m(self, pkt: Packet | None, x: Any) -> int:
        return (0 if x is None else int(x)) ^ (codec.MAGIC_COOKIE >> 16)

    def m2i(self, pkt: Packet | None, x: int) -> int:
        return x ^ (codec.MAGIC_COOKIE >> 16)


class _XorIPv4Field(IPField):
    """IPv4 address XOR the magic cookie (RFC 8489 §14.2)."""

    def i2m(self, pkt: Packet | None, x: Any) -> bytes:
        return _xor(super().i2m(pkt, x), _COOKIE)

    def m2i(self, pkt: Packet | None, x: bytes) -> str:
        return str(super().m2i(pkt, _xor(x, _COOKIE)))


class _XorIPv6Field(IP6Field):
    """IPv6 address XOR (magic cookie ‖ transaction id) (RFC 8489 §14.2)."""

    def i2m(self, pkt: Packet | None, x: Any) -> bytes:
        key = _COOKIE + (_txid_of(pkt) if pkt is not None else bytes(12))
        return _xor(super().i2m(pkt, x), key)

    def m2i(self, pkt: Packet | None, x: bytes) -> str:
        key = _COOKIE + (_txid_of(pkt) if pkt is not None else bytes(12))
        return str(super().m2i(pkt, _xor(x, key)))


class _FamilyField(ByteEnumField):
    """Address family; left unset, it follows the ``ip`` field (IPv6 when it holds a ':')."""

    def i2m(self, pkt: Packet | None, x: Any) -> int:
        if x is None and pkt is not None:
            return 2 if ":" in str(pkt.getfieldval("ip")) else 1
        return int(x or 0)


def _is_v6(p: Packet) -> bool:
    fam = p.getfieldval("family")
    return fam == 2 or (fam is None and ":" in str(p.getfieldval("ip")))


def _is_v4(p: Packet) -> bool:
    fam = p.getfieldval("family")
    return fam == 1 or (fam is None and ":" not in str(p.getfieldval("ip")))


def _set_v6(p: Packet, value: Any) -> bool:
    fam = p.getfieldval("family")
    return fam == 2 or (fam is None and ":" in str(value))


def _set_v4(p: Packet, value: Any) -> bool:
    fam = p.getfieldval("family")
    return fam == 1 or (fam is None and ":" not in str(value))


def _hdr(attr_type: int) -> list[Any]:
    return [ShortEnumField("type", attr_type, ATTR_NAMES), ShortField("length", None)]


# Kept only when the message carried them (non-zero padding, value bytes no field consumed).
_TAIL = [
    ConditionalField(XStrField("trailing", None), lambda p: bool(p.fields.get("trailing"))),
    ConditionalField(XStrField("pad", None), lambda p: bool((p.fields.get("pad") or b"").strip(b"\0"))),
]


class STUNAttribute(Packet):
    """One attribute TLV (RFC 8489 §14); this base class keeps any type as raw ``value``.

    Dissecting with this class picks the subclass registered for the type byte pair.
    """

    name = "STUN attribute"
    fields_desc: ClassVar[list[Any]] = [*_hdr(0), XStrField("value", b""), *_TAIL]
    registry: ClassVar[dict[int, type[STUNAttribute]]] = {}

    @classmethod
    def dispatch_hook(cls, _pkt: bytes | None = None, *args: Any, **kargs: Any) -> type[Packet]:
        if cls is STUNAttribute and _pkt and len(_pkt) >= 2:
            return STUNAttribute.registry.get(struct.unpack("!H", _pkt[:2])[0], STUNAttribute)
        return cls

    def do_dissect(self, s: bytes) -> bytes:
        # RFC 8489 §14: the value is exactly `length` bytes, then padding to a multiple of 4.
        raw = s
        self.raw_packet_cache_fields = {}
        length = struct.unpack("!H", s[2:4])[0] if len(s) >= 4 else 0
        end = min(len(s), 4 + length)
        pad_end = min(len(s), end + (-length % 4))
        body = s[:end]
        for f in self.fields_desc:
            if f.name in ("trailing", "pad"):
                continue
            if isinstance(f, ConditionalField) and not f._evalcond(self):
                continue
            body, val = f.getfield(self, body)
            self.fields[f.name] = val
        self.fields["trailing"] = body or None
        self.fields["pad"] = s[end:pad_end] or None
        self.raw_packet_cache = raw[:pad_end]
        self.explicit = 1
        return s[pad_end:]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s  # what follows is the next attribute

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        pad = self.fields.get("pad") or b""
        pad_len = len(pad) if pad.strip(b"\0") else 0
        value_len = len(p) - 4 - pad_len
        if self.length is None:
            p = p[:2] + struct.pack("!H", value_len) + p[4:]
        if not pad_len:
            p += bytes(-value_len % 4)
        return p + pay

    def value_bytes(self) -> bytes:
        """The value as on the wire: no TLV header, no padding."""
        raw = bytes(self)
        return raw[4 : 4 + struct.unpack("!H", raw[2:4])[0]]

    def to_codec(self) -> codec.StunAttribute:
        """The codec's dataclass for this attribute (raises DecodeError if the value is malformed)."""
        return codec.decode_attribute(self.type, self.value_bytes(), TxID(_txid_of(self)))

    def describe(self) -> str:
        """The codec's phrase (``xor-mapped 1.2.3.4:567``), or what is wrong with the value."""
        try:
            return self.to_codec().describe()
        except DecodeError as exc:
            return f"{ATTR_NAMES.get(self.type, hex(self.type)).lower()} (malformed: {exc.reason})"

    def mysummary(self) -> str:
        return self.describe()


def _attr(class_name: str, attr_type: int, *fields: Any, doc: str = "") -> type[STUNAttribute]:
    """A :class:`STUNAttribute` subclass for one type, with these value fields; registered."""
    cls = type(
        class_name,
        (STUNAttribute,),
        {
            "name": f"STUN {codec.attr_name(attr_type)}",
            "fields_desc": [*_hdr(attr_type), *fields, *_TAIL],
            "__module__": __name__,
            "__doc__": doc or f"{codec.attr_name(attr_type)}, the codec's {codec.REGISTRY[attr_type].__name__}",
        },
    )
    STUNAttribute.registry[int(attr_type)] = cls
    return cls


def _address(class_name: str, attr_type: int, *, xor: bool) -> type[STUNAttribute]:
    """RFC 8489 §14.1 (plain) / §14.2 (XOR): reserved, family, port, address (4 or 16 bytes)."""
    v4 = _XorIPv4Field("ip", "0.0.0.0") if xor else IPField("ip", "0.0.0.0")
    v6 = _XorIPv6Field("ip", "::") if xor else IP6Field("ip", "::")
    return _attr(
        class_name,
        attr_type,
        ByteField("reserved", 0),
        _FamilyField("family", None, _FAMILIES),
        _XorPortField("port", 0) if xor else ShortField("port", 0),
        MultipleTypeField([(v4, (_is_v4, _set_v4)), (v6, (_is_v6, _set_v6))], XStrField("ip", b"")),
        doc=f"{codec.attr_name(attr_type)}: ``ip`` and ``port`` in clear" + (" (XORed on the wire)" if xor else ""),
    )


# RFC 8489 §14.1, §14.2; RFC 5780 §7.3, §7.4; RFC 3489; RFC 8656
STUNMappedAddress = _address("STUNMappedAddress", AT.MAPPED_ADDRESS, xor=False)
STUNXorMappedAddress = _address("STUNXorMappedAddress", AT.XOR_MAPPED_ADDRESS, xor=True)
STUNXorMappedAddressAlt = _address("STUNXorMappedAddressAlt", AT.XOR_MAPPED_ADDRESS_ALT, xor=True)
STUNResponseOrigin = _address("STUNResponseOrigin", AT.RESPONSE_ORIGIN, xor=False)
STUNOtherAddress = _address("STUNOtherAddress", AT.OTHER_ADDRESS, xor=False)
STUNSourceAddress = _address("STUNSourceAddress", AT.SOURCE_ADDRESS, xor=False)
STUNChangedAddress = _address("STUNChangedAddress", AT.CHANGED_ADDRESS, xor=False)
STUNAlternateServer = _address("STUNAlternateServer", AT.ALTERNATE_SERVER, xor=False)
STUNXorPeerAddress = _address("STUNXorPeerAddress", AT.XOR_PEER_ADDRESS, xor=True)
STUNXorRelayedAddress = _address("STUNXorRelayedAddress", AT.XOR_RELAYED_ADDRESS, xor=True)
# UTF-8 text: RFC 8489 §14.3, §14.9, §14.10, §14.14 (``value`` is the raw bytes)
STUNUsername = _attr("STUNUsername", AT.USERNAME, StrField("value", b""))
STUNSoftware = _attr("STUNSoftware", AT.SOFTWARE, StrField("value", b""))
STUNRealm = _attr("STUNRealm", AT.REALM, StrField("value", b""))
STUNNonce = _attr("STUNNonce", AT.NONCE, StrField("value", b""))
# RFC 8489 §14.8: 21 reserved bits, class (hundreds), number, reason phrase; ``code`` = class*100+number
STUNErrorCode = _attr(
    "STUNErrorCode",
    AT.ERROR_CODE,
    BitField("reserved", 0, 21),
    BitField("err_class", 4, 3),
    ByteField("number", 0),
    StrField("reason", b""),
)
STUNErrorCode.code = property(lambda self: int(self.err_class) * 100 + int(self.number))  # type: ignore[attr-defined]
STUNUnknownAttributes = _attr(  # RFC 8489 §14.13
    "STUNUnknownAttributes", AT.UNKNOWN_ATTRIBUTES, FieldListField("types", [], XShortEnumField("", 0, ATTR_NAMES))
)
# RFC 8489 §14.5, §14.6, §14.7: FINGERPRINT with ``crc=None`` is computed when the STUN message is built
STUNMessageIntegrity = _attr("STUNMessageIntegrity", AT.MESSAGE_INTEGRITY, XStrFixedLenField("hmac", bytes(20), 20))
STUNMessageIntegritySha256 = _attr(
    "STUNMessageIntegritySha256", AT.MESSAGE_INTEGRITY_SHA256, XStrField("hmac", bytes(32))
)
STUNFingerprint = _attr("STUNFingerprint", AT.FINGERPRINT, XIntField("crc", None))
# RFC 5780 §7.2 (flag A 0x4 change IP, flag B 0x2 change port), §7.5, §7.6
STUNChangeRequest = _attr(
    "STUNChangeRequest",
    AT.CHANGE_REQUEST,
    BitField("unused", 0, 29),
    BitField("change_ip", 0, 1),
    BitField("change_port", 0, 1),
    BitField("unused2", 0, 1),
)
STUNResponsePort = _attr("STUNResponsePort", AT.RESPONSE_PORT, ShortField("port", 0), XShortField("unused", 0))
STUNPadding = _attr("STUNPadding", AT.PADDING, XStrField("value", b""))
# ICE, RFC 8445 §16.1
STUNPriority = _attr("STUNPriority", AT.PRIORITY, IntField("priority", 0))
STUNUseCandidate = _attr("STUNUseCandidate", AT.USE_CANDIDATE)
STUNIceControlled = _attr("STUNIceControlled", AT.ICE_CONTROLLED, XLongField("tiebreaker", 0))
STUNIceControlling = _attr("STUNIceControlling", AT.ICE_CONTROLLING, XLongField("tiebreaker", 0))


class STUN(Packet):
    """A STUN message (RFC 8489 §5, §6): type, length, magic cookie, transaction id, attributes.

    Bytes after the length the header declares are kept as a Padding layer (a pion server sends
    some, protocols.md §3.4).
    """

    name = "STUN"
    fields_desc: ClassVar[list[Any]] = [
        _TypeField("type", codec.encode_type(codec.Class.REQUEST, codec.Method.BINDING)),
        ShortField("length", None),
        XIntField("cookie", codec.MAGIC_COOKIE),
        XStrFixedLenField("txid", bytes(12), 12),
        PacketListField("attributes", [], STUNAttribute, length_from=lambda p: p.length),
    ]

    def extract_padding(self, s: bytes) -> tuple[bytes, bytes]:
        return b"", s

    def post_build(self, p: bytes, pay: bytes) -> bytes:
        buf = bytearray(p)
        if self.length is None:
            buf[2:4] = struct.pack("!H", len(buf) - codec.HEADER_LEN)
        off = codec.HEADER_LEN
        for attr in self.attributes:
            size = len(bytes(attr))
            if isinstance(attr, STUNFingerprint) and attr.crc is None and off + 8 <= len(buf):
                # RFC 8489 §14.7: CRC-32 of everything before FINGERPRINT, with the final length
                crc = (binascii.crc32(bytes(buf[:off])) ^ codec.FINGERPRINT_XOR) & 0xFFFFFFFF
                buf[off + 4 : off + 8] = struct.pack("!I", crc)
            off += size
        return bytes(buf) + pay

    @property
    def label(self) -> str:
        return type_label(self.type)

    def to_codec(self) -> codec.Message:
        """The codec's view of these bytes (raises DecodeError when they are malformed)."""
        return codec.decode(self.wire())

    def wire(self) -> bytes:
        """The message bytes, without any trailing bytes after the declared length."""
        raw = bytes(self)
        return raw[: codec.HEADER_LEN + struct.unpack("!H", raw[2:4])[0]]

    def mysummary(self) -> str:
        try:
            return self.to_codec().summary()
        except DecodeError as exc:
            return f"STUN {self.label} (malformed: {exc.reason}: {exc})"

    def hashret(self) -> bytes:
        return bytes(self.txid)

    def answers(self, other: Packet) -> int:
        if not isinstance(other, STUN) or other.txid != self.txid:
            return 0
        try:
            return int(codec.decode_type(self.type)[0] in (codec.Class.SUCCESS, codec.Class.ERROR))
        except DecodeError:
            return 0


__all__ = [  # the main names, then every attribute class
    "ATTR_NAMES",
    "STUN",
    "STUNAttribute",
    "type_label",
    *sorted({c.__name__ for c in STUNAttribute.registry.values()}),
]
