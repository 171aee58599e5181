"""The node's local API: JSON lines over a unix stream socket, for ``natkit status`` and ``natkit ping``.

Like ``tailscaled``'s LocalAPI (a unix socket only local users reach), a running ``natkit node``
listens on ``--api PATH`` (default ``/run/natkit/node-NAME.sock``, mode 0660). A client writes one
JSON object per line; the node answers each request with one or more JSON lines:

* ``{"op": "status"}`` → one line: ``NodeStatus.to_json()`` (the node core's status);
  ``{"op": "status", "format": "text"}`` → ``{"text": NodeStatus.format()}`` (what ``natkit status`` prints).
* ``{"op": "ping", "peer": "bob", "count": 10, "until_direct": true, "timeout": 5.0, "interval": 1.0}``
  → one line per disco ping, like ``tailscale ping``: a pong (``{"pong": {...PingResult...}}``) or a
  timeout (``{"timeout": true, "peer": "bob"}``), stopping after ``count`` pings or, with
  ``until_direct``, after the first pong over a direct path; then ``{"done": true, "direct": BOOL,
  "pongs": N}``.
* Anything else, or a request the node refuses (an unknown peer) → ``{"error": "one line", "usage":
  true}``; ``usage`` false marks a failure of the node rather than of the request.

Requests on one connection are served in order; a client may close at any time (a ping in progress
stops). Lines longer than 64 KiB end the connection.

:func:`request` is the blocking client the CLI uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any, Protocol

from toolkit.errors import NatkitError, UsageError
from toolkit.node.nodetrace import prepare_socket_path

API_DIR = Path("/run/natkit")
MAX_LINE = 64 << 10
MAX_COUNT = 1000
BAD_REQUEST = 'a request is one JSON object per line, like {"op": "status"}'


def default_api_path(name: str) -> Path:
    """``/run/natkit/node-NAME.sock``."""
    return API_DIR / f"node-{name}.sock"


class ApiRefused(Exception):
    """A request the backend refuses: the message goes back as ``{"error": ..., "usage": true}``."""


class NodeBackend(Protocol):
    """What the API serves: the node driver implements it."""

    def api_status(self, *, text: bool = False) -> dict[str, Any]: ...

    def api_ping(
        self, peer: str, *, count: int, until_direct: bool, timeout: float, interval: float
    ) -> AsyncGenerator[dict[str, Any], None]: ...


def _number(req: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = req.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise ApiRefused(f"{name!r} must be a number in {low:g}..{high:g}, got {value!r:.40}")
    return float(value)


class ApiServer:
    """Serves :class:`NodeBackend` on a unix socket (module docstring)."""

    def __init__(self, path: Path, backend: NodeBackend) -> None:
        self.path = path
        self.backend = backend
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        prepare_socket_path(self.path, "--api ")
        self._server = await asyncio.start_unix_server(self._on_client, path=str(self.path), limit=MAX_LINE)
        os.chmod(self.path, 0o660)
        return f"api unix:{self.path}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while line := await reader.readline():
                self.requests += 1
                async with contextlib.aclosing(self._answer(line)) as answers:  # a client gone mid-ping ends it
                    async for answer in answers:
                        writer.write(json.dumps(answer).encode("utf-8") + b"\n")
                        await writer.drain()
        except (ConnectionError, OSError, ValueError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent an over-long line
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _answer(self, line: bytes) -> AsyncGenerator[dict[str, Any], None]:
        try:
            req = json.loads(line)
        except ValueError:
            req = None
        try:
            if not isinstance(req, dict):
                raise ApiRefused(BAD_REQUEST)
            op = req.get("op")
            if op == "status":
                yield self.backend.api_status(text=req.get("format") == "text")
            elif op == "ping":
                peer = req.get("peer")
                if not isinstance(peer, str) or not peer:
                    raise ApiRefused("ping needs 'peer': a peer's name, tunnel IP or node key")
                count = int(_number(req, "count", 10, 1, MAX_COUNT))
                timeout = _number(req, "timeout", 5.0, 0.01, 600)
                interval = _number(req, "interval", 1.0, 0, 600)
                until_direct = bool(req.get("until_direct", True))
                pings = self.backend.api_ping(
                    peer, count=count, until_direct=until_direct, timeout=timeout, interval=interval
                )
                async with contextlib.aclosing(pings):
                    async for answer in pings:
                        yield answer
            else:
                raise ApiRefused(f"unknown op {op!r:.40}: use 'status' or 'ping'")
        except ApiRefused as exc:
            yield {"error": str(exc), "usage": True}


def request(
    path: Path, obj: dict[str, Any], *, timeout: float = 30.0, name: str | None = None
) -> Iterator[dict[str, Any]]:
    """Send one request to the API at ``path`` and yield its answer lines (until ``done``/``error``
    for a ping, one line for status). :class:`UsageError` when no node answers there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    who = f"natkit node --name {name}" if name else "natkit node"
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise UsageError(f"no node answers on {path}: is `{who}` running?") from None
    except PermissionError:
        sock.close()
        raise UsageError(f"{path}: permission denied: run as root (or a member of the socket's group)") from None
    try:
        sock.sendall(json.dumps(obj).encode("utf-8") + b"\n")
        with sock.makefile("rb") as lines:
            for raw in lines:
                try:
                    answer = json.loads(raw)
                except ValueError:
                    raise NatkitError(f"the node on {path} answered something that is not JSON") from None
                if not isinstance(answer, dict):
                    raise NatkitError(f"the node on {path} answered something that is not a JSON object")
                yield answer
                if obj.get("op") != "ping" or "done" in answer or "error" in answer:
                    return
        raise NatkitError(f"the node on {path} closed the connection before it answered")
    except TimeoutError:
        raise NatkitError(f"the node on {path} did not answer within {timeout:g} s") from None
    finally:
        sock.close()


__all__ = ["API_DIR", "ApiRefused", "ApiServer", "NodeBackend", "default_api_path", "request"]
