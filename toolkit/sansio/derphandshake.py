"""The handshake half of the sans-IO DERP client: states, the HTTP upgrade, ServerKey, ClientInfo, ServerInfo.

Follows protocols.md §2.1 (upgrade, fast start) and §2.4 steps 1-4 (Tailscale ``derp/derp_client.go``
``recvServerKey``/``sendClientInfo`` and ``derp/derphttp/derphttp_client.go``). The connection state is
data: :class:`State` and :data:`TRANSITIONS`, whose keys are ``(state, edge label)``; every change is
traced as a ``transition`` record with the edge label as ``reason`` (design.md §2). The public class is
:class:`toolkit.sansio.derpclient.DerpClientConn`, which adds the frames of the steady state and the
commands to this base.

Rules of the handshake:

* Without fast start the client writes ``GET /derp`` and waits for ``101 Switching Protocols`` with
  ``Upgrade: DERP``; any other status closes the connection (``http-status``), as derphttp's
  ``GET failed``. With ``fast_start=True`` it sends ``Derp-Fast-Start: 1`` and reads frames at once.
* The first frame must be ServerKey (magic and key). Its key must match ``Derp-Public-Key`` of the 101
  and the ``server_key`` given up front, when those are present (``key-mismatch`` otherwise).
* With a ``server_key`` given up front (Tailscale learns it from the TLS metacert), ClientInfo goes out
  right after the request (fast start) or the 101, without waiting for ServerKey.
* ClientInfo is ``{"version":2,"CanAckPings":true}`` (plus meshKey etc.) sealed to the server key with
  a nonce from ``rng``; NotePreferred(true) follows if this is the home region, and WatchConns if asked
  for, as derphttp does. Connected means ServerInfo opened with the server key; its token bucket becomes
  the send limit.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from enum import Enum

from toolkit.codec import derp
from toolkit.crypto.derp import open_server_info, seal_client_info
from toolkit.crypto.keys import public_key
from toolkit.errors import CryptoError, DecodeError
from toolkit.sansio.derpevents import Closed, Connected, DerpEvent
from toolkit.sansio.tokenbucket import TokenBucket
from toolkit.sansio.trace import TraceKind, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import NodePrivateKey, NodePublicKey


class State(Enum):
    """The connection's states, named as the lessons draw them."""

    IDLE = "Idle"
    AWAITING_UPGRADE = "AwaitingUpgrade"
    AWAITING_SERVER_KEY = "AwaitingServerKey"
    AWAITING_SERVER_INFO = "AwaitingServerInfo"
    CONNECTED = "Connected"
    CLOSED = "Closed"


_S = State
TRANSITIONS: dict[tuple[State, str], State] = {
    (_S.IDLE, "start"): _S.AWAITING_UPGRADE,
    (_S.IDLE, "start, fast"): _S.AWAITING_SERVER_KEY,
    (_S.IDLE, "start, fast, key known"): _S.AWAITING_SERVER_INFO,
    (_S.AWAITING_UPGRADE, "101 Switching Protocols"): _S.AWAITING_SERVER_KEY,
    (_S.AWAITING_UPGRADE, "101, key known"): _S.AWAITING_SERVER_INFO,
    (_S.AWAITING_SERVER_KEY, "ServerKey"): _S.AWAITING_SERVER_INFO,
    (_S.AWAITING_SERVER_INFO, "ServerInfo"): _S.CONNECTED,
    **{(s, "close"): _S.CLOSED for s in State if s is not _S.CLOSED},
}
HANDSHAKING = frozenset({_S.AWAITING_UPGRADE, _S.AWAITING_SERVER_KEY, _S.AWAITING_SERVER_INFO})
SENDING = frozenset({_S.AWAITING_SERVER_INFO, _S.CONNECTED})  # ClientInfo is out: frames may follow


