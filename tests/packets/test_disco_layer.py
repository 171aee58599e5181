"""The scapy disco and Geneve layers against the codecs: golden vectors, sealed wrappers, summaries."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import VECTORS
from toolkit.codec import disco as codec
from toolkit.codec import geneve as geneve_codec
from toolkit.crypto import disco as disco_crypto
from toolkit.crypto import keys
from toolkit.packets import disco as layer
from toolkit.packets.disco import Disco, DiscoMessage, TSGeneve
from toolkit.packets.wireguard import WireGuardTransport
from toolkit.types import DiscoPublicKey, Endpoint, NodePublicKey, TxID

V = json.loads((VECTORS / "disco.json").read_text())
K = bytes.fromhex(V["fixtures"]["K"])
TX = TxID(bytes.fromhex(V["fixtures"]["txid"]))


def _ep_layers(endpoints: tuple[Endpoint, ...]) -> list[layer.DiscoEndpoint]:
    return [layer.DiscoEndpoint(ip=str(ep.ip), port=ep.port) for ep in endpoints]


def layer_message(m: codec.Message) -> DiscoMessage:
    """The scapy layer for a codec message, built from fields."""
    match m:
        case codec.Ping(txid=txid, node_key=key, padding=pad):
            return layer.DiscoPing(txid=txid.raw, node_key=key.raw if key else None, padding=bytes(pad))
        case codec.Pong(txid=txid, src=src):
            return layer.DiscoPong(txid=txid.raw, src=str(src.ip), port=src.port)
        case codec.CallMeMaybe(endpoints=eps):
            return layer.DiscoCallMeMaybe(endpoints=_ep_layers(eps))
        case codec.BindUDPRelayEndpoint() | codec.BindUDPRelayEndpointChallenge() | codec.BindUDPRelayEndpointAnswer():
            cls = {4: layer.DiscoBindUDPRelayEndpoint, 5: layer.DiscoBindUDPRelayEndpointChallenge}.get(
                m.TYPE, layer.DiscoBindUDPRelayEndpointAnswer
            )
            return cls(vni=m.vni, generation=m.generation, remote_key=m.remote_key.raw, challenge=m.challenge)
        case codec.AllocateUDPRelayEndpointRequest(client_disco=(a, b), generation=gen):
            return layer.DiscoAllocateUDPRelayEndpointRequest(
                client_disco_a=a.raw, client_disco_b=b.raw, generation=gen
            )
        case codec.CallMeMaybeVia() | codec.AllocateUDPRelayEndpointResponse():
            fields = dict(
                server_disco=m.server_disco.raw,
                client_disco_a=m.client_disco[0].raw,
                client_disco_b=m.client_disco[1].raw,
                lamport_id=m.lamport_id,
                vni=m.vni,
                bind_lifetime_ns=m.bind_lifetime_ns,
                steady_state_lifetime_ns=m.steady_state_lifetime_ns,
                endpoints=_ep_layers(m.endpoints),
            )
            if isinstance(m, codec.CallMeMaybeVia):
                return layer.DiscoCallMeMaybeVia(**fields)
            return layer.DiscoAllocateUDPRelayEndpointResponse(generation=m.generation, **fields)
    raise AssertionError(m)


# protocols.md §1.3, the relay vectors (not in vectors/disco.json): built with the codec from the
# fixtures there; the expected hex is copied from §1.3.
_CD0 = DiscoPublicKey(K[:3] + b"\x03" + K[4:])
_CD1 = DiscoPublicKey(K[:4] + b"\x04" + K[5:])
_EPS = (Endpoint.parse("1.2.3.4:567"), Endpoint.parse("[2001::3456]:789"))
_RELAY = dict(lamport_id=123, vni=456, bind_lifetime_ns=10**9, steady_state_lifetime_ns=60 * 10**9, endpoints=_EPS)
_BIND = dict(vni=1, generation=2, remote_key=DiscoPublicKey(K), challenge=bytes(range(32)))
RELAY_VECTORS = {
    "bind_udp_relay_endpoint": codec.BindUDPRelayEndpoint(**_BIND),  # type: ignore[arg-type]
    "bind_challenge": codec.BindUDPRelayEndpointChallenge(**_BIND),  # type: ignore[arg-type]
    "bind_answer": codec.BindUDPRelayEndpointAnswer(**_BIND),  # type: ignore[arg-type]
    "call_me_maybe_via": codec.CallMeMaybeVia(DiscoPublicKey(K), (_CD0, _CD1), **_RELAY),  # type: ignore[arg-type]
    "alloc_request": codec.AllocateUDPRelayEndpointRequest((_CD0, _CD1), 1),
    "alloc_response": codec.AllocateUDPRelayEndpointResponse(1, DiscoPublicKey(K), (_CD0, _CD1), **_RELAY),  # type: ignore[arg-type]
}
RELAY_HEX = {  # protocols.md §1.3, copied
    "bind_udp_relay_endpoint": (
        "040000000001000000020001020000000000000000000000000000000000000000000000000000001e1f000102030405"
        "060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    ),
    "bind_challenge": (
        "050000000001000000020001020000000000000000000000000000000000000000000000000000001e1f000102030405"
        "060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    ),
    "bind_answer": (
        "060000000001000000020001020000000000000000000000000000000000000000000000000000001e1f000102030405"
        "060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    ),
    "call_me_maybe_via": (
        "07000001020000000000000000000000000000000000000000000000000000001e1f0001020300000000000000000000"
        "000000000000000000000000000000001e1f000102000400000000000000000000000000000000000000000000000000"
        "1e1f000000000000007b000001c8000000003b9aca000000000df847580000000000000000000000ffff010203040237"
        "200100000000000000000000000034560315"
    ),
    "alloc_request": (
        "08000001020300000000000000000000000000000000000000000000000000001e1f0001020004000000000000000000"
        "000000000000000000000000000000001e1f00000001"
    ),
    "alloc_response": (
        "0900000000010001020000000000000000000000000000000000000000000000000000001e1f00010203000000000000"
        "00000000000000000000000000000000000000001e1f0001020004000000000000000000000000000000000000000000"
        "000000001e1f000000000000007b000001c8000000003b9aca000000000df847580000000000000000000000ffff0102"
        "03040237200100000000000000000000000034560315"
    ),
}


@pytest.mark.parametrize("vec", V["cases"], ids=[v["name"] for v in V["cases"]])
def test_golden_plaintext_layer_and_codec_agree(vec: dict) -> None:
    wire = bytes.fromhex(vec["hex"])
    msg = codec.decode_message(wire)
    assert bytes(layer_message(msg)) == msg.encode() == wire
    pkt = DiscoMessage(wire)
    assert type(pkt).__name__ == f"Disco{vec['type']}"
    assert bytes(pkt) == wire
    assert pkt.to_codec() == msg
    assert pkt.mysummary() == msg.summary()
    if vec["type"] == "Ping":
        assert pkt.txid == bytes.fromhex(vec["txid"])
        assert pkt.node_key == (bytes.fromhex(vec["node_key"]) if vec["node_key"] else None)
        assert len(pkt.padding) == vec["padding"]
    elif vec["type"] == "Pong":
        ep = Endpoint.parse(vec["src"])
        assert (pkt.src, pkt.port) == (str(ep.ip), ep.port)
    else:
        assert layer.endpoints_of(pkt) == [str(Endpoint.parse(e)) for e in vec["endpoints"]]


@pytest.mark.parametrize("name", list(RELAY_VECTORS))
def test_relay_messages_layer_and_codec_agree(name: str) -> None:
    msg = RELAY_VECTORS[name]
    wire = msg.encode()
    assert bytes(layer_message(msg)) == wire
    pkt = DiscoMessage(wire)
    assert bytes(pkt) == wire and pkt.to_codec() == msg
    assert wire.hex() == RELAY_HEX[name]


def test_sealed_wrapper_dissects_and_opened_message_attaches() -> None:
    a_priv, a_pub = keys.disco_key_pair(b"a")
    b_priv, b_pub = keys.disco_key_pair(b"b")
    node = NodePublicKey(K)
    wire = disco_crypto.seal_message(codec.Ping(TX, node), a_priv, b_pub, nonce=bytes(range(24)))
    pkt = Disco(wire)
    assert pkt.sender == a_pub.raw and pkt.nonce == bytes(range(24)) and pkt.magic == codec.MAGIC
    assert bytes(pkt) == wire
    assert pkt.mysummary() == codec.decode_wrapper(wire).summary()
    sender, msg = disco_crypto.open_message(wire, b_priv)
    assert sender == a_pub
    inner = pkt.attach_plaintext(msg.encode())
    assert bytes(pkt) == wire  # the opened message is inside the box, not appended
    assert isinstance(inner, layer.DiscoPing) and inner.node_key == K
    assert pkt.summary().endswith(f"disco Ping tx=0102.. {node.short()} from {a_pub.short()}")
    assert "###[ disco Ping ]###" in pkt.show(dump=True)


def test_wrapper_built_from_fields_equals_codec() -> None:
    w = codec.Wrapper(DiscoPublicKey(K), bytes(24), bytes(40))
    assert bytes(Disco(sender=K, nonce=bytes(24), box=bytes(40))) == w.encode()


@pytest.mark.parametrize(
    ("header", "payload_cls"),
    [
        (geneve_codec.Header(geneve_codec.PROTO_DISCO, 0x123456, control=True), Disco),
        (geneve_codec.Header(geneve_codec.PROTO_WIREGUARD, 7), WireGuardTransport),
    ],
)
def test_geneve_layer_and_codec_agree(header: geneve_codec.Header, payload_cls: type) -> None:
    inner = codec.MAGIC + bytes(32 + 24 + 16) if payload_cls is Disco else b"\x04\x00\x00\x00" + bytes(28)
    wire = header.encode() + inner
    built = TSGeneve(control=int(header.control), protocol=header.protocol, vni=header.vni)
    assert bytes(built) == header.encode()
    pkt = TSGeneve(wire)
    assert bytes(pkt) == wire
    assert isinstance(pkt.payload, payload_cls)
    assert (pkt.protocol, pkt.vni, bool(pkt.control)) == (header.protocol, header.vni, header.control)
    assert pkt.mysummary() == header.summary()


def test_geneve_disco_without_magic_is_wireguard() -> None:
    # protocols.md §4.11: protocol 0x7A11 without the disco magic is "naked WireGuard"
    wire = geneve_codec.Header(geneve_codec.PROTO_DISCO, 1).encode() + b"\x04\x00\x00\x00" + bytes(28)
    assert isinstance(TSGeneve(wire).payload, WireGuardTransport)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12).flatmap(lambda t: st.binary(max_size=160).map(lambda b: bytes([t, 0]) + b)))
def test_arbitrary_plaintexts_dissect_round_trip_and_summarise(data: bytes) -> None:
    pkt = DiscoMessage(data)
    assert bytes(pkt) == data
    assert isinstance(pkt.mysummary(), str)
    pkt.show(dump=True)
