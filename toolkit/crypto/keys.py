"""Curve25519 key pairs for nodes (WireGuard) and disco, with PyNaCl.

Follows protocols.md §1.1 (disco keys: clamped X25519, regenerated at every start) and §8.2
(WireGuard static keys are X25519 keys too). Private keys are stored clamped, as Tailscale's
``key.NewNode``/``key.NewDisco`` and ``wg genkey`` store them (RFC 7748 §5: clear the 3 low bits
of byte 0, clear bit 7 and set bit 6 of byte 31); X25519 clamps again when it uses a key, so an
unclamped key works too but prints differently.

Reproducible labs: :func:`from_seed` derives a key from a seed with BLAKE2b (32-byte digest,
personalised ``natkit/nodekey`` or ``natkit/discokey``, so one seed gives unrelated node and
disco keys), then clamps it. The same seed always gives the same key; never use a guessable
seed outside a lab.
"""

from __future__ import annotations

import hashlib
import os
from typing import TypeVar, overload

import nacl.bindings

from toolkit.errors import CryptoError
from toolkit.types import DiscoPrivateKey, DiscoPublicKey, Key32, NodePrivateKey, NodePublicKey

_P = TypeVar("_P", NodePrivateKey, DiscoPrivateKey)

_PERSON: dict[type[Key32], bytes] = {
    NodePrivateKey: b"natkit/nodekey",
    DiscoPrivateKey: b"natkit/discokey",
}


def clamp(raw: bytes) -> bytes:
    """X25519 clamping (RFC 7748 §5) of 32 bytes of key material."""
    if len(raw) != 32:
        raise CryptoError(f"an X25519 private key has 32 bytes, got {len(raw)}")
    b = bytearray(raw)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def from_seed(seed: bytes, kind: type[_P]) -> _P:
    """A deterministic private key of ``kind`` (NodePrivateKey or DiscoPrivateKey) from ``seed``."""
    digest = hashlib.blake2b(bytes(seed), digest_size=32, person=_PERSON[kind]).digest()
    return kind(clamp(digest))


def generate_node_key(seed: bytes | None = None) -> NodePrivateKey:
    """A new node (WireGuard) private key: random, or derived from ``seed`` (see :func:`from_seed`)."""
    if seed is not None:
        return from_seed(seed, NodePrivateKey)
    return NodePrivateKey(clamp(os.urandom(32)))


def generate_disco_key(seed: bytes | None = None) -> DiscoPrivateKey:
    """A new disco private key: random, or derived from ``seed`` (see :func:`from_seed`)."""
    if seed is not None:
        return from_seed(seed, DiscoPrivateKey)
    return DiscoPrivateKey(clamp(os.urandom(32)))


def scalarmult_base(raw_private: bytes) -> bytes:
    """The X25519 public key of 32 raw private bytes (libsodium ``crypto_scalarmult_base``)."""
    try:
        return bytes(nacl.bindings.crypto_scalarmult_base(bytes(raw_private)))
    except Exception as exc:  # nacl raises its own exception types; callers see ours
        raise CryptoError(f"cannot derive a public key: {exc}") from exc


@overload
def public_key(priv: NodePrivateKey) -> NodePublicKey: ...


@overload
def public_key(priv: DiscoPrivateKey) -> DiscoPublicKey: ...


def public_key(priv: NodePrivateKey | DiscoPrivateKey) -> NodePublicKey | DiscoPublicKey:
    """The public key matching ``priv``, of the matching type."""
    raw = scalarmult_base(priv.raw)
    if isinstance(priv, NodePrivateKey):
        return NodePublicKey(raw)
    if isinstance(priv, DiscoPrivateKey):
        return DiscoPublicKey(raw)
    raise CryptoError(f"public_key needs a NodePrivateKey or DiscoPrivateKey, got {type(priv).__name__}")


def node_key_pair(seed: bytes | None = None) -> tuple[NodePrivateKey, NodePublicKey]:
    """A node private key and its public key."""
    priv = generate_node_key(seed)
    return priv, public_key(priv)


def disco_key_pair(seed: bytes | None = None) -> tuple[DiscoPrivateKey, DiscoPublicKey]:
    """A disco private key and its public key."""
    priv = generate_disco_key(seed)
    return priv, public_key(priv)


__all__ = [
    "clamp",
    "disco_key_pair",
    "from_seed",
    "generate_disco_key",
    "generate_node_key",
    "node_key_pair",
    "public_key",
    "scalarmult_base",
]
