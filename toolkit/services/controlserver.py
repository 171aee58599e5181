"""``natkit control-server``: the coordination server as an asyncio service, HTTP/1.1 on TCP.

A thin driver around :class:`toolkit.sansio.control.ControlCore` (whose docstring is the API
reference): it reads HTTP requests, hands them to the core, writes the core's answers, keeps the
server-sent-event streams and long polls open, and re-arms the core's one timer. State lives in a
:class:`~toolkit.services.controlstore.SQLiteStore` (``--db FILE``), so a restart loses nothing.

HTTP/1.1 as RFC 9112 has it, the subset a control plane needs, written on asyncio streams:

* persistent connections (HTTP/1.1 by default, HTTP/1.0 with ``Connection: keep-alive``), requests
  answered in order; ``Connection: close`` is honoured;
* bodies by ``Content-Length`` only (RFC 9112 §6.3): a body larger than ``max_body`` is answered
  ``413`` without being read, ``Transfer-Encoding`` is ``501``; ``Expect: 100-continue`` gets its
  interim ``100 Continue``;
* a bad request line or header is ``400`` (an HTTP/1.1 request needs ``Host``, RFC 9112 §3.2), a
  head over 8 KiB ``431``, a version other than 1.0/1.1 ``505``; the connection is closed after each;
* slow clients: a request must arrive whole within ``Timing.control_request_timeout`` (10 s) of its
  first byte (else ``408`` and close: a slow-loris client holds one connection for that long at most);
  a new connection that sends nothing for as long, or a kept-alive one idle for
  ``Timing.control_idle_timeout`` (60 s), is closed; a response the client does not read within
  ``control_request_timeout`` closes the connection; a stream whose client stops reading is dropped
  once ``MAX_STREAM_BUFFER`` bytes wait for it;
* a netmap stream is ``text/event-stream`` delimited by the end of the connection (``Connection:
  close``, no chunking), so ``curl -N`` and browsers' ``EventSource`` read it as is.

Every answer carries a JSON body.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import os
import re
import time
from collections import Counter
from pathlib import Path

from toolkit.codec.derpmap import DERPMap
from toolkit.errors import UsageError
from toolkit.sansio.control import ControlCore
from toolkit.sansio.control_api import PollPending, Request, Response, StreamOpened, error_response
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.services.controlstore import SQLiteStore
from toolkit.services.runner import bind_error
from toolkit.services.sockets import dialable, endpoint_of
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint

MAX_HEAD = 8 << 10
MAX_BODY = 64 << 10
MAX_STREAM_BUFFER = 1 << 20
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class HttpError(Exception):
    """A request the HTTP layer refuses before the core sees it; the connection closes after the answer."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """``(method, target, version, headers)`` of a request head (RFC 9112 §3, §5); raises HttpError."""
    lines = head.decode("latin-1").split("\r\n")
    while lines and lines[-1] == "":
        lines.pop()
    parts = lines[0].split(" ") if lines else []
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not re.fullmatch(r"HTTP/\d\.\d", parts[2]):
        raise HttpError(400, "bad-http", f"bad request line {lines[0][:80] if lines else ''!r}")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, "bad-http", f"{version} is not supported: speak HTTP/1.1")
    if not target.startswith("/") or any(c in target for c in "\0\x7f") or not target.isprintable():
        raise HttpError(400, "bad-http", f"request target {target[:80]!r} is not a path")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name) or "\0" in value:  # also obs-fold lines (RFC 9112 §5.2)
            raise HttpError(400, "bad-http", f"bad header line {line[:80]!r}")
        key, value = name.lower(), value.strip(" \t")
        if key == "content-length" and key in headers and headers[key] != value:
            raise HttpError(400, "bad-http", "two different Content-Length headers")
        headers[key] = f"{headers[key]}, {value}" if key in headers and key != "content-length" else value
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "bad-http", "an HTTP/1.1 request needs a Host header")
    return method, target, version, headers


def response_bytes(
    status: int,
    body: bytes,
    headers: list[tuple[str, str]],
    *,
    close: bool,
    delimited: bool = True,
    date: float | None = None,
) -> bytes:
    """A response head and body: ``Content-Length`` unless the body ends with the connection
    (``delimited=False``, RFC 9112 §6.3 rule 8), ``Connection: close`` when closing. ``date``: the
    ``Date`` header's time (seconds since the epoch; None: now; the simulator passes its virtual time)."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    fields = [("Date", email.utils.formatdate(date, usegmt=True)), ("Server", "natkit-control"), *headers]
    if delimited:
        fields.append(("Content-Length", str(len(body))))
    if close:
        fields.append(("Connection", "close"))
    lines = [f"HTTP/1.1 {status} {phrase}", *(f"{k}: {v}" for k, v in fields)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_response_bytes(response: Response, *, close: bool, date: float | None = None) -> bytes:
    headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), *response.headers]
    return response_bytes(response.status, response.body_bytes(), headers, close=close, date=date)


