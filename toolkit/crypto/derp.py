"""Sealing and opening DERP's ClientInfo and ServerInfo frames (protocols.md §2.3, §2.4 steps 3-4).

ClientInfo = client public key ‖ nonce ‖ box(JSON), sealed with the client's private key to the server's
public key; ServerInfo = nonce ‖ box(JSON), sealed with the server's private key to the client's public
key. Both are NaCl ``crypto_box`` as Tailscale's ``NodePrivate.SealTo``/``OpenFrom`` use it (§9), done by
:mod:`toolkit.crypto.box`; the JSON bytes are :mod:`toolkit.codec.derp`'s.

Errors: :class:`~toolkit.errors.OpenError` when a box does not open with the keys given,
:class:`~toolkit.errors.DecodeError` when it opens but the JSON is bad.
"""

from __future__ import annotations

from toolkit.codec.derp import NONCE_LEN, ClientInfo, ClientInfoJSON, ServerInfo, ServerInfoJSON
from toolkit.crypto.box import open_sealed, seal
from toolkit.crypto.keys import public_key
from toolkit.types import NodePrivateKey, NodePublicKey


def seal_client_info(
    info: ClientInfoJSON, client_priv: NodePrivateKey, server_pub: NodePublicKey, nonce: bytes | None = None
) -> ClientInfo:
    """The client's ClientInfo frame: its public key and ``info`` sealed to the server (§2.4 step 3).

    ``nonce`` (24 bytes) is random when None; pass one only for reproducible tests and lessons.
    """
    sealed = seal(client_priv, server_pub, info.to_json(), nonce=nonce)
    return ClientInfo(public_key(client_priv), sealed[:NONCE_LEN], sealed[NONCE_LEN:])


def open_client_info(frame: ClientInfo, server_priv: NodePrivateKey) -> ClientInfoJSON:
    """What the server reads from a ClientInfo frame; the sender is ``frame.key``.

    Raises OpenError if the box was not sealed by ``frame.key``'s owner to this server.
    """
    return ClientInfoJSON.from_json(open_sealed(server_priv, frame.key, frame.sealed))


def seal_server_info(
    info: ServerInfoJSON, server_priv: NodePrivateKey, client_pub: NodePublicKey, nonce: bytes | None = None
) -> ServerInfo:
    """The server's ServerInfo frame, sealed to the client that sent ClientInfo (§2.4 step 4)."""
    sealed = seal(server_priv, client_pub, info.to_json(), nonce=nonce)
    return ServerInfo(sealed[:NONCE_LEN], sealed[NONCE_LEN:])


def open_server_info(frame: ServerInfo, client_priv: NodePrivateKey, server_pub: NodePublicKey) -> ServerInfoJSON:
    """What the client reads from ServerInfo; ``server_pub`` is the key from ServerKey or the 101 headers."""
    return ServerInfoJSON.from_json(open_sealed(client_priv, server_pub, frame.sealed))


__all__ = ["open_client_info", "open_server_info", "seal_client_info", "seal_server_info"]
