"""The node's side of the coordination server: register, update, read the DERP map, follow the netmap.

:class:`ControlClient` speaks the API of :mod:`toolkit.sansio.control` over plain HTTP/1.1 (``http://``
only: labs run the control server on a private network; Tailscale wraps its control protocol in
Noise instead). Requests and answers use the same JSON model as the server
(:mod:`toolkit.sansio.control_netmap`), so what the server writes is what the client reads.

* One kept-alive connection carries the request/response calls, one at a time; a connection the
  server closed meanwhile is reopened once.
* :meth:`ControlClient.netmaps` follows ``GET /machine/map?stream=1`` (server-sent events, WHATWG
  HTML §9.2) on its own connection and yields a :class:`~toolkit.sansio.control_netmap.NetMap` per
  ``netmap`` event. When the stream ends, breaks, or stays silent for two keepalive intervals
  (``Timing.control_stream_keepalive``), it reconnects with a doubling backoff
  (``Timing.derp_reconnect_min`` .. ``derp_reconnect_max``, the relay client's). A 401 (the server
  forgot the token, say its database was replaced) makes it register again with the last endpoints.
* Errors the server sends are :class:`ControlError` with the status and the server's message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Any
from urllib.parse import urlsplit

from toolkit.codec.derpmap import DERPMap
from toolkit.crypto.keys import public_key
from toolkit.errors import DecodeError, NatkitError, UsageError
from toolkit.sansio.control_netmap import ControlNode, NetMap, RegisterBody, UpdateBody
from toolkit.timing import DEFAULT, Timing
from toolkit.types import DiscoPublicKey, Endpoint, NodePrivateKey

MAX_RESPONSE = 16 << 20  # a netmap of thousands of nodes still fits
SelfNode = ControlNode  # what register() returns: this node as the server sees it


class ControlError(NatkitError):
    """The control server answered with an error (``status`` >= 400), or not like HTTP at all (0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"control server: {status} {message}" if status else f"control server: {message}")
        self.status, self.message = status, message


class SSEParser:
    """Incremental ``text/event-stream`` parser (WHATWG HTML §9.2.6): lines end in LF or CRLF; a blank
    line ends an event; ``event:`` names it, ``data:`` lines are joined with LF; ``:`` lines are comments."""

    def __init__(self, max_line: int = MAX_RESPONSE) -> None:
        self._buf = bytearray()
        self._event, self._data = "", list[str]()
        self.max_line = max_line
        self.comments = 0

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """The ``(event, data)`` pairs completed by ``data``; raises DecodeError on an over-long line."""
        self._buf += data
        out: list[tuple[str, str]] = []
        while (end := self._buf.find(b"\n")) >= 0:
            line = self._buf[:end].removesuffix(b"\r").decode("utf-8", "replace")
            del self._buf[: end + 1]
            if not line:
                if self._data:
                    out.append((self._event or "message", "\n".join(self._data)))
                self._event, self._data = "", []
            elif line.startswith(":"):
                self.comments += 1
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    self._event = value
                elif name == "data":
                    self._data.append(value)
        if len(self._buf) > self.max_line:
            raise DecodeError(f"event-stream line longer than {self.max_line} bytes")
        return out


def request_bytes(method: str, target: str, host: str, port: int, token: str | None, body: bytes | None) -> bytes:
    """One HTTP/1.1 request of the control client (a JSON body when ``body`` is given, a bearer token when
    ``token`` is)."""
    host = f"[{host}]" if ":" in host else host  # RFC 9110 §7.2: IPv6 literals in brackets
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: natkit-control-client"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and lower-case headers of one response head (up to and including its blank line)."""
    first, *lines = head.decode("latin-1").split("\r\n")
    match = re.fullmatch(r"HTTP/1\.[01] ([1-5][0-9][0-9])( .*)?", first)
    if match is None:
        raise ControlError(0, f"not an HTTP response: {first[:80]!r}")
    headers = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(match.group(1)), headers


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and lower-case headers of a response head; interim 1xx answers are skipped."""
    while True:
        status, headers = parse_response_head(await reader.readuntil(b"\r\n\r\n"))
        if status >= 200:
            return status, headers


def json_answer(body: bytes, status: int) -> dict[str, Any]:
    """The JSON object of an answer; ControlError when it is not one."""
    try:
        obj = json.loads(body)
    except ValueError:
        raise ControlError(status, f"answer is not JSON: {body[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ControlError(status, "answer is not a JSON object")
    return obj


def checked_answer(status: int, body: bytes) -> dict[str, Any]:
    """The JSON object of a 200 answer; ControlError with the server's message for any other status."""
    answer = json_answer(body, status)
    if status != 200:
        raise ControlError(status, str(answer.get("error", "")))
    return answer


