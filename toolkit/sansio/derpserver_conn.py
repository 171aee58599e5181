"""The parts of the DERP relay core that concern one connection: states, limits, outputs, HTTP answers.

Follows protocols.md §2.1 (the upgrade and the plain HTTP answers of ``derpserver.Handler``) and
§2.4 (per-client queue, rate limit, handshake timeout). :mod:`toolkit.sansio.derpserver` holds the
server (routing, timers, the frames); this module holds what it is built from:

* :class:`State` and :data:`TRANSITIONS`, the connection's state machine as data
  (AwaitingHTTP → AwaitingClientInfo → Connected → Closed; plain HTTP requests loop on AwaitingHTTP);
* :class:`DerpLimits`, the per-connection limits, and the reason tags of :data:`DROP_REASONS` and
  :data:`CLOSE_REASONS` (underscored, as Tailscale's ``dropReason`` values are);
* the outputs :class:`Close`, :class:`ClientConnected`, :class:`ClientDisconnected` and the read-only
  :class:`ClientView`;
* :func:`answer_request`, the answer to one HTTP request head (101, 200, 204, 404, 405, 426, 400).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from toolkit.codec.derp import KEY_LEN, MAX_HTTP_HEAD, MAX_PACKET_SIZE, UpgradeRequest, http_response, upgrade_response
from toolkit.sansio.tokenbucket import TokenBucket
from toolkit.types import Endpoint, NodePublicKey

ConnId = Hashable  # opaque: whatever the driver (or the simulator) names its connections with

# Tailscale's minRateLimitTokenBucketSize: a burst below one full SendPacket could never pass one.
MIN_BURST = MAX_PACKET_SIZE + KEY_LEN


class State(Enum):
    """A relay connection's states, named as the lessons draw them."""

    AWAITING_HTTP = "AwaitingHTTP"
    AWAITING_CLIENT_INFO = "AwaitingClientInfo"
    CONNECTED = "Connected"
    CLOSED = "Closed"


_S = State
TRANSITIONS: Mapping[tuple[State, str], State] = MappingProxyType(
    {
        (_S.AWAITING_HTTP, "answered"): _S.AWAITING_HTTP,  # /derp/probe, 404, 426 ... on a keep-alive connection
        (_S.AWAITING_HTTP, "upgraded"): _S.AWAITING_CLIENT_INFO,  # 101 (or fast start) then ServerKey
        (_S.AWAITING_CLIENT_INFO, "authenticated"): _S.CONNECTED,  # ClientInfo opened, ServerInfo sent
        **{(s, "closed"): _S.CLOSED for s in State if s is not _S.CLOSED},
    }
)

DROP_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "unknown_dest": "a SendPacket to a key that is not connected (PeerGone NotHere answers, rate-limited)",
        "unknown_dest_on_fwd": "a ForwardPacket from a mesh peer to a key that is not connected",
        "queue_full": "the destination's writes stalled and its queue was full: the oldest queued packet went",
        "rate_limited": "a SendPacket over the sender's token bucket (bytes/s + burst from ServerInfo)",
        "gone_disconnected": "packets still queued for a destination when its connection closed",
        "pong_limited": "a Ping while a Pong still waits on a stalled connection (Tailscale: pinging too fast)",
        "peer_gone_limited": "a NotHere PeerGone not sent: over 1/s (burst 3) for that client",
        "unknown_frame": "a frame type the server does not handle (unknown or server-to-client), skipped by length",
    }
)

CLOSE_REASONS: Mapping[str, str] = MappingProxyType(
    {
        "hangup": "the client closed the connection (or the transport failed)",
        "http_done": "a plain HTTP request answered on a connection that is not kept alive",
        "bad_http": "not an HTTP request, an unparsable or oversized head, or a request with a body: 400",
        "handshake_timeout": "no complete HTTP head, or no ClientInfo after the upgrade, within derp_handshake_timeout",
        "bad_client_info": "the first frame is not a ClientInfo of 56..256 KiB that opens with its key and holds JSON",
        "frame_too_large": "a frame header announcing more than the frame limit",
        "bad_frame": "a frame whose length is wrong for its type (SendPacket < 32 B, Ping > 1000 B, ...)",
        "not_mesh": "WatchConns, ClosePeer or ForwardPacket from a client without the mesh key",
        "closed_by_mesh": "a mesh client sent ClosePeer for this client's key",
        "write_timeout": "writes to the client stalled for longer than derp_write_timeout",
        "server_stopping": "the server is stopping (Restarting was sent first)",
    }
)


