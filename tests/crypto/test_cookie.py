"""mac1, mac2 and cookie replies (protocols.md §8.4): recomputed by hand and run as a round trip."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec import wireguard as wg
from toolkit.crypto import cookie, noise
from toolkit.crypto.keys import node_key_pair
from toolkit.errors import CryptoError, DecodeError
from toolkit.timing import Timing
from toolkit.types import Endpoint

I_PRIV, I_PUB = node_key_pair(b"cookie-initiator")
R_PRIV, R_PUB = node_key_pair(b"cookie-responder")
SRC = cookie.src_bytes(Endpoint.parse("192.0.2.7:51820"))
WALL = 1_700_000_000.0


class RecordingRng:
    """A seeded rng that remembers what it handed out (to recompute cookies in the test)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.calls: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        out = self._random.randbytes(n)
        self.calls.append(out)
        return out


def blake2s_mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def initiation(now: float, macs: cookie.CookieGenerator | None = None, index: int = 5) -> bytes:
    ephemeral = random.Random(index).randbytes
    return noise.create_initiation(
        I_PRIV, R_PUB, ephemeral=ephemeral, now_wall=WALL + now, sender_index=index, macs=macs, now=now
    )[0]


def test_mac1_recomputed_by_hand() -> None:
    msg = initiation(0.0)
    key = hashlib.blake2s(b"mac1----" + R_PUB.raw).digest()
    assert msg[116:132] == blake2s_mac(key, msg[:116])
    assert msg[132:148] == bytes(16)  # no cookie: mac2 is zeros
    gen = cookie.CookieGenerator(R_PUB)
    assert initiation(0.0, gen) == msg and gen.last_mac1 == msg[116:132]


def test_response_mac1_uses_the_initiator_key() -> None:
    _, _, st_r = noise.consume_initiation(R_PRIV, initiation(0.0))
    gen = cookie.CookieGenerator(I_PUB)
    msg2, _ = noise.create_response(st_r, ephemeral=bytes(32), sender_index=9, now=0.0, macs=gen)
    key = hashlib.blake2s(b"mac1----" + I_PUB.raw).digest()
    assert msg2[60:76] == blake2s_mac(key, msg2[:60]) == gen.last_mac1
    assert cookie.CookieChecker(I_PUB, RecordingRng(0)).check_mac1(msg2)
    assert not cookie.CookieChecker(R_PUB, RecordingRng(0)).check_mac1(msg2)


def test_check_mac1() -> None:
    checker = cookie.CookieChecker(R_PUB, RecordingRng(1))
    msg = initiation(0.0)
    assert checker.check_mac1(msg)
    assert not cookie.CookieChecker(I_PUB, RecordingRng(1)).check_mac1(msg)
    for i in (4, 50, 115, 116, 131):
        tampered = bytearray(msg)
        tampered[i] ^= 1
        assert not checker.check_mac1(bytes(tampered))
    assert not checker.check_mac1(msg[:-1]) and not checker.check_mac1(b"")
    assert checker.check_mac1(msg[:132] + b"\xff" * 16)  # mac2 is not covered by mac1


def test_cookie_round_trip_under_load() -> None:
    rng = RecordingRng(2)
    checker = cookie.CookieChecker(R_PUB, rng)
    gen = cookie.CookieGenerator(R_PUB)
    first = initiation(100.0, gen)
    assert checker.check_mac1(first) and not checker.check_mac2(first, SRC, 100.0)  # no secret yet
    reply = checker.make_cookie_reply(first, SRC, now=100.0)
    secret, nonce = rng.calls
    decoded = wg.decode(reply)
    assert isinstance(decoded, wg.CookieReply) and len(reply) == 64
    assert decoded.receiver_index == 5 and decoded.nonce == nonce
    assert not gen.has_cookie(100.0)
    gen.consume_cookie_reply(reply, now=100.5)
    assert gen.has_cookie(100.5)

    second = initiation(101.0, gen, index=6)
    expected_cookie = blake2s_mac(secret, SRC)  # cookie = MAC(R_secret, src)
    assert second[132:] == blake2s_mac(expected_cookie, second[:132]) != bytes(16)
    assert checker.check_mac1(second) and checker.check_mac2(second, SRC, 101.0)
    assert noise.consume_initiation(R_PRIV, second)[0] == I_PUB  # a mac2 does not disturb the handshake
    tampered = bytearray(second)
    tampered[140] ^= 1
    assert not checker.check_mac2(bytes(tampered), SRC, 101.0)


def test_cookie_from_another_source_fails_mac2() -> None:
    checker, gen = cookie.CookieChecker(R_PUB, RecordingRng(3)), cookie.CookieGenerator(R_PUB)
    gen.consume_cookie_reply(checker.make_cookie_reply(initiation(0.0, gen), SRC, now=0.0), now=0.0)
    msg = initiation(1.0, gen)
    assert checker.check_mac2(msg, SRC, 1.0)
    for other in ("192.0.2.7:51821", "192.0.2.8:51820", "[2001:db8::7]:51820"):
        assert not checker.check_mac2(msg, cookie.src_bytes(Endpoint.parse(other)), 1.0)


