"""The sans-IO DERP relay: every decision of ``natkit derp-server``, without sockets or clocks.

Follows protocols.md §2 and Tailscale's ``derp/derpserver`` (``derpserver.go``, ``handler.go``).
The driver (:mod:`toolkit.services.derpserver`) or the simulator names each TCP (or TLS) connection
with an opaque id and feeds :meth:`~DerpServerCore.connection_made`,
:meth:`~DerpServerCore.data_received`, :meth:`~DerpServerCore.connection_lost`,
:meth:`~DerpServerCore.pause_writing` / :meth:`~DerpServerCore.resume_writing` (the transport's write
buffer crossed its high/low water mark) and :meth:`~DerpServerCore.handle_timer`; it pulls
:meth:`~DerpServerCore.pending_writes` (one coalesced ``bytes`` per connection), then
:meth:`~DerpServerCore.connections_to_close`, :meth:`~DerpServerCore.next_event` and
:meth:`~DerpServerCore.get_timer`. ``now`` is monotonic seconds; randomness (ServerInfo nonces,
keepalive jitter) comes from ``rng``. States and limits: :mod:`toolkit.sansio.derpserver_conn`.

Behaviour, and where it departs from Tailscale:

* HTTP (§2.1): :func:`~toolkit.sansio.derpserver_conn.answer_request`. Bytes that cannot start a request,
  or a head over 8 KiB, get a 400 and a close. Plain requests keep an HTTP/1.1 connection alive.
  The HTTP head must be complete within ``derp_handshake_timeout`` of the connection (or of the
  previous answer), and ClientInfo within the same time after the upgrade.
* Handshake (§2.4): ServerKey, then the first frame must be a ClientInfo of 56..256 KiB that opens
  with its key; ServerInfo says ``{"version":2}`` plus the token bucket when a rate is set, then the
  current Health text if there is one.
* Frames after the handshake: a header announcing more than ``DerpLimits.max_frame_len`` closes the
  connection (Tailscale skips unknown frames of any size; here every frame is bounded). Types the server
  does not handle (unknown ones and server-to-client ones) are skipped by length and counted
  ``unknown_frame``, as Tailscale skips them. A handled frame whose length is wrong for its type closes
  (``bad_frame``); WatchConns, ClosePeer and ForwardPacket from a client without the mesh key close it
  (``not_mesh``: Tailscale's "insufficient permissions").
* Routing: RecvPacket's source is always the sender's authenticated key (a mesh ForwardPacket names its
  own). An unknown destination is dropped (``unknown_dest``) and answered with PeerGone(NotHere), at most
  1/s with a burst of 3 per client; Tailscale answers only disco packets, natkit answers any packet.
  A client that received from X hears PeerGone(Disconnected) for X when X's last connection closes.
* Duplicate keys follow Tailscale's default policy ``lastWriterIsActive``: every connection with the
  key stays open; packets for the key go to the connection that connected or sent a frame last.
* Queues: a connection's frames are written at the next drain. While its transport is paused
  (write buffer over the high-water mark) packets for it wait in a queue of ``queue_depth`` (32); when
  full the oldest is dropped (``queue_full``, Tailscale's ``queue_head``). Writes paused for longer than
  ``derp_write_timeout`` close the connection with ``abort`` (``write_timeout``; Tailscale gives mesh
  peers 30 s, natkit the same timeout as everyone). While paused, one Pong may wait; more Pings are
  dropped (``pong_limited``).
* Rate limit: a SendPacket over the sender's token bucket (charged the frame length) is dropped and
  counted ``rate_limited``; Tailscale instead waits, which slows the client down through TCP.
* KeepAlive every ``derp_keepalive`` + a per-connection jitter below ``derp_keepalive_jitter``.
  :meth:`~DerpServerCore.set_health` sends Health to every client; :meth:`~DerpServerCore.shutdown`
  sends Restarting (``Timing.derp_restart_reconnect_in`` 1 s, ``derp_restart_try_for`` 30 s) to every
  client and closes all connections. derper has no such step (protocols.md §10); it is natkit's.
* The send rate limit and the PeerGone pacing are :class:`~toolkit.sansio.tokenbucket.TokenBucket` s,
  the same bucket the client keeps.
* Bad input never raises: it is dropped or closes its own connection (counted in ``dropped`` and
  ``closed`` by reason), and is traced.
"""

from __future__ import annotations

import heapq
import hmac
import itertools
import struct
from collections import Counter, deque
from collections.abc import Callable