def node_of(answer: dict[str, Any]) -> ControlNode:
    """The ``Node`` of a register or update answer."""
    try:
        return ControlNode.from_obj(answer.get("Node"))
    except DecodeError as exc:
        raise ControlError(200, f"bad node in the answer: {exc}") from None


def netmap_of(obj: dict[str, Any]) -> NetMap:
    """A netmap answer or stream event."""
    try:
        return NetMap.from_obj(obj)
    except DecodeError as exc:
        raise ControlError(200, f"bad netmap: {exc}") from None


class ControlClient:
    """One node's connection to the control server at ``url`` (``http://HOST:PORT``)."""

    def __init__(
        self,
        url: str,
        authkey: str,
        node_private_key: NodePrivateKey,
        disco_public_key: DiscoPublicKey,
        hostname: str,
        *,
        timing: Timing = DEFAULT,
        timeout: float | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(f"control URL {url!r}: give http://HOST:PORT (natkit's control server speaks plain HTTP)")
        self.url, self.host, self.port = url.rstrip("/"), parts.hostname, parts.port or 80
        self.authkey, self.hostname, self.timing = authkey, hostname, timing
        self.timeout = timing.control_request_timeout if timeout is None else timeout
        self.node_key = public_key(node_private_key)
        self.disco_key = disco_public_key
        self.token: str | None = None
        self.self_node: ControlNode | None = None
        self._endpoints: tuple[Endpoint, ...] = ()
        self._home_derp = 0
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._stream_writers: set[asyncio.StreamWriter] = set()
        self._closed = False

    # --- the API --------------------------------------------------------------------------------
    async def register(self, endpoints: Sequence[Endpoint] = (), home_derp: int = 0) -> ControlNode:
        """Register (or register again) this node; its addresses are in the answer's ``addresses``."""
        self._endpoints, self._home_derp = tuple(endpoints), home_derp
        body = RegisterBody(self.authkey, self.node_key, self.disco_key, self._endpoints, home_derp, self.hostname)
        answer = await self._call("POST", "/machine/register", body.to_obj())
        token = answer.get("Token")
        if not isinstance(token, str) or not token:
            raise ControlError(200, "register answer has no Token")
        self.token = token
        self.self_node = self._node(answer)
        return self.self_node

    async def update(
        self,
        *,
        endpoints: Sequence[Endpoint] | None = None,
        home_derp: int | None = None,
        disco_key: DiscoPublicKey | None = None,
    ) -> ControlNode:
        """Tell the server what changed; peers get a new netmap."""
        if endpoints is not None:
            self._endpoints = tuple(endpoints)
        if home_derp is not None:
            self._home_derp = home_derp
        if disco_key is not None:
            self.disco_key = disco_key
        body = UpdateBody(None if endpoints is None else tuple(endpoints), home_derp, disco_key)
        answer = await self._authed("POST", "/machine/update", body.to_obj())
        self.self_node = self._node(answer)
        return self.self_node

    async def derp_map(self) -> DERPMap:
        try:
            return DERPMap.from_obj(await self._call("GET", "/derpmap"))
        except DecodeError as exc:
            raise ControlError(200, f"bad DERP map: {exc}") from None

    async def netmap(self, since: int | None = None) -> NetMap:
        """The current netmap; with ``since``, a long poll that returns once the version moved past it."""
        target = "/machine/map" if since is None else f"/machine/map?since={since}"
        extra = 0.0 if since is None else self.timing.control_long_poll
        return self._netmap(await self._authed("GET", target, timeout=self.timeout + extra))

    async def netmaps(self) -> AsyncGenerator[NetMap, None]:
        """Every netmap the server pushes, for as long as the caller iterates; reconnects by itself."""
        backoff = self.timing.derp_reconnect_min
        while not self._closed:
            try:
                async with contextlib.aclosing(self._stream_once()) as stream:
                    async for netmap in stream:
                        backoff = self.timing.derp_reconnect_min
                        yield netmap
            except ControlError as exc:
                if exc.status == 401 and self.token is not None:
                    await self.register(self._endpoints, self._home_derp)
                    continue
                if 400 <= exc.status < 500:
                    raise
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, DecodeError):
                pass
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.timing.derp_reconnect_max)

    async def close(self) -> None:
        self._closed = True
        writers = list(self._stream_writers)
        if self._conn is not None:
            writers.append(self._conn[1])
            self._conn = None
        for writer in writers:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # --- HTTP -------------------------------------------------------------------------------------
    def _request_bytes(self, method: str, target: str, body: bytes | None) -> bytes:
        return request_bytes(method, target, self.host, self.port, self.token, body)

    async def _authed(
        self, method: str, target: str, obj: Any = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        if self.token is None:
            raise UsageError("register() first: the control server needs this node's token")
        try:
            return await self._call(method, target, obj, timeout=timeout)
        except ControlError as exc:
            if exc.status != 401:
                raise
        await self.register(self._endpoints, self._home_derp)  # the server forgot us: register again, once
        return await self._call(method, target, obj, timeout=timeout)

    async def _call(self, method: str, target: str, obj: Any = None, *, timeout: float | None = None) -> dict[str, Any]:
        body = None if obj is None else json.dumps(obj).encode("utf-8")
        async with self._lock, asyncio.timeout(timeout or self.timeout):
            for attempt in (1, 2):
                reused = self._conn is not None
                if self._conn is None:
                    self._conn = await asyncio.open_connection(self.host, self.port, limit=MAX_RESPONSE)
                reader, writer = self._conn
                try:
                    writer.write(self._request_bytes(method, target, body))
                    await writer.drain()
                    status, headers = await _read_response(reader)
                    data = await reader.readexactly(int(headers.get("content-length", "0")))
                except (ConnectionError, asyncio.IncompleteReadError):
                    self._drop()
                    if reused and attempt == 1:
                        continue  # the server closed the idle kept-alive connection: one fresh try
                    raise
                except BaseException:  # timeout, cancellation, garbage: the connection is mid-response
                    self._drop()
                    raise
                if "close" in headers.get("connection", "").lower():
                    self._drop()
                return checked_answer(status, data)
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    async def _stream_once(self) -> AsyncGenerator[NetMap, None]:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=MAX_RESPONSE), self.timeout
        )
        self._stream_writers.add(writer)
        try:
            writer.write(self._request_bytes("GET", "/machine/map?stream=1", None))
            await writer.drain()
            status, headers = await asyncio.wait_for(_read_response(reader), self.timeout)
            if status != 200:
                length = int(headers.get("content-length", "0"))
                checked_answer(status, await reader.readexactly(length))
                raise ControlError(status, "")
            parser = SSEParser()
            silence = 2 * self.timing.control_stream_keepalive + self.timeout
            while data := await asyncio.wait_for(reader.read(1 << 16), silence):
                for event, text in parser.feed(data):
                    if event == "netmap":
                        yield self._netmap(json_answer(text.encode("utf-8"), status))
        finally:
            self._stream_writers.discard(writer)
            writer.close()

    def _node(self, answer: dict[str, Any]) -> ControlNode:
        return node_of(answer)

    def _netmap(self, obj: dict[str, Any]) -> NetMap:
        netmap = netmap_of(obj)
        self.self_node = netmap.self_node
        return netmap


__all__ = [
    "MAX_RESPONSE",
    "ControlClient",
    "ControlError",
    "SSEParser",
    "SelfNode",
    "checked_answer",
    "json_answer",
    "netmap_of",
    "node_of",
    "parse_response_head",
    "request_bytes",
]
