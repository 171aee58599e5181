"""``natkit node``: the asyncio driver of :class:`~toolkit.sansio.nodecore.NodeCore` (issue 6, design.md §4).

A thin driver (design.md §2): it feeds the core, drains what it produced, sends, and re-arms one
timer; every decision (STUN, disco, the flowchart per peer, WireGuard, which path carries a packet)
is the core's. What it wires together:

* one UDP socket for STUN, disco and WireGuard (the core demultiplexes by content, protocols.md
  §4.11): dual-stack ``[::]:PORT`` with ``IPV6_V6ONLY`` off (IPv4 peers appear v4-mapped, which
  :class:`~toolkit.types.Endpoint` unmaps), IPv4 only when the namespace has no IPv6; port 41641
  (Tailscale's) by default;
* a DERP client per region the core wants (:mod:`toolkit.node.nodederp`);
* the control client (:class:`~toolkit.services.controlclient.ControlClient`): the DERP map, register
  (auth key, keys, hostname, endpoints, home region), then every netmap of the SSE stream goes to
  ``set_netmap``; the core's ``EndpointsChanged`` goes back with ``update``;
* a TUN device (``--tun``, default ``natkit0``) with the node's tunnel addresses from control
  (100.64.x.y/32 and the fd7a:115c:a1e0::/128 of its netmap entry), routes to 100.64.0.0/10 and
  fd7a:115c:a1e0::/48 and MTU 1280 (Tailscale's); ``--no-tun`` runs without one (packets then only
  flow between the cores: disco, pings, status);
* local endpoints: the interface addresses (:mod:`toolkit.node.nodeaddrs`) with the socket's port,
  read at start and every ``LOCAL_ADDRESS_INTERVAL`` seconds;
* keys and the endpoint cache in ``--state-dir`` (:mod:`toolkit.node.nodestate`);
* trace records as JSON lines (:mod:`toolkit.node.nodetrace`) and the local API (:mod:`toolkit.node.nodeapi`);
* with ``--keys-out FILE``, the node's keys as JSON lines (:mod:`toolkit.node.nodekeys`): its disco key at
  start, each WireGuard session once its handshake completes (for the lab's packet inspector).

The home region is ``--home-region``, else the lowest region of the DERP map with a relay
(:func:`~toolkit.node.nodederp.pick_home_region`); labs have one region.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.crypto.keys import generate_disco_key
from toolkit.errors import NatkitError
from toolkit.node.nodeaddrs import TAILNET_V4, TAILNET_V6, local_endpoints
from toolkit.node.nodeapi import ApiRefused, ApiServer
from toolkit.node.nodederp import DerpRegions, pick_home_region
from toolkit.node.nodekeys import KeysLog
from toolkit.node.nodeping import PingSessions
from toolkit.node.nodestate import load_cache, load_or_create_key, save_cache
from toolkit.node.nodetrace import TraceSink, open_trace_sink
from toolkit.node.nodeudp import BURST, NodeSocket
from toolkit.node.tun import TunDevice, TunError
from toolkit.sansio.control_netmap import ControlNode, IPInterface, NetMap
from toolkit.sansio.nodecore import NodeConfig, NodeCore
from toolkit.sansio.nodestatus import DerpRegionsWanted, EndpointsChanged, PeerStateChanged, PingResult, PingUnanswered
from toolkit.services.controlclient import ControlClient
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, NodePublicKey

DEFAULT_PORT = 41641
TUN_MTU = 1280  # Tailscale's default TUN MTU: the IPv6 minimum, safe over every path
LOCAL_ADDRESS_INTERVAL = 10.0  # seconds between two reads of the interface addresses
CACHE_INTERVAL = 30.0  # seconds between two saves of the endpoint cache
START_TIMEOUT = 30.0  # seconds the control server may take to answer at start


@dataclass(frozen=True)
class NodeOptions:
    """What ``natkit node`` was asked to do (see ``natkit node --help``)."""

    name: str
    control_url: str
    authkey: str
    state_dir: Path
    api: Path
    port: int = DEFAULT_PORT
    tun: str | None = "natkit0"
    trace: str | None = None
    timing: Timing = field(default=DEFAULT)
    home_region: int | None = None
    keys_out: Path | None = None


class NodeDriver:
    """A running node (module docstring); a :class:`~toolkit.services.runner.Service`."""

    name = "node"

    def __init__(self, options: NodeOptions, *, log: Any = None) -> None:
        self.options = options
        self.log = log if log is not None else sys.stderr
        self.counters: Counter[str] = Counter()
        self.core: NodeCore | None = None
        self.udp = NodeSocket(self._on_udp, self._flush)
        self.tun: TunDevice | None = None
        self.control: ControlClient | None = None
        self.derp: DerpRegions | None = None
        self.api = ApiServer(options.api, self)
        self.sink: TraceSink | None = open_trace_sink(options.trace) if options.trace else None
        self.keys: KeysLog | None = KeysLog(options.keys_out) if options.keys_out is not None else None
        self.netmap: NetMap | None = None
        self.started = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._pending_endpoints: tuple[Endpoint, ...] | None = None
        self._updater: asyncio.Task[None] | None = None
        self.pings = PingSessions(lambda: self.core, lambda: self.netmap, self._flush)
        self._flush_scheduled = False
        self._local: list[Endpoint] = []

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> list[str]:
        o = self.options
        self._loop = loop = asyncio.get_running_loop()
        self.started = loop.time()
        node_key, _ = load_or_create_key(o.state_dir)
        where: list[str] = []
        if self.sink is not None:
            where.append(await self.sink.start())
        if self.keys is not None:
            where.append(self.keys.open())
        tracer = self.sink
        disco_key = generate_disco_key()
        self.core = core = NodeCore(
            NodeConfig(o.name, node_key, disco_key, o.timing, epoch=time.time() - time.monotonic()),
            os.urandom,
            tracer,
        )
        if self.keys is not None:
            self.keys.node(o.name, core.node_public, disco_key)
        cache = load_cache(o.state_dir)
        if cache is not None:
            core.import_cache(cache)
        where.insert(0, f"udp {self.udp.bind(o.port)}")
        self.derp = DerpRegions(
            node_key, on_packet=self._on_derp, on_state=self._on_derp_state, timing=o.timing, tracer=tracer, name=o.name
        )
        self.control = control = ControlClient(
            o.control_url, o.authkey, node_key, core.disco_public, o.name, timing=o.timing
        )
        derp_map = await self._retry("read the DERP map from", control.derp_map)
        home = o.home_region if o.home_region is not None else pick_home_region(derp_map)
        if home is None:
            raise NatkitError(f"the DERP map of {o.control_url} has no region with a relay: the node needs one")
        now = loop.time()
        core.set_derp_map(derp_map, now)
        core.set_home_region(home, now)
        self.derp.set_map(derp_map, home)
        self._local = self._read_local(None)
        core.set_local_endpoints(self._local, now)
        me = await self._retry("register with", lambda: control.register(self._local, home))
        if o.tun is not None:
            where.append(self._open_tun(o.tun, me))
        netmap = await self._retry("read the netmap from", control.netmap)
        self._set_netmap(netmap)
        where.append(await self.api.start())
        self._tasks += [loop.create_task(self._follow_netmaps()), loop.create_task(self._housekeeping())]
        self._flush()
        ips = ", ".join(str(a.ip) for a in me.addresses)
        where.insert(1, f"{me.name} {ips} (home region {home}, {core.node_public.short()})")
        return where

    async def stop(self) -> None:
        """Undo everything start() did (also after a failed start)."""
        for task in [*self._tasks, *([self._updater] if self._updater else [])]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self.api.close()
        if self.derp is not None:
            await self.derp.close()
        if self.control is not None:
            await self.control.close()
        loop = self._loop
        if self.tun is not None:
            if loop is not None and not self.tun.closed:
                loop.remove_reader(self.tun.fd)
            self.tun.close()
        self.udp.close()
        if self.core is not None:
            save_cache(self.options.state_dir, self.core.export_cache())
        if self.sink is not None:
            await self.sink.close()
        if self.keys is not None:
            self.keys.close()

    def summary(self) -> str:
        peers = len(self.netmap.peers) if self.netmap is not None else 0
        c = self.counters + self.udp.counters
        return (
            f"{peers} peer(s), udp in {c['udp-in']} out {c['udp-out']}, derp in {c['derp-in']}, "
            f"tun in {c['tun-in']} out {c['tun-out']}"
        )

    async def _retry(self, what: str, call: Any) -> Any:
        """``await call()``, retried for START_TIMEOUT while the control server is unreachable."""
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.2
        while True:
            try:
                return await call()
            except (OSError, TimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise NatkitError(f"cannot {what} the control server {self.options.control_url}: {exc}") from None
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)

    # --- the UDP socket and the TUN ------------------------------------------------------------------

    def _open_tun(self, name: str, me: ControlNode) -> str:
        self.tun = tun = TunDevice.open(name)
        v4 = [a for a in me.addresses if a.version == 4]
        tun.configure(addresses=v4, mtu=TUN_MTU, routes=[TAILNET_V4] if v4 else [])
        configured: list[IPInterface] = list(v4)
        for address in (a for a in me.addresses if a.version == 6):
            try:  # a namespace may have IPv6 switched off (net.ipv6.conf.*.disable_ipv6): then IPv4 only
                tun.configure(addresses=[address], routes=[TAILNET_V6])
                configured.append(address)
            except TunError as exc:
                print(f"natkit node: warning: {name}: no IPv6 tunnel address: {exc}", file=self.log, flush=True)
        assert self._loop is not None
        self._loop.add_reader(tun.fd, self._on_tun)
        return f"tun {name} {' '.join(str(a) for a in configured)}"

    def _read_local(self, me: ControlNode | None) -> list[Endpoint]:
        own = [a.ip for a in me.addresses] if me is not None else []
        v6 = self.udp.ipv6
        excluded = [self.options.tun] if self.options.tun else []
        return local_endpoints(self.udp.port, exclude_links=excluded, exclude_ips=own, ipv6=v6)

    def _on_udp(self, data: bytes, src: Endpoint, now: float) -> None:
        if self.core is not None:
            self.core.receive_udp(data, src, now)

    def _on_tun(self) -> None:
        tun, core = self.tun, self.core
        if tun is None or tun.closed or core is None:
            return
        for _ in range(BURST):
            packet = tun.read()
            if packet is None:
                break
            self.counters["tun-in"] += 1
            core.send_ip_packet(packet, time.monotonic())
        self._flush()

    # --- DERP ----------------------------------------------------------------------------------------

    def _on_derp(self, region: int, src: NodePublicKey, data: bytes) -> None:
        if self.core is not None:
            self.counters["derp-in"] += 1
            self.core.receive_derp(region, src, data, time.monotonic())
            self._flush_soon()

    def _on_derp_state(self, region: int, connected: bool) -> None:
        if self.core is not None:
            self.core.derp_state(region, connected, time.monotonic())
            self._flush_soon()

    # --- control -------------------------------------------------------------------------------------

    def _set_netmap(self, netmap: NetMap) -> None:
        assert self.core is not None
        self.netmap = netmap
        now = time.monotonic()
        if netmap.derp_map is not None and self.derp is not None and netmap.derp_map != self.derp.derp_map:
            self.core.set_derp_map(netmap.derp_map, now)
            self.derp.set_map(netmap.derp_map, self.derp.home)
        self.core.set_netmap(netmap, now)

    async def _follow_netmaps(self) -> None:
        """Every netmap control pushes; the client reconnects by itself, and a refusal (4xx) is retried here."""
        assert self.control is not None
        while True:
            try:
                async for netmap in self.control.netmaps():
                    self._set_netmap(netmap)
                    self._flush()
            except NatkitError as exc:
                self.counters["netmap-stream-refused"] += 1
                print(f"natkit node: warning: netmap stream: {exc}; retrying", file=self.log, flush=True)
            await asyncio.sleep(5.0)

    async def _update_endpoints(self) -> None:
        assert self.control is not None
        while self._pending_endpoints is not None:
            endpoints, self._pending_endpoints = self._pending_endpoints, None
            try:
                await self.control.update(endpoints=endpoints)
            except (OSError, TimeoutError, NatkitError) as exc:
                self.counters["control-update-failed"] += 1
                print(f"natkit node: warning: cannot tell control our endpoints: {exc}", file=self.log, flush=True)
                if self._pending_endpoints is None:
                    self._pending_endpoints = endpoints
                await asyncio.sleep(1.0)
        self._updater = None

    async def _housekeeping(self) -> None:
        """Re-read the interface addresses every LOCAL_ADDRESS_INTERVAL s; save the cache every CACHE_INTERVAL s."""
        last_save = time.monotonic()
        while True:
            await asyncio.sleep(LOCAL_ADDRESS_INTERVAL)
            me = self.control.self_node if self.control is not None else None
            local = await asyncio.to_thread(self._read_local, me)
            if local != self._local and self.core is not None:
                self._local = local
                self.core.set_local_endpoints(local, time.monotonic())
                self._flush()
            if time.monotonic() - last_save >= CACHE_INTERVAL and self.core is not None:
                last_save = time.monotonic()
                save_cache(self.options.state_dir, self.core.export_cache())

    # --- draining the core -----------------------------------------------------------------------------

    def _flush_soon(self) -> None:
        """Flush on the next loop turn (inputs that arrive inside another component's callback)."""
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        core = self.core
        if core is None:
            return
        if self.keys is not None:  # a handshake that completed: its keys, once, before any packet of it leaves
            self.keys.sessions(core.session_keys())
        for data, ep in core.udp_to_send():
            self.udp.send(data, ep)
        if self.derp is not None:
            for region, dst, data in core.derp_to_send():
                self.derp.send(region, dst, data)
        for packet in core.ip_packets_received():
            if self.tun is not None and not self.tun.closed:
                self.tun.write(packet)
                self.counters["tun-out"] += 1
        while (event := core.next_event()) is not None:
            self._on_event(event)
        if self.sink is not None:
            self.sink.flush()
        self._arm_timer()

    def _on_event(self, event: object) -> None:
        if isinstance(event, EndpointsChanged):
            self._pending_endpoints = event.endpoints
            if self._updater is None and self.control is not None and self._loop is not None:
                self._updater = self._loop.create_task(self._update_endpoints())
        elif isinstance(event, DerpRegionsWanted):
            if self.derp is not None:
                self.derp.want(event.regions)
        elif isinstance(event, PingResult | PingUnanswered):
            self.pings.dispatch(event)
        elif isinstance(event, PeerStateChanged):
            print(f"natkit node: {event.peer_name}: {event.state_id} ({event.path_kind})", file=self.log, flush=True)

    def _arm_timer(self) -> None:
        due = self.core.get_timer() if self.core is not None else None
        if self._timer is not None:
            if due is not None and self._timer.when() == due:
                return
            self._timer.cancel()
            self._timer = None
        if due is not None and self._loop is not None:
            self._timer = self._loop.call_at(due, self._on_timer)  # loop.time() is time.monotonic()

    def _on_timer(self) -> None:
        self._timer = None
        if self.core is not None:
            self.core.handle_timer(time.monotonic())
        self._flush()

    # --- the local API ---------------------------------------------------------------------------------

    def api_status(self, *, text: bool = False) -> dict[str, Any]:
        if self.core is None:
            raise ApiRefused("the node is still starting")
        status = self.core.status(time.monotonic())
        return {"text": status.format()} if text else status.to_json()

    def api_ping(
        self, peer: str, *, count: int, until_direct: bool, timeout: float, interval: float
    ) -> AsyncGenerator[dict[str, Any], None]:
        return self.pings.ping(peer, count=count, until_direct=until_direct, timeout=timeout, interval=interval)


__all__ = ["DEFAULT_PORT", "NodeDriver", "NodeOptions"]
