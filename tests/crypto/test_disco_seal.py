"""Sealed disco packets and the lab keyring (toolkit/crypto/disco.py; protocols.md §1.1, §1.2)."""

from __future__ import annotations

import nacl.public
import pytest
from hypothesis import given, settings

from tests.codec.test_disco import messages
from toolkit.codec import disco as wire
from toolkit.crypto import box, keys
from toolkit.crypto.disco import DiscoKeyring, open_message, seal_message
from toolkit.errors import BadMagicError, OpenError, TruncatedError, UnknownTypeError
from toolkit.types import Endpoint, NodePublicKey, TxID

A_PRIV, A_PUB = keys.disco_key_pair(b"node-a")
B_PRIV, B_PUB = keys.disco_key_pair(b"node-b")
C_PRIV, C_PUB = keys.disco_key_pair(b"stranger")
TXID = TxID(bytes(range(1, 13)))
NODE_KEY = keys.public_key(keys.generate_node_key(b"node-a"))
EP = Endpoint.parse("203.0.113.7:41641")


def test_wrapper_layout() -> None:
    nonce = bytes(range(24))
    pkt = seal_message(wire.Ping(TXID, NODE_KEY), A_PRIV, B_PUB, nonce)
    assert pkt[:6] == wire.MAGIC and pkt[6:38] == A_PUB.raw and pkt[38:62] == nonce
    assert pkt[38:] == box.seal(A_PRIV, B_PUB, wire.Ping(TXID, NODE_KEY).encode(), nonce)


@pytest.mark.parametrize(
    ("msg", "size"),
    [
        (wire.Ping(TXID, NODE_KEY), 124),  # protocols.md §1.2: discoPingSize
        (wire.Ping(TXID), 124 - 32),  # an old client's ping without a node key
        (wire.Pong(TXID, EP), 110),
        (wire.CallMeMaybe(()), 80),
        (wire.CallMeMaybe((EP,)), 80 + 18),
        (wire.CallMeMaybe((EP, Endpoint.parse("[2001:db8::1]:41641"), EP)), 80 + 3 * 18),
    ],
)
def test_whole_packet_sizes(msg: wire.Message, size: int) -> None:
    assert len(seal_message(msg, A_PRIV, B_PUB)) == size
    assert wire.PING_PACKET_SIZE == 124 and wire.PONG_PACKET_SIZE == 110 and wire.CALL_ME_MAYBE_PACKET_BASE == 80


def test_open_message() -> None:
    pkt = seal_message(wire.Pong(TXID, EP), A_PRIV, B_PUB)
    assert open_message(pkt, B_PRIV) == (A_PUB, wire.Pong(TXID, EP))
    with pytest.raises(OpenError):
        open_message(pkt, C_PRIV)


def test_open_message_errors() -> None:
    with pytest.raises(BadMagicError):
        open_message(b"\x01\x00\x00\x00" + bytes(100), B_PRIV)
    with pytest.raises(TruncatedError):
        open_message(wire.MAGIC + A_PUB.raw, B_PRIV)
    tampered = bytearray(seal_message(wire.Ping(TXID), A_PRIV, B_PUB))
    tampered[-1] ^= 0x80
    with pytest.raises(OpenError):
        open_message(bytes(tampered), B_PRIV)
    # a box that opens but holds an unknown type: a DecodeError (Tailscale ignores it, §1.1)
    sealed = box.seal(A_PRIV, B_PUB, b"\x7f\x00future")
    with pytest.raises(UnknownTypeError):
        open_message(wire.MAGIC + A_PUB.raw + sealed, B_PRIV)


def test_opens_a_box_sealed_with_pynacl_directly() -> None:
    plaintext = wire.CallMeMaybe((EP,)).encode()
    sealed = nacl.public.Box(nacl.public.PrivateKey(A_PRIV.raw), nacl.public.PublicKey(B_PUB.raw)).encrypt(plaintext)
    assert open_message(wire.MAGIC + A_PUB.raw + bytes(sealed), B_PRIV) == (A_PUB, wire.CallMeMaybe((EP,)))


def test_keyring_opens_both_directions() -> None:
    ring = DiscoKeyring([A_PRIV, B_PRIV])
    assert len(ring) == 2
    ping = wire.Ping(TXID, NODE_KEY)
    pong = wire.Pong(TXID, EP)
    assert ring.try_open(seal_message(ping, A_PRIV, B_PUB)) == (A_PUB, B_PUB, ping)
    assert ring.try_open(seal_message(pong, B_PRIV, A_PUB)) == (B_PUB, A_PUB, pong)
    # again (the remembered pair is tried first), and a third node talking to A
    assert ring.try_open(seal_message(ping, A_PRIV, B_PUB)) == (A_PUB, B_PUB, ping)


def test_keyring_returns_none_for_strangers() -> None:
    ring = DiscoKeyring([A_PRIV, B_PRIV])
    c_priv2, c_pub2 = keys.disco_key_pair(b"stranger-2")
    assert ring.try_open(seal_message(wire.Ping(TXID), C_PRIV, c_pub2)) is None
    assert ring.try_open(seal_message(wire.Ping(TXID), c_priv2, C_PUB)) is None
    assert DiscoKeyring().try_open(seal_message(wire.Ping(TXID), A_PRIV, B_PUB)) is None
    with pytest.raises(BadMagicError):  # not a disco packet at all: that is an error, not a stranger
        ring.try_open(b"\x04\x00\x00\x00" + bytes(40))


def test_keyring_with_only_the_senders_private_key() -> None:
    ring = DiscoKeyring()
    ring.add(A_PRIV)
    to_c = seal_message(wire.Pong(TXID, EP), A_PRIV, C_PUB)
    from_c = seal_message(wire.Ping(TXID), C_PRIV, A_PUB)
    assert ring.try_open(from_c) == (C_PUB, A_PUB, wire.Ping(TXID))  # C -> A: A's private key opens it
    assert ring.try_open(to_c) is None  # A -> C: the receiver is unknown
    ring.add_public(C_PUB)
    assert len(ring) == 1
    assert ring.try_open(to_c) == (A_PUB, C_PUB, wire.Pong(TXID, EP))  # (A_priv, C_pub) is the same shared key


def test_keyring_add_returns_public() -> None:
    ring = DiscoKeyring()
    assert ring.add(B_PRIV) == B_PUB
    assert B_PUB in ring and A_PUB not in ring
    assert ring.publics == frozenset({B_PUB})
    assert "1 private" in repr(ring)


def test_node_key_in_ping_survives() -> None:
    pkt = seal_message(wire.Ping(TXID, NODE_KEY, padding=100), A_PRIV, B_PUB)
    _, msg = open_message(pkt, B_PRIV)
    assert isinstance(msg, wire.Ping) and msg.node_key == NODE_KEY and isinstance(msg.node_key, NodePublicKey)
    assert len(pkt) == 124 + 100


@settings(max_examples=200)
@given(messages)
def test_seal_open_round_trip(msg: wire.Message) -> None:
    pkt = seal_message(msg, B_PRIV, A_PUB)
    assert len(pkt) == wire.WRAPPER_OVERHEAD + len(msg.encode())
    assert open_message(pkt, A_PRIV) == (B_PUB, msg)
