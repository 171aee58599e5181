"""WireGuard mac1/mac2 and cookies: the DoS defences around the handshake.

Follows protocols.md §8.4 (wireguard-go ``device/cookie.go``) and the whitepaper §5.4.4/§5.4.7.
Every handshake message (initiation, response) ends with ``mac1 || mac2``:

* ``mac1 = MAC(HASH("mac1----" || receiver_static_pub), msg[:-32])``: anyone who knows the receiver's
  public key can make it; it proves the sender knows whom it talks to, and is checked first.
* ``mac2 = MAC(cookie, msg[:-16])`` while a cookie younger than 120 s is held, else zeros. A receiver
  *under load* demands a valid mac2; without one it answers with a Cookie Reply instead of doing
  any Diffie-Hellman.
* ``cookie = MAC(R_secret, src)`` where ``src`` is the sender's address as bytes (:func:`src_bytes`)
  and ``R_secret`` is random, renewed every 120 s. The reply carries the cookie sealed with
  XChaCha20-Poly1305 under ``HASH("cookie--" || receiver_static_pub)``, with the triggering message's
  mac1 as associated data, so only the sender of that message can open it.

MAC is keyed BLAKE2s with a 16-byte output (protocols.md §8.2). This module sits below
:mod:`toolkit.crypto.noise` (which calls :func:`write_mac1` and :func:`verify_mac1`) and needs only
hashlib and PyNaCl's XChaCha20-Poly1305. Time (``now``, monotonic seconds) and randomness
(``rng(n) -> n bytes``) are passed in. Bad input raises :class:`toolkit.errors.DecodeError` or
:class:`toolkit.errors.CryptoError` subclasses only; ``check_*`` methods answer with a bool.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import nacl.bindings

from toolkit.codec import wireguard as wg
from toolkit.errors import BadLengthError, CryptoError, UnknownTypeError
from toolkit.types import Endpoint, NodePublicKey

LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
MAC_LEN = 16
COOKIE_LEN = 16  # a cookie is a 16-byte MAC
SECRET_LEN = 32  # R_secret (wireguard-go: blake2s.Size)
XNONCE_LEN = 24
COOKIE_REFRESH_TIME = 120.0  # protocols.md §8.5: cookie and secret lifetime
_HANDSHAKE_LENS = (wg.INITIATION_LEN, wg.RESPONSE_LEN)


class BadMac1Error(CryptoError):
    """mac1 does not match: the message was not made for this receiver's static key, or was altered."""

    reason = "bad-mac1"


class CookieError(CryptoError):
    """A Cookie Reply that does not open: no handshake sent yet, wrong key, or altered bytes."""

    reason = "bad-cookie"


def mac(key: bytes, data: bytes) -> bytes:
    """MAC = keyed BLAKE2s with a 16-byte output (protocols.md §8.2)."""
    return hashlib.blake2s(data, key=key, digest_size=MAC_LEN).digest()


def mac1_key(receiver_static: NodePublicKey) -> bytes:
    """``HASH("mac1----" || receiver static public key)``: the key of mac1."""
    return hashlib.blake2s(LABEL_MAC1 + receiver_static.raw).digest()


def cookie_key(receiver_static: NodePublicKey) -> bytes:
    """``HASH("cookie--" || receiver static public key)``: the XChaCha20-Poly1305 key of cookie replies."""
    return hashlib.blake2s(LABEL_COOKIE + receiver_static.raw).digest()


def src_bytes(endpoint: Endpoint) -> bytes:
    """The sender address a cookie is bound to: IP bytes (4 or 16) || port u16 LE (Go ``AddrPort.MarshalBinary``)."""
    return endpoint.ip.packed + endpoint.port.to_bytes(2, "little")


def _handshake_bytes(msg: bytes | bytearray) -> bytes:
    data = bytes(msg)
    if len(data) not in _HANDSHAKE_LENS:
        raise BadLengthError(f"mac1/mac2 end a {_HANDSHAKE_LENS} byte handshake message, got {len(data)} bytes")
    return data


def write_mac1(msg: bytearray, receiver_static: NodePublicKey) -> bytes:
    """Fill mac1 of a handshake message in place and return it; mac2 is left as it is."""
    mac1 = mac(mac1_key(receiver_static), _handshake_bytes(msg)[:-32])
    msg[-32:-16] = mac1
    return mac1


def _mac1_ok(key: bytes, msg: bytes) -> bool:
    if len(msg) not in _HANDSHAKE_LENS:
        return False
    data = bytes(msg)
    return hmac.compare_digest(mac(key, data[:-32]), data[-32:-16])


def verify_mac1(msg: bytes, receiver_static: NodePublicKey) -> bool:
    """Whether mac1 of a handshake message is right for ``receiver_static`` (constant-time compare)."""
    return _mac1_ok(mac1_key(receiver_static), msg)


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305 with a 24-byte nonce; ciphertext || tag."""
    if len(nonce) != XNONCE_LEN:
        raise CryptoError(f"an XChaCha20 nonce has {XNONCE_LEN} bytes, got {len(nonce)}")
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(bytes(plaintext), bytes(aad), bytes(nonce), key)
        )
    except Exception as exc:  # nacl raises its own types; callers see ours
        raise CryptoError(f"XChaCha20-Poly1305 encryption failed: {exc}") from exc


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Open an XChaCha20-Poly1305 ciphertext || tag; :class:`CookieError` if it does not verify."""
    if len(nonce) != XNONCE_LEN:
        raise CookieError(f"an XChaCha20 nonce has {XNONCE_LEN} bytes, got {len(nonce)}")
    try:
        return bytes(
            nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(bytes(ciphertext), bytes(aad), bytes(nonce), key)
        )
    except Exception as exc:
        raise CookieError("the cookie reply did not open: wrong key, wrong mac1 or altered bytes") from exc


