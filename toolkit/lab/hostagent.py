"""The host agent: UDP sockets and DERP clients of one lab host, driven over JSON lines (``python -m`` this).

:mod:`toolkit.lab.hostio` gives notebooks the same :class:`~toolkit.lab.hostio.HostSocket` and
:class:`~toolkit.lab.hostio.HostDerpClient` on every backend. On ``netns`` and ``docker`` they live in this
small process, started inside the host's namespace (``ip netns exec``) or container (``docker exec -i``);
one agent serves every socket and client of its host. It reads one JSON command per line on stdin and
writes one JSON event per line on stdout; payloads and keys are hex, endpoints ``"IP:PORT"``:

* ``{"op": "udp-open", "id": N, "bind": "0.0.0.0:0"}`` -> ``{"ev": "udp-opened", "id": N, "local": ...}``;
  then ``{"ev": "udp-datagram", "id": N, "src": ..., "data": ...}`` for every datagram the socket gets.
* ``{"op": "udp-send", "id": N, "dst": ..., "data": ...}`` (no answer unless it fails).
* ``{"op": "udp-close", "id": N}`` -> ``{"ev": "udp-closed", "id": N}``.
* ``{"op": "derp-connect", "id": N, "url": "http://IP:PORT/derp", "key": PRIVATE}`` -> ``{"ev":
  "derp-connected", "id": N, "public_key": ..., "server_key": ...}``; then ``derp-received`` (``src``,
  ``data``) per relayed packet and ``derp-event`` (``event``: :func:`event_to_json` of every other
  :mod:`toolkit.sansio.derpevents` event, the final ``Closed`` included). The client is
  :class:`toolkit.services.derpclient.DerpClient` without reconnects, as the ``sim`` client has none.
* ``{"op": "derp-send", "id": N, "dst": PUBLIC, "data": ...}``; ``{"op": "derp-close", "id": N}`` ->
  ``{"ev": "derp-closed", "id": N}`` (also sent when a connect fails or the connection ends).
* A command that cannot be carried out (bad JSON, unknown op, bad field, unknown id, an OSError) answers
  ``{"ev": "error", "id": N or null, "op": ..., "message": ...}``; the agent goes on. It prints
  ``{"ev": "ready", "pid": PID}`` first and exits when stdin ends, closing everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from typing import Any

from toolkit.codec.derp import PeerGoneReason, PeerPresentFlags, ServerInfoJSON
from toolkit.sansio import derpevents as ev
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

# --- the DERP events on the wire (shared with toolkit.lab.hostio) ---------------------------------------


def event_to_json(event: object) -> dict[str, Any]:
    """A DERP client event as a JSON object ``{"type": CLASS, ...fields}``."""
    out: dict[str, Any] = {"type": type(event).__name__}
    if isinstance(event, ev.Connected):
        info = event.server_info
        out.update(server_key=event.server_key.hex(), version=info.version,
                   bps=info.token_bucket_bytes_per_second, burst=info.token_bucket_bytes_burst)  # fmt: skip
    elif isinstance(event, ev.PeerGoneReceived | ev.PeerPresentReceived):
        out["key"] = event.key.hex()
        if isinstance(event, ev.PeerGoneReceived):
            out["reason"] = int(event.reason)
        else:
            out["endpoint"] = str(event.endpoint) if event.endpoint is not None else None
            out["flags"] = int(event.flags) if event.flags is not None else None
    elif isinstance(event, ev.PingReceived | ev.PongReceived):
        out["data"] = event.data.hex()
        if isinstance(event, ev.PongReceived):
            out["rtt"] = event.rtt
    elif isinstance(event, ev.HealthChanged):
        out["problem"] = event.problem
    elif isinstance(event, ev.RestartingReceived):
        out.update(reconnect_in=event.reconnect_in, try_for=event.try_for)
    elif isinstance(event, ev.Closed):
        out.update(reason=event.reason, message=event.message)
    elif not isinstance(event, ev.KeepAliveReceived):
        out.update(type="Closed", reason="agent", message=str(event))  # DialFailed and the like: the end
    return out


def event_from_json(obj: dict[str, Any]) -> ev.DerpEvent:
    """The event :func:`event_to_json` wrote (ValueError/KeyError/TypeError for anything else)."""
    kind = obj["type"]
    if kind == "Connected":
        info = ServerInfoJSON(int(obj["version"]), int(obj["bps"]), int(obj["burst"]))
        return ev.Connected(_pub(obj["server_key"]), info)
    if kind == "PeerGoneReceived":
        reason = int(obj["reason"])
        known = {int(r) for r in PeerGoneReason}
        return ev.PeerGoneReceived(_pub(obj["key"]), PeerGoneReason(reason) if reason in known else reason)
    if kind == "PeerPresentReceived":
        endpoint = Endpoint.parse(obj["endpoint"]) if obj.get("endpoint") else None
        flags = PeerPresentFlags(obj["flags"]) if obj.get("flags") is not None else None
        return ev.PeerPresentReceived(_pub(obj["key"]), endpoint, flags)
    if kind == "PingReceived":
        return ev.PingReceived(bytes.fromhex(obj["data"]))
    if kind == "PongReceived":
        return ev.PongReceived(bytes.fromhex(obj["data"]), obj.get("rtt"))
    if kind == "HealthChanged":
        return ev.HealthChanged(str(obj["problem"]))
    if kind == "RestartingReceived":
        return ev.RestartingReceived(float(obj["reconnect_in"]), float(obj["try_for"]))
    if kind == "KeepAliveReceived":
        return ev.KeepAliveReceived()
    if kind == "Closed":
        return ev.Closed(str(obj["reason"]), str(obj["message"]))
    raise ValueError(f"unknown DERP event type {kind!r}")


def _pub(text: str) -> NodePublicKey:
    return NodePublicKey(bytes.fromhex(text))


# --- the agent ------------------------------------------------------------------------------------------


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, agent: Agent, sid: int) -> None:
        self.agent, self.sid = agent, sid

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        src = Endpoint.parse(f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}")
        self.agent.emit("udp-datagram", self.sid, src=str(src), data=data.hex())

    def error_received(self, exc: Exception) -> None:  # ICMP errors of a connectionless socket
        self.agent.emit("error", self.sid, op="udp-recv", message=str(exc))


class Agent:
    """One host's sockets and DERP clients (see the module docstring)."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.udp: dict[int, asyncio.DatagramTransport] = {}
        self.derp: dict[int, Any] = {}  # id -> DerpClient
        self.tasks: set[asyncio.Task[None]] = set()

    def emit(self, kind: str, oid: int | None = None, **fields: Any) -> None:
        self.out.write(json.dumps({"ev": kind, "id": oid, **fields}) + "\n")
        self.out.flush()

    async def handle_line(self, line: str) -> None:
        cmd: Any = None
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict):
                raise ValueError("a command is a JSON object")
            op = cmd.get("op")
            handler = getattr(self, "op_" + str(op).replace("-", "_"), None)
            if not isinstance(op, str) or handler is None:
                raise ValueError(f"unknown op {op!r}")
            oid = cmd.get("id")
            if not isinstance(oid, int):
                raise ValueError(f"{op}: id must be an integer")
            await handler(oid, cmd)
        except Exception as exc:  # anything a command does wrong is answered, never fatal
            oid = cmd.get("id") if isinstance(cmd, dict) and isinstance(cmd.get("id"), int) else None
            op = cmd.get("op") if isinstance(cmd, dict) else None
            self.emit("error", oid, op=op, message=f"{type(exc).__name__}: {exc}")

    # --- UDP -------------------------------------------------------------------------------------------
    async def op_udp_open(self, oid: int, cmd: dict[str, Any]) -> None:
        if oid in self.udp:
            raise ValueError(f"socket {oid} is already open")
        bind = Endpoint.parse(str(cmd.get("bind") or "0.0.0.0:0"))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self, oid), local_addr=bind.as_tuple())
        self.udp[oid] = transport
        name = transport.get_extra_info("sockname")
        local = f"[{name[0]}]:{name[1]}" if ":" in name[0] else f"{name[0]}:{name[1]}"
        self.emit("udp-opened", oid, local=local)

    async def op_udp_send(self, oid: int, cmd: dict[str, Any]) -> None:
        transport = self._sock(oid)
        transport.sendto(bytes.fromhex(cmd["data"]), Endpoint.parse(cmd["dst"]).as_tuple())

    async def op_udp_close(self, oid: int, cmd: dict[str, Any]) -> None:
        self._sock(oid).close()
        del self.udp[oid]
        self.emit("udp-closed", oid)

    def _sock(self, oid: int) -> asyncio.DatagramTransport:
        if oid not in self.udp:
            raise KeyError(f"no open socket {oid}")
        return self.udp[oid]

    # --- DERP ------------------------------------------------------------------------------------------
    async def op_derp_connect(self, oid: int, cmd: dict[str, Any]) -> None:
        from toolkit.services.derpclient import DerpClient

        if oid in self.derp:
            raise ValueError(f"DERP client {oid} exists already")
        key = NodePrivateKey(bytes.fromhex(cmd["key"]))

        def packet(src: NodePublicKey, data: bytes) -> None:
            self.emit("derp-received", oid, src=src.hex(), data=data.hex())

        client = DerpClient(str(cmd["url"]), key, reconnect=False, on_packet=packet, name=f"derp-client {oid}")
        self.derp[oid] = client
        self._spawn(self._derp_run(oid, client))

    async def _derp_run(self, oid: int, client: Any) -> None:
        from toolkit.services.derpclient import DerpClosedError

        try:
            await client.connect()
        except Exception as exc:  # DerpConnectError, OSError ...: report, the client is over
            self.emit("error", oid, op="derp-connect", message=str(exc))
            self._derp_gone(oid)
            return
        self.emit("derp-connected", oid, public_key=client.public_key.hex(), server_key=client.server_key.hex())
        try:
            while True:
                event = await client.next_event()
                self.emit("derp-event", oid, event=event_to_json(event))
                if isinstance(event, ev.Closed):
                    break
        except DerpClosedError:
            pass
        self._derp_gone(oid)

    def _derp_gone(self, oid: int) -> None:
        if self.derp.pop(oid, None) is not None:
            self.emit("derp-closed", oid)

    async def op_derp_send(self, oid: int, cmd: dict[str, Any]) -> None:
        client = self._client(oid)
        if not client.send_nowait(_pub(cmd["dst"]), bytes.fromhex(cmd["data"])):
            self.emit("error", oid, op="derp-send", message="packet dropped (not connected, too large or rate-limited)")

    async def op_derp_close(self, oid: int, cmd: dict[str, Any]) -> None:
        client = self._client(oid)
        await client.close()
        self._derp_gone(oid)

    def _client(self, oid: int) -> Any:
        if oid not in self.derp:
            raise KeyError(f"no DERP client {oid}")
        return self.derp[oid]

    # --- life ------------------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        for transport in self.udp.values():
            transport.close()
        self.udp.clear()
        for client in list(self.derp.values()):
            with contextlib.suppress(Exception):
                await client.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def serve(self, reader: asyncio.StreamReader) -> None:
        self.emit("ready", None, pid=os.getpid())
        while line := await reader.readline():
            if line.strip():
                await self.handle_line(line.decode(errors="replace"))
        await self.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 22)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await Agent().serve(reader)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(main())


__all__ = ["Agent", "event_from_json", "event_to_json", "main"]
