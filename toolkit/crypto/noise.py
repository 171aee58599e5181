"""WireGuard's Noise_IKpsk2 handshake and transport AEAD, as pure functions over bytes.

Follows protocols.md §8.2 (primitives, strings, C0/H0) and §8.3 (handshake, transport keys), that is
wireguard-go ``device/noise-protocol.go`` and ``noise-helpers.go`` and the WireGuard whitepaper §5.4.
Message layouts come from :mod:`toolkit.codec.wireguard`; mac1/mac2 and cookies live in
:mod:`toolkit.crypto.cookie`; the TAI64N clock in :mod:`toolkit.crypto.tai64n`.

Nothing here reads a clock or a random source. The caller passes the ephemeral private key (32
bytes, or an ``rng(n) -> bytes`` such as ``os.urandom``), the wall clock for TAI64N (``now_wall``,
float Unix seconds), a monotonic ``now`` (stamped into :class:`SessionKeys` and used for cookie
ages) and the sender indices, so a handshake is reproducible byte for byte.

Steps: ``create_initiation`` (I) -> ``consume_initiation`` (R) -> ``create_response`` (R) ->
``consume_response`` (I), each returning the state the next needs and, at the end, :class:`SessionKeys`.
What needs per-peer memory (known peer? timestamp newer than the last? handshake flood? the
responder waiting for the first transport packet before it sends) is the peer state machine's.

Failures raise :class:`CryptoError` subclasses (:class:`AeadError`, :class:`BadDhError`,
:class:`~toolkit.crypto.cookie.BadMac1Error`, :class:`IndexMismatchError`) or the codec's
:class:`DecodeError` subclasses (wrong type or size); PyNaCl's exceptions never escape.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import nacl.bindings

from toolkit.codec import wireguard as wg
from toolkit.crypto.cookie import BadMac1Error, mac, write_mac1
from toolkit.crypto.cookie import verify_mac1 as check_mac1
from toolkit.crypto.keys import clamp, public_key, scalarmult_base
from toolkit.crypto.tai64n import tai64n
from toolkit.errors import CryptoError, UnknownTypeError
from toolkit.types import NodePrivateKey, NodePublicKey

# --- protocols.md §8.2: strings and precomputed values ---
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
KEY_LEN = 32
MAC_LEN = 16
TAG_LEN = 16
ZERO_PSK = bytes(KEY_LEN)  # protocols.md §8.3: Q is 32 zero bytes when no preshared key is set


class AeadError(CryptoError):
    """A ChaCha20-Poly1305 tag did not verify: wrong key, wrong counter/aad, or altered bytes."""

    reason = "bad-aead"


class BadDhError(CryptoError):
    """X25519 gave the all-zero shared secret (a low-order public key), which WireGuard rejects."""

    reason = "bad-dh"


class IndexMismatchError(CryptoError):
    """The receiver index of a response or transport message is not the one this state expects."""

    reason = "wrong-index"


# --- protocols.md §8.2: primitives ---
def hash_(*parts: bytes) -> bytes:
    """HASH = BLAKE2s-256 of the concatenated parts."""
    h = hashlib.blake2s()
    for part in parts:
        h.update(part)
    return h.digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    """HMAC-BLAKE2s-256 (RFC 2104 over BLAKE2s, block size 64)."""
    return hmac.digest(key, data, hashlib.blake2s)


def kdf1(key: bytes, data: bytes) -> bytes:
    """KDF1: ``t1 = HMAC(HMAC(key, data), 0x01)``."""
    return hmac_(hmac_(key, data), b"\x01")


def kdf2(key: bytes, data: bytes) -> tuple[bytes, bytes]:
    """KDF2: ``(t1, t2)`` with ``t2 = HMAC(prk, t1 || 0x02)``."""
    prk = hmac_(key, data)
    t1 = hmac_(prk, b"\x01")
    return t1, hmac_(prk, t1 + b"\x02")


def kdf3(key: bytes, data: bytes) -> tuple[bytes, bytes, bytes]:
    """KDF3: ``(t1, t2, t3)`` with ``t3 = HMAC(prk, t2 || 0x03)``."""
    prk = hmac_(key, data)
    t1 = hmac_(prk, b"\x01")
    t2 = hmac_(prk, t1 + b"\x02")
    return t1, t2, hmac_(prk, t2 + b"\x03")


C0 = hash_(CONSTRUCTION)  # initial chaining key
H0 = hash_(C0, IDENTIFIER)  # initial hash


def _nonce(counter: int) -> bytes:
    if not 0 <= counter < 1 << 64:
        raise CryptoError(f"an AEAD counter is a u64, got {counter}")
    return b"\x00\x00\x00\x00" + counter.to_bytes(8, "little")  # protocols.md §8.2


def encrypt(key: bytes, counter: int, plaintext: bytes, aad: bytes = b"") -> bytes:
    """AEAD: ChaCha20-Poly1305 (IETF), nonce ``0^4 || counter u64 LE``; returns ciphertext || tag.

    Handshake fields use counter 0 and the transcript hash as ``aad``; transport data uses the
    message counter and an empty ``aad`` (pad the packet first, :func:`pad`).
    """
    nonce = _nonce(counter)
    try:
        return bytes(nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(bytes(plaintext), bytes(aad), nonce, key))
    except Exception as exc:  # nacl raises its own types (bad key length); callers see ours
        raise CryptoError(f"AEAD encryption failed: {exc}") from exc


def decrypt(key: bytes, counter: int, ciphertext: bytes, aad: bytes = b"") -> bytes:
    """Open ciphertext || tag; :class:`AeadError` if the tag does not verify. Replay checks are the caller's."""
    if len(ciphertext) < TAG_LEN:
        raise AeadError(f"an AEAD ciphertext has at least the {TAG_LEN}-byte tag, got {len(ciphertext)}")
    nonce = _nonce(counter)
    try:
        return bytes(nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(bytes(ciphertext), bytes(aad), nonce, key))
    except Exception as exc:  # nacl.exceptions.CryptoError (bad tag) or TypeError/ValueError (bad key)
        raise AeadError("the AEAD tag did not verify") from exc


