"""The scapy STUN layer against the STUN codec: same bytes for every golden vector, both ways.

design.md §2: each golden vector is built with the layer from fields (taken from the codec's
decoding) and compared with the codec's bytes, and the codec's bytes are dissected with the
layer and the fields compared. Hypothesis does the same for random messages of every attribute.
"""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import VECTORS
from toolkit.codec import stun as codec
from toolkit.packets import stun as layer
from toolkit.packets.stun import STUN
from toolkit.types import Endpoint, TxID

V = json.loads((VECTORS / "stun.json").read_text())
ALL = [v for section in ("responses", "rfc5769", "computed") for v in V[section]]

_ADDRESS = {
    codec.MappedAddress: layer.STUNMappedAddress,
    codec.XorMappedAddress: layer.STUNXorMappedAddress,
    codec.XorMappedAddressAlt: layer.STUNXorMappedAddressAlt,
    codec.ResponseOrigin: layer.STUNResponseOrigin,
    codec.OtherAddress: layer.STUNOtherAddress,
    codec.SourceAddress: layer.STUNSourceAddress,
    codec.ChangedAddress: layer.STUNChangedAddress,
    codec.AlternateServer: layer.STUNAlternateServer,
    codec.XorPeerAddress: layer.STUNXorPeerAddress,
    codec.XorRelayedAddress: layer.STUNXorRelayedAddress,
}
_TEXT = {
    codec.Username: layer.STUNUsername,
    codec.Software: layer.STUNSoftware,
    codec.Realm: layer.STUNRealm,
    codec.Nonce: layer.STUNNonce,
}


