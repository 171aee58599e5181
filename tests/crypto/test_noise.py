"""WireGuard Noise_IKpsk2: primitives, the handshake between two in-memory parties, transport, TAI64N.

The handshake is cross-checked against an independent computation with the ``cryptography``
package (X25519, ChaCha20-Poly1305, BLAKE2s, HMAC) following protocols.md §8.2/§8.3 step by step,
so a wrong layout or key schedule fails even if both sides of natkit agree with each other.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import wireguard as wg
from toolkit.crypto import noise
from toolkit.crypto.keys import clamp, node_key_pair
from toolkit.crypto.tai64n import TAI64_BASE, Tai64n, tai64n
from toolkit.errors import CryptoError, DecodeError, UnknownTypeError

NOW_WALL = 1_700_000_000.123456789
PSK = bytes(range(32))
I_PRIV, I_PUB = node_key_pair(b"initiator")
R_PRIV, R_PUB = node_key_pair(b"responder")
E_I = bytes(range(1, 33))  # fixed ephemeral keys: reproducible messages
E_R = bytes(range(101, 133))


def handshake(psk: bytes = noise.ZERO_PSK) -> tuple[bytes, bytes, noise.SessionKeys, noise.SessionKeys]:
    msg1, st_i = noise.create_initiation(I_PRIV, R_PUB, ephemeral=E_I, now_wall=NOW_WALL, sender_index=0x1111, psk=psk)
    _, _, st_r = noise.consume_initiation(R_PRIV, msg1)
    msg2, keys_r = noise.create_response(st_r, ephemeral=E_R, sender_index=0x2222, now=5.0, psk=psk)
    keys_i = noise.consume_response(st_i, msg2, now=6.0)
    return msg1, msg2, keys_i, keys_r


def flip(data: bytes, offset: int, mask: int = 0x5A) -> bytes:
    b = bytearray(data)
    b[offset] ^= mask
    return bytes(b)


# --- primitives (protocols.md §8.2) ---
def test_c0_h0_match_protocols_md() -> None:
    assert noise.C0.hex() == "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36"
    assert noise.H0.hex() == "2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3"


def test_kdf_matches_hand_computation() -> None:
    key, data = bytes(range(32)), b"input keying material"
    prk = hmac.new(key, data, hashlib.blake2s).digest()
    t1 = hmac.new(prk, b"\x01", hashlib.blake2s).digest()
    t2 = hmac.new(prk, t1 + b"\x02", hashlib.blake2s).digest()
    t3 = hmac.new(prk, t2 + b"\x03", hashlib.blake2s).digest()
    assert noise.kdf1(key, data) == t1
    assert noise.kdf2(key, data) == (t1, t2)
    assert noise.kdf3(key, data) == (t1, t2, t3)
    assert len({t1, t2, t3}) == 3


def test_hmac_blake2s_matches_cryptography() -> None:
    h = c_hmac.HMAC(b"k" * 32, hashes.BLAKE2s(32))
    h.update(b"message")
    assert noise.hmac_(b"k" * 32, b"message") == h.finalize()


@pytest.mark.parametrize("counter", [0, 1, 0x0102030405060708, 2**64 - 1])
def test_aead_round_trip_and_nonce_layout(counter: int) -> None:
    key = bytes(range(32))
    sealed = noise.encrypt(key, counter, b"hello wireguard", b"aad")
    assert len(sealed) == len(b"hello wireguard") + 16
    nonce = b"\x00" * 4 + struct.pack("<Q", counter)  # protocols.md §8.2
    assert ChaCha20Poly1305(key).decrypt(nonce, sealed, b"aad") == b"hello wireguard"
    assert noise.decrypt(key, counter, sealed, b"aad") == b"hello wireguard"


def test_aead_tamper_detection() -> None:
    key = bytes(32)
    sealed = noise.encrypt(key, 7, b"payload")
    for i in range(len(sealed)):
        with pytest.raises(noise.AeadError):
            noise.decrypt(key, 7, flip(sealed, i))
    with pytest.raises(noise.AeadError):
        noise.decrypt(key, 8, sealed)  # wrong counter
    with pytest.raises(noise.AeadError):
        noise.decrypt(bytes(31) + b"\x01", 7, sealed)  # wrong key
    with pytest.raises(noise.AeadError):
        noise.decrypt(key, 7, sealed[:15])
    with pytest.raises(CryptoError):
        noise.encrypt(key, 2**64, b"")


@pytest.mark.parametrize("low_order", [bytes(32), (1).to_bytes(32, "little")])
def test_dh_rejects_low_order_points(low_order: bytes) -> None:
    with pytest.raises(noise.BadDhError) as exc:
        noise.dh(I_PRIV.raw, low_order)
    assert exc.value.reason == "bad-dh"


def test_dh_matches_cryptography() -> None:
    ours = noise.dh(I_PRIV.raw, R_PUB.raw)
    theirs = X25519PrivateKey.from_private_bytes(I_PRIV.raw).exchange(X25519PublicKey.from_public_bytes(R_PUB.raw))
    assert ours == theirs == noise.dh(R_PRIV.raw, I_PUB.raw)


# --- handshake (protocols.md §8.3) ---
@pytest.mark.parametrize("psk", [noise.ZERO_PSK, PSK], ids=["no-psk", "psk"])
def test_full_handshake_derives_matching_keys(psk: bytes) -> None:
    msg1, msg2, keys_i, keys_r = handshake(psk)
    assert len(msg1) == wg.INITIATION_LEN and len(msg2) == wg.RESPONSE_LEN
    assert keys_i.send_key == keys_r.recv_key and keys_i.recv_key == keys_r.send_key
    assert keys_i.send_key != keys_i.recv_key
    assert (keys_i.local_index, keys_i.remote_index, keys_i.is_initiator) == (0x1111, 0x2222, True)
    assert (keys_r.local_index, keys_r.remote_index, keys_r.is_initiator) == (0x2222, 0x1111, False)
    assert keys_i.remote_static == R_PUB and keys_r.remote_static == I_PUB
    assert (keys_i.created_at, keys_r.created_at) == (6.0, 5.0)
    assert "send_key" not in repr(keys_i) and keys_i.send_key.hex() not in repr(keys_i)


def test_consume_initiation_reports_peer_and_timestamp() -> None:
    msg1, _ = noise.create_initiation(I_PRIV, R_PUB, ephemeral=E_I, now_wall=NOW_WALL, sender_index=42)
    remote, ts, state = noise.consume_initiation(R_PRIV, msg1)
    assert remote == I_PUB and state.remote_index == 42
    assert ts == tai64n(NOW_WALL) and Tai64n.decode(ts).seconds == 1_700_000_000
    assert state.remote_ephemeral == msg1[8:40]


def test_psk_mismatch_fails_on_consume_response() -> None:
    msg1, st_i = noise.create_initiation(I_PRIV, R_PUB, ephemeral=E_I, now_wall=NOW_WALL, sender_index=1, psk=PSK)
    _, _, st_r = noise.consume_initiation(R_PRIV, msg1)
    msg2, _ = noise.create_response(st_r, ephemeral=E_R, sender_index=2, now=0.0)  # zero psk
    with pytest.raises(noise.AeadError):
        noise.consume_response(st_i, msg2, now=0.0)


def test_wrong_responder_key_fails() -> None:
    other_priv, _ = node_key_pair(b"someone else")
    msg1, _ = noise.create_initiation(I_PRIV, R_PUB, ephemeral=E_I, now_wall=NOW_WALL, sender_index=1)
    with pytest.raises(noise.BadMac1Error) as exc:
        noise.consume_initiation(other_priv, msg1)
    assert exc.value.reason == "bad-mac1"
    with pytest.raises(noise.AeadError):
        noise.consume_initiation(other_priv, msg1, verify_mac1=False)


def test_reproducible_with_same_ephemerals_and_clock() -> None:
    assert handshake(PSK)[:2] == handshake(PSK)[:2]
    rng = random.Random(7)
    first = noise.create_initiation(I_PRIV, R_PUB, ephemeral=rng.randbytes, now_wall=NOW_WALL, sender_index=3)[0]
    again = noise.create_initiation(
        I_PRIV, R_PUB, ephemeral=random.Random(7).randbytes, now_wall=NOW_WALL, sender_index=3
    )
    assert first == again[0]
    later = noise.create_initiation(I_PRIV, R_PUB, ephemeral=E_I, now_wall=NOW_WALL + 1, sender_index=0x1111)[0]
    assert later[:88] == handshake()[0][:88] and later[88:116] != handshake()[0][88:116]


def test_tampered_initiation_is_rejected_at_every_offset() -> None:
    msg1 = handshake()[0]
    for i in range(wg.INITIATION_MAC2_OFFSET):  # everything up to mac2 is covered by mac1
        with pytest.raises((DecodeError, CryptoError)):
            noise.consume_initiation(R_PRIV, flip(msg1, i))
    for i in range(wg.INITIATION_EPHEMERAL_OFFSET, wg.INITIATION_MAC1_OFFSET):  # ... and by the AEADs
        with pytest.raises((noise.AeadError, noise.BadDhError)):
            noise.consume_initiation(R_PRIV, flip(msg1, i), verify_mac1=False)
    # mac2 is only checked under load, by the CookieChecker; the sender index only by mac1
    noise.consume_initiation(R_PRIV, flip(msg1, wg.INITIATION_MAC2_OFFSET))
    assert noise.consume_initiation(R_PRIV, flip(msg1, 4), verify_mac1=False)[2].remote_index == 0x1111 ^ 0x5A


def test_tampered_response_is_rejected_at_every_offset() -> None:
    msg1, st_i = noise.create_initiation(I_PRIV, R_PUB, ephemeral=E_I, now_wall=NOW_WALL, sender_index=0x1111)
    _, _, st_r = noise.consume_initiation(R_PRIV, msg1)
    msg2, _ = noise.create_response(st_r, ephemeral=E_R, sender_index=0x2222, now=0.0)
    for i in range(wg.RESPONSE_MAC2_OFFSET):
        with pytest.raises((DecodeError, CryptoError)):
            noise.consume_response(st_i, flip(msg2, i), now=0.0)
    for i in range(wg.RESPONSE_EPHEMERAL_OFFSET, wg.RESPONSE_MAC1_OFFSET):
        with pytest.raises((noise.AeadError, noise.BadDhError)):
            noise.consume_response(st_i, flip(msg2, i), now=0.0, verify_mac1=False)
    with pytest.raises(noise.IndexMismatchError):
        noise.consume_response(st_i, flip(msg2, wg.RESPONSE_RECEIVER_OFFSET), now=0.0, verify_mac1=False)
    assert noise.consume_response(st_i, msg2, now=0.0).remote_index == 0x2222  # the original still works


def test_low_order_ephemeral_with_valid_mac1_is_bad_dh() -> None:
    from toolkit.crypto.cookie import write_mac1

    msg = bytearray(handshake()[0])
    msg[8:40] = bytes(32)
    write_mac1(msg, R_PUB)
    with pytest.raises(noise.BadDhError):
        noise.consume_initiation(R_PRIV, bytes(msg))


def test_wrong_message_types() -> None:
    msg1, msg2, keys_i, _ = handshake()
    with pytest.raises(UnknownTypeError):
        noise.consume_initiation(R_PRIV, msg2)
    _, st_i = noise.create_initiation(I_PRIV, R_PUB, ephemeral=E_I, now_wall=NOW_WALL, sender_index=0x1111)
    with pytest.raises(UnknownTypeError):
        noise.consume_response(st_i, msg1, now=0.0)
    with pytest.raises(UnknownTypeError):
        noise.open_transport(keys_i, msg1)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_consumers_raise_only_natkit_errors_on_arbitrary_bytes(data: bytes) -> None:
    _, st_i = noise.create_initiation(I_PRIV, R_PUB, ephemeral=E_I, now_wall=NOW_WALL, sender_index=0x1111)
    keys = handshake()[2]
    for call in (
        lambda: noise.consume_initiation(R_PRIV, data, verify_mac1=False),
        lambda: noise.consume_initiation(R_PRIV, b"\x01\x00\x00\x00" + data[:144].ljust(144, b"\x00")),
        lambda: noise.consume_response(st_i, b"\x02\x00\x00\x00\x11\x11\x00\x00" + data[:84].ljust(84), now=0.0),
        lambda: noise.open_transport(keys, b"\x04\x00\x00\x00\x11\x11\x00\x00" + data),
    ):
        with pytest.raises((DecodeError, CryptoError)):
            call()


# --- independent cross-check with the `cryptography` package ---
def _c_hash(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.BLAKE2s(32))
    for p in parts:
        h.update(p)
    return h.finalize()


def _c_hmac(key: bytes, data: bytes) -> bytes:
    h = c_hmac.HMAC(key, hashes.BLAKE2s(32))
    h.update(data)
    return h.finalize()


def _c_kdf(key: bytes, data: bytes, n: int) -> list[bytes]:
    prk, out, t = _c_hmac(key, data), [], b""
    for i in range(1, n + 1):
        t = _c_hmac(prk, t + bytes([i]))
        out.append(t)
    return out


def _c_dh(priv: bytes, pub: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(priv).exchange(X25519PublicKey.from_public_bytes(pub))


def test_handshake_against_independent_computation() -> None:
    msg1, st_i = noise.create_initiation(I_PRIV, R_PUB, ephemeral=E_I, now_wall=NOW_WALL, sender_index=0x1111, psk=PSK)
    e_pub = X25519PrivateKey.from_private_bytes(E_I).public_key().public_bytes_raw()
    assert msg1[:8] == b"\x01\x00\x00\x00" + (0x1111).to_bytes(4, "little") and msg1[8:40] == e_pub
    c = _c_hash(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s")  # step 1
    h = _c_hash(_c_hash(c, b"WireGuard v1 zx2c4 Jason@zx2c4.com"), R_PUB.raw)
    (c,) = _c_kdf(c, e_pub, 1)  # step 2
    h = _c_hash(h, e_pub)
    c, k = _c_kdf(c, _c_dh(clamp(E_I), R_PUB.raw), 2)  # step 3
    assert ChaCha20Poly1305(k).decrypt(bytes(12), msg1[40:88], h) == I_PUB.raw
    h = _c_hash(h, msg1[40:88])
    c, k = _c_kdf(c, _c_dh(I_PRIV.raw, R_PUB.raw), 2)  # step 4
    secs, frac = 1_700_000_000, round(0.123456789 * 1e9) & ~0xFFFFFF  # TAI64N, blurred
    expected_ts = (TAI64_BASE + secs).to_bytes(8, "big") + frac.to_bytes(4, "big")
    assert ChaCha20Poly1305(k).decrypt(bytes(12), msg1[88:116], h) == expected_ts
    h = _c_hash(h, msg1[88:116])
    assert (st_i.chain_key, st_i.hash) == (c, h)

    _, _, st_r = noise.consume_initiation(R_PRIV, msg1)
    msg2, keys_r = noise.create_response(st_r, ephemeral=E_R, sender_index=0x2222, now=0.0, psk=PSK)
    er_pub = msg2[12:44]
    assert er_pub == X25519PrivateKey.from_private_bytes(E_R).public_key().public_bytes_raw()
    assert msg2[4:12] == (0x2222).to_bytes(4, "little") + (0x1111).to_bytes(4, "little")
    (c,) = _c_kdf(c, er_pub, 1)
    h = _c_hash(h, er_pub)
    (c,) = _c_kdf(c, _c_dh(clamp(E_I), er_pub), 1)
    (c,) = _c_kdf(c, _c_dh(I_PRIV.raw, er_pub), 1)
    c, tau, k = _c_kdf(c, PSK, 3)
    h = _c_hash(h, tau)
    assert ChaCha20Poly1305(k).decrypt(bytes(12), msg2[44:60], h) == b""
    t1, t2 = _c_kdf(c, b"", 2)
    keys_i = noise.consume_response(st_i, msg2, now=0.0)
    assert (keys_i.send_key, keys_i.recv_key, keys_r.recv_key, keys_r.send_key) == (t1, t2, t1, t2)
    packet = noise.seal_transport(keys_i, 5, noise.pad(b"ping", 1420))
    assert ChaCha20Poly1305(t1).decrypt(b"\x00" * 4 + struct.pack("<Q", 5), packet[16:], None) == b"ping" + bytes(12)


# --- transport (protocols.md §8.1 type 4) ---
def test_transport_both_ways_and_keepalive() -> None:
    _, _, keys_i, keys_r = handshake(PSK)
    for counter, payload in enumerate([b"", b"x" * 15, b"y" * 1400, bytes(range(256)) * 5]):
        for a, b in ((keys_i, keys_r), (keys_r, keys_i)):
            packet = noise.seal_transport(a, counter, noise.pad(payload, 1420))
            assert wg.decode(packet) == wg.Transport(b.local_index, counter, packet[16:])
            got_counter, plain = noise.open_transport(b, packet)
            assert got_counter == counter and plain.rstrip(b"\x00") == payload.rstrip(b"\x00")
            assert len(plain) % 16 == 0
    keepalive = noise.seal_transport(keys_i, 9, b"")
    assert len(keepalive) == 32 and noise.open_transport(keys_r, keepalive) == (9, b"")
    with pytest.raises(noise.IndexMismatchError):
        noise.open_transport(keys_i, keepalive)  # addressed to the responder's index
    with pytest.raises(noise.AeadError):
        noise.open_transport(keys_r, keepalive[:8] + (10).to_bytes(8, "little") + keepalive[16:])


@pytest.mark.parametrize(
    ("size", "mtu", "padding"),
    [
        (0, 1420, 0),  # keepalive stays empty
        (1, 1420, 15),
        (16, 1420, 0),
        (17, 1420, 15),
        (1415, 1420, 5),  # capped at the MTU
        (1420, 1420, 0),
        (1425, 1420, 11),  # larger than the MTU: pad the remainder
        (1419, 1419, 0),
        (5, 0, 11),  # no MTU: plain multiple of 16
        (32, 0, 0),
    ],
)
def test_padding_size_like_wireguard_go(size: int, mtu: int, padding: int) -> None:
    assert noise.padding_size(size, mtu) == padding
    assert len(noise.pad(bytes(size), mtu)) == size + padding


# --- TAI64N (protocols.md §8.2) ---
def test_tai64n_layout_blur_and_order() -> None:
    ts = Tai64n.from_ns(1_700_000_000 * 10**9 + 0x0ABCDEF1, blur=False)
    assert ts.encode() == struct.pack(">QI", 0x400000000000000A + 1_700_000_000, 0x0ABCDEF1)
    assert Tai64n.from_ns(1_700_000_000 * 10**9 + 0x0ABCDEF1).nanos == 0x0A000000
    assert Tai64n.decode(ts.encode()) == ts and bytes(ts) == ts.encode()
    assert tai64n(0.0) == bytes.fromhex("400000000000000a00000000")
    a, b = Tai64n.from_wall(NOW_WALL), Tai64n.from_wall(NOW_WALL + 0.02)
    assert b.is_after(a) and not a.is_after(b) and a.is_after(None) and (a.encode() < b.encode())
    assert not Tai64n.from_wall(NOW_WALL + 0.001).is_after(a)  # same 16.8 ms blur window
    assert str(Tai64n(0, 5)) == "1970-01-01T00:00:00.000000005Z"
    with pytest.raises(DecodeError):
        Tai64n.decode(bytes(11))
