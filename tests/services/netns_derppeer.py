"""A DERP peer for the NAT lab: ``python -m tests.services.netns_derppeer URL PRIVATE_KEY``.

Runs :class:`toolkit.services.derpclient.DerpClient` (reconnecting) inside a client namespace and
speaks JSON lines (tests/services/netns_proc.py). It prints every client event (``Connected`` with
the server's key and the client's reconnect count, ``RestartingReceived``, ``Closed``, ``DialFailed``
...) and every packet relayed to it (``{"event": "packet", "src": "nodekey:...", "data": "..."}``).
Commands: ``{"cmd": "send", "to": "nodekey:...", "data": "text"}``; ``{"cmd": "quit"}`` prints the
client's counters and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sys

from tests.services.netns_proc import commands, emit
from toolkit.services.derpclient import DerpClient, DerpClosedError
from toolkit.types import NodePrivateKey, NodePublicKey


async def _events(client: DerpClient) -> None:
    try:
        while True:
            ev = await client.next_event()
            fields = {f.name: getattr(ev, f.name) for f in dataclasses.fields(ev)}
            fields.pop("server_info", None)
            emit(type(ev).__name__, **fields)
    except DerpClosedError as exc:
        emit("down", message=str(exc))


async def _packets(client: DerpClient) -> None:
    with contextlib.suppress(DerpClosedError):
        while True:
            src, data = await client.recv()
            emit("packet", src=str(src), data=data.decode("utf-8", "replace"))


async def main(url: str, private: str) -> None:
    client = DerpClient(url, NodePrivateKey.parse(private))
    emit("started", public_key=str(client.public_key))
    await client.connect()
    tasks = [asyncio.create_task(_events(client)), asyncio.create_task(_packets(client))]
    try:
        async for command in commands():
            if command["cmd"] == "send":
                await client.send(NodePublicKey.parse(command["to"]), command["data"].encode())
                emit("sent", data=command["data"], connected=client.connected)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, DerpClosedError):
                await task
        emit("counters", **client.counters())
        await client.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
