"""The coordination server in the simulator: :class:`ControlServerDriver`, HTTP/1.1 over the sim's TCP.

The very core ``natkit control-server`` runs (:class:`toolkit.sansio.control.ControlCore`, whose
docstring is the API) behind a :class:`~toolkit.lab.sim.tcp.TcpListener`, answering with the bytes the
asyncio server writes (:func:`~toolkit.services.controlserver.parse_head`,
:func:`~toolkit.services.controlserver.response_bytes`, ...): the same HTTP subset as
:mod:`toolkit.services.controlserver` (its docstring), driven by callbacks on the virtual clock:

* persistent connections answered in order (HTTP/1.0 only with ``Connection: keep-alive``); bodies by
  ``Content-Length`` (``413`` over ``max_body``, ``501`` for ``Transfer-Encoding``, ``100 Continue`` for
  ``Expect: 100-continue``); ``400`` / ``431`` / ``505`` for bad heads, then the connection closes;
* a request must arrive whole within ``Timing.control_request_timeout`` of its first byte (else ``408``);
  a new connection silent that long, or a kept-alive one idle for ``control_idle_timeout``, is closed;
* ``GET /machine/map?stream=1`` gets the ``text/event-stream`` head and then the core's
  :meth:`~toolkit.sansio.control.ControlCore.stream_writes`; a long poll (``?since=V``) waits for the
  core's :meth:`~toolkit.sansio.control.ControlCore.poll_answers` (requests pipelined behind it wait);
* the core's one timer (keepalives, long-poll deadlines) is one sim timer.

Determinism: the ``Date`` header and the core's wall times are ``epoch + virtual now`` (``epoch`` is the
capture files' :data:`~toolkit.lab.sim.capture.EPOCH`), so a seed gives the same bytes in every run.
Not modelled: the sim's TCP never pushes back, so the asyncio server's limits on unread answers and
slow streams (``MAX_STREAM_BUFFER``) do not apply. :meth:`ControlServerDriver.close` resets every
connection (what a killed server's kernel does) and frees the port at once, so a new driver over the
same store can listen there again: a restart loses nothing registered (tokens are in the store).

The node's side is :class:`~toolkit.lab.sim.control_client.SimControlClient` (re-exported here, with
:class:`~toolkit.lab.sim.control_call.ControlCall`; its netmap stream is
:mod:`toolkit.lab.sim.control_stream`). ``SimWorld.start_control_server`` builds both ends for a lab.
"""

from __future__ import annotations

import itertools
from collections import Counter

from toolkit.lab.sim.capture import EPOCH
from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.control_client import ControlCall, SimControlClient
from toolkit.lab.sim.net import Machine
from toolkit.lab.sim.tcp import TcpConnection, TcpListener
from toolkit.sansio.control import ControlCore
from toolkit.sansio.control_api import PollPending, Request, Response, StreamOpened, error_response
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.services.controlserver import (
    MAX_BODY,
    MAX_HEAD,
    HttpError,
    body_length,
    json_response_bytes,
    parse_head,
    stream_head_bytes,
    wants_close,
)
from toolkit.types import Endpoint

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"  # RFC 9110 §10.1.1


class _HttpConn:
    """One accepted connection: its bytes not parsed yet and where its current request is."""

    __slots__ = ("buf", "close_after", "conn", "eof", "head", "mode", "poll_id", "stream_id", "timer")

    def __init__(self, conn: TcpConnection) -> None:
        self.conn = conn
        self.buf = bytearray()
        self.head: tuple[str, str, str, dict[str, str], int] | None = None  # method, target, version, headers, length
        self.mode: str | None = None  # None (reading requests), "poll" (a long poll waits), "stream", "closed"
        self.poll_id = self.stream_id = 0
        self.close_after = False
        self.timer: Timer | None = None
        self.eof = False