def dh(private: bytes, public: bytes) -> bytes:
    """X25519; :class:`BadDhError` for the all-zero result (protocols.md §8.2)."""
    try:
        shared = bytes(nacl.bindings.crypto_scalarmult(bytes(private), bytes(public)))
    except Exception as exc:  # libsodium refuses the all-zero output itself
        raise BadDhError(f"X25519 rejected the public key {bytes(public).hex()[:16]}..: {exc}") from exc
    if not any(shared):
        raise BadDhError(f"X25519 with {bytes(public).hex()[:16]}.. gives the all-zero secret (low-order point)")
    return shared


EphemeralSource = bytes | Callable[[int], bytes]
"""An ephemeral private key: 32 raw bytes, or an rng called as ``rng(32)`` (``os.urandom``, ``Random.randbytes``)."""


def _ephemeral(source: EphemeralSource) -> tuple[bytes, bytes]:
    raw = source(KEY_LEN) if callable(source) else source
    private = clamp(bytes(raw))
    return private, scalarmult_base(private)


class MacWriter(Protocol):
    """Fills mac1 and mac2 (the last 32 bytes) of a handshake message; :class:`CookieGenerator` is one."""

    def add_macs(self, msg: bytearray, now: float) -> None: ...


def _seal_macs(msg: bytearray, receiver: NodePublicKey, macs: MacWriter | None, now: float) -> bytes:
    if macs is not None:
        macs.add_macs(msg, now)
    else:  # mac1 only, mac2 stays zero: no cookie held (protocols.md §8.4)
        write_mac1(msg, receiver)
    return bytes(msg)


@dataclass(frozen=True, slots=True)
class InitiatorState:
    """What an initiator keeps between sending an initiation and consuming the response."""

    sender_index: int
    local_public: NodePublicKey
    remote_static: NodePublicKey
    timestamp: bytes
    chain_key: bytes = field(repr=False)
    hash: bytes = field(repr=False)
    local_static: NodePrivateKey = field(repr=False)
    ephemeral_private: bytes = field(repr=False)
    psk: bytes = field(repr=False, default=ZERO_PSK)


@dataclass(frozen=True, slots=True)
class ResponderState:
    """What a responder learned from a valid initiation, until it creates the response."""

    remote_static: NodePublicKey
    remote_index: int
    remote_ephemeral: bytes
    timestamp: bytes  # raw TAI64N; big-endian, so ``new > last`` on bytes is the replay check
    local_public: NodePublicKey
    chain_key: bytes = field(repr=False)
    hash: bytes = field(repr=False)
    local_static: NodePrivateKey = field(repr=False)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """A WireGuard keypair: transport keys and indices of one session (protocols.md §8.3)."""

    send_key: bytes = field(repr=False)
    recv_key: bytes = field(repr=False)
    local_index: int
    remote_index: int
    is_initiator: bool
    created_at: float
    remote_static: NodePublicKey