@dataclass(frozen=True, slots=True)
class DerpLimits:
    """Per-connection limits. ``queue_depth`` None takes ``Timing.derp_queue_depth`` (32, §2.4).

    ``rate_bytes_per_s`` 0 means no rate limit; with a rate, ``burst_bytes`` is raised to at least
    :data:`MIN_BURST` (as Tailscale does) and both go to the client in ServerInfo. Mesh clients are exempt.
    """

    queue_depth: int | None = None
    rate_bytes_per_s: int = 0
    burst_bytes: int = 0
    max_frame_len: int = 2 * KEY_LEN + MAX_PACKET_SIZE  # the largest frame a client needs: ForwardPacket
    max_http_head: int = MAX_HTTP_HEAD
    peer_gone_per_s: float = 1.0  # protocols.md §2.3: NotHere at most 1/s, burst 3
    peer_gone_burst: int = 3

    def __post_init__(self) -> None:
        if self.queue_depth is not None and self.queue_depth < 1:
            raise ValueError(f"queue_depth must be >= 1, got {self.queue_depth}")
        if self.rate_bytes_per_s < 0 or self.burst_bytes < 0:
            raise ValueError("rate_bytes_per_s and burst_bytes must be >= 0")
        if self.max_frame_len < 2 * KEY_LEN + MAX_PACKET_SIZE:
            raise ValueError(f"max_frame_len must allow a full ForwardPacket ({2 * KEY_LEN + MAX_PACKET_SIZE} B)")

    @property
    def effective_burst(self) -> int:
        """The burst actually applied (and announced) when a rate is set, else 0."""
        return max(self.burst_bytes, MIN_BURST) if self.rate_bytes_per_s else 0


@dataclass(frozen=True, slots=True)
class Close:
    """Output: close this connection. ``abort`` drops unwritten bytes (a stalled reader); else flush first."""

    conn_id: ConnId
    reason: str
    abort: bool = False


@dataclass(frozen=True, slots=True)
class ClientConnected:
    """Event: a client finished the handshake."""

    conn_id: ConnId
    key: NodePublicKey
    remote: Endpoint
    mesh: bool
    at: float


@dataclass(frozen=True, slots=True)
class ClientDisconnected:
    """Event: an authenticated client's connection closed, with the reason tag."""

    conn_id: ConnId
    key: NodePublicKey
    reason: str
    at: float


DerpServerEvent = ClientConnected | ClientDisconnected


@dataclass(frozen=True, slots=True)
class ClientView:
    """A read-only view of one authenticated connection (for lessons and tests)."""

    conn_id: ConnId
    key: NodePublicKey
    remote: Endpoint
    mesh: bool
    preferred: bool
    watcher: bool
    active: bool  # False for an older duplicate that does not get this key's packets
    connected_at: float


@dataclass(eq=False, slots=True)
class Conn:
    """One connection's mutable state inside the core (private to the core; see :class:`ClientView`)."""

    id: ConnId
    remote: Endpoint
    opened_at: float
    state: State = State.AWAITING_HTTP
    buf: bytes = b""  # received bytes not yet consumed
    parts: list[bytes] = field(default_factory=list)  # or, while a frame of known length is incomplete, its pieces
    have: int = 0  # bytes in parts
    need: int = 0  # bytes parts must reach before anything can be decoded (0: not waiting)
    deadline: float = 0.0  # handshake deadline while not Connected
    key: NodePublicKey | None = None
    key_raw: bytes = b""
    mesh: bool = False
    prober: bool = False
    not_ideal: bool = False  # the upgrade named an Ideal-Node: this is not the client's ideal node
    preferred: bool = False
    watcher: bool = False
    dup: bool = False  # another connection has the same key
    connected_at: float = 0.0
    out: list[bytes | memoryview] = field(default_factory=list)  # to write at the next drain
    held: deque[bytes] = field(default_factory=deque)  # packets waiting while writes are paused
    paused: bool = False
    write_deadline: float = 0.0
    pong_waiting: bool = False
    keepalive_every: float = 0.0
    keepalive_at: float = 0.0
    bucket: TokenBucket | None = None
    gone_limiter: TokenBucket | None = None
    saw_src: set[bytes] = field(default_factory=set)  # senders whose departure this client must hear of


