"""Sealing and opening whole disco packets, and a keyring that opens a lab's disco traffic.

Follows protocols.md §1.1: a disco packet is ``magic || sender disco public key || nonce || box``
where the box is NaCl ``crypto_box`` of the plaintext (§1.2) between the sender's disco private
key and the receiver's disco public key. The byte layouts live in ``toolkit.codec.disco``; the
box in ``toolkit.crypto.box``.

:class:`DiscoKeyring` is what a sniffer or a lab uses to read disco traffic between its nodes.
The wrapper names the sender in clear; the receiver is not named, so the keyring finds it by
trying keys. Because the shared key is symmetric, a box sealed ``sender -> receiver`` opens with
the receiver's private key and the sender's public key, *or* with the sender's private key and
the receiver's public key; the keyring tries both (the second needs :meth:`DiscoKeyring.add_public`
for receivers whose private key it does not hold).
"""

from __future__ import annotations

from functools import lru_cache

from toolkit.codec import disco as wire
from toolkit.crypto import box
from toolkit.crypto.keys import scalarmult_base
from toolkit.errors import CryptoError
from toolkit.types import DiscoPrivateKey, DiscoPublicKey


@lru_cache(maxsize=256)
def _public(priv: DiscoPrivateKey) -> DiscoPublicKey:
    return DiscoPublicKey(scalarmult_base(priv.raw))


def seal_message(
    msg: wire.Message, my_priv: DiscoPrivateKey, peer_pub: DiscoPublicKey, nonce: bytes | None = None
) -> bytes:
    """The whole disco packet (UDP payload or DERP packet body) carrying ``msg`` to ``peer_pub``."""
    return wire.MAGIC + _public(my_priv).raw + box.seal(my_priv, peer_pub, msg.encode(), nonce)


def open_message(data: bytes, my_priv: DiscoPrivateKey) -> tuple[DiscoPublicKey, wire.Message]:
    """Open a disco packet sent to ``my_priv``: the sender's key (from the wrapper) and the message.

    Raises :class:`DecodeError` if ``data`` is not a disco packet or the plaintext does not parse,
    :class:`OpenError` if the box does not open with ``my_priv`` and the sender's key.
    """
    wrapper = wire.decode_wrapper(data)
    plaintext = box.open_sealed(my_priv, wrapper.sender, wrapper.sealed)
    return wrapper.sender, wire.decode_message(plaintext)


class DiscoKeyring:
    """Disco keys of a lab's nodes, to open packets between them (sniffers, widgets, tests).

    ``len(keyring)`` is the number of private keys. Public keys added with :meth:`add_public`,
    and the public halves of the private keys, are the candidate receivers when the keyring
    holds only the sender's private key.
    """

    def __init__(self, privs: list[DiscoPrivateKey] | None = None) -> None:
        self._privs: dict[DiscoPublicKey, DiscoPrivateKey] = {}
        self._publics: set[DiscoPublicKey] = set()
        self._last: dict[DiscoPublicKey, tuple[DiscoPrivateKey, DiscoPublicKey, DiscoPublicKey]] = {}
        for priv in privs or []:
            self.add(priv)

    def add(self, priv: DiscoPrivateKey) -> DiscoPublicKey:
        """Hold a node's disco private key; returns its public key."""
        pub = _public(priv)
        self._privs[pub] = priv
        self._publics.add(pub)
        return pub

    def add_public(self, pub: DiscoPublicKey) -> None:
        """Know a peer's disco public key (its private key is unknown)."""
        self._publics.add(pub)

    def __len__(self) -> int:
        return len(self._privs)

    def __contains__(self, pub: object) -> bool:
        return pub in self._privs

    @property
    def publics(self) -> frozenset[DiscoPublicKey]:
        return frozenset(self._publics)

    def _candidates(self, sender: DiscoPublicKey) -> list[tuple[DiscoPrivateKey, DiscoPublicKey, DiscoPublicKey]]:
        # (private key, public key to pair it with, receiver's public key)
        pairs = [(priv, sender, pub) for pub, priv in self._privs.items()]
        sender_priv = self._privs.get(sender)
        if sender_priv is not None:
            pairs += [(sender_priv, pub, pub) for pub in sorted(self._publics) if pub not in self._privs]
        last = self._last.get(sender)
        if last is not None:
            pairs.insert(0, last)
        return pairs

    def open_plaintext(self, data: bytes) -> tuple[DiscoPublicKey, DiscoPublicKey, bytes] | None:
        """``(sender, receiver, plaintext)`` of a disco packet, or None if none of our keys opens it.

        The plaintext is not parsed, so a sniffer can show one that opens but does not parse.
        Raises :class:`DecodeError` if ``data`` is not a disco wrapper (protocols.md §1.1).
        """
        wrapper = wire.decode_wrapper(data)
        sealed = wrapper.sealed
        for priv, pub, receiver in self._candidates(wrapper.sender):
            try:
                plaintext = box.open_sealed(priv, pub, sealed)
            except CryptoError:  # OpenError, or key material the box refuses
                continue
            self._last[wrapper.sender] = (priv, pub, receiver)
            return wrapper.sender, receiver, plaintext
        return None

    def try_open(self, data: bytes) -> tuple[DiscoPublicKey, DiscoPublicKey, wire.Message] | None:
        """``(sender, receiver, message)`` of a disco packet, or None if none of our keys opens it.

        Raises :class:`DecodeError` if ``data`` is not a disco packet, or if the box opens but the
        plaintext does not parse (for example an unknown message type).
        """
        opened = self.open_plaintext(data)
        if opened is None:
            return None
        sender, receiver, plaintext = opened
        return sender, receiver, wire.decode_message(plaintext)

    def __repr__(self) -> str:
        return f"DiscoKeyring({len(self._privs)} private, {len(self._publics - set(self._privs))} public-only)"


__all__ = ["DiscoKeyring", "open_message", "seal_message"]