def layer_attr(a: codec.StunAttribute) -> layer.STUNAttribute:
    """The scapy layer for a codec attribute, built from fields (not from bytes)."""
    if type(a) in _ADDRESS:
        ep = a.endpoint  # type: ignore[attr-defined]
        if a.v4_in_v6:  # type: ignore[attr-defined]
            return _ADDRESS[type(a)](family=2, ip=f"::ffff:{ep.ip}", port=ep.port)
        return _ADDRESS[type(a)](ip=str(ep.ip), port=ep.port)
    if type(a) in _TEXT:
        return _TEXT[type(a)](value=a.value.encode())  # type: ignore[attr-defined]
    match a:
        case codec.ErrorCode(code=code, reason=reason):
            return layer.STUNErrorCode(err_class=code // 100, number=code % 100, reason=reason.encode())
        case codec.UnknownAttributes(types=types):
            return layer.STUNUnknownAttributes(types=list(types))
        case codec.MessageIntegrity(hmac=mac):
            return layer.STUNMessageIntegrity(hmac=mac)
        case codec.MessageIntegritySha256(hmac=mac):
            return layer.STUNMessageIntegritySha256(hmac=mac)
        case codec.Fingerprint(crc=crc):
            return layer.STUNFingerprint(crc=crc)
        case codec.ChangeRequest(change_ip=ip, change_port=port):
            return layer.STUNChangeRequest(change_ip=int(ip), change_port=int(port))
        case codec.ResponsePort(port=port):
            return layer.STUNResponsePort(port=port)
        case codec.Padding(data=data):
            return layer.STUNPadding(value=data)
        case codec.Priority(value=value):
            return layer.STUNPriority(priority=value)
        case codec.UseCandidate():
            return layer.STUNUseCandidate()
        case codec.IceControlled(tiebreaker=t):
            return layer.STUNIceControlled(tiebreaker=t)
        case codec.IceControlling(tiebreaker=t):
            return layer.STUNIceControlling(tiebreaker=t)
        case codec.UnknownAttribute(type=t, value=value):
            return layer.STUNAttribute(type=t, value=value)
    raise AssertionError(f"no layer for {a!r}")


def layer_message(m: codec.Message) -> STUN:
    return STUN(type=m.msg_type, txid=m.txid.raw, attributes=[layer_attr(a) for a in m.attributes])


@pytest.mark.parametrize("vec", ALL, ids=[v["name"] for v in ALL])
def test_layer_built_from_fields_gives_the_codec_bytes(vec: dict) -> None:
    wire = bytes.fromhex(vec["hex"])
    msg = codec.decode(wire)
    declared = codec.HEADER_LEN + int.from_bytes(wire[2:4], "big")
    # built from fields, both the layer and the codec pad with zeros (RFC 5769's samples use spaces)
    fresh = codec.Message(msg.msg_class, msg.method, msg.txid, msg.attributes)
    assert bytes(layer_message(msg)) == fresh.encode()
    assert msg.encode() == wire[:declared]  # a decoded message keeps its own padding bytes


@pytest.mark.parametrize("vec", ALL, ids=[v["name"] for v in ALL])
def test_layer_dissects_codec_bytes_into_the_same_fields(vec: dict) -> None:
    wire = bytes.fromhex(vec["hex"])
    pkt = STUN(wire)
    msg = codec.decode(wire)
    assert bytes(pkt) == wire  # trailing junk (pion vector) is kept as Padding
    assert pkt.txid == msg.txid.raw
    assert pkt.type == msg.msg_type
    assert [a.type for a in pkt.attributes] == [a.attr_type for a in msg.attributes]
    assert [a.to_codec() for a in pkt.attributes] == list(msg.attributes)
    assert pkt.to_codec() == msg
    for got, want in zip(pkt.attributes, msg.attributes, strict=True):  # the fields, not the bytes
        if isinstance(want, tuple(_ADDRESS)):
            assert Endpoint(ipaddress.ip_address(got.ip), got.port) == want.endpoint  # type: ignore[attr-defined]
        elif isinstance(want, tuple(_TEXT)):
            assert got.value.decode() == want.value  # type: ignore[attr-defined]
        elif isinstance(want, codec.Fingerprint):
            assert got.crc == want.crc
    if "mapped" in vec:
        assert msg.mapped_endpoint == Endpoint.parse(vec["mapped"])


@pytest.mark.parametrize("vec", ALL, ids=[v["name"] for v in ALL])
def test_summary_is_the_codec_summary(vec: dict) -> None:
    wire = bytes.fromhex(vec["hex"])
    assert STUN(wire).mysummary() == codec.decode(wire).summary()


def test_summary_reads_like_a_lesson() -> None:
    txid = TxID(bytes(range(1, 13)))
    wire = codec.binding_response(txid, Endpoint.parse("203.0.113.7:40001"))
    assert STUN(wire).mysummary() == "STUN Binding Success  xor-mapped 203.0.113.7:40001"
    req = STUN(codec.tailnode_request(txid))
    assert req.mysummary() == 'STUN Binding Request  software="tailnode" fingerprint ok'
    assert "(Binding Request)" in req.show(dump=True)


def test_fingerprint_left_unset_is_computed() -> None:
    txid = TxID(bytes(range(1, 13)))
    pkt = STUN(
        type="Binding Request",
        txid=txid.raw,
        attributes=[layer.STUNSoftware(value=b"tailnode"), layer.STUNFingerprint()],
    )
    assert bytes(pkt) == codec.tailnode_request(txid)
    assert codec.verify_fingerprint(bytes(pkt)) is True


def test_xor_ipv6_uses_the_transaction_id_of_the_message() -> None:
    txid = TxID(bytes(range(12)))
    ep = Endpoint.parse("[2001:db8::7]:4242")
    wire = codec.binding_response(txid, ep)
    built = STUN(type=0x0101, txid=txid.raw, attributes=[layer.STUNXorMappedAddress(ip="2001:db8::7", port=4242)])
    assert bytes(built) == wire
    assert STUN(wire).attributes[0].ip == "2001:db8::7"


def test_type_label_and_parse() -> None:
    assert layer.type_label(0x0111) == "Binding Error"
    assert STUN(type="Binding Indication").type == codec.encode_type(codec.Class.INDICATION, codec.Method.BINDING)
    with pytest.raises(ValueError, match="not a STUN message type"):
        STUN(type="Frobnicate Request")


def test_malformed_attribute_is_described_not_raised() -> None:
    bad = STUN(type=0x0101, attributes=[layer.STUNAttribute(type=0x0020, value=b"\x00\x07")])
    assert "xor-mapped-address (malformed: bad-length)" in bad.attributes[0].describe()
    assert "(malformed: bad-length" in STUN(bytes(bad)).mysummary()


def test_answers_matches_transaction_ids() -> None:
    txid = TxID(bytes(range(12)))
    req = STUN(codec.tailnode_request(txid))
    resp = STUN(codec.binding_response(txid, Endpoint.parse("1.2.3.4:5")))
    other = STUN(codec.binding_response(TxID(bytes(12)), Endpoint.parse("1.2.3.4:5")))
    assert resp.answers(req) and not req.answers(resp) and not other.answers(req)
    assert resp.hashret() == req.hashret()


# --- Hypothesis: random messages of every attribute; arbitrary bytes never break the layer ------

txids = st.binary(min_size=12, max_size=12).map(TxID)
ports = st.integers(0, 0xFFFF)
v4 = st.builds(Endpoint, st.ip_addresses(v=4), ports)
endpoints = st.one_of(v4, st.builds(Endpoint, st.ip_addresses(v=6), ports))
texts = st.text(st.characters(codec="utf-8"), max_size=20)
attributes = st.one_of(
    *[st.one_of(st.builds(c, endpoints), st.builds(c, v4, st.just(True))) for c in _ADDRESS],
    *[st.builds(c, texts) for c in _TEXT],
    st.builds(codec.ErrorCode, st.integers(300, 699), texts),
    st.builds(codec.UnknownAttributes, st.lists(ports, max_size=4).map(tuple)),
    st.builds(codec.MessageIntegrity, st.binary(min_size=20, max_size=20)),
    st.builds(codec.MessageIntegritySha256, st.binary(min_size=32, max_size=32)),
    st.builds(codec.Fingerprint, st.integers(0, 2**32 - 1)),
    st.builds(codec.ChangeRequest, st.booleans(), st.booleans()),
    st.builds(codec.ResponsePort, ports),
    st.builds(codec.Padding, st.binary(max_size=13)),
    st.builds(codec.Priority, st.integers(0, 2**32 - 1)),
    st.just(codec.UseCandidate()),
    st.builds(codec.IceControlled, st.integers(0, 2**64 - 1)),
    st.builds(codec.IceControlling, st.integers(0, 2**64 - 1)),
    st.builds(codec.UnknownAttribute, st.integers(0xC000, 0xFFFF), st.binary(max_size=11)),
)
messages = st.builds(
    codec.Message,
    st.sampled_from(list(codec.Class)),
    st.sampled_from(list(codec.Method)),
    txids,
    st.lists(attributes, max_size=5).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_random_messages_layer_equals_codec(msg: codec.Message) -> None:
    wire = msg.encode()
    assert bytes(layer_message(msg)) == wire
    pkt = STUN(wire)
    assert bytes(pkt) == wire
    assert pkt.to_codec() == msg


stunlike = st.one_of(
    st.binary(min_size=20, max_size=80),
    messages.map(lambda m: m.encode()).flatmap(
        lambda w: st.tuples(st.integers(20, len(w)), st.binary(max_size=6)).map(lambda t: w[: t[0]] + t[1])
    ),
)


@settings(max_examples=300, deadline=None)
@given(stunlike)
def test_arbitrary_bytes_dissect_round_trip_and_summarise(data: bytes) -> None:
    # 20+ bytes, as the demux hands them to STUN: never an exception, the bytes kept as they are
    pkt = STUN(data)
    assert bytes(pkt) == data
    assert isinstance(pkt.mysummary(), str)
    pkt.show(dump=True)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40).map(lambda b: b"\x00\x01" + b[:2] + b"\x21\x12\xa4\x42" + b[2:]))
def test_any_stun_looking_udp_payload_dissects_under_udp(data: bytes) -> None:
    from scapy.layers.inet import IP, UDP

    pkt = IP(bytes(IP(src="127.0.0.1", dst="127.0.0.1") / UDP(sport=5, dport=9) / data))
    assert bytes(pkt[UDP].payload) == data
    assert isinstance(pkt.summary(), str)