class ControlServerDriver:
    """A :class:`ControlCore` listening on ``local`` of ``machine`` (see the module docstring)."""

    name = "control-server"

    def __init__(
        self,
        machine: Machine,
        core: ControlCore,
        local: Endpoint,
        *,
        max_body: int = MAX_BODY,
        epoch: float = EPOCH,
        tracer: Tracer | None = None,
    ) -> None:
        self.machine, self.core, self.max_body, self.epoch, self.tracer = machine, core, max_body, epoch, tracer
        self.sched = machine.sched
        self.request_timeout = core.timing.control_request_timeout
        self.idle_timeout = core.timing.control_idle_timeout
        self.counters: Counter[str] = Counter()  # requests refused at the HTTP level, by reason
        self.conns: dict[int, _HttpConn] = {}
        self._streams: dict[int, _HttpConn] = {}
        self._polls: dict[int, _HttpConn] = {}
        self._ids = itertools.count(1)
        self._timer: Timer | None = None
        self._pumping = self._again = False
        self.listener = TcpListener(machine, local, self._accepted)
        self.local = self.listener.local
        self.running = True

    @property
    def url(self) -> str:
        return f"http://{self.local}"

    # --- connections ------------------------------------------------------------------------------
    def _accepted(self, conn: TcpConnection) -> None:
        if not self.running:
            conn.abort()
            return
        cid = next(self._ids)
        hc = self.conns[cid] = _HttpConn(conn)
        conn.on_data = lambda data: self._data(hc, data)
        conn.on_eof = lambda: self._eof(hc)
        conn.on_closed = lambda reason: self._lost(cid, hc)
        self._wait_for_request(hc, self.request_timeout)  # a new connection must start its request at once

    def _data(self, hc: _HttpConn, data: bytes) -> None:
        if hc.mode == "stream" or hc.mode == "closed":
            return  # the client says nothing on a stream
        hc.buf += data
        if hc.mode is None:
            self._process(hc)
            self._pump()

    def _eof(self, hc: _HttpConn) -> None:
        hc.eof = True
        if hc.mode != "poll":  # a long poll is answered first, then the connection closes
            self._close(hc)
            self._pump()

    def _lost(self, cid: int, hc: _HttpConn) -> None:
        self.conns.pop(cid, None)
        self._cancel_timer(hc)
        if hc.mode == "stream":
            self._streams.pop(hc.stream_id, None)
            self.core.close_stream(hc.stream_id, self.sched.now)
        elif hc.mode == "poll":
            self._polls.pop(hc.poll_id, None)
            self.core.cancel_poll(hc.poll_id)
        hc.mode = "closed"
        self._pump()

    def _close(self, hc: _HttpConn) -> None:
        self._cancel_timer(hc)
        if hc.mode == "stream":
            self._streams.pop(hc.stream_id, None)
            self.core.close_stream(hc.stream_id, self.sched.now)
        hc.mode = "closed"
        hc.conn.close()

    # --- HTTP ---------------------------------------------------------------------------------------
    def _process(self, hc: _HttpConn) -> None:
        """Parse and answer every complete request in ``hc.buf`` (stops at a stream or a waiting poll)."""
        while hc.mode is None:
            if hc.head is None:
                if not hc.buf:
                    return
                if hc.timer is None or hc.timer.callback != self._request_timeout:
                    self._arm(hc, self.request_timeout, self._request_timeout)  # the whole request from now
                del hc.buf[: len(hc.buf) - len(hc.buf.lstrip(b"\r\n"))]  # RFC 9112 §2.2: empty lines first
                end = hc.buf.find(b"\r\n\r\n")
                if (end < 0 and len(hc.buf) > MAX_HEAD) or end + 4 > MAX_HEAD:
                    self._refuse(hc, 431, "too-large", f"request head longer than {MAX_HEAD} bytes")
                    return
                if end < 0:
                    return
                raw = bytes(hc.buf[: end + 4])
                del hc.buf[: end + 4]
                try:
                    method, target, version, headers = parse_head(raw)
                    length = body_length(headers, self.max_body)
                except HttpError as exc:
                    self._refuse(hc, exc.status, exc.reason, str(exc))
                    return
                if length and headers.get("expect", "").lower() == "100-continue":
                    hc.conn.send(CONTINUE)
                hc.head = (method, target, version, headers, length)
            method, target, version, headers, length = hc.head
            if len(hc.buf) < length:
                return
            body = bytes(hc.buf[:length])
            del hc.buf[:length]
            hc.head = None
            self._cancel_timer(hc)
            self._answer(hc, Request(method, target, headers, body, hc.conn.remote), wants_close(version, headers))

    def _answer(self, hc: _HttpConn, request: Request, close: bool) -> None:
        reply = self.core.handle(request, self.sched.now)
        if isinstance(reply, StreamOpened):
            hc.mode, hc.stream_id = "stream", reply.stream_id
            self._streams[reply.stream_id] = hc
            hc.conn.send(stream_head_bytes(self._date()))
        elif isinstance(reply, PollPending):
            hc.mode, hc.poll_id, hc.close_after = "poll", reply.poll_id, close
            self._polls[reply.poll_id] = hc
        else:
            self._respond(hc, reply, close)

    def _respond(self, hc: _HttpConn, response: Response, close: bool) -> None:
        hc.conn.send(json_response_bytes(response, close=close, date=self._date()))
        if close or hc.eof:
            self._close(hc)
            return
        hc.mode = None
        self._wait_for_request(hc, self.idle_timeout)  # a kept-alive connection may idle between requests

    def _refuse(self, hc: _HttpConn, status: int, reason: str, message: str) -> None:
        self.counters[reason] += 1
        if self.tracer is not None:
            self.tracer(
                TraceRecord(self.sched.now, self.core.name, None, "dropped", message, reason, b"", hc.conn.remote)
            )
        hc.conn.send(json_response_bytes(error_response(status, message), close=True, date=self._date()))
        self._close(hc)

    def _date(self) -> float:
        return self.epoch + self.sched.now

    # --- per-connection timers ----------------------------------------------------------------------
    def _wait_for_request(self, hc: _HttpConn, wait: float) -> None:
        self._arm(hc, wait, self._idle_timeout)

    def _arm(self, hc: _HttpConn, delay: float, callback: object) -> None:
        self._cancel_timer(hc)
        hc.timer = self.sched.call_later(delay, callback, hc)  # type: ignore[arg-type]

    @staticmethod
    def _cancel_timer(hc: _HttpConn) -> None:
        if hc.timer is not None:
            hc.timer.cancel()
            hc.timer = None

    def _idle_timeout(self, hc: _HttpConn) -> None:
        hc.timer = None
        if hc.mode is None and not hc.buf and hc.head is None:
            self._close(hc)
            self._pump()

    def _request_timeout(self, hc: _HttpConn) -> None:
        hc.timer = None
        if hc.mode is None:
            self._refuse(hc, 408, "timeout", f"the request did not arrive within {self.request_timeout:g} s")
            self._pump()

    # --- the core's outputs and timer ---------------------------------------------------------------
    def _pump(self) -> None:
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                for stream_id, data in self.core.stream_writes():
                    hc = self._streams.get(stream_id)
                    if hc is not None and not hc.conn.closed:
                        hc.conn.send(data)
                for poll_id, response in self.core.poll_answers():
                    hc = self._polls.pop(poll_id, None)
                    if hc is not None and hc.mode == "poll":
                        self._respond(hc, response, hc.close_after)
                        self._process(hc)  # requests pipelined behind the poll
                        self._again = True
        finally:
            self._pumping = False
        self._rearm()

    def _rearm(self) -> None:
        when = self.core.get_timer() if self.running else None
        if self._timer is not None:
            if when is not None and self._timer.when == when and not self._timer.cancelled:
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self.sched.call_at(when, self._fire, when)

    def _fire(self, deadline: float) -> None:
        self._timer = None
        self.core.handle_timer(max(self.sched.now, deadline))
        self._pump()

    # --- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop: reset every connection (streams and polls end), release the port, stop the timer."""
        if not self.running:
            return
        self.running = False
        self.listener.close()
        for hc in list(self.conns.values()):
            hc.conn.abort()  # on_closed -> _lost: the core closes its streams and polls
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def summary(self) -> str:
        c = self.core.counters
        answered = sum(c[k] for k in ("info", "health", "derpmap", "register", "update", "map"))
        rejected = sum(v for k, v in c.items() if k.startswith(("bad-", "not-", "no-", "internal", "exhausted")))
        return (
            f"{c['nodes-added']} new node{'' if c['nodes-added'] == 1 else 's'}, {answered} requests answered, "
            f"{rejected} rejected, {sum(self.counters.values())} refused at the HTTP level"
        )


__all__ = ["ControlCall", "ControlServerDriver", "SimControlClient"]
