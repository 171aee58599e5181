"""NaCl crypto_box and key generation (toolkit/crypto/box.py, keys.py; protocols.md §1.1, §9)."""

from __future__ import annotations

import nacl.bindings
import nacl.public
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.crypto import box, keys
from toolkit.errors import CryptoError, OpenError
from toolkit.types import DiscoPublicKey, NodePrivateKey, NodePublicKey

A_PRIV, A_PUB = keys.disco_key_pair(b"test-a")
B_PRIV, B_PUB = keys.disco_key_pair(b"test-b")
C_PRIV, C_PUB = keys.disco_key_pair(b"test-c")
NONCE = bytes(range(24))


def test_keys_are_clamped_and_typed() -> None:
    for priv in (keys.generate_node_key(), keys.generate_disco_key(), keys.generate_disco_key(b"seed")):
        assert priv.raw[0] & 7 == 0 and priv.raw[31] & 0x80 == 0 and priv.raw[31] & 0x40 == 0x40
    node = keys.generate_node_key()
    assert isinstance(node, NodePrivateKey) and isinstance(keys.public_key(node), NodePublicKey)
    assert isinstance(keys.public_key(A_PRIV), DiscoPublicKey)
    assert keys.clamp(bytes([0xFF] * 32)) == bytes([0xF8]) + bytes([0xFF] * 30) + bytes([0x7F])


def test_random_keys_differ() -> None:
    assert keys.generate_disco_key() != keys.generate_disco_key()


def test_seeded_keys_are_deterministic_and_separated() -> None:
    assert keys.generate_disco_key(b"lab-1/node-a") == keys.generate_disco_key(b"lab-1/node-a")
    assert keys.generate_disco_key(b"lab-1/node-a") != keys.generate_disco_key(b"lab-1/node-b")
    # one seed gives unrelated node and disco keys (BLAKE2b personalisation)
    assert keys.generate_node_key(b"s").raw != keys.generate_disco_key(b"s").raw
    assert keys.from_seed(b"s", NodePrivateKey) == keys.generate_node_key(b"s")


def test_public_key_matches_libsodium_and_pynacl() -> None:
    raw = keys.generate_node_key().raw
    expected = bytes(nacl.public.PrivateKey(raw).public_key)
    assert keys.public_key(NodePrivateKey(raw)).raw == expected
    assert keys.scalarmult_base(raw) == bytes(nacl.bindings.crypto_scalarmult_base(raw))


def test_seal_layout_and_round_trip() -> None:
    sealed = box.seal(A_PRIV, B_PUB, b"hello disco", NONCE)
    assert len(sealed) == box.OVERHEAD + len(b"hello disco")
    assert sealed[:24] == NONCE
    assert box.open_sealed(B_PRIV, A_PUB, sealed) == b"hello disco"
    # the shared key is symmetric: the sender can open its own box with the receiver's public key
    assert box.open_sealed(A_PRIV, B_PUB, sealed) == b"hello disco"
    assert box.shared_key(A_PRIV, B_PUB) == box.shared_key(B_PRIV, A_PUB)


def test_random_nonce() -> None:
    s1, s2 = box.seal(A_PRIV, B_PUB, b"x"), box.seal(A_PRIV, B_PUB, b"x")
    assert s1[:24] != s2[:24]
    assert box.open_sealed(B_PRIV, A_PUB, s1) == box.open_sealed(B_PRIV, A_PUB, s2) == b"x"


def test_wrong_key_does_not_open() -> None:
    sealed = box.seal(A_PRIV, B_PUB, b"secret", NONCE)
    with pytest.raises(OpenError):
        box.open_sealed(C_PRIV, A_PUB, sealed)
    with pytest.raises(OpenError):
        box.open_sealed(B_PRIV, C_PUB, sealed)


@pytest.mark.parametrize("index", [0, 23, 24, 39, 40, 45])
def test_tampered_byte_does_not_open(index: int) -> None:
    sealed = bytearray(box.seal(A_PRIV, B_PUB, b"secret", NONCE))
    sealed[index] ^= 0x01
    with pytest.raises(OpenError):
        box.open_sealed(B_PRIV, A_PUB, bytes(sealed))


def test_short_and_bad_inputs() -> None:
    with pytest.raises(OpenError):
        box.open_sealed(B_PRIV, A_PUB, bytes(39))
    with pytest.raises(CryptoError):
        box.seal(A_PRIV, B_PUB, b"x", bytes(23))
    with pytest.raises(OpenError):  # a low-order public key gives no shared key: ours, not nacl's error
        box.open_sealed(B_PRIV, DiscoPublicKey(bytes(32)), bytes(60))
    with pytest.raises(CryptoError):
        box.seal(A_PRIV, DiscoPublicKey(bytes(32)), b"x")


def test_cross_check_pynacl_box() -> None:
    """A box sealed directly with nacl.public.Box opens with our open_sealed (protocols.md §9)."""
    sealed = nacl.public.Box(nacl.public.PrivateKey(A_PRIV.raw), nacl.public.PublicKey(B_PUB.raw)).encrypt(b"hi", NONCE)
    assert box.open_sealed(B_PRIV, A_PUB, bytes(sealed)) == b"hi"
    assert box.seal(A_PRIV, B_PUB, b"hi", NONCE) == bytes(sealed)


def test_cross_check_libsodium_crypto_box() -> None:
    """libsodium's low-level crypto_box gives tag || ct; with the nonce prepended it is our layout."""
    ct = nacl.bindings.crypto_box(b"low level", NONCE, B_PUB.raw, A_PRIV.raw)
    assert len(ct) == 16 + len(b"low level")
    assert box.open_sealed(B_PRIV, A_PUB, NONCE + ct) == b"low level"
    ours = box.seal(B_PRIV, A_PUB, b"back", NONCE)
    assert nacl.bindings.crypto_box_open(ours[24:], ours[:24], B_PUB.raw, A_PRIV.raw) == b"back"


def test_shared_key_is_cached() -> None:
    box.clear_cache()
    box.seal(A_PRIV, B_PUB, b"1")
    box.seal(A_PRIV, B_PUB, b"2")
    assert "hits=1" in box.cache_info() and "misses=1" in box.cache_info()


@settings(max_examples=200)
@given(st.binary(max_size=300), st.binary(min_size=24, max_size=24))
def test_round_trip(plaintext: bytes, nonce: bytes) -> None:
    sealed = box.seal(A_PRIV, B_PUB, plaintext, nonce)
    assert box.open_sealed(B_PRIV, A_PUB, sealed) == plaintext


@settings(max_examples=200)
@given(st.binary(max_size=120))
def test_open_garbage_raises_only_open_error(data: bytes) -> None:
    with pytest.raises(OpenError):
        box.open_sealed(B_PRIV, A_PUB, data)