class CookieChecker:
    """The receiver's side (one per device): checks mac1/mac2 and makes Cookie Replies.

    ``rng(n)`` returns n random bytes (``os.urandom``); it draws R_secret (when the last one is older
    than ``refresh_time``, at the first reply that needs it, as wireguard-go does) and reply nonces.
    """

    def __init__(
        self,
        local_static: NodePublicKey,
        rng: Callable[[int], bytes],
        *,
        refresh_time: float = COOKIE_REFRESH_TIME,
    ) -> None:
        self.local_static = local_static
        self.refresh_time = refresh_time
        self._mac1_key = mac1_key(local_static)
        self._cookie_key = cookie_key(local_static)
        self._rng = rng
        self._secret = bytes(SECRET_LEN)
        self._secret_set: float | None = None

    def _secret_fresh(self, now: float) -> bool:
        return self._secret_set is not None and now - self._secret_set <= self.refresh_time

    def check_mac1(self, msg: bytes) -> bool:
        """mac1 is right for this receiver. Wrong-size messages give False."""
        return _mac1_ok(self._mac1_key, msg)

    def check_mac2(self, msg: bytes, src: bytes, now: float) -> bool:
        """mac2 carries a cookie this checker gave to ``src`` with the current secret (checked under load)."""
        if len(msg) not in _HANDSHAKE_LENS or not self._secret_fresh(now):
            return False
        data = bytes(msg)
        cookie = mac(self._secret, bytes(src))
        return hmac.compare_digest(mac(cookie, data[:-16]), data[-16:])

    def make_cookie_reply(
        self,
        msg: bytes,
        src: bytes,
        *,
        now: float,
        receiver_index: int | None = None,
        nonce: bytes | None = None,
    ) -> bytes:
        """A 64-byte Cookie Reply to handshake message ``msg`` from ``src``.

        ``receiver_index`` defaults to the sender index of ``msg`` (bytes 4..8 of both handshake
        types); ``nonce`` defaults to 24 bytes from ``rng``.
        """
        data = _handshake_bytes(msg)
        if not self._secret_fresh(now):
            self._secret = bytes(self._rng(SECRET_LEN))
            self._secret_set = now
            if len(self._secret) != SECRET_LEN:
                raise CryptoError(f"rng returned {len(self._secret)} bytes for the cookie secret, not {SECRET_LEN}")
        cookie = mac(self._secret, bytes(src))
        if nonce is None:
            nonce = bytes(self._rng(XNONCE_LEN))
        sealed = xaead_encrypt(self._cookie_key, nonce, cookie, data[-32:-16])  # aad = mac1 of msg
        if receiver_index is None:
            receiver_index = int.from_bytes(data[4:8], "little")
        return wg.CookieReply(receiver_index, bytes(nonce), sealed).encode()


class CookieGenerator:
    """The sender's side (one per peer): writes mac1/mac2 and keeps the cookie a peer sent.

    Pass it as ``macs=`` to :func:`toolkit.crypto.noise.create_initiation` / ``create_response``: it
    remembers the last mac1 it wrote, which is the associated data of the cookie reply to expect.
    """

    def __init__(self, remote_static: NodePublicKey, *, refresh_time: float = COOKIE_REFRESH_TIME) -> None:
        self.remote_static = remote_static
        self.refresh_time = refresh_time
        self._mac1_key = mac1_key(remote_static)
        self._cookie_key = cookie_key(remote_static)
        self._cookie: bytes | None = None
        self._cookie_set = 0.0
        self.last_mac1: bytes | None = None

    def has_cookie(self, now: float) -> bool:
        """A cookie younger than ``refresh_time`` is held, so mac2 will be filled."""
        return self._cookie is not None and now - self._cookie_set <= self.refresh_time

    def add_macs(self, msg: bytearray, now: float) -> None:
        """Fill mac1, and mac2 if a fresh cookie is held (zeros otherwise), of a handshake message in place."""
        data = _handshake_bytes(msg)
        mac1 = mac(self._mac1_key, data[:-32])
        msg[-32:-16] = mac1
        self.last_mac1 = mac1
        if self._cookie is not None and self.has_cookie(now):
            msg[-16:] = mac(self._cookie, bytes(msg[:-16]))
        else:
            msg[-16:] = bytes(MAC_LEN)

    def consume_cookie_reply(self, reply: bytes, now: float) -> None:
        """Open a Cookie Reply and keep its cookie from ``now``; :class:`CookieError` if it does not open."""
        msg = wg.decode(reply)
        if not isinstance(msg, wg.CookieReply):
            raise UnknownTypeError(f"expected a WireGuard CookieReply, got {type(msg).__name__}", offset=0)
        if self.last_mac1 is None:
            raise CookieError("a cookie reply arrived before any handshake message was sent")
        self._cookie = xaead_decrypt(self._cookie_key, msg.nonce, msg.encrypted_cookie, self.last_mac1)
        self._cookie_set = now


__all__ = [
    "COOKIE_LEN",
    "COOKIE_REFRESH_TIME",
    "LABEL_COOKIE",
    "LABEL_MAC1",
    "BadMac1Error",
    "CookieChecker",
    "CookieError",
    "CookieGenerator",
    "cookie_key",
    "mac",
    "mac1_key",
    "src_bytes",
    "verify_mac1",
    "write_mac1",
    "xaead_decrypt",
    "xaead_encrypt",
]