def stream_head_bytes(date: float | None = None) -> bytes:
    """The head of a netmap stream: ``text/event-stream`` delimited by the end of the connection."""
    head = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
    return response_bytes(200, b"", head, close=True, delimited=False, date=date)


def body_length(headers: dict[str, str], max_body: int) -> int:
    """The ``Content-Length`` of a request (RFC 9112 §6.3); raises HttpError for chunked bodies (501), a
    bad number (400) or a body over ``max_body`` (413)."""
    if "transfer-encoding" in headers:
        raise HttpError(501, "bad-http", "Transfer-Encoding is not supported: send a Content-Length body")
    text = headers.get("content-length", "0")
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise HttpError(400, "bad-http", f"Content-Length {text[:40]!r} is not a number")
    length = int(text)
    if length > max_body:
        raise HttpError(413, "too-large", f"body of {length} bytes is over the limit of {max_body}")
    return length


def wants_close(version: str, headers: dict[str, str]) -> bool:
    """Whether the client asked to close after this request (RFC 9112 §9.3)."""
    tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
    return "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)


class ControlServer:
    """The coordination server (a :class:`toolkit.services.runner.Service`)."""

    name = "control-server"

    def __init__(
        self,
        listen: list[Endpoint],
        db: Path | str,
        authkeys: list[str],
        derp_map: DERPMap | None = None,
        *,
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        if not authkeys:
            raise UsageError("the control server needs a pre-auth key: give --authkey KEY")
        self.listen, self.db, self.authkeys, self.derp_map = list(listen), db, list(authkeys), derp_map
        self.timing, self.tracer = timing, tracer
        self.max_body = max_body
        self.request_timeout, self.idle_timeout = timing.control_request_timeout, timing.control_idle_timeout
        self.counters: Counter[str] = Counter()
        self.endpoints: list[Endpoint] = []
        self._core: ControlCore | None = None
        self._store: SQLiteStore | None = None
        self._servers: list[asyncio.Server] = []
        self._conns: set[asyncio.Task[None]] = set()
        self._streams: dict[int, asyncio.StreamWriter] = {}
        self._polls: dict[int, asyncio.Future[Response]] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def core(self) -> ControlCore:
        if self._core is None:
            raise RuntimeError("the control server is not started")
        return self._core

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the first listen address (a wildcard address as loopback)."""
        return f"http://{dialable(self.endpoints[0] if self.endpoints else self.listen[0])}"

    # --- Service ------------------------------------------------------------------------------------
    async def start(self) -> list[str]:
        loop = asyncio.get_running_loop()
        self._store = SQLiteStore(self.db)
        epoch = time.time() - loop.time()
        self._core = ControlCore(
            self._store, self.authkeys, self.derp_map, rng=os.urandom, epoch=epoch, timing=self.timing,
            tracer=self.tracer, name=self.name,
        )  # fmt: skip
        for ep in self.listen:
            host, port = ep.as_tuple()
            try:
                server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD, reuse_address=True)
            except OSError as exc:
                raise bind_error("tcp", ep, exc) from None
            self._servers.append(server)
            self.endpoints.append(endpoint_of(server.sockets[0].getsockname()))
        return [f"tcp {ep}" for ep in self.endpoints]

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()
        if self._store is not None:
            self._store.close()
            self._store = None

    def summary(self) -> str:
        if self._core is None:
            return "not started"
        c = self._core.counters
        answered = sum(c[k] for k in ("info", "health", "derpmap", "register", "update", "map"))
        rejected = sum(v for k, v in c.items() if k.startswith(("bad-", "not-", "no-", "internal", "exhausted")))
        refused = sum(self.counters.values())
        return (
            f"{c['nodes-added']} new node{'' if c['nodes-added'] == 1 else 's'}, {answered} requests answered, {rejected} rejected, "
            f"{refused} refused at the HTTP level"
        )

    # --- connections ----------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        name = writer.get_extra_info("peername")
        peer = endpoint_of(name) if isinstance(name, tuple) else None
        try:
            wait = self.request_timeout  # a new connection must start its request at once
            while await self._one_request(reader, writer, peer, wait):
                wait = self.idle_timeout  # a kept-alive one may idle between requests
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # stop() ends every connection; asyncio's stream callback would log a cancelled task
        finally:
            self._conns.discard(task)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Endpoint | None, wait: float
    ) -> bool:
        """Read, answer; True to keep the connection for another request. ``wait``: for its first byte."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(wait):
                first = await reader.read(1)
        except TimeoutError:
            return False
        if not first:
            return False
        try:
            async with asyncio.timeout_at(loop.time() + self.request_timeout):
                method, target, version, headers, body = await self._read_request(first, reader, writer)
        except HttpError as exc:
            await self._refuse(writer, exc.status, exc.reason, str(exc), peer)
            return False
        except TimeoutError:
            message = f"the request did not arrive within {self.request_timeout:g} s"
            await self._refuse(writer, 408, "timeout", message, peer)
            return False
        close = wants_close(version, headers)
        reply = self.core.handle(Request(method, target, headers, body, peer), loop.time())
        if isinstance(reply, StreamOpened):
            await self._stream(reply, reader, writer)
            return False
        if isinstance(reply, PollPending):
            reply = await self._poll(reply)
        self._flush()
        writer.write(json_response_bytes(reply, close=close))
        async with asyncio.timeout(self.request_timeout):  # a client that does not read is dropped
            await writer.drain()
        return not close

    async def _read_request(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, str, str, dict[str, str], bytes]:
        try:
            head = (first + await reader.readuntil(b"\r\n\r\n")).lstrip(b"\r\n")  # RFC 9112 §2.2: empty lines
        except asyncio.LimitOverrunError:
            raise HttpError(431, "too-large", f"request head longer than {MAX_HEAD} bytes") from None
        method, target, version, headers = parse_head(head)
        length = body_length(headers, self.max_body)
        if length and headers.get("expect", "").lower() == "100-continue":  # RFC 9110 §10.1.1
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(length) if length else b""
        return method, target, version, headers, body

    async def _refuse(
        self, writer: asyncio.StreamWriter, status: int, reason: str, message: str, peer: Endpoint | None
    ) -> None:
        self.counters[reason] += 1
        if self.tracer is not None:
            self.tracer(
                TraceRecord(
                    asyncio.get_running_loop().time(), self.name, None, "dropped", message, reason, endpoint=peer
                )
            )
        writer.write(json_response_bytes(error_response(status, message), close=True))
        with contextlib.suppress(ConnectionError, TimeoutError):
            async with asyncio.timeout(self.request_timeout):
                await writer.drain()

    async def _stream(self, opened: StreamOpened, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(stream_head_bytes())
        self._streams[opened.stream_id] = writer
        self._flush()
        try:
            while await reader.read(4096):  # the client says nothing on a stream; its end is our end
                pass
        except ConnectionError:
            pass
        finally:
            self._streams.pop(opened.stream_id, None)
            if self._core is not None:
                self._core.close_stream(opened.stream_id, asyncio.get_running_loop().time())
                self._flush()

    async def _poll(self, pending: PollPending) -> Response:
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._polls[pending.poll_id] = future
        self._flush()
        try:
            return await future
        finally:
            self._polls.pop(pending.poll_id, None)
            if self._core is not None:
                self._core.cancel_poll(pending.poll_id)

    # --- the core's outputs and timer ---------------------------------------------------------------
    def _flush(self) -> None:
        core = self.core
        for stream_id, data in core.stream_writes():
            writer = self._streams.get(stream_id)
            if writer is None or writer.is_closing():
                continue
            if writer.transport.get_write_buffer_size() > MAX_STREAM_BUFFER:
                self.counters["slow-stream"] += 1
                writer.close()
                continue
            writer.write(data)
        for poll_id, response in core.poll_answers():
            future = self._polls.pop(poll_id, None)
            if future is not None and not future.done():
                future.set_result(response)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = core.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        self._timer = None
        if self._core is not None:  # asyncio may run a timer up to its clock resolution early
            self._core.handle_timer(max(asyncio.get_running_loop().time(), deadline))
            self._flush()


__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "MAX_STREAM_BUFFER",
    "ControlServer",
    "HttpError",
    "body_length",
    "json_response_bytes",
    "parse_head",
    "response_bytes",
    "stream_head_bytes",
    "wants_close",
]
