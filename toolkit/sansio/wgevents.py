"""What the sans-IO WireGuard device reports: events (past-tense facts), peer status, session keys.

design.md §6: events are past-tense frozen dataclasses, pulled with
:meth:`toolkit.sansio.wireguard.WireGuardDevice.next_event`. :class:`PeerStatus` is what ``wg show``
and the UAPI's ``get=1`` print (wireguard-tools ``ipc-uapi.h`` fields). :class:`SessionKeyRecord` is
one live transport session, for the sniffer's keyring (indices and transport keys, protocols.md
§8.1/§8.3) and for Wireshark's ``wg.keylog_file`` (the handshake's local static and ephemeral
private keys, the remote static public key and the preshared key, as wireguard-tools'
``contrib/extract-handshakes`` prints them).

Times: ``at`` fields are the driver's monotonic ``now``; ``last_handshake`` and ``created`` are wall
seconds (``epoch + now``), as ``wg show`` needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from toolkit.types import Endpoint, NodePublicKey

Role: TypeAlias = Literal["initiator", "responder"]


@dataclass(frozen=True, slots=True)
class HandshakeInitiated:
    """An initiation was sent; ``attempt`` counts from 1 (retransmissions of one handshake count up)."""

    peer: NodePublicKey
    local_index: int
    attempt: int
    at: float


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    """A handshake derived a new keypair.

    The initiator uses it at once; the responder keeps it in ``next`` until key confirmation
    (:class:`KeypairConfirmed`). Transport packets to this device carry ``local_index``.
    """

    peer: NodePublicKey
    role: Role
    local_index: int
    remote_index: int
    at: float


@dataclass(frozen=True, slots=True)
class KeypairConfirmed:
    """The responder received the first transport packet under its ``next`` keypair, which is now current."""

    peer: NodePublicKey
    local_index: int
    at: float


@dataclass(frozen=True, slots=True)
class CookieReceived:
    """A peer under load sent a Cookie Reply; the next handshake message to it carries mac2."""

    peer: NodePublicKey
    at: float


@dataclass(frozen=True, slots=True)
class HandshakeGaveUp:
    """No response after ``attempts`` initiations (REKEY_ATTEMPT_TIME); ``dropped`` staged packets were lost."""

    peer: NodePublicKey
    attempts: int
    dropped: int
    at: float


@dataclass(frozen=True, slots=True)
class KeysZeroed:
    """Every keypair and the handshake state of the peer were erased (3 x REJECT_AFTER_TIME without a new one)."""

    peer: NodePublicKey
    at: float


@dataclass(frozen=True, slots=True)
class PeerEndpointChanged:
    """An authenticated packet came from a new address (roaming), or the endpoint was learned."""

    peer: NodePublicKey
    old: Endpoint | None
    new: Endpoint
    at: float


@dataclass(frozen=True, slots=True)
class PeerRemoved:
    """The peer was removed; its keys and indices are gone."""

    peer: NodePublicKey


WireGuardEvent: TypeAlias = (
    HandshakeInitiated
    | HandshakeCompleted
    | KeypairConfirmed
    | CookieReceived
    | HandshakeGaveUp
    | KeysZeroed
    | PeerEndpointChanged
    | PeerRemoved
)


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """One peer as ``wg show`` shows it. ``preshared_key`` is None when unset; ``allowed_ips`` are masked prefixes."""

    public_key: NodePublicKey
    preshared_key: bytes | None = field(repr=False)
    endpoint: Endpoint | None
    allowed_ips: list[str]
    last_handshake: float | None
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None


@dataclass(frozen=True, slots=True)
class SessionKeyRecord:
    """A live transport session of this device with ``peer``.

    Packets *to* this device carry ``local_index`` and open with ``recv_key``; packets *from* it carry
    ``remote_index`` and open with ``send_key``. ``created`` is wall seconds. ``slot`` is
    ``"previous"``, ``"current"`` or ``"next"`` (next: the responder awaits key confirmation).
    The last four fields are the handshake's secrets in Wireshark's key-log form (raw 32 bytes;
    ``preshared_key`` None when unset).
    """

    peer: NodePublicKey
    local_index: int
    remote_index: int
    send_key: bytes = field(repr=False)
    recv_key: bytes = field(repr=False)
    created: float
    is_initiator: bool
    slot: Literal["previous", "current", "next"]
    local_static_private: bytes = field(repr=False)
    remote_static_public: bytes = field(repr=False)
    local_ephemeral_private: bytes = field(repr=False)
    preshared_key: bytes | None = field(repr=False)


__all__ = [
    "CookieReceived",
    "HandshakeCompleted",
    "HandshakeGaveUp",
    "HandshakeInitiated",
    "KeypairConfirmed",
    "KeysZeroed",
    "PeerEndpointChanged",
    "PeerRemoved",
    "PeerStatus",
    "Role",
    "SessionKeyRecord",
    "WireGuardEvent",
]