from toolkit.codec import derp
from toolkit.codec.derp_http import is_mesh_key
from toolkit.crypto.derp import open_client_info, seal_server_info
from toolkit.crypto.keys import public_key
from toolkit.errors import CryptoError, DecodeError, UsageError
from toolkit.sansio.derpserver_conn import (
    TRANSITIONS,
    ClientConnected,
    ClientDisconnected,
    Close,
    Conn,
    ConnId,
    DerpLimits,
    DerpServerEvent,
    HttpAnswer,
    State,
    answer_request,
    bad_request,
    looks_like_request,
    timer_live,
)
from toolkit.sansio.derpserver_frames import FrameHandlers
from toolkit.sansio.tokenbucket import TokenBucket
from toolkit.sansio.trace import TraceKind, TraceRecord
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, NodePrivateKey

_U32 = struct.Struct(">I")
_CLIENT_INFO = int(derp.FrameType.CLIENT_INFO)
MAX_EVENTS = 4096  # events kept for next_event(); the oldest go first if nobody drains them


class DerpServerCore(FrameHandlers):
    """A DERP relay without I/O; the module docstring has the rules."""

    def __init__(
        self,
        private_key: NodePrivateKey,
        *,
        rng: Callable[[int], bytes],
        timing: Timing = DEFAULT,
        limits: DerpLimits | None = None,
        mesh_key: str = "",
        tracer: Callable[[TraceRecord], None] | None = None,
        name: str = "derp-server",
    ) -> None:
        super().__init__()
        self._private = private_key
        self.public_key = public_key(private_key)
        self._key_raw = self.public_key.raw
        self._rng = rng
        self.timing = timing
        self.limits = limits or DerpLimits()
        self.queue_depth = self.limits.queue_depth or timing.derp_queue_depth
        self.rate = self.limits.rate_bytes_per_s
        self.burst = self.limits.effective_burst
        if mesh_key and not is_mesh_key(mesh_key):
            raise UsageError("a DERP mesh key is 64 hex digits (Tailscale's key.DERPMesh)")
        self._mesh_key = bytes.fromhex(mesh_key) if mesh_key else b""
        self.tracer = tracer
        self.name = name
        self.health = ""
        self._conns: dict[ConnId, Conn] = {}
        self._closes: list[Close] = []
        self._events: deque[DerpServerEvent] = deque(maxlen=MAX_EVENTS)
        self._timers: list[tuple[float, int, Conn, str]] = []
        self._seq = itertools.count()
        self._server_key_frame = derp.ServerKey(self.public_key).encode()
        self.dropped: Counter[str] = Counter()  # packets and frames dropped, by reason (DROP_REASONS)
        self.closed: Counter[str] = Counter()  # connections closed, by reason (CLOSE_REASONS)
        self.counts: Counter[str] = Counter()  # everything else worth counting (pings, http status, ...)
        self.clients_total = 0

    # --- inputs ---------------------------------------------------------------------------------

    def connection_made(self, conn_id: ConnId, remote: Endpoint, now: float) -> None:
        """A TCP (or TLS) connection was accepted; the client speaks first (HTTP)."""
        c = Conn(conn_id, remote, now, deadline=now + self.timing.derp_handshake_timeout)
        self._conns[conn_id] = c
        self.counts["connections"] += 1
        self._push_timer(c.deadline, c, "handshake")

    def data_received(self, conn_id: ConnId, data: bytes, now: float) -> None:
        """Bytes from a connection, in any split."""
        c = self._conns.get(conn_id)
        if c is None or c.state is State.CLOSED:
            return
        if type(data) is not bytes:
            data = bytes(data)  # views of it may be queued: it must not change under them
        if c.need:  # the rest of a frame whose length is known: collect, join once (no quadratic copying)
            c.parts.append(data)
            c.have += len(data)
            if c.have < c.need:
                return
            data = b"".join(c.parts)
            c.parts, c.have, c.need = [], 0, 0
        if c.state is State.CONNECTED:
            self._frames(c, data, now)
            return
        c.buf = c.buf + data if c.buf else data
        if c.state is State.AWAITING_HTTP:
            self._http(c, now)
        if c.state is State.AWAITING_CLIENT_INFO:
            self._client_info(c, now)
        if c.buf and self.state_of(conn_id) is State.CONNECTED:  # frames right behind ClientInfo
            self._frames(c, b"", now)

    def connection_lost(self, conn_id: ConnId, now: float) -> None:
        """The transport is gone (the client hung up, or a close the core asked for has happened)."""
        c = self._conns.pop(conn_id, None)
        if c is not None and c.state is not State.CLOSED:
            self._close(c, "hangup", now, emit=False)

    def pause_writing(self, conn_id: ConnId, now: float) -> None:
        """The connection's write buffer is over its high-water mark: hold its packets, start the write timer."""
        c = self._conns.get(conn_id)
        if c is None or c.paused or c.state is State.CLOSED:
            return
        c.paused = True
        c.write_deadline = now + self.timing.derp_write_timeout
        self._push_timer(c.write_deadline, c, "write")

    def resume_writing(self, conn_id: ConnId, now: float) -> None:
        """The write buffer drained below its low-water mark: release what was held."""
        c = self._conns.get(conn_id)
        if c is None or not c.paused:
            return
        c.paused = False
        c.pong_waiting = False
        if c.held:
            c.out.extend(c.held)
            c.held.clear()
        if c.out:
            self._dirty[c] = None

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``: handshake timeouts, stalled writes, keepalives."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            entry = heapq.heappop(timers)
            if not timer_live(entry):
                continue
            when, _, c, kind = entry
            if kind == "handshake":
                self._close(c, "handshake_timeout", now)
            elif kind == "write":
                self._close(c, "write_timeout", now, abort=True)
            else:
                self._send_frame(c, derp.KeepAlive(), now)
                c.keepalive_at = when + c.keepalive_every
                self._push_timer(c.keepalive_at, c, "keepalive")

    def set_health(self, problem: str, now: float) -> None:
        """Tell every client the server's health problem ("" = healthy again); new clients hear it too."""
        self.health = problem
        frame = derp.Health(problem)
        for c in list(self._conns.values()):
            if c.state is State.CONNECTED:
                self._send_frame(c, frame, now)

    def shutdown(self, now: float, reconnect_in: float | None = None, try_for: float | None = None) -> None:
        """Send Restarting(reconnect_in, try_for) to every client and close every connection; the two
        default to ``Timing.derp_restart_reconnect_in`` (1 s) and ``derp_restart_try_for`` (30 s)."""
        t = self.timing
        reconnect_in = t.derp_restart_reconnect_in if reconnect_in is None else reconnect_in
        try_for = t.derp_restart_try_for if try_for is None else try_for
        frame = derp.Restarting(round(reconnect_in * 1000), round(try_for * 1000))
        for c in list(self._conns.values()):
            if c.state is State.CONNECTED:
                self._send_frame(c, frame, now)
            if c.state is not State.CLOSED:
                self._close(c, "server_stopping", now)

    # --- outputs --------------------------------------------------------------------------------

    def connections_to_close(self) -> list[Close]:
        """Connections to close, after writing what :meth:`pending_writes` gave for them."""
        closes, self._closes = self._closes, []
        return closes

    def next_event(self) -> DerpServerEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run (it may find nothing to do then)."""
        timers = self._timers
        while timers and not timer_live(timers[0]):
            heapq.heappop(timers)  # superseded deadlines and closed connections
        return timers[0][0] if timers else None

    def state_of(self, conn_id: ConnId) -> State | None:
        c = self._conns.get(conn_id)
        return c.state if c is not None else None

    # --- the HTTP phase and the handshake -------------------------------------------------------

    def _http(self, c: Conn, now: float) -> None:
        while c.state is State.AWAITING_HTTP and c.buf:
            if not looks_like_request(c.buf):
                self._answer(c, bad_request("this is not an HTTP request"), now, c.buf)
                return
            buf = c.buf
            try:
                split = derp.split_http_head(buf, self.limits.max_http_head)
                if split is None:
                    return
                head, c.buf = split
                req = derp.parse_upgrade_request(head)
            except DecodeError as exc:
                self._answer(c, bad_request(str(exc)), now, buf)
                return
            self.counts[f"http_{req.method.lower()}"] += 1
            answer = answer_request(req, self.public_key)
            if self.tracer is not None:
                self._trace("received", c, now, f"HTTP {req.method} {req.path} upgrade={req.upgrade or '-'}", raw=head)
            if answer.upgrade:
                c.not_ideal = req.ideal_node is not None
                self._emit(c, answer.response, now, "HTTP 101 Switching Protocols" if answer.response else "")
                self._emit(c, self._server_key_frame, now, f"DERP ServerKey {self.public_key.short()}")
                self._move(c, "upgraded", now, "fast start" if req.fast_start else "")
                self._rearm_handshake(c, now)
            else:
                self._answer(c, answer, now, head if answer.status == 400 else None)
                if c.state is State.AWAITING_HTTP:
                    self._rearm_handshake(c, now)

    def _answer(self, c: Conn, answer: HttpAnswer, now: float, bad: bytes | None = None) -> None:
        """Write a plain HTTP answer; ``bad`` holds the offending bytes of a 400 (traced as a drop)."""
        self.counts[f"http_{answer.status}"] += 1
        if bad is not None and self.tracer is not None:
            self._trace("dropped", c, now, "not a valid HTTP request head", "bad_http", bad[:256])
        self._emit(c, answer.response, now, f"HTTP {answer.status}")
        if answer.close_reason is None:
            self._move(c, "answered", now, str(answer.status))
        else:
            self._close(c, answer.close_reason, now)

    def _rearm_handshake(self, c: Conn, now: float) -> None:
        c.deadline = now + self.timing.derp_handshake_timeout
        self._push_timer(c.deadline, c, "handshake")

    def _client_info(self, c: Conn, now: float) -> None:
        buf = c.buf
        if len(buf) < derp.FRAME_HEADER_LEN:
            return
        ftype, length = buf[0], _U32.unpack_from(buf, 1)[0]
        if ftype != _CLIENT_INFO:
            self._close(c, "bad_client_info", now, f"first frame is {derp.type_name(ftype)}, not CLIENT_INFO")
            return
        if not derp.CLIENT_INFO_MIN <= length <= derp.CLIENT_INFO_MAX:
            self._close(c, "bad_client_info", now, f"ClientInfo of {length} bytes, allowed 56..256 KiB")
            return
        end = derp.FRAME_HEADER_LEN + length
        if len(buf) < end:
            self._wait_for(c, buf, end)
            return
        c.buf = buf[end:]
        try:
            frame = derp.decode_frame(ftype, buf[derp.FRAME_HEADER_LEN : end])
            assert isinstance(frame, derp.ClientInfo)
            info = open_client_info(frame, self._private)
        except (DecodeError, CryptoError) as exc:
            self._close(c, "bad_client_info", now, str(exc))
            return
        if self.tracer is not None:
            self._trace("received", c, now, frame.summary(), raw=buf[:end])
        c.key, c.key_raw = frame.key, frame.key.raw
        c.mesh = (
            bool(self._mesh_key)
            and len(info.mesh_key) == 64
            and hmac.compare_digest(bytes.fromhex(info.mesh_key), self._mesh_key)
        )
        c.prober = info.is_prober
        c.connected_at = now
        self.clients_total += 1
        self._register(c, now)
        rate, burst = (0, 0) if c.mesh else (self.rate, self.burst)
        if rate:
            c.bucket = TokenBucket(rate, burst, now)
        c.gone_limiter = TokenBucket(self.limits.peer_gone_per_s, self.limits.peer_gone_burst, now)
        server_info = derp.ServerInfoJSON(token_bucket_bytes_per_second=rate, token_bucket_bytes_burst=burst)
        self._send_frame(c, seal_server_info(server_info, self._private, c.key, nonce=self._rng(derp.NONCE_LEN)), now)
        if self.health:
            self._send_frame(c, derp.Health(self.health), now)
        self._move(c, "authenticated", now, "mesh" if c.mesh else "")
        jitter = int.from_bytes(self._rng(4), "big") / 2**32 * self.timing.derp_keepalive_jitter
        c.keepalive_every = self.timing.derp_keepalive + jitter
        c.keepalive_at = now + c.keepalive_every
        self._push_timer(c.keepalive_at, c, "keepalive")
        self._events.append(ClientConnected(c.id, c.key, c.remote, c.mesh, now))

    # --- closing and helpers --------------------------------------------------------------------

    def _close(
        self, c: Conn, reason: str, now: float, detail: str = "", *, abort: bool = False, emit: bool = True
    ) -> None:
        was = c.state
        self._move(c, "closed", now, f"{reason}: {detail}" if detail else reason)
        self.closed[reason] += 1
        if was is State.CONNECTED:
            self._unregister(c, now)
            assert c.key is not None
            self._events.append(ClientDisconnected(c.id, c.key, reason, now))
        if c.held:
            self.dropped["gone_disconnected"] += len(c.held)
            c.held.clear()
        if abort or c.paused or not emit:
            c.out = []
            self._dirty.pop(c, None)
        if emit:
            self._closes.append(Close(c.id, reason, abort))

    def _move(self, c: Conn, label: str, now: float, cause: str = "") -> None:
        old = c.state
        new = TRANSITIONS[(old, label)]
        c.state = new
        if self.tracer is not None:
            self._trace("transition", c, now, f"{old.value} -> {new.value}" + (f" ({cause})" if cause else ""), label)

    def _push_timer(self, when: float, c: Conn, kind: str) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), c, kind))

    def _trace(
        self, kind: TraceKind, c: Conn, now: float, detail: str, reason: str | None = None, raw: bytes = b""
    ) -> None:
        assert self.tracer is not None
        self.tracer(TraceRecord(now, self.name, c.key, kind, detail, reason, bytes(raw), c.remote))


__all__ = ["DerpServerCore"]
