"""NaCl ``crypto_box``: the sealed boxes of disco messages and DERP ClientInfo.

Follows protocols.md §1.1 and §9. The shared key is X25519(my_priv, peer_pub) run through
HSalsa20 (Go's ``box.Precompute``, libsodium's ``crypto_box_beforenm``); the cipher is
XSalsa20-Poly1305. The output layout is Tailscale's: ``nonce(24) || tag(16) || ciphertext``,
which is exactly what PyNaCl's ``Box.encrypt`` returns (a test checks it against libsodium's
low-level ``crypto_box`` with the nonce prepended by hand).

The shared key is symmetric: ``seal(a_priv, b_pub, ...)`` opens with ``(b_priv, a_pub)`` and also
with ``(a_priv, b_pub)``. Precomputing it costs an X25519 multiplication, so boxes are cached per
(private, public) pair in a bounded LRU: a sniffer that opens every disco packet of a lab pays
for each pair once.

Errors are natkit's: :class:`OpenError` when a box does not open, :class:`CryptoError` for bad
key material (for example a low-order public key); PyNaCl's exceptions never escape.
"""

from __future__ import annotations

import os
from functools import lru_cache

import nacl.exceptions
import nacl.public

from toolkit.errors import CryptoError, OpenError
from toolkit.types import Key32

NONCE_LEN = 24
TAG_LEN = 16
OVERHEAD = NONCE_LEN + TAG_LEN  # 40 bytes added by seal()
CACHE_SIZE = 1024  # (private, public) pairs with a precomputed shared key


@lru_cache(maxsize=CACHE_SIZE)
def _box(priv_raw: bytes, pub_raw: bytes) -> nacl.public.Box:
    try:
        return nacl.public.Box(nacl.public.PrivateKey(priv_raw), nacl.public.PublicKey(pub_raw))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise CryptoError(f"no shared key for this key pair: {exc}") from exc


def shared_key(my_priv: Key32, peer_pub: Key32) -> bytes:
    """The precomputed 32-byte shared key (HSalsa20 of the X25519 result); for teaching and tests."""
    return bytes(_box(my_priv.raw, peer_pub.raw).shared_key())


def seal(my_priv: Key32, peer_pub: Key32, plaintext: bytes, nonce: bytes | None = None) -> bytes:
    """``nonce || tag || ciphertext``. A random nonce unless one is given (tests, golden bytes)."""
    if nonce is None:
        nonce = os.urandom(NONCE_LEN)
    elif len(nonce) != NONCE_LEN:
        raise CryptoError(f"a box nonce has {NONCE_LEN} bytes, got {len(nonce)}")
    box = _box(my_priv.raw, peer_pub.raw)
    try:
        return bytes(box.encrypt(bytes(plaintext), bytes(nonce)))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:  # pragma: no cover - defensive
        raise CryptoError(f"crypto_box failed: {exc}") from exc


def open_sealed(my_priv: Key32, peer_pub: Key32, sealed: bytes) -> bytes:
    """Open ``nonce || tag || ciphertext``; :class:`OpenError` if it is short, tampered or not for us."""
    if len(sealed) < OVERHEAD:
        raise OpenError(f"a sealed box has at least {OVERHEAD} bytes (nonce + tag), got {len(sealed)}")
    try:
        box = _box(my_priv.raw, peer_pub.raw)
    except CryptoError as exc:
        raise OpenError(str(exc)) from exc
    try:
        return bytes(box.decrypt(bytes(sealed)))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise OpenError("the box did not open: wrong key pair or altered bytes") from exc


def cache_info() -> str:
    """The LRU's hit/miss counters, for the curious (``functools`` format)."""
    return str(_box.cache_info())


def clear_cache() -> None:
    _box.cache_clear()


__all__ = [
    "CACHE_SIZE",
    "NONCE_LEN",
    "OVERHEAD",
    "TAG_LEN",
    "cache_info",
    "clear_cache",
    "open_sealed",
    "seal",
    "shared_key",
]
