"""The node's DERP connections: one :class:`~toolkit.services.derpclient.DerpClient` per wanted region.

The node core says which regions it needs (``DerpRegionsWanted``: its home region and the home
regions of its peers, protocols.md §2, §4.7); :class:`DerpRegions` keeps exactly those connected:

* a region's client dials the first relay node of the region in the DERP map (STUN-only nodes
  skipped), sends NotePreferred on the home region's connection, and keeps dialling after failures
  with the relay client's backoff (``Timing.derp_reconnect_min`` doubling to ``derp_reconnect_max``);
  once connected, :class:`DerpClient` itself reconnects when the connection breaks;
* every relayed packet goes to ``on_packet(region, src, data)`` (the core's ``receive_derp``), every
  connect and disconnect to ``on_state(region, connected)`` (the core's ``derp_state``);
* a region no longer wanted is closed.

It makes no protocol decision: what to send where is the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterable

from toolkit.codec.derpmap import DERPMap, DERPNode
from toolkit.sansio.derpevents import Closed, Connected
from toolkit.sansio.trace import TraceRecord
from toolkit.services.derpclient import DerpClient, DerpClosedError, DerpConnectError
from toolkit.timing import DEFAULT, Timing
from toolkit.types import NodePrivateKey, NodePublicKey


def relay_node(derp_map: DERPMap, region: int) -> DERPNode | None:
    """The relay a node dials in ``region``: its first node that is not STUN-only."""
    found = derp_map.regions.get(region)
    if found is None:
        return None
    return next((n for n in found.nodes if not n.stun_only), None)


def pick_home_region(derp_map: DERPMap) -> int | None:
    """The home region when no measurement picks one: the lowest region id with a relay that is not
    ``Avoid``/``NoMeasureNoHome`` (natkit's labs have one region; netcheck's latency pick is issue 4's)."""
    usable = [
        rid
        for rid, region in derp_map.regions.items()
        if relay_node(derp_map, rid) is not None and not region.avoid and not region.no_measure_no_home
    ]
    return min(usable) if usable else None


class DerpRegions:
    """The DERP clients of one node (module docstring)."""

    def __init__(
        self,
        private_key: NodePrivateKey,
        *,
        on_packet: Callable[[int, NodePublicKey, bytes], None],
        on_state: Callable[[int, bool], None],
        timing: Timing = DEFAULT,
        tracer: Callable[[TraceRecord], None] | None = None,
        name: str = "node",
    ) -> None:
        self.private_key = private_key
        self.on_packet = on_packet
        self.on_state = on_state
        self.timing = timing
        self.tracer = tracer
        self.name = name
        self.derp_map = DERPMap()
        self.home: int | None = None
        self.clients: dict[int, DerpClient] = {}
        self.counters: Counter[str] = Counter()
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def set_map(self, derp_map: DERPMap, home: int | None) -> None:
        self.derp_map = derp_map
        if home != self.home:
            self.home = home
            for region, client in self.clients.items():
                client.note_preferred(region == home)

    def want(self, regions: Iterable[int]) -> None:
        """Connect the regions in ``regions`` that are not connected yet, close the others."""
        wanted = set(regions)
        for region in sorted(set(self._tasks) - wanted):
            self._tasks.pop(region).cancel()
            self.counters["regions-closed"] += 1
        for region in sorted(wanted - set(self._tasks)):
            node = relay_node(self.derp_map, region)
            if node is None:
                self.counters["region-without-relay"] += 1
                continue
            self._tasks[region] = asyncio.get_running_loop().create_task(self._run(region, node))

    def send(self, region: int, dst: NodePublicKey, data: bytes) -> None:
        client = self.clients.get(region)
        if client is None:
            self.counters["send-no-region"] += 1
            return
        if not client.send_nowait(dst, data):
            self.counters["send-dropped"] += 1

    def connected(self) -> list[int]:
        return sorted(r for r, c in self.clients.items() if c.connected)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, region: int, node: DERPNode) -> None:
        client = DerpClient(
            node,
            self.private_key,
            timing=self.timing,
            tracer=self.tracer,
            preferred=region == self.home,
            on_packet=lambda src, data: self.on_packet(region, src, data),
            name=f"{self.name} derp r{region}",
        )
        self.clients[region] = client
        backoff = self.timing.derp_reconnect_min
        up = False
        try:
            while True:
                try:
                    await client.connect()
                except DerpConnectError:
                    self.counters["dial-failed"] += 1
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, self.timing.derp_reconnect_max)
                    continue
                backoff = self.timing.derp_reconnect_min
                up = self._state(region, up, True)
                with contextlib.suppress(DerpClosedError):
                    while True:  # DerpClient reconnects by itself; this mirrors its state to the core
                        event = await client.next_event()
                        if isinstance(event, Connected):
                            up = self._state(region, up, True)
                        elif isinstance(event, Closed):
                            up = self._state(region, up, False)
                up = self._state(region, up, False)  # down for good: dial again from the start
        finally:
            self.clients.pop(region, None)
            if up:
                self.on_state(region, False)
            await client.close()

    def _state(self, region: int, was: bool, now_up: bool) -> bool:
        if was != now_up:
            self.counters["connects" if now_up else "disconnects"] += 1
            self.on_state(region, now_up)
        return now_up


__all__ = ["DerpRegions", "pick_home_region", "relay_node"]
