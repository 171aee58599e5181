"""A node of the control plane for the NAT lab: ``python -m tests.services.netns_controlnode URL AUTHKEY NAME STUN``.

Inside a client namespace it does what a node does before it can be reached: it opens its UDP socket,
asks the STUN server ``STUN`` (``IP:PORT``) what the NAT maps that socket to, registers with the
control server at ``URL`` (:class:`toolkit.services.controlclient.ControlClient`, a fresh node key
and disco key) with two endpoints, the mapped one first and the local one second, and follows its
netmap stream. It speaks JSON lines (tests/services/netns_proc.py): ``registered`` (its own node,
``local``, ``mapped``), then one ``netmap`` event per netmap pushed (``NetMap.to_obj()``).
``{"cmd": "rebind"}`` opens a new socket, asks STUN again and sends the new endpoints with
``update`` (event ``updated``); ``{"cmd": "quit"}`` ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

from tests.services.netns_proc import commands, emit
from toolkit.crypto.keys import generate_disco_key, generate_node_key, public_key
from toolkit.services.controlclient import ControlClient
from toolkit.services.stunclient import open_udp_socket, stun_query
from toolkit.types import Endpoint


async def _discover(stun: Endpoint) -> tuple[socket.socket, Endpoint, Endpoint]:
    """A new UDP socket and its (local, mapped) endpoints, the socket left open as a node's would be."""
    sock = open_udp_socket(stun)
    result = await stun_query(stun, sock=sock)
    return sock, result.local, result.mapped


async def _follow(client: ControlClient) -> None:
    try:
        async for netmap in client.netmaps():
            emit("netmap", netmap=netmap.to_obj())
    except Exception as exc:  # a 4xx the stream does not retry: the test shows it
        emit("stream-error", message=str(exc))


async def main(url: str, authkey: str, hostname: str, stun_text: str) -> None:
    stun = Endpoint.parse(stun_text)
    sock, local, mapped = await _discover(stun)
    client = ControlClient(url, authkey, generate_node_key(), public_key(generate_disco_key()), hostname)
    sockets = [sock]
    try:
        node = await client.register([mapped, local])
        emit("registered", node=node.to_obj(), local=str(local), mapped=str(mapped))
        stream = asyncio.create_task(_follow(client))
        async for command in commands():
            if command["cmd"] == "rebind":
                sock, local, mapped = await _discover(stun)
                sockets.append(sock)
                node = await client.update(endpoints=[mapped, local])
                emit("updated", node=node.to_obj(), local=str(local), mapped=str(mapped))
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream
    finally:
        await client.close()
        for s in sockets:
            s.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
