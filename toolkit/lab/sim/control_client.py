"""The node's side of the coordination server in the simulator: :class:`SimControlClient`, over sim TCP.

What :class:`toolkit.services.controlclient.ControlClient` does with asyncio, done with callbacks on the
virtual clock (the simulator has no event loop: everything runs in ``machine.sched`` events). The bytes
are the asyncio client's (:func:`~toolkit.services.controlclient.request_bytes`) and answers are read by
the same functions (:func:`~toolkit.services.controlclient.parse_response_head`,
:func:`~toolkit.services.controlclient.checked_answer`, :class:`~toolkit.services.controlclient.SSEParser`,
:func:`~toolkit.services.controlclient.netmap_of`):

* :meth:`SimControlClient.register`, :meth:`~SimControlClient.update`, :meth:`~SimControlClient.derp_map`
  and :meth:`~SimControlClient.fetch_netmap` queue a request and return a :class:`ControlCall` (``done``,
  ``result``, ``error``; optional ``on_done`` / ``on_error`` callbacks). Requests go one at a time over one
  kept-alive connection, in the order they were made (so ``update`` right after ``register`` carries the
  new token). An update answered ``401`` (the server forgot the token) registers again with the last
  :class:`~toolkit.sansio.control_netmap.RegisterBody` and is sent once more.
* Transport failures (reset, refused, a TCP timeout, no answer within ``Timing.control_request_timeout``)
  are retried on a fresh connection, at once when a kept-alive connection turns out closed, else after a
  doubling backoff (``Timing.derp_reconnect_min`` .. ``derp_reconnect_max``), until the server answers
  (``retry=False``: the call fails with a :class:`~toolkit.services.controlclient.ControlError` of status
  0 instead). HTTP errors fail the call with the server's status and message.
* :meth:`SimControlClient.follow` keeps ``GET /machine/map?stream=1`` open on its own connection and calls
  ``on_netmap(netmap)`` for every ``netmap`` event. When the stream ends, breaks (a control server restart)
  or stays silent for two keepalive intervals plus the request timeout, it reconnects after the same
  backoff (reset by every netmap); a ``401`` registers again first; another 4xx stops following and goes
  to ``on_error``.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from toolkit.codec.derpmap import DERPMap
from toolkit.errors import DecodeError, UsageError
from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.control_call import ControlCall, Pending
from toolkit.lab.sim.control_stream import STREAM_TARGET, NetmapStream
from toolkit.lab.sim.net import Machine
from toolkit.lab.sim.tcp import TcpConnection, connect
from toolkit.sansio.control_netmap import ControlNode, NetMap, RegisterBody, UpdateBody
from toolkit.services.controlclient import (
    MAX_RESPONSE,
    ControlError,
    checked_answer,
    netmap_of,
    node_of,
    parse_response_head,
    request_bytes,
)
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint


class SimControlClient:
    """One node's control connection from ``machine`` to the server at ``server`` (see the module doc)."""

    def __init__(self, machine: Machine, server: Endpoint, *, timing: Timing = DEFAULT, retry: bool = True) -> None:
        self.machine, self.server, self.timing, self.retry = machine, server, timing, retry
        self.sched = machine.sched
        self.token: str | None = None
        self.self_node: ControlNode | None = None
        self.netmap: NetMap | None = None  # the last one received (stream or fetch)
        self.counters: Counter[str] = Counter()
        self.closed = False
        self._register_body: RegisterBody | None = None
        self._queue: deque[Pending] = deque()
        self._active: Pending | None = None
        self._conn: TcpConnection | None = None
        self._conn_used = False  # a response came back on it: a failure may be a kept-alive close
        self._rx = bytearray()
        self._call_timer: Timer | None = None
        self._retry_timer: Timer | None = None
        self._backoff = timing.derp_reconnect_min
        self._on_netmap: Callable[[NetMap], None] | None = None
        self._on_stream_error: Callable[[ControlError], None] | None = None
        self.stream = NetmapStream(machine, server, timing, lambda: self.token, self._streamed, self._stream_refused)

    # --- the API ----------------------------------------------------------------------------------
    def register(
        self,
        body: RegisterBody,
        on_done: Callable[[ControlNode], None] | None = None,
        on_error: Callable[[ControlError], None] | None = None,
    ) -> ControlCall[ControlNode]:
        """Register (or register again); the answer's node has this node's addresses; sets :attr:`token`."""
        self._register_body = body
        return self._request("POST", "/machine/register", body.to_obj(), False, self._registered, on_done, on_error)

    def update(
        self,
        body: UpdateBody,
        on_done: Callable[[ControlNode], None] | None = None,
        on_error: Callable[[ControlError], None] | None = None,
    ) -> ControlCall[ControlNode]:
        """Tell the server what changed (endpoints, home DERP, disco key); peers get a new netmap."""
        if self._register_body is not None:  # a later re-registration carries the news too
            rb = self._register_body
            self._register_body = RegisterBody(
                rb.auth_key, rb.node_key, rb.disco_key if body.disco_key is None else body.disco_key,
                rb.endpoints if body.endpoints is None else body.endpoints,
                rb.home_derp if body.home_derp is None else body.home_derp,
                rb.hostname if body.hostname is None else body.hostname,
            )  # fmt: skip
        return self._request("POST", "/machine/update", body.to_obj(), True, self._updated, on_done, on_error)

    def derp_map(
        self,
        on_done: Callable[[DERPMap], None] | None = None,
        on_error: Callable[[ControlError], None] | None = None,
    ) -> ControlCall[DERPMap]:
        return self._request("GET", "/derpmap", None, False, _derp_map_of, on_done, on_error)

    def fetch_netmap(
        self,
        on_done: Callable[[NetMap], None] | None = None,
        on_error: Callable[[ControlError], None] | None = None,
    ) -> ControlCall[NetMap]:
        """The current netmap, once (``GET /machine/map``)."""
        return self._request("GET", "/machine/map", None, True, self._got_netmap, on_done, on_error)

    def follow(
        self, on_netmap: Callable[[NetMap], None], on_error: Callable[[ControlError], None] | None = None
    ) -> None:
        """Follow the netmap stream from now on (after :meth:`register`; it waits for the token)."""
        if self._register_body is None and self.token is None:
            raise UsageError("register() first: the netmap stream needs this node's token")
        self._on_netmap, self._on_stream_error = on_netmap, on_error
        if self.token is not None:
            self.stream.start()

    @property
    def following(self) -> bool:
        return self._on_netmap is not None and not self.closed

    @property
    def stream_open(self) -> bool:
        """The stream's head arrived and its connection is up."""
        return self.stream.open

    @property
    def stream_connects(self) -> int:
        """Streams opened: the first one and every reconnect."""
        return self.stream.connects

    def close(self) -> None:
        """Stop: close both connections, fail what is queued, cancel every timer."""
        if self.closed:
            return
        self.closed = True
        self._on_netmap = None
        self.stream.stop()
        for timer in (self._call_timer, self._retry_timer):
            if timer is not None:
                timer.cancel()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        pending = ([self._active] if self._active is not None else []) + list(self._queue)
        self._active = None
        self._queue.clear()
        for p in pending:
            p.call.finish(None, ControlError(0, "the client was closed"))

    # --- requests ---------------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        target: str,
        body: dict[str, Any] | None,
        authed: bool,
        parse: Callable[[dict[str, Any]], Any],
        on_done: Callable[[Any], None] | None,
        on_error: Callable[[ControlError], None] | None,
    ) -> ControlCall[Any]:
        call: ControlCall[Any] = ControlCall(f"{method} {target}")

        def done(c: ControlCall[Any]) -> None:
            if c.error is not None:
                if on_error is not None:
                    on_error(c.error)
            elif on_done is not None:
                on_done(c.result)

        call.add_done_callback(done)
        if self.closed:
            call.finish(None, ControlError(0, "the client was closed"))
            return call
        self._queue.append(Pending(method, target, body, authed, parse, call))
        self._kick()
        return call

    def _kick(self) -> None:
        """Start the next queued request if none is in flight."""
        if self._active is not None or not self._queue or self.closed or self._retry_timer is not None:
            return
        self._active = self._queue.popleft()
        self._active.attempts += 1
        self._call_timer = self.sched.call_later(self.timing.control_request_timeout, self._call_timeout)
        if self._conn is None or self._conn.closed:
            self._conn, self._conn_used, self._rx = None, False, bytearray()
            try:
                self._conn = connect(self.machine, self.server, lambda c: self._send())
            except OSError as exc:
                self._transport_failed(f"cannot connect: {exc}")
                return
            conn = self._conn
            conn.on_data = lambda data: self._received(conn, data)
            conn.on_eof = lambda: self._conn_lost(conn, "closed by the server")
            conn.on_closed = lambda reason: self._conn_lost(conn, reason)
        elif self._conn.established:
            self._send()

    def _send(self) -> None:
        p, conn = self._active, self._conn
        if p is None or conn is None:
            return
        if p.authed and self.token is None:
            self._fail(ControlError(0, "register() first: the control server needs this node's token"))
            return
        body = None if p.body is None else _json_bytes(p.body)
        conn.send(request_bytes(p.method, p.target, str(self.server.ip), self.server.port, self.token, body))
        self.counters["requests"] += 1

    def _received(self, conn: TcpConnection, data: bytes) -> None:
        if conn is not self._conn:
            return
        self._rx += data
        while self._active is not None:
            end = self._rx.find(b"\r\n\r\n")
            if end < 0:
                if len(self._rx) > MAX_RESPONSE:
                    self._garbage(ControlError(0, "answer head too long"))
                return
            try:
                status, headers = parse_response_head(bytes(self._rx[: end + 4]))
                length = int(headers.get("content-length", "0"))
            except (ControlError, ValueError) as exc:
                self._garbage(exc if isinstance(exc, ControlError) else ControlError(0, f"bad Content-Length: {exc}"))
                return
            if status < 200:  # an interim answer (100 Continue)
                del self._rx[: end + 4]
                continue
            if len(self._rx) < end + 4 + length:
                return
            body = bytes(self._rx[end + 4 : end + 4 + length])
            del self._rx[: end + 4 + length]
            self._conn_used = True
            if "close" in headers.get("connection", "").lower():
                self._conn = None
                conn.close()
            self._answered(status, body)

    def _answered(self, status: int, body: bytes) -> None:
        p = self._active
        assert p is not None
        self._backoff = self.timing.derp_reconnect_min
        try:
            answer = checked_answer(status, body)
            result = p.parse(answer)
        except ControlError as exc:
            if exc.status == 401 and p.authed and not p.auth_retried and self._register_body is not None:
                p.auth_retried = True  # the server forgot us: register again, then this request once more
                self._end_active()
                self._queue.appendleft(p)
                self._queue.appendleft(self._register_pending())
                self._kick()
                return
            self._fail(exc)
            return
        self.counters["answers"] += 1
        self._end_active()
        p.call.finish(result, None)
        self._kick()

    def _register_pending(self) -> Pending:
        assert self._register_body is not None
        call: ControlCall[ControlNode] = ControlCall("POST /machine/register (again)")
        return Pending("POST", "/machine/register", self._register_body.to_obj(), False, self._registered, call)

    def _fail(self, error: ControlError) -> None:
        p = self._active
        assert p is not None
        self.counters["errors"] += 1
        self._end_active()
        p.call.finish(None, error)
        self._kick()

    def _garbage(self, error: ControlError) -> None:
        self._drop_conn()
        self._fail(error)

    def _end_active(self) -> None:
        self._active = None
        if self._call_timer is not None:
            self._call_timer.cancel()
            self._call_timer = None

    def _drop_conn(self) -> None:
        if self._conn is not None:
            self._conn.abort()
            self._conn = None

    def _call_timeout(self) -> None:
        self._call_timer = None
        self._drop_conn()
        self._transport_failed(f"no answer within {self.timing.control_request_timeout:g} s")

    def _conn_lost(self, conn: TcpConnection, reason: str) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        if not conn.closed:
            conn.close()
        if self._active is not None:
            self._transport_failed(f"connection {reason}", fresh_retry=self._conn_used and self._active.attempts == 1)

    def _transport_failed(self, why: str, *, fresh_retry: bool = False) -> None:
        p = self._active
        if p is None:
            return
        self.counters["transport-errors"] += 1
        self._end_active()
        if not self.retry and not fresh_retry:
            p.call.finish(None, ControlError(0, why))
            self._kick()
            return
        self._queue.appendleft(p)
        if fresh_retry:  # the server closed the idle kept-alive connection: one fresh try at once
            self._kick()
            return
        delay, self._backoff = self._backoff, min(self._backoff * 2, self.timing.derp_reconnect_max)
        self._retry_timer = self.sched.call_later(delay, self._retry)

    def _retry(self) -> None:
        self._retry_timer = None
        self._kick()

    # --- answers ----------------------------------------------------------------------------------
    def _registered(self, answer: dict[str, Any]) -> ControlNode:
        token = answer.get("Token")
        if not isinstance(token, str) or not token:
            raise ControlError(200, "register answer has no Token")
        node = node_of(answer)
        self.token, self.self_node = token, node
        if self._on_netmap is not None and not self.closed:
            self.stream.start()  # the stream waited for this token (or a 401 made us register again)
        return node

    def _updated(self, answer: dict[str, Any]) -> ControlNode:
        self.self_node = node_of(answer)
        return self.self_node

    def _got_netmap(self, answer: dict[str, Any]) -> NetMap:
        netmap = netmap_of(answer)
        self.netmap, self.self_node = netmap, netmap.self_node
        return netmap

    # --- the netmap stream ------------------------------------------------------------------------
    def _streamed(self, netmap: NetMap) -> None:
        self.netmap, self.self_node = netmap, netmap.self_node
        self.counters["netmaps"] += 1
        if self._on_netmap is not None:
            self._on_netmap(netmap)

    def _stream_refused(self, error: ControlError) -> None:
        if error.status == 401 and self._register_body is not None:
            self.counters["stream-401"] += 1  # the server forgot our token: register again; its answer reopens
            self._queue.appendleft(self._register_pending())
            self._kick()
            return
        handler, self._on_netmap = self._on_stream_error, None
        if handler is not None:
            handler(error)


def _derp_map_of(answer: dict[str, Any]) -> DERPMap:
    try:
        return DERPMap.from_obj(answer)
    except DecodeError as exc:
        raise ControlError(200, f"bad DERP map: {exc}") from None


def _json_bytes(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj).encode("utf-8")


__all__ = ["STREAM_TARGET", "ControlCall", "SimControlClient"]