def timer_live(entry: tuple[float, int, Conn, str]) -> bool:
    """Whether a timer entry still means something (deadlines move; connections close)."""
    when, _, c, kind = entry
    if kind == "handshake":
        return c.state in (State.AWAITING_HTTP, State.AWAITING_CLIENT_INFO) and when == c.deadline
    if kind == "write":
        return c.paused and c.state is not State.CLOSED and when == c.write_deadline
    return c.state is State.CONNECTED and when == c.keepalive_at


# --- HTTP (protocols.md §2.1) -------------------------------------------------------------------

PROBE_PATHS = ("/derp/probe", "/derp/latency-check")
_REQUEST_START = re.compile(rb"[A-Za-z]{1,20}(?: |\Z)")  # what the first bytes of any HTTP request look like


def looks_like_request(buf: bytes) -> bool:
    """False as soon as the first bytes cannot start an HTTP request line (garbage, a TLS ClientHello)."""
    return _REQUEST_START.match(buf[:21]) is not None


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What to write for one request head, and what happens to the connection after it."""

    status: int
    response: bytes
    upgrade: bool = False
    close_reason: str | None = None  # None: keep the connection for the next request


def bad_request(detail: str) -> HttpAnswer:
    body = f"bad request: {detail}\n".encode("latin-1", "replace")
    return HttpAnswer(400, http_response(400, "Bad Request", body, headers={"Connection": "close"}), False, "bad_http")


def _plain(status: int, reason: str, body: bytes, req: UpgradeRequest, **headers: str) -> HttpAnswer:
    keep = req.http_version == "HTTP/1.1" and "close" not in req.headers.get("connection", "").lower()
    fields = dict(headers)
    if not keep:
        fields["Connection"] = "close"
    data = http_response(status, reason, body, headers=fields)
    if req.method == "HEAD" and body:
        data = data[: len(data) - len(body)]  # HEAD: the same head, no body
    if status == 204:
        data = data.replace(b"Content-Length: 0\r\n", b"")  # RFC 9110 §8.6: none on a 204
    return HttpAnswer(status, data, False, None if keep else "http_done")


def answer_request(req: UpgradeRequest, server_key: NodePublicKey) -> HttpAnswer:
    """The answer ``derpserver.Handler`` (and derper's mux) gives to ``req`` (§2.1).

    ``/derp`` with ``Upgrade: DERP`` → 101 (nothing when ``Derp-Fast-Start: 1``), another upgrade or none
    → 426 (WebSocket is not implemented here, so it gets 426 too); ``/derp/probe`` and
    ``/derp/latency-check`` → empty 200 (GET/HEAD, else 405); ``/generate_204`` → 204; ``/`` → a short
    text page; anything else → 404. A request with a body is a 400: no request here has one.
    """
    te = req.headers.get("transfer-encoding")
    length = req.headers.get("content-length", "0").strip()
    if te is not None or length not in ("", "0"):
        return bad_request("requests to a DERP server carry no body")
    if req.path == "/derp":
        if req.is_derp_upgrade:
            return HttpAnswer(101, b"" if req.fast_start else upgrade_response(server_key), True)
        return _plain(426, "Upgrade Required", b"DERP requires connection upgrade\n", req)
    if req.path in PROBE_PATHS or req.path in ("/", "/generate_204"):
        if req.method not in ("GET", "HEAD"):
            return _plain(405, "Method Not Allowed", b"bogus probe method\n", req)
        if req.path == "/":
            page = (
                "natkit DERP relay (Tailscale DERP protocol v2)\n"
                f"server key: {server_key}\n"
                "connect with GET /derp and Upgrade: DERP\n"
            ).encode("ascii")
            return _plain(200, "OK", page, req)
        if req.path == "/generate_204":
            return _plain(204, "No Content", b"", req)
        return _plain(200, "OK", b"", req, **{"Access-Control-Allow-Origin": "*"})
    return _plain(404, "Not Found", b"404 page not found\n", req)


__all__ = [
    "CLOSE_REASONS",
    "DROP_REASONS",
    "MIN_BURST",
    "PROBE_PATHS",
    "TRANSITIONS",
    "ClientConnected",
    "ClientDisconnected",
    "ClientView",
    "Close",
    "Conn",
    "ConnId",
    "DerpLimits",
    "DerpServerEvent",
    "HttpAnswer",
    "State",
    "answer_request",
    "bad_request",
    "looks_like_request",
    "timer_live",
]
