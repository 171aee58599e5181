"""The netmap stream of the sim's control client: ``GET /machine/map?stream=1`` kept open over sim TCP.

:class:`NetmapStream` is the part of :class:`~toolkit.lab.sim.control_client.SimControlClient` that
follows the server-sent events (WHATWG HTML §9.2) of :mod:`toolkit.sansio.control_push`, as the asyncio
client's :meth:`~toolkit.services.controlclient.ControlClient.netmaps` does: the request is the asyncio
client's bytes (:func:`~toolkit.services.controlclient.request_bytes`), the events are read by its
:class:`~toolkit.services.controlclient.SSEParser` and :func:`~toolkit.services.controlclient.netmap_of`.

* Every ``netmap`` event goes to ``on_netmap``. The stream is alive while bytes come: a ``: keepalive``
  comment every ``Timing.control_stream_keepalive``; silence for two of those plus
  ``control_request_timeout`` (or no answer head within ``control_request_timeout``) counts as broken.
* When it ends (the server's FIN), breaks (a reset: a control server restart; a TCP timeout) or goes
  silent, it opens again after a doubling backoff (``Timing.derp_reconnect_min`` .. ``derp_reconnect_max``,
  reset by every netmap), with the token the client holds then.
* A 4xx answer instead of the stream stops it (no reconnect) and goes to ``on_refused``: the client
  registers again on a 401 and then calls :meth:`NetmapStream.start` once more.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from toolkit.errors import DecodeError
from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.net import Machine
from toolkit.lab.sim.tcp import TcpConnection, connect
from toolkit.sansio.control_netmap import NetMap
from toolkit.services.controlclient import (
    ControlError,
    SSEParser,
    checked_answer,
    json_answer,
    netmap_of,
    parse_response_head,
    request_bytes,
)
from toolkit.timing import Timing
from toolkit.types import Endpoint

STREAM_TARGET = "/machine/map?stream=1"


class NetmapStream:
    """One followed netmap stream (see the module docstring). ``token()`` is read at every (re)connect."""

    def __init__(
        self,
        machine: Machine,
        server: Endpoint,
        timing: Timing,
        token: Callable[[], str | None],
        on_netmap: Callable[[NetMap], None],
        on_refused: Callable[[ControlError], None],
    ) -> None:
        self.machine, self.server, self.timing = machine, server, timing
        self.sched = machine.sched
        self._token, self._on_netmap, self._on_refused = token, on_netmap, on_refused
        self.counters: Counter[str] = Counter()
        self.connects = 0  # streams opened: the first one and every reconnect
        self.parser = SSEParser()
        self.running = False
        self._conn: TcpConnection | None = None
        self._rx = bytearray()
        self._head = True
        self._timer: Timer | None = None
        self._reopen: Timer | None = None
        self._backoff = timing.derp_reconnect_min

    @property
    def open(self) -> bool:
        """The answer head arrived (200) and the connection is up."""
        return self._conn is not None and not self._conn.closed and not self._head

    def start(self) -> None:
        """Open the stream (and keep it open) unless it already is."""
        self.running = True
        if self._conn is None and self._reopen is None:
            self._open()

    def stop(self) -> None:
        """Close it and stop reconnecting."""
        self.running = False
        for timer in (self._timer, self._reopen):
            if timer is not None:
                timer.cancel()
        self._timer = self._reopen = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            conn.close()

    # --- connection -------------------------------------------------------------------------------
    def _open(self) -> None:
        self._reopen = None
        if not self.running or self._conn is not None:
            return
        self._rx, self._head, self.parser = bytearray(), True, SSEParser()
        try:
            conn = connect(self.machine, self.server, self._connected)
        except OSError as exc:
            self._lost(None, f"cannot connect: {exc}")
            return
        self._conn = conn
        self.connects += 1
        conn.on_data = lambda data: self._data(conn, data)
        conn.on_eof = lambda: self._lost(conn, "ended by the server")
        conn.on_closed = lambda reason: self._lost(conn, f"connection {reason}")
        self._arm(self.timing.control_request_timeout)

    def _connected(self, conn: TcpConnection) -> None:
        if conn is self._conn:
            conn.send(request_bytes("GET", STREAM_TARGET, str(self.server.ip), self.server.port, self._token(), None))

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.sched.call_later(delay, self._silent)

    def _silent(self) -> None:
        self._timer = None
        self._lost(self._conn, "silent for too long")

    def _lost(self, conn: TcpConnection | None, why: str, *, reconnect: bool = True) -> None:
        if conn is not self._conn:
            return  # an old connection's late callback
        self.counters["lost"] += 1
        self._conn = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if conn is not None and not conn.closed:
            conn.close()
        if reconnect and self.running and self._reopen is None:
            delay, self._backoff = self._backoff, min(self._backoff * 2, self.timing.derp_reconnect_max)
            self._reopen = self.sched.call_later(delay, self._open)

    # --- input ------------------------------------------------------------------------------------
    def _data(self, conn: TcpConnection, data: bytes) -> None:
        if conn is not self._conn:
            return
        if self._head:
            self._rx += data
            end = self._rx.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                status, headers = parse_response_head(bytes(self._rx[: end + 4]))
                if status != 200:
                    length = int(headers.get("content-length", "0"))
                    if len(self._rx) < end + 4 + length:
                        return
                    checked_answer(status, bytes(self._rx[end + 4 : end + 4 + length]))
                    raise ControlError(status, "")
            except (ControlError, ValueError) as exc:
                self._refused(conn, exc if isinstance(exc, ControlError) else ControlError(0, f"bad head: {exc}"))
                return
            data = bytes(self._rx[end + 4 :])
            self._head, self._rx = False, bytearray()
        self._arm(2 * self.timing.control_stream_keepalive + self.timing.control_request_timeout)
        try:
            for event, text in self.parser.feed(data):
                if event == "netmap":
                    netmap = netmap_of(json_answer(text.encode("utf-8"), 200))
                    self._backoff = self.timing.derp_reconnect_min
                    self.counters["netmaps"] += 1
                    self._on_netmap(netmap)
        except (ControlError, DecodeError) as exc:
            self.counters["bad-stream"] += 1
            self._lost(conn, f"bad stream: {exc}")

    def _refused(self, conn: TcpConnection, error: ControlError) -> None:
        self.counters[f"refused-{error.status}"] += 1
        if 400 <= error.status < 500:
            self.running = False
            self._lost(conn, str(error), reconnect=False)
            self._on_refused(error)
        else:  # 5xx, or not HTTP: the server is in trouble; try again later
            self._lost(conn, str(error))


__all__ = ["STREAM_TARGET", "NetmapStream"]