def create_initiation(
    local_static: NodePrivateKey,
    remote_static: NodePublicKey,
    *,
    ephemeral: EphemeralSource,
    now_wall: float,
    sender_index: int,
    psk: bytes = ZERO_PSK,
    macs: MacWriter | None = None,
    now: float = 0.0,
    blur: bool = True,
) -> tuple[bytes, InitiatorState]:
    """Build a 148-byte initiation (protocols.md §8.3 steps 1-4) with mac1, and mac2 if ``macs`` holds a cookie.

    ``psk`` is kept in the state for :func:`consume_response`; ``now`` only matters to ``macs``.
    """
    if len(psk) != KEY_LEN:
        raise CryptoError(f"a preshared key has {KEY_LEN} bytes, got {len(psk)}")
    eph_priv, eph_pub = _ephemeral(ephemeral)
    local_public = public_key(local_static)
    h = hash_(H0, remote_static.raw)  # step 1
    c = kdf1(C0, eph_pub)  # step 2
    h = hash_(h, eph_pub)
    c, k = kdf2(c, dh(eph_priv, remote_static.raw))  # step 3: es
    enc_static = encrypt(k, 0, local_public.raw, h)
    h = hash_(h, enc_static)
    c, k = kdf2(c, dh(local_static.raw, remote_static.raw))  # step 4: ss
    timestamp = tai64n(now_wall, blur=blur)
    enc_timestamp = encrypt(k, 0, timestamp, h)
    h = hash_(h, enc_timestamp)
    body = wg.Initiation(sender_index, eph_pub, enc_static, enc_timestamp, bytes(MAC_LEN), bytes(MAC_LEN))
    data = _seal_macs(bytearray(body.encode()), remote_static, macs, now)
    state = InitiatorState(sender_index, local_public, remote_static, timestamp, c, h, local_static, eph_priv, psk)
    return data, state


def consume_initiation(
    local_static: NodePrivateKey, data: bytes, *, verify_mac1: bool = True
) -> tuple[NodePublicKey, bytes, ResponderState]:
    """Check an initiation; return the initiator's static key, its raw TAI64N timestamp and the state.

    mac1 is checked unless ``verify_mac1`` is False (a caller that already ran a CookieChecker);
    mac2 and load are the caller's business. Whether the static key belongs to a known peer, and
    whether the timestamp is newer than the last one, are checked by the caller too.
    """
    data = bytes(data)
    msg = wg.decode(data)
    if not isinstance(msg, wg.Initiation):
        raise UnknownTypeError(f"expected a WireGuard Initiation, got {type(msg).__name__}", offset=0)
    local_public = public_key(local_static)
    if verify_mac1 and not check_mac1(data, local_public):
        raise BadMac1Error(f"initiation's mac1 is not for {local_public.short()}")
    h = hash_(H0, local_public.raw)
    h = hash_(h, msg.ephemeral)
    c = kdf1(C0, msg.ephemeral)
    c, k = kdf2(c, dh(local_static.raw, msg.ephemeral))
    remote_raw = decrypt(k, 0, msg.encrypted_static, h)
    h = hash_(h, msg.encrypted_static)
    c, k = kdf2(c, dh(local_static.raw, remote_raw))
    timestamp = decrypt(k, 0, msg.encrypted_timestamp, h)
    h = hash_(h, msg.encrypted_timestamp)
    remote = NodePublicKey(remote_raw)
    state = ResponderState(remote, msg.sender_index, msg.ephemeral, timestamp, local_public, c, h, local_static)
    return remote, timestamp, state


def create_response(
    state: ResponderState,
    *,
    ephemeral: EphemeralSource,
    sender_index: int,
    now: float,
    psk: bytes = ZERO_PSK,
    macs: MacWriter | None = None,
) -> tuple[bytes, SessionKeys]:
    """Build the 92-byte response (protocols.md §8.3) and the responder's transport keys."""
    if len(psk) != KEY_LEN:
        raise CryptoError(f"a preshared key has {KEY_LEN} bytes, got {len(psk)}")
    eph_priv, eph_pub = _ephemeral(ephemeral)
    h = hash_(state.hash, eph_pub)  # step 1
    c = kdf1(state.chain_key, eph_pub)
    c = kdf1(c, dh(eph_priv, state.remote_ephemeral))  # step 2: ee
    c = kdf1(c, dh(eph_priv, state.remote_static.raw))  # se
    c, tau, k = kdf3(c, psk)  # step 3: psk
    h = hash_(h, tau)
    enc_empty = encrypt(k, 0, b"", h)
    body = wg.Response(sender_index, state.remote_index, eph_pub, enc_empty, bytes(MAC_LEN), bytes(MAC_LEN))
    data = _seal_macs(bytearray(body.encode()), state.remote_static, macs, now)
    recv_key, send_key = kdf2(c, b"")  # the responder receives with T1 and sends with T2
    keys = SessionKeys(send_key, recv_key, sender_index, state.remote_index, False, now, state.remote_static)
    return data, keys


