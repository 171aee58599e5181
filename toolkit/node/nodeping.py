"""``natkit ping`` inside the node: disco pings one at a time, answers matched to the waiting client.

``tailscale ping`` (cmd/tailscale/cli/ping.go) sends one ping, waits for its pong up to a timeout,
prints it, sleeps a second and repeats, up to ``-c`` pings, and with ``--until-direct`` (its default)
stops at the first pong that came over a direct path. :class:`PingSessions` does the same for the
local API (:mod:`toolkit.node.nodeapi`): it asks the core to ping (``NodeCore.ping``) and waits for
the core's :class:`~toolkit.sansio.nodestatus.PingResult` or
:class:`~toolkit.sansio.nodestatus.PingUnanswered` about that peer. Answers that arrive while no client
waits for that peer are dropped; a late answer of the previous ping is discarded before the next one.
The peer is found in the latest netmap by name, hostname, tunnel IP or node key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

from toolkit.errors import UsageError
from toolkit.node.nodeapi import ApiRefused
from toolkit.sansio.control_netmap import ControlNode, NetMap
from toolkit.sansio.nodecore import NodeCore
from toolkit.sansio.nodestatus import PingResult, PingUnanswered

Answer = PingResult | PingUnanswered


def ping_json(result: PingResult) -> dict[str, Any]:
    """A pong as the API sends it (``natkit ping`` rebuilds the PingResult from it)."""
    return {
        "peer_name": result.peer_name,
        "peer_ip": result.peer_ip,
        "via": result.via,
        "latency_s": result.latency_s,
        "is_direct": result.is_direct,
    }


def resolve_peer(netmap: NetMap | None, peer: str) -> ControlNode:
    """The netmap peer ``peer`` names; :class:`ApiRefused` listing the known ones otherwise."""
    peers = netmap.peers if netmap is not None else ()
    for node in peers:
        ips = {str(a.ip) for a in node.addresses}
        if peer in (node.name, node.hostname, str(node.node_key), node.node_key.hex()) or peer in ips:
            return node
    known = ", ".join(sorted(n.name for n in peers)) or "none yet"
    raise ApiRefused(f"unknown peer {peer!r}: known peers: {known}")


class PingSessions:
    """The pings API clients are waiting on (module docstring)."""

    def __init__(
        self, core: Callable[[], NodeCore | None], netmap: Callable[[], NetMap | None], flush: Callable[[], None]
    ):
        self._core, self._netmap, self._flush = core, netmap, flush
        self._waiting: list[tuple[frozenset[str], asyncio.Queue[Answer]]] = []

    def dispatch(self, event: Answer) -> None:
        """Hand a core's ping answer to the clients waiting for that peer."""
        for names, queue in self._waiting:
            if event.peer_name in names:
                queue.put_nowait(event)

    async def ping(
        self, peer: str, *, count: int, until_direct: bool, timeout: float, interval: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The API's answer lines for one ``ping`` request (:mod:`toolkit.node.nodeapi`)."""
        node = resolve_peer(self._netmap(), peer)
        queue: asyncio.Queue[Answer] = asyncio.Queue()
        entry = (frozenset({node.name, node.hostname}), queue)
        self._waiting.append(entry)
        pongs, direct = 0, False
        try:
            for n in range(count):
                while not queue.empty():  # late answers of the previous ping
                    queue.get_nowait()
                core = self._core()
                if core is None:
                    raise ApiRefused("the node is still starting")
                try:
                    core.ping(node.node_key, time.monotonic())
                except UsageError as exc:  # gone from the netmap meanwhile
                    raise ApiRefused(str(exc)) from None
                self._flush()
                answer: Answer | None = None
                try:
                    async with asyncio.timeout(timeout):
                        answer = await queue.get()
                except TimeoutError:
                    pass
                if isinstance(answer, PingResult):
                    pongs += 1
                    direct = answer.is_direct
                    yield {"pong": ping_json(answer)}
                    if direct and until_direct:
                        break
                else:
                    yield {"timeout": True, "peer": node.name, "ip": str(node.ipv4 or node.ipv6 or "")}
                if n + 1 < count:
                    await asyncio.sleep(interval)
        finally:
            self._waiting.remove(entry)
        yield {"done": True, "direct": direct, "pongs": pongs}


__all__ = ["PingSessions", "ping_json", "resolve_peer"]