def test_stale_cookie_is_not_used() -> None:
    checker, gen = cookie.CookieChecker(R_PUB, RecordingRng(4)), cookie.CookieGenerator(R_PUB)
    gen.consume_cookie_reply(checker.make_cookie_reply(initiation(0.0, gen), SRC, now=0.0), now=10.0)
    assert initiation(130.0, gen)[132:] != bytes(16)  # exactly 120 s old: still used, as in wireguard-go
    assert not gen.has_cookie(130.5)
    assert initiation(130.5, gen)[132:] == bytes(16)


def test_secret_rotates_every_120_seconds() -> None:
    rng = RecordingRng(5)
    checker, gen = cookie.CookieChecker(R_PUB, rng), cookie.CookieGenerator(R_PUB)
    gen.consume_cookie_reply(checker.make_cookie_reply(initiation(0.0, gen), SRC, now=0.0), now=0.0)
    msg = initiation(1.0, gen)
    assert checker.check_mac2(msg, SRC, 120.0)
    assert not checker.check_mac2(msg, SRC, 120.5)  # the secret expired
    checker.make_cookie_reply(msg, SRC, now=120.5)  # a new reply draws a new secret
    assert len(rng.calls) == 4 and rng.calls[2] != rng.calls[0]
    assert not checker.check_mac2(msg, SRC, 121.0)  # the old cookie is worthless now
    checker.make_cookie_reply(msg, SRC, now=121.0, nonce=bytes(24))
    assert len(rng.calls) == 4  # secret still fresh, nonce given: no randomness drawn


def test_cookie_reply_is_deterministic_with_injected_rng_and_nonce() -> None:
    msg = initiation(0.0)
    a = cookie.CookieChecker(R_PUB, RecordingRng(6)).make_cookie_reply(msg, SRC, now=0.0, nonce=b"n" * 24)
    b = cookie.CookieChecker(R_PUB, RecordingRng(6)).make_cookie_reply(msg, SRC, now=0.0, nonce=b"n" * 24)
    assert a == b and a[8:32] == b"n" * 24
    c = cookie.CookieChecker(R_PUB, RecordingRng(6)).make_cookie_reply(msg, SRC, now=0.0, receiver_index=77)
    assert wg.decode(c) == wg.CookieReply(77, c[8:32], c[32:])


def test_bad_cookie_replies() -> None:
    checker, gen = cookie.CookieChecker(R_PUB, RecordingRng(7)), cookie.CookieGenerator(R_PUB)
    msg = initiation(0.0)
    reply = checker.make_cookie_reply(msg, SRC, now=0.0)
    with pytest.raises(cookie.CookieError):
        gen.consume_cookie_reply(reply, now=0.0)  # nothing sent yet: no mac1 to authenticate against
    initiation(0.0, gen)
    for i in range(8, 64):
        tampered = bytearray(reply)
        tampered[i] ^= 0x40
        with pytest.raises(cookie.CookieError) as exc:
            gen.consume_cookie_reply(bytes(tampered), now=0.0)
        assert exc.value.reason == "bad-cookie"
    initiation(1.0, gen, index=8)  # a newer message: the reply to the old mac1 no longer opens
    with pytest.raises(cookie.CookieError):
        gen.consume_cookie_reply(reply, now=0.0)
    with pytest.raises(DecodeError):
        gen.consume_cookie_reply(msg, now=0.0)  # an initiation, not a cookie reply
    with pytest.raises(DecodeError):
        checker.make_cookie_reply(msg[:100], SRC, now=0.0)
    wrong_key = cookie.CookieGenerator(I_PUB)
    wrong_key.add_macs(bytearray(msg), 0.0)
    with pytest.raises(cookie.CookieError):
        wrong_key.consume_cookie_reply(reply, now=0.0)


def test_src_bytes_like_go_addrport_marshal_binary() -> None:
    assert cookie.src_bytes(Endpoint.parse("192.0.2.7:51820")) == bytes([192, 0, 2, 7]) + (51820).to_bytes(2, "little")
    assert cookie.src_bytes(Endpoint.parse("[::ffff:192.0.2.7]:51820")) == SRC  # unmapped, 4 bytes
    v6 = cookie.src_bytes(Endpoint.parse("[2001:db8::1]:1"))
    assert len(v6) == 18 and v6.endswith(b"\x01\x00")


def test_constants_agree_with_timing() -> None:
    assert cookie.COOKIE_REFRESH_TIME == Timing().cookie_refresh_time
    assert cookie.mac1_key(R_PUB) == hashlib.blake2s(b"mac1----" + R_PUB.raw).digest()
    assert cookie.cookie_key(R_PUB) == hashlib.blake2s(b"cookie--" + R_PUB.raw).digest()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=160))
def test_arbitrary_bytes_never_raise_foreign_errors(data: bytes) -> None:
    checker, gen = cookie.CookieChecker(R_PUB, RecordingRng(8)), cookie.CookieGenerator(R_PUB)
    assert checker.check_mac1(data) in (True, False)
    assert checker.check_mac2(data, SRC, 0.0) is False
    gen.add_macs(bytearray(initiation(0.0)), 0.0)
    with pytest.raises((DecodeError, CryptoError)):
        gen.consume_cookie_reply(data, now=0.0)
    with pytest.raises((DecodeError, CryptoError)):
        gen.consume_cookie_reply(b"\x03\x00\x00\x00" + data[:60].ljust(60, b"\x00"), now=0.0)