class DerpHandshake:
    """State, handshake and bookkeeping shared by the client connection (see the module docstring)."""

    def __init__(
        self,
        private_key: NodePrivateKey,
        *,
        rng: Callable[[int], bytes],
        host: str,
        path: str = "/derp",
        fast_start: bool = False,
        server_key: NodePublicKey | None = None,
        mesh_key: str = "",
        is_prober: bool = False,
        app_name: str = "",
        preferred: bool = False,
        watch_conns: bool = False,
        timing: Timing = DEFAULT,
        tracer: Callable[[TraceRecord], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.public_key = public_key(private_key)
        self._private = private_key
        self._rng = rng
        self._request = derp.upgrade_request(host, fast_start=fast_start, path=path)
        self._fast_start = fast_start
        self._known_key = server_key
        self._info = derp.ClientInfoJSON(mesh_key=mesh_key, is_prober=is_prober, app_name=app_name)
        self.preferred = preferred
        self.watching = watch_conns
        self.timing = timing
        self.tracer = tracer
        self.name = name or f"derp-client {self.public_key.short()}"
        self.state = State.IDLE
        self.server_key: NodePublicKey | None = None
        self.header_key: NodePublicKey | None = None  # Derp-Public-Key of the 101
        self.server_info: derp.ServerInfoJSON | None = None
        self.http_status: int | None = None
        self.close_event: Closed | None = None
        self.bucket: TokenBucket | None = None
        self.counters: Counter[str] = Counter()  # drops and skips by reason
        self.packets_sent = self.bytes_sent = self.packets_received = self.bytes_received = 0
        self._buf = bytearray()
        self._out = bytearray()
        self._events: deque[DerpEvent] = deque()
        self._keys: dict[bytes, NodePublicKey] = {}  # source key cache of the receive path
        self._pings: dict[bytes, float] = {}  # Ping data -> when it was sent
        self._now = 0.0
        self._deadline = 0.0
        self._last_recv = 0.0

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def start(self, now: float) -> None:
        """Queue the upgrade request (and ClientInfo on a fast start with a known key)."""
        if self.state is not State.IDLE:
            return
        self._now = self._last_recv = now
        self._deadline = now + self.timing.derp_handshake_timeout
        self._emit(self._request, now, "HTTP GET /derp Upgrade: DERP" + (" (fast start)" if self._fast_start else ""))
        if not self._fast_start:
            self._move("start", now)
        elif self._known_key is None:
            self._move("start, fast", now)
        else:
            self._send_client_info(self._known_key, now)
            self._move("start, fast, key known", now)

    # --- steps of the handshake --------------------------------------------------------------
    def _read_upgrade(self, now: float) -> bool:
        """Parse the 101 once its head is in; True when frames may follow in ``_buf``."""
        try:
            split = derp.split_http_head(bytes(self._buf))
            if split is None:
                return False
            head, rest = split
            resp = derp.parse_upgrade_response(head)
        except DecodeError as exc:
            self._close(now, "bad-upgrade", f"the upgrade answer is not HTTP: {exc}")
            return False
        self._trace("received", now, f"HTTP {resp.status} {resp.reason}", raw=head)
        if resp.status != 101:
            self.http_status = resp.status
            body = rest[:200].decode("utf-8", "replace").strip()
            more = f": {body}" if body else ""
            self._close(now, "http-status", f"the server answered HTTP {resp.status} {resp.reason}{more}")
            return False
        if not resp.is_upgrade:
            self._close(now, "bad-upgrade", "the server answered 101 without 'Upgrade: DERP'")
            return False
        self.header_key = resp.server_key
        known = self._known_key
        if known is not None and self.header_key is not None and known != self.header_key:
            self._close(now, "key-mismatch", f"Derp-Public-Key {self.header_key} is not the expected {known}")
            return False
        self._buf = bytearray(rest)
        if known is None:
            self._move("101 Switching Protocols", now)
        else:
            self._send_client_info(known, now)
            self._move("101, key known", now)
        return True

    def _server_key_frame(self, ftype: int, payload: bytes, raw: bytes, now: float) -> None:
        # §2.4 step 2: the first frame is ServerKey; derp_client.go's recvServerKey insists on it.
        if ftype != derp.FrameType.SERVER_KEY:
            self._close(now, "unexpected-frame", f"the first frame is {derp.type_name(ftype)}, not SERVER_KEY")
            return
        try:
            frame = derp.decode_frame(ftype, payload)
        except DecodeError as exc:
            self._close(now, "bad-server-key", str(exc))
            return
        assert isinstance(frame, derp.ServerKey)
        self._trace("received", now, frame.summary(), raw=raw)
        for what, expected in (("Derp-Public-Key", self.header_key), ("the given server key", self._known_key)):
            if expected is not None and frame.key != expected:
                self._close(now, "key-mismatch", f"ServerKey {frame.key} differs from {what} {expected}")
                return
        self._send_client_info(frame.key, now)
        self._move("ServerKey", now)

    def _send_client_info(self, server_key: NodePublicKey, now: float) -> None:
        self.server_key = server_key
        frame = seal_client_info(self._info, self._private, server_key, nonce=self._rng(derp.NONCE_LEN))
        self._emit_frame(frame, now)
        if self.preferred:  # derphttp sends NotePreferred right after ClientInfo
            self._emit_frame(derp.NotePreferred(True), now)
        if self.watching:
            self._emit_frame(derp.WatchConns(), now)

    def _server_info(self, frame: derp.ServerInfo, now: float) -> None:
        assert self.server_key is not None
        try:
            info = open_server_info(frame, self._private, self.server_key)
        except (CryptoError, DecodeError) as exc:
            self._close(now, "bad-server-info", f"ServerInfo does not open with {self.server_key.short()}: {exc}")
            return
        self.server_info = info
        rate, burst = info.token_bucket_bytes_per_second, info.token_bucket_bytes_burst
        self.bucket = TokenBucket(rate, max(burst, 0)) if rate > 0 else None
        if self.state is State.AWAITING_SERVER_INFO:
            self._move("ServerInfo", now)
            self._events.append(Connected(self.server_key, info))

    # --- bookkeeping ------------------------------------------------------------------------------
    def _move(self, label: str, now: float, cause: str = "") -> None:
        old = self.state
        new = TRANSITIONS[(old, label)]
        self.state = new
        if self.tracer is not None:
            detail = f"{old.value} -> {new.value}" + (f" ({cause})" if cause else "")
            self._trace("transition", now, detail, reason=label)

    def _close(self, now: float, reason: str, message: str) -> None:
        if self.state is State.CLOSED:
            return
        self._move("close", now, f"{reason}: {message}")
        self.close_event = Closed(reason, message)
        self._pings.clear()
        self._events.append(self.close_event)

    def _emit(self, data: bytes, now: float, detail: str, peer: NodePublicKey | None = None) -> None:
        self._out += data
        if self.tracer is not None:
            self._trace("sent", now, detail, raw=bytes(data), peer=peer)

    def _emit_frame(self, frame: derp.Frame, now: float) -> None:
        self._emit(frame.encode(), now, frame.summary())

    def _drop(self, reason: str, now: float, detail: str, raw: bytes, peer: NodePublicKey | None = None) -> None:
        self.counters[reason] += 1
        self._trace("dropped", now, detail, reason=reason, raw=raw, peer=peer)

    def _trace(
        self,
        kind: TraceKind,
        now: float,
        detail: str,
        *,
        reason: str | None = None,
        raw: bytes = b"",
        peer: NodePublicKey | None = None,
    ) -> None:
        if self.tracer is not None:
            self.tracer(TraceRecord(now, self.name, peer or self.server_key, kind, detail, reason, raw))


__all__ = ["HANDSHAKING", "SENDING", "TRANSITIONS", "DerpHandshake", "State"]