def consume_response(state: InitiatorState, data: bytes, *, now: float, verify_mac1: bool = True) -> SessionKeys:
    """Check a response against the initiation's state and derive the initiator's transport keys."""
    data = bytes(data)
    msg = wg.decode(data)
    if not isinstance(msg, wg.Response):
        raise UnknownTypeError(f"expected a WireGuard Response, got {type(msg).__name__}", offset=0)
    if msg.receiver_index != state.sender_index:
        raise IndexMismatchError(f"response for index {msg.receiver_index:#010x}, expected {state.sender_index:#010x}")
    if verify_mac1 and not check_mac1(data, state.local_public):
        raise BadMac1Error(f"response's mac1 is not for {state.local_public.short()}")
    h = hash_(state.hash, msg.ephemeral)
    c = kdf1(state.chain_key, msg.ephemeral)
    c = kdf1(c, dh(state.ephemeral_private, msg.ephemeral))
    c = kdf1(c, dh(state.local_static.raw, msg.ephemeral))
    c, tau, k = kdf3(c, state.psk)
    h = hash_(h, tau)
    decrypt(k, 0, msg.encrypted_nothing, h)
    send_key, recv_key = kdf2(c, b"")  # the initiator sends with T1 (protocols.md §8.3)
    return SessionKeys(send_key, recv_key, state.sender_index, msg.sender_index, True, now, state.remote_static)


# --- transport data (protocols.md §8.1 type 4, §8.5 padding) ---
PADDING_MULTIPLE = 16


def padding_size(packet_size: int, mtu: int) -> int:
    """Zero bytes to append: up to a multiple of 16, never beyond the MTU (wireguard-go ``calculatePaddingSize``)."""
    last = packet_size
    if mtu == 0:
        return -last % PADDING_MULTIPLE
    if last > mtu:
        last %= mtu
    return min(last + (-last % PADDING_MULTIPLE), mtu) - last


def pad(packet: bytes, mtu: int) -> bytes:
    """``packet`` followed by :func:`padding_size` zero bytes; a keepalive (empty) stays empty."""
    return bytes(packet) + bytes(padding_size(len(packet), mtu))


def seal_transport(keys: SessionKeys, counter: int, plaintext: bytes) -> bytes:
    """A whole type-4 message for the peer: header with its index and ``counter``, then the AEAD."""
    return wg.Transport(keys.remote_index, counter, encrypt(keys.send_key, counter, plaintext)).encode()


def open_transport(keys: SessionKeys, data: bytes) -> tuple[int, bytes]:
    """Decrypt a type-4 message meant for ``keys``; returns ``(counter, padded plaintext)``.

    The caller runs the replay filter on the counter *after* this succeeds, as wireguard-go does.
    """
    msg = wg.decode(data)
    if not isinstance(msg, wg.Transport):
        raise UnknownTypeError(f"expected a WireGuard Transport, got {type(msg).__name__}", offset=0)
    if msg.receiver_index != keys.local_index:
        raise IndexMismatchError(f"transport for index {msg.receiver_index:#010x}, keys are {keys.local_index:#010x}")
    return msg.counter, decrypt(keys.recv_key, msg.counter, msg.encrypted_packet)


__all__ = [
    "C0",
    "CONSTRUCTION",
    "H0",
    "IDENTIFIER",
    "ZERO_PSK",
    "AeadError",
    "BadDhError",
    "BadMac1Error",
    "EphemeralSource",
    "IndexMismatchError",
    "InitiatorState",
    "MacWriter",
    "ResponderState",
    "SessionKeys",
    "consume_initiation",
    "consume_response",
    "create_initiation",
    "create_response",
    "decrypt",
    "dh",
    "encrypt",
    "hash_",
    "hmac_",
    "kdf1",
    "kdf2",
    "kdf3",
    "mac",
    "open_transport",
    "pad",
    "padding_size",
    "seal_transport",
]
