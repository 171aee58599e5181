"""A sim node's DERP connections: one :class:`~toolkit.lab.sim.streams.DerpClientDriver` per wanted region.

The sim twin of :class:`toolkit.node.nodederp.DerpRegions` (the asyncio node's): the node core says which
regions it needs (``DerpRegionsWanted``: its home region and its peers' homes, protocols.md §2, §4.7) and
:class:`SimDerpRegions` keeps exactly those connected, over the simulator's TCP:

* a region's connection dials the region's first relay node in the DERP map (STUN-only nodes skipped,
  :func:`toolkit.node.nodederp.relay_node`) with ``NotePreferred`` set on the home region's connection;
* when a connection closes (the relay restarted, the TCP connection timed out or was reset, a read timeout)
  it is dialled again after :class:`~toolkit.sansio.derpbackoff.ReconnectBackoff`'s delay (magicsock's:
  ``derp_reconnect_min`` doubling to ``derp_reconnect_max`` with jitter; a Restarting frame's
  ``reconnect_in`` / ``try_for`` first); the jitter draw comes from the lab's seeded stream;
* every relayed packet goes to ``on_packet(region, src, data)`` and every connect / disconnect to
  ``on_state(region, connected)`` (the core's ``receive_derp`` / ``derp_state``); a region no longer
  wanted is closed and not dialled again.

No protocol decision is made here: what is sent where is the core's.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter
from collections.abc import Callable, Iterable

from toolkit.codec.derpmap import DERPMap
from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.net import Machine
from toolkit.lab.sim.streams import DerpClientDriver
from toolkit.node.nodederp import relay_node
from toolkit.sansio.derpbackoff import ReconnectBackoff
from toolkit.sansio.derpclient import DerpClientConn
from toolkit.sansio.derpevents import Closed, Connected, DerpEvent, PacketReceived, RestartingReceived
from toolkit.sansio.trace import Tracer
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey


class _Region:
    __slots__ = ("backoff", "connected", "driver", "region", "timer")

    def __init__(self, region: int, timing: Timing) -> None:
        self.region = region
        self.backoff = ReconnectBackoff(timing)
        self.driver: DerpClientDriver | None = None
        self.timer: Timer | None = None
        self.connected = False


class SimDerpRegions:
    """The DERP clients of one sim node (see the module docstring)."""

    def __init__(
        self,
        machine: Machine,
        private_key: NodePrivateKey,
        *,
        on_packet: Callable[[int, NodePublicKey, bytes], None],
        on_state: Callable[[int, bool], None],
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
        name: str = "node",
    ) -> None:
        self.machine, self.sched = machine, machine.sched
        self.private_key, self.timing, self.tracer, self.name = private_key, timing, tracer, name
        self.on_packet, self.on_state = on_packet, on_state
        self.derp_map: DERPMap | None = None
        self.home: int | None = None
        self.regions: dict[int, _Region] = {}
        self.counters: Counter[str] = Counter()
        self._jitter: random.Random = self.sched.rng_for(f"derp-backoff:{machine.name}")
        self._rand = self.sched.rand_bytes(f"derp-client:{machine.name}")
        self.closed = False

    def set_map(self, derp_map: DERPMap, home: int | None) -> None:
        self.derp_map, self.home = derp_map, home
        for r in self.regions.values():
            if r.driver is None and r.timer is None:
                self._dial(r)

    def want(self, regions: Iterable[int]) -> None:
        """Keep exactly ``regions`` connected."""
        wanted = set(regions)
        for rid in [rid for rid in self.regions if rid not in wanted]:
            self._drop(self.regions.pop(rid))
        for rid in sorted(wanted - set(self.regions)):
            r = self.regions[rid] = _Region(rid, self.timing)
            self._dial(r)

    def send(self, region: int, dst: NodePublicKey, data: bytes) -> bool:
        """Relay ``data`` to ``dst`` through ``region``; False (counted) when that region is not connected."""
        r = self.regions.get(region)
        if r is None or r.driver is None or not r.connected:
            self.counters["send-not-connected"] += 1
            return False
        if not r.driver.send_packet(dst, data):
            self.counters["send-dropped"] += 1
            return False
        self.counters["sent"] += 1
        return True

    def connected(self, region: int) -> bool:
        r = self.regions.get(region)
        return r is not None and r.connected

    def close(self) -> None:
        self.closed = True
        for r in self.regions.values():
            self._drop(r)
        self.regions.clear()

    # --- connections ---------------------------------------------------------------------------------

    def _server(self, region: int) -> Endpoint | None:
        node = relay_node(self.derp_map, region) if self.derp_map is not None else None
        if node is None:
            return None
        try:
            return Endpoint(ipaddress.ip_address(node.dial_host()), node.dial_port)
        except ValueError:  # a DNS name: the sim has no resolver
            return None

    def _dial(self, r: _Region) -> None:
        r.timer = None
        if self.closed or self.regions.get(r.region) is not r:
            return
        server = self._server(r.region)
        if server is None:
            self.counters["no-relay"] += 1
            return  # dialled once a DERP map names a relay for the region (set_map)
        core = DerpClientConn(
            self.private_key,
            rng=self._rand,
            host=str(server.ip),
            preferred=r.region == self.home,
            timing=self.timing,
            tracer=self.tracer,
            name=f"{self.name} derp{r.region}",
        )
        self.counters["dials"] += 1
        try:
            r.driver = DerpClientDriver(self.machine, core, server, lambda ev: self._event(r, core, ev))
        except OSError:  # no route to the relay
            self.counters["dial-failed"] += 1
            r.driver = None
            self._redial(r)

    def _event(self, r: _Region, core: DerpClientConn, event: DerpEvent) -> None:
        if r.driver is None or r.driver.core is not core:
            return  # a connection dropped on purpose (no longer wanted, stopped): its last words
        if isinstance(event, PacketReceived):
            self.on_packet(r.region, event.src, event.data)
        elif isinstance(event, Connected):
            r.connected = True
            r.backoff.connected()
            self.counters["connected"] += 1
            self.on_state(r.region, True)
        elif isinstance(event, RestartingReceived):
            r.backoff.restarting(event.reconnect_in, event.try_for)
        elif isinstance(event, Closed):
            was = r.connected
            r.connected, r.driver = False, None
            self.counters[f"closed-{event.reason}"] += 1
            if was:
                self.on_state(r.region, False)
            self._redial(r)

    def _redial(self, r: _Region) -> None:
        if self.closed or self.regions.get(r.region) is not r or r.timer is not None:
            return
        delay = r.backoff.next_delay(self.sched.now, self._jitter.random())
        r.timer = self.sched.call_later(delay, self._dial, r)

    def _drop(self, r: _Region) -> None:
        if r.timer is not None:
            r.timer.cancel()
            r.timer = None
        driver, r.driver = r.driver, None
        if r.connected:
            r.connected = False
            self.on_state(r.region, False)
        if driver is not None:
            driver.close()


__all__ = ["SimDerpRegions"]
