"""STUN codec (toolkit/codec/stun.py): golden vectors, RFC 8489 type bits, integrity, Hypothesis."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import VECTORS
from toolkit.codec import stun
from toolkit.codec.stun import (
    REGISTRY,
    AlternateServer,
    AttrType,
    ChangedAddress,
    ChangeRequest,
    ChannelNumber,
    Class,
    Data,
    ErrorCode,
    Fingerprint,
    IceControlled,
    IceControlling,
    Lifetime,
    MappedAddress,
    Message,
    MessageIntegrity,
    MessageIntegritySha256,
    Method,
    Nonce,
    OtherAddress,
    Padding,
    Priority,
    Realm,
    RequestedTransport,
    ResponseOrigin,
    ResponsePort,
    Software,
    SourceAddress,
    StunAttribute,
    UnknownAttribute,
    UnknownAttributes,
    UseCandidate,
    Username,
    XorMappedAddress,
    XorMappedAddressAlt,
    XorPeerAddress,
    XorRelayedAddress,
)
from toolkit.errors import BadLengthError, BadMagicError, BadValueError, DecodeError, TruncatedError
from toolkit.types import Endpoint, TxID

V = json.loads((VECTORS / "stun.json").read_text())
PASSWORD = V["rfc5769_password"]
TXID = TxID(bytes(range(1, 13)))

# RFC 5769 §2.4, sample request with long-term authentication (MESSAGE-INTEGRITY, no FINGERPRINT).
# Username "マトリックス", password "The<U+00AD>M<U+00AA>tr<U+2168>" ("TheMatrIX" after SASLprep), realm example.org.
RFC5769_LONG_TERM = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e00060012e3839ee38388e383aae38383e382afe382b900000015001c662f2f34"
    "39396b39353464364f4c33346f4c394653547679363473410014000b6578616d706c652e6f72670000080014f67024656dd64a3e"
    "02b8e0712e85c9a28ca89666"
)
# RFC 8489 Appendix B.1 as corrected by erratum 6268: USERHASH, NONCE, REALM, PASSWORD-ALGORITHM (SHA-256),
# MESSAGE-INTEGRITY-SHA256 over the same user, realm and password.
RFC8489_B1 = bytes.fromhex(
    "000100902112a44278ad3433c6ad72c029da412e001e00204a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41"
    "407f1704001500296f624d61744a6f733241414143662f2f3439396b39353464364f4c33346f4c39465354767936347341000000"
    "0014000b6578616d706c652e6f726700001d000400020000001c0020b5c7bf005b6c52a21c51c5e892f81924136296cb927c4314"
    "9309278cc6518e65"
)
USERNAME_LT = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


# --- golden vectors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("vec", V["responses"], ids=_ids(V["responses"]))
def test_response_vector(vec: dict[str, Any]) -> None:
    data = bytes.fromhex(vec["hex"])
    assert stun.is_stun(data)
    msg = stun.decode(data)
    assert (msg.msg_class, msg.method) == (Class.SUCCESS, Method.BINDING)
    assert msg.txid == TxID.parse(vec["txid"])
    assert msg.mapped_endpoint == Endpoint.parse(vec["mapped"])
    declared = stun.HEADER_LEN + int.from_bytes(data[2:4], "big")
    assert msg.encode() == data[:declared]  # byte-identical up to the declared length
    assert stun.decode(msg.encode()) == msg


def test_response_vector_details() -> None:
    by_name = {v["name"]: bytes.fromhex(v["hex"]) for v in V["responses"]}
    sipgate = stun.decode(by_name["stun-sipgate-net-10000"])
    assert sipgate.get(XorMappedAddressAlt) is not None and sipgate.get(XorMappedAddress) is None
    assert sipgate.get(MappedAddress) == MappedAddress(Endpoint.parse("72.69.33.45:58539"))
    assert sipgate.software == "Vovida.org 0.96\x00"
    assert stun.decode(by_name["stun-powervoip-com-3478"]).get(XorMappedAddressAlt) is None
    pion = by_name["in-process-pion-server"]
    assert len(pion) > stun.HEADER_LEN + 0x24  # 8 junk bytes follow, ignored
    assert stun.decode(pion).software == "endpointer" and stun.verify_fingerprint(pion) is True
    v6 = stun.decode(by_name["stuntman-server-ipv6"])
    assert v6.get(ResponseOrigin) == ResponseOrigin(Endpoint.parse("[2604:a880:2:d1::c5:7001]:3478"))
    no4in6 = stun.decode(by_name["no-4in6"]).get(XorMappedAddress)
    assert no4in6 is not None and no4in6.v4_in_v6 and no4in6.endpoint.ip.version == 4
    assert stun.decode(by_name["software-a"]).software == "a"
    assert stun.decode(by_name["software-abc"]).software == "abc"


@pytest.mark.parametrize("vec", V["rfc5769"], ids=_ids(V["rfc5769"]))
def test_rfc5769_vector(vec: dict[str, Any]) -> None:
    data = bytes.fromhex(vec["hex"])
    msg = stun.decode(data)
    key = stun.short_term_key(PASSWORD)
    assert key == PASSWORD.encode()
    assert stun.verify_fingerprint(data) is vec["has_fingerprint"]
    assert stun.verify_integrity(data, key) is vec["has_integrity"]
    assert stun.verify_integrity(data, b"wrong password") is False
    if "mapped" in vec:
        assert msg.mapped_endpoint == Endpoint.parse(vec["mapped"])
    # RFC 5769 pads with spaces: the decoded message keeps them and re-encodes to the same bytes
    assert msg.encode() == data
    assert stun.decode(msg.encode()) == msg
    # a message built from the same fields pads with zeros (what every sender should write)
    fresh = stun.Message(msg.msg_class, msg.method, msg.txid, msg.attributes)
    zero_padded = fresh.encode()
    assert stun.decode(zero_padded) == msg and len(zero_padded) == len(data)
    types = [a.attr_type for a in msg.attributes]
    assert types[-2:] == [AttrType.MESSAGE_INTEGRITY, AttrType.FINGERPRINT]


@pytest.mark.parametrize("vec", V["rfc5769"], ids=_ids(V["rfc5769"]))
@pytest.mark.parametrize("where", ["txid", "first-attribute", "integrity-value"])
def test_rfc5769_one_bit_flip_fails_both_checks(vec: dict[str, Any], where: str) -> None:
    data = bytearray.fromhex(vec["hex"])
    mi_offset = len(data) - 8 - 24
    pos = {"txid": 8, "first-attribute": 24, "integrity-value": mi_offset + 4 + 7}[where]
    data[pos] ^= 0x01
    flipped = bytes(data)
    assert stun.verify_fingerprint(flipped) is False
    assert stun.verify_integrity(flipped, stun.short_term_key(PASSWORD)) is False


def test_rfc5769_sample_request_attributes() -> None:
    data = bytes.fromhex(V["rfc5769"][0]["hex"])
    msg = stun.decode(data)
    assert msg.software == "STUN test client"
    assert msg.get(Username) == Username("evtj:h6vY")
    assert msg.get(Priority) == Priority(0x6E0001FF)
    assert msg.get(IceControlled) == IceControlled(0x932FF9B151263B36)


def test_rfc5769_long_term_vector() -> None:
    msg = stun.decode(RFC5769_LONG_TERM)
    assert msg.get(Username) == Username(USERNAME_LT)
    assert msg.get(Realm) == Realm("example.org") and msg.get(Nonce) == Nonce("f//499k954d6OL34oL9FSTvy64sA")
    raw_password = "The\u00adM\u00aatr\u2168"
    key = stun.long_term_key(USERNAME_LT, "example.org", raw_password, saslprep=True)
    assert key == hashlib.md5(f"{USERNAME_LT}:example.org:TheMatrIX".encode()).digest()
    assert stun.verify_integrity(RFC5769_LONG_TERM, key) is True
    assert stun.verify_integrity(RFC5769_LONG_TERM, stun.long_term_key(USERNAME_LT, "example.org", "TheMatrIX"))
    # OpaqueString (RFC 8489) keeps the soft hyphen, so the raw password gives another key
    assert (
        stun.verify_integrity(RFC5769_LONG_TERM, stun.long_term_key(USERNAME_LT, "example.org", raw_password)) is False
    )
    assert stun.verify_fingerprint(RFC5769_LONG_TERM) is None
    assert msg.encode() == RFC5769_LONG_TERM


def test_rfc8489_sha256_vector() -> None:
    msg = stun.decode(RFC8489_B1)
    assert [a.attr_type for a in msg.attributes] == [0x001E, 0x0015, 0x0014, 0x001D, 0x001C]
    assert isinstance(msg.attributes[0], UnknownAttribute) and len(msg.attributes[0].value) == 32
    key = stun.long_term_key(USERNAME_LT, "example.org", "TheMatrIX", algorithm="sha256")
    assert stun.verify_integrity_sha256(RFC8489_B1, key) is True
    assert (
        stun.verify_integrity_sha256(
            RFC8489_B1, stun.long_term_key(USERNAME_LT, "example.org", "x", algorithm="sha256")
        )
        is False
    )
    assert stun.verify_integrity(RFC8489_B1, key) is None
    assert msg.encode() == RFC8489_B1


@pytest.mark.parametrize("vec", V["computed"], ids=_ids(V["computed"]))
def test_computed_vector(vec: dict[str, Any]) -> None:
    txid = TxID.parse(vec["txid"])
    data = bytes.fromhex(vec["hex"])
    if "mapped" in vec:
        built = stun.binding_response(txid, Endpoint.parse(vec["mapped"]))
    else:
        built = stun.tailnode_request(txid)
        assert len(built) == 40
        assert built[20:22] == b"\x80\x22" and built[24:32] == b"tailnode"  # TestAttrOrderForXdpDERP
        assert stun.binding_request(txid, software="tailnode") == built
        assert stun.verify_fingerprint(built) is True
    assert built.hex() == vec["hex"]
    assert stun.decode(data).encode() == data


@pytest.mark.parametrize("hexdata", V["is_stun"]["true"])
def test_is_stun_true(hexdata: str) -> None:
    assert stun.is_stun(bytes.fromhex(hexdata)) is True


@pytest.mark.parametrize("hexdata", V["is_stun"]["false"])
def test_is_stun_false(hexdata: str) -> None:
    assert stun.is_stun(bytes.fromhex(hexdata)) is False


# --- message type bits (RFC 8489 §5) ------------------------------------------------------------------

METHODS = sorted({*range(0, 0x1000, 37), 0xFFF, *(int(m) for m in Method)})


@pytest.mark.parametrize("cls", list(Class))
@pytest.mark.parametrize("method", METHODS)
def test_encode_type_bit_layout(cls: Class, method: int) -> None:
    t = stun.encode_type(cls, method)
    # type bits 13..0 are M11 M10 M9 M8 M7 C1 M6 M5 M4 C0 M3 M2 M1 M0
    layout = [("M", 0), ("M", 1), ("M", 2), ("M", 3), ("C", 0), ("M", 4), ("M", 5), ("M", 6), ("C", 1)]
    layout += [("M", i) for i in range(7, 12)]
    for pos, (kind, i) in enumerate(layout):
        assert (t >> pos) & 1 == ((method if kind == "M" else int(cls)) >> i) & 1
    assert t < 0x4000
    assert stun.decode_type(t) == (cls, method)


def test_type_examples_and_exhaustive_inverse() -> None:
    assert stun.encode_type(Class.REQUEST, Method.BINDING) == 0x0001
    assert stun.encode_type(Class.INDICATION, Method.BINDING) == 0x0011
    assert stun.encode_type(Class.SUCCESS, Method.BINDING) == 0x0101
    assert stun.encode_type(Class.ERROR, Method.BINDING) == 0x0111
    assert stun.encode_type(Class.SUCCESS, Method.ALLOCATE) == 0x0103
    assert stun.encode_type(Class.INDICATION, Method.SEND) == 0x0016
    for t in range(0x4000):
        assert stun.encode_type(*stun.decode_type(t)) == t
    with pytest.raises(BadMagicError):
        stun.decode_type(0x4001)
    with pytest.raises(BadValueError):
        stun.encode_type(Class.REQUEST, 0x1000)


def test_method_and_class_names() -> None:
    assert stun.method_name(1) == "Binding"
    assert stun.method_name(0x123) == "Method 0x123"
    assert stun.method_name(Method.CREATE_PERMISSION) == "CreatePermission"
    assert stun.method_name(0x080) == "GOOG-PING"
    assert [c.label for c in Class] == ["Request", "Indication", "Success", "Error"]
    assert isinstance(stun.decode_type(0x0001)[1], Method)
    cls, m = stun.decode_type(stun.encode_type(Class.INDICATION, 0x123))
    assert (cls, m, type(m)) == (Class.INDICATION, 0x123, int)


# --- decoding rules ---------------------------------------------------------------------------------------


def _raw(attrs: bytes, msg_type: int = 0x0101, length: int | None = None, cookie: int = 0x2112A442) -> bytes:
    n = len(attrs) if length is None else length
    return struct.pack("!HHI", msg_type, n, cookie) + TXID.raw + attrs


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", TruncatedError),
        (_raw(b"")[:19], TruncatedError),
        (_raw(b"", msg_type=0x4101), BadMagicError),
        (_raw(b"", msg_type=0x8001), BadMagicError),
        (_raw(b"", cookie=0x2112A443), BadMagicError),
        (_raw(b"\x00" * 4, length=2), BadLengthError),
        (_raw(b"", length=4), TruncatedError),
        (_raw(b"\x80\x22\x00\x08abcd"), TruncatedError),  # attribute overruns the message
        (_raw(b"\x00\x20\x00\x07\x00\x01\x00\x00\x00\x00\x00\x00"), BadLengthError),
        (_raw(b"\x00\x20\x00\x08\x00\x03\x00\x00\x00\x00\x00\x00"), BadValueError),  # family 3
        (_raw(b"\x00\x01\x00\x14\x00\x01" + bytes(18)), BadLengthError),  # v4 family, v6 length
        (_raw(b"\x80\x22\x00\x02\xff\xfe\x00\x00"), BadValueError),  # SOFTWARE not UTF-8
        (_raw(b"\x00\x09\x00\x04\x00\x00\x07\x00"), BadValueError),  # ERROR-CODE class 7
        (_raw(b"\x00\x09\x00\x04\x00\x00\x04\x64"), BadValueError),  # ERROR-CODE number 100
        (_raw(b"\x00\x0a\x00\x03\x00\x01\x00\x00"), BadLengthError),  # UNKNOWN-ATTRIBUTES odd
        (_raw(b"\x00\x08\x00\x04\x00\x00\x00\x00"), BadLengthError),  # MESSAGE-INTEGRITY 4 bytes
        (_raw(b"\x00\x1c\x00\x0c" + bytes(12)), BadLengthError),  # MESSAGE-INTEGRITY-SHA256 12 bytes
        (_raw(b"\x80\x28\x00\x02\x00\x00\x00\x00"), BadLengthError),  # FINGERPRINT 2 bytes
        (_raw(b"\x00\x25\x00\x04\x00\x00\x00\x00"), BadLengthError),  # USE-CANDIDATE with a value
    ],
)
def test_decode_rejects(data: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        stun.decode(data)


def test_trailing_bytes_ignored_and_padding_read() -> None:
    body = b"\x80\x22\x00\x01a\x00\x00\x00"
    data = _raw(body) + b"\x01\x01\x00\x24junk"
    msg = stun.decode(data)
    assert msg.attributes == (Software("a"),)
    assert msg.encode() == _raw(body)
    assert msg.wire == _raw(body)


def test_unknown_attributes_and_methods_are_kept() -> None:
    attrs = b"\x7f\xf0\x00\x03xyz\x00" + b"\xc0\x01\x00\x00" + b"\x00\x2a\x00\x04\x01\x02\x03\x04"
    data = _raw(attrs, msg_type=stun.encode_type(Class.INDICATION, 0x123))
    msg = stun.decode(data)
    assert msg.method == 0x123 and not isinstance(msg.method, Method)
    assert msg.attributes == (
        UnknownAttribute(0x7FF0, b"xyz"),
        UnknownAttribute(0xC001, b""),
        UnknownAttribute(AttrType.CONNECTION_ID, b"\x01\x02\x03\x04"),
    )
    unknown = msg.attributes[0]
    assert isinstance(unknown, UnknownAttribute) and unknown.comprehension_required
    assert msg.encode() == data
    assert msg.summary() == "STUN Method 0x123 Indication  0x7ff0(3B) 0xc001(0B) connection-id(4B)"


def test_v4_in_v6_flag() -> None:
    ep = Endpoint.parse("1.2.3.4:5")
    for cls in (MappedAddress, XorMappedAddress):
        plain, mapped = cls(ep), cls(ep, v4_in_v6=True)
        assert len(plain.value_bytes(TXID)) == 8 and len(mapped.value_bytes(TXID)) == 20
        assert stun.decode(Message(Class.SUCCESS, 1, TXID, (mapped,)).encode()).attributes == (mapped,)
    with pytest.raises(BadValueError):
        MappedAddress(Endpoint.parse("[::1]:5"), v4_in_v6=True)


def test_mapped_endpoint_precedence() -> None:
    a, b, c = (Endpoint.parse(f"10.0.0.{i}:{i}") for i in (1, 2, 3))
    attrs: tuple[StunAttribute, ...] = (MappedAddress(a), XorMappedAddressAlt(b), XorMappedAddress(c))
    assert Message(Class.SUCCESS, 1, TXID, attrs).mapped_endpoint == c
    assert Message(Class.SUCCESS, 1, TXID, attrs[:2]).mapped_endpoint == b
    assert Message(Class.SUCCESS, 1, TXID, attrs[:1]).mapped_endpoint == a
    assert Message(Class.SUCCESS, 1, TXID, ()).mapped_endpoint is None
    assert Message(Class.SUCCESS, 1, TXID, attrs).get(Software) is None


# --- encoding, integrity, builders ----------------------------------------------------------------------


def test_encode_appends_integrity_sha256_fingerprint_in_rfc_order() -> None:
    msg = Message(Class.REQUEST, Method.BINDING, TXID, (Username("alice:bob"), Software("natkit")))
    data = msg.encode(integrity_key=b"k1", integrity_sha256_key=b"k2", fingerprint=True)
    decoded = stun.decode(data)
    assert [type(a) for a in decoded.attributes] == [
        Username,
        Software,
        MessageIntegrity,
        MessageIntegritySha256,
        Fingerprint,
    ]
    assert stun.verify_integrity(data, b"k1") is True and stun.verify_integrity(data, b"k2") is False
    assert stun.verify_integrity_sha256(data, b"k2") is True and stun.verify_integrity_sha256(data, b"k1") is False
    assert stun.verify_fingerprint(data) is True
    assert decoded.encode() == data  # integrity and fingerprint re-encode verbatim
    # MESSAGE-INTEGRITY is computed with the length pointing just past itself (RFC 8489 §14.5)
    prefix = data[: -8 - 36 - 24]
    covered = prefix[:2] + (len(prefix) - 20 + 24).to_bytes(2, "big") + prefix[4:]
    assert decoded.attributes[2] == MessageIntegrity(hmac.new(b"k1", covered, "sha1").digest())


def test_verify_absent_and_misplaced() -> None:
    plain = stun.binding_request(TXID, fingerprint=False)
    assert stun.verify_fingerprint(plain) is None
    assert stun.verify_integrity(plain, b"k") is None and stun.verify_integrity_sha256(plain, b"k") is None
    good = stun.binding_request(TXID)
    fp = stun.decode(good).get(Fingerprint)
    assert fp is not None
    misplaced = Message(Class.REQUEST, 1, TXID, (fp, Software("after"))).encode()
    assert stun.verify_fingerprint(misplaced) is False
    with pytest.raises(DecodeError):
        stun.verify_fingerprint(b"\x00" * 10)


def test_binding_request_options() -> None:
    data = stun.binding_request(TXID, software="natkit", change_ip=True, response_port=4000, padding=12)
    msg = stun.decode(data)
    assert msg.attributes[:-1] == (
        Software("natkit"),
        ChangeRequest(True, False),
        ResponsePort(4000),
        Padding(bytes(12)),
    )
    assert isinstance(msg.attributes[-1], Fingerprint) and stun.verify_fingerprint(data)
    assert stun.decode(stun.binding_request(TXID, change_port=True, fingerprint=False)).attributes == (
        ChangeRequest(False, True),
    )
    assert stun.decode(stun.binding_request(TXID)).attributes[0].attr_type == AttrType.FINGERPRINT
    assert Padding.zeros(5).length == 5


def test_binding_and_error_response_options() -> None:
    mapped, origin, other = (Endpoint.parse(s) for s in ("[2001:db8::7]:40001", "127.0.0.1:3478", "127.0.0.2:3479"))
    data = stun.binding_response(
        TXID, mapped, software="natkit", response_origin=origin, other_address=other, fingerprint=True
    )
    msg = stun.decode(data)
    assert msg.attributes[:-1] == (
        XorMappedAddress(mapped),
        ResponseOrigin(origin),
        OtherAddress(other),
        Software("natkit"),
    )
    assert stun.verify_fingerprint(data) is True
    err = stun.decode(stun.error_response(TXID, Method.ALLOCATE, 420, "Unknown Attribute", (0x0024, 0x7FF0)))
    assert (err.msg_class, err.method, err.txid) == (Class.ERROR, Method.ALLOCATE, TXID)
    assert err.attributes == (ErrorCode(420, "Unknown Attribute"), UnknownAttributes((0x0024, 0x7FF0)))
    with pytest.raises(BadValueError):
        ErrorCode(200, "not an error")


def test_summary_lines() -> None:
    ok = stun.binding_response(TXID, Endpoint.parse("203.0.113.7:40001"))
    assert stun.decode(ok).summary() == "STUN Binding Success  xor-mapped 203.0.113.7:40001"
    assert (
        stun.decode(stun.tailnode_request(TXID)).summary() == 'STUN Binding Request  software="tailnode" fingerprint ok'
    )
    err = stun.error_response(TXID, Method.BINDING, 420, "Unknown Attribute")
    assert stun.decode(err).summary() == "STUN Binding Error 420 Unknown Attribute"
    bad = bytearray(stun.tailnode_request(TXID))
    bad[-1] ^= 1
    assert stun.decode(bytes(bad)).summary().endswith("fingerprint bad")
    # a message built in code (no wire bytes) checks its own encoding
    built = Message(Class.REQUEST, 1, TXID, stun.decode(stun.tailnode_request(TXID)).attributes)
    assert built.summary().endswith("fingerprint ok")


def test_keys() -> None:
    assert stun.short_term_key("pa\u00a0ss") == b"pa ss"  # OpaqueString: non-ASCII space -> U+0020
    assert stun.short_term_key("e\u0301") == "\u00e9".encode()  # NFC
    assert stun.short_term_key("The\u00adM\u00aatr\u2168", saslprep=True) == b"TheMatrIX"
    assert stun.long_term_key("u", "r", "p") == hashlib.md5(b"u:r:p").digest()
    assert stun.long_term_key("u", "r", "p", algorithm="sha256") == hashlib.sha256(b"u:r:p").digest()
    with pytest.raises(BadValueError):
        stun.long_term_key("u", "r", "p", algorithm="sha1")


# --- Hypothesis -------------------------------------------------------------------------------------------

txids = st.binary(min_size=12, max_size=12).map(TxID)
ports = st.integers(0, 0xFFFF)
v4_endpoints = st.builds(Endpoint, st.ip_addresses(v=4), ports)
endpoints = st.one_of(v4_endpoints, st.builds(Endpoint, st.ip_addresses(v=6), ports))
texts = st.text(st.characters(codec="utf-8"), max_size=30)
u32 = st.integers(0, 0xFFFFFFFF)
ADDRESS_CLASSES = (
    MappedAddress,
    XorMappedAddress,
    XorMappedAddressAlt,
    ResponseOrigin,
    OtherAddress,
    SourceAddress,
    ChangedAddress,
    AlternateServer,
    XorPeerAddress,
    XorRelayedAddress,
)
ATTRIBUTE_STRATEGIES: dict[type[StunAttribute], st.SearchStrategy[StunAttribute]] = {
    **{
        cls: st.one_of(st.builds(cls, endpoints), st.builds(cls, v4_endpoints, st.just(True)))
        for cls in ADDRESS_CLASSES
    },
    **{cls: st.builds(cls, texts) for cls in (Username, Software, Realm, Nonce)},
    ErrorCode: st.builds(ErrorCode, st.integers(300, 699), texts),
    UnknownAttributes: st.builds(UnknownAttributes, st.lists(ports, max_size=5).map(tuple)),
    MessageIntegrity: st.builds(MessageIntegrity, st.binary(min_size=20, max_size=20)),
    MessageIntegritySha256: st.sampled_from([16, 20, 24, 28, 32]).flatmap(
        lambda n: st.builds(MessageIntegritySha256, st.binary(min_size=n, max_size=n))
    ),
    Fingerprint: st.builds(Fingerprint, u32),
    ChangeRequest: st.builds(ChangeRequest, st.booleans(), st.booleans()),
    ResponsePort: st.builds(ResponsePort, ports),
    Padding: st.builds(Padding, st.binary(max_size=24)),
    Priority: st.builds(Priority, u32),
    UseCandidate: st.just(UseCandidate()),
    IceControlled: st.builds(IceControlled, st.integers(0, 2**64 - 1)),
    IceControlling: st.builds(IceControlling, st.integers(0, 2**64 - 1)),
    ChannelNumber: st.builds(ChannelNumber, ports),
    Lifetime: st.builds(Lifetime, u32),
    Data: st.builds(Data, st.binary(max_size=24)),
    RequestedTransport: st.builds(RequestedTransport, st.integers(0, 255)),
    UnknownAttribute: st.builds(UnknownAttribute, ports.filter(lambda t: t not in REGISTRY), st.binary(max_size=24)),
}
attributes = st.one_of(*ATTRIBUTE_STRATEGIES.values())
messages = st.builds(
    Message, st.sampled_from(Class), st.integers(0, 0xFFF), txids, st.lists(attributes, max_size=8).map(tuple)
)


def test_strategies_cover_every_attribute_class() -> None:
    assert set(ATTRIBUTE_STRATEGIES) == {*REGISTRY.values(), UnknownAttribute}


@settings(max_examples=400)
@given(st.binary(max_size=120))
def test_decode_arbitrary_bytes_raises_only_decode_error(data: bytes) -> None:
    try:
        msg = stun.decode(data)
    except DecodeError:
        return
    assert stun.decode(msg.encode()) == msg


def _tlv(attr_type: int, value: bytes) -> bytes:
    return struct.pack("!HH", attr_type, len(value)) + value + bytes(-len(value) % 4)


attr_types = st.one_of(st.sampled_from(sorted(REGISTRY)), ports)
raw_attrs = st.lists(st.tuples(attr_types, st.binary(max_size=24)), max_size=6)


@settings(max_examples=400)
@given(st.integers(0, 0x3FFF), txids, raw_attrs, st.binary(max_size=8), st.booleans())
def test_decode_valid_header_random_attributes(
    msg_type: int, txid: TxID, attrs: list[tuple[int, bytes]], tail: bytes, cut: bool
) -> None:
    body = b"".join(_tlv(t, v) for t, v in attrs)
    if cut and body:  # a length field that overruns: make the last attribute claim more than there is
        body = body[:-4] if len(body) > 4 else body
    data = struct.pack("!HHI", msg_type, len(body), stun.MAGIC_COOKIE) + txid.raw + body + tail
    try:
        msg = stun.decode(data)
    except DecodeError:
        return
    assert msg.txid == txid and stun.encode_type(msg.msg_class, msg.method) == msg_type
    assert stun.decode(msg.encode()) == msg
    for check in (stun.verify_fingerprint(data), stun.verify_integrity(data, b"k")):
        assert check in (None, True, False)


@settings(max_examples=300)
@given(messages)
def test_round_trip(msg: Message) -> None:
    data = msg.encode()
    assert stun.is_stun(data)
    assert stun.decode(data) == msg
    assert stun.decode(data + b"trailing") == msg


@settings(max_examples=200)
@given(messages, st.binary(min_size=1, max_size=40), st.binary(min_size=1, max_size=40))
def test_integrity_and_fingerprint_verify(msg: Message, key: bytes, key256: bytes) -> None:
    plain = Message(msg.msg_class, msg.method, msg.txid, tuple(a for a in msg.attributes if not _is_check(a)))
    data = plain.encode(integrity_key=key, integrity_sha256_key=key256, fingerprint=True)
    assert stun.verify_integrity(data, key) is True
    assert stun.verify_integrity_sha256(data, key256) is True
    assert stun.verify_fingerprint(data) is True
    assert stun.decode(data).attributes[: len(plain.attributes)] == plain.attributes


def _is_check(a: StunAttribute) -> bool:
    return isinstance(a, MessageIntegrity | MessageIntegritySha256 | Fingerprint)


@settings(max_examples=200)
@given(st.binary(max_size=80))
def test_verifiers_on_arbitrary_bytes(data: bytes) -> None:
    candidate = stun.tailnode_request(TXID)[:20] + data
    for fn in (stun.verify_fingerprint, lambda d: stun.verify_integrity(d, b"k")):
        try:
            assert fn(candidate) in (None, True, False)
        except DecodeError:
            pass


def test_endpoint_in_address_attributes_is_unmapped() -> None:
    v4mapped = Endpoint(ipaddress.IPv6Address("::ffff:1.2.3.4"), 9)
    assert XorMappedAddress(v4mapped).endpoint == Endpoint.parse("1.2.3.4:9")


def test_summary_after_replace_uses_current_fields() -> None:
    decoded = stun.decode(stun.tailnode_request(TXID))
    changed = dataclasses.replace(decoded, txid=TxID(bytes(12)))  # keeps the old wire bytes
    assert changed.summary().endswith("fingerprint bad")  # the stored CRC no longer matches the new txid
    assert decoded.summary().endswith("fingerprint ok")
