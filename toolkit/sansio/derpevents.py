"""What the sans-IO DERP client connection reports: events, and the tags of drops and closes.

design.md §6: events are past-tense frozen dataclasses, pulled with
:meth:`toolkit.sansio.derpclient.DerpClientConn.next_event`. They follow the messages Tailscale's
``derp.Client.Recv`` returns (``derp/derp_client.go``; protocols.md §2.3, §2.4): a received packet, a
peer gone, a peer present (mesh watchers), a ping or pong, a health text, a server restart notice,
a keepalive. :class:`Connected` marks the end of the handshake (ServerInfo opened) and
:class:`Closed` the end of the connection, with a machine-friendly ``reason`` from
:data:`CLOSE_REASONS` and a one-line human ``message``.

Durations are seconds (floats); ``rtt`` is the core's ``now`` difference between a Ping sent and its
Pong received.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from toolkit.codec.derp import PeerGoneReason, PeerPresentFlags, ServerInfoJSON
from toolkit.types import Endpoint, NodePublicKey


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake finished: the server proved its key by sealing ServerInfo to us (§2.4 step 4)."""

    server_key: NodePublicKey
    server_info: ServerInfoJSON


@dataclass(frozen=True, slots=True)
class PacketReceived:
    """A RecvPacket frame: ``data`` was sent to us by the node with key ``src``."""

    src: NodePublicKey
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerGoneReceived:
    """The server has no path (any more) to ``key``: it disconnected, or was never here (§2.3)."""

    key: NodePublicKey
    reason: PeerGoneReason | int


@dataclass(frozen=True, slots=True)
class PeerPresentReceived:
    """A mesh watcher learnt that ``key`` is connected (``endpoint`` and ``flags`` from newer servers)."""

    key: NodePublicKey
    endpoint: Endpoint | None
    flags: PeerPresentFlags | None


@dataclass(frozen=True, slots=True)
class PingReceived:
    """The server pinged us; the core has already queued the Pong (§2.4 step 6)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    """A Pong; ``rtt`` is set when it answers a Ping this connection sent (else None)."""

    data: bytes
    rtt: float | None


@dataclass(frozen=True, slots=True)
class HealthChanged:
    """The server's health text; empty means healthy again."""

    problem: str


@dataclass(frozen=True, slots=True)
class RestartingReceived:
    """The server is restarting: reconnect after ``reconnect_in`` s and keep trying for ``try_for`` s."""

    reconnect_in: float
    try_for: float


@dataclass(frozen=True, slots=True)
class KeepAliveReceived:
    """The server's one-way keepalive (every 60 s plus jitter, §2.4 step 6)."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over; ``reason`` is a tag from :data:`CLOSE_REASONS`, ``message`` says why."""

    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


DerpEvent: TypeAlias = (
    Connected
    | PacketReceived
    | PeerGoneReceived
    | PeerPresentReceived
    | PingReceived
    | PongReceived
    | HealthChanged
    | RestartingReceived
    | KeepAliveReceived
    | Closed
)

CLOSE_REASONS: dict[str, str] = {
    "closed": "closed locally (close() was called)",
    "eof": "the server closed the TCP connection",
    "transport-error": "the socket failed (reset, TLS error) after it was connected",
    "http-status": "the server answered the upgrade with a status other than 101 (e.g. 426, 404)",
    "bad-upgrade": "the upgrade answer is not HTTP, or a 101 without 'Upgrade: DERP'",
    "unexpected-frame": "the first frame is not ServerKey (§2.4 step 2)",
    "bad-server-key": "the ServerKey frame is too short or has a bad magic (§2.3)",
    "key-mismatch": "the ServerKey frame's key differs from Derp-Public-Key or from the key we were given",
    "bad-server-info": "ServerInfo does not open with the server's key, or its JSON is bad (§2.3)",
    "frame-too-large": "a frame header announces more than 1 MiB (the Go client's limit, §2.2)",
    "handshake-timeout": "no ServerInfo within derp_handshake_timeout of the start",
    "read-timeout": "nothing received for derp_client_read_timeout (120 s, §2.4 step 6)",
}

DROP_REASONS: dict[str, str] = {
    "not-connected": "a packet to send before ClientInfo went out or after the connection closed",
    "too-large": "a packet to send over 64 KiB (MaxPacketSize, §2.2)",
    "rate-limited": "a packet to send over the token bucket ServerInfo announced (Go's client drops it too)",
    "bad-frame": "a received frame of a known type whose payload does not decode (Go's client skips it)",
    "unexpected-frame": "a received frame only clients send (SendPacket, ClientInfo, ...): skipped",
    "unknown-frame": "a received frame of a type this codec does not know: skipped by length (§2.3)",
}

__all__ = [
    "CLOSE_REASONS",
    "DROP_REASONS",
    "Closed",
    "Connected",
    "DerpEvent",
    "HealthChanged",
    "KeepAliveReceived",
    "PacketReceived",
    "PeerGoneReceived",
    "PeerPresentReceived",
    "PingReceived",
    "PongReceived",
    "RestartingReceived",
]
