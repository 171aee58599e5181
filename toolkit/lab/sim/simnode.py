"""A natkit node in the simulator: :class:`SimNode` drives :class:`~toolkit.sansio.nodecore.NodeCore` on a sim host.

The sim twin of ``natkit node`` (:class:`toolkit.node.node.NodeDriver`), as thin as it (design.md §2): it
feeds the core with the virtual clock's ``now``, moves what the core produced, and re-arms one timer; every
decision (STUN, disco, the flowchart per peer, WireGuard, which path carries a packet) is the core's.
What it wires together on the host's :class:`~toolkit.lab.sim.net.Machine`:

* one :class:`~toolkit.lab.sim.sockets.UdpSocket` on the host's IPv4 address, port :data:`NODE_PORT`
  (41641, Tailscale's), and one on its IPv6 address when it has one (same port): STUN, disco and WireGuard
  all arrive there (the core demultiplexes by content, protocols.md §4.11); a datagram for an IPv6
  endpoint leaves from the v6 socket;
* the local endpoints: the host's interface addresses (not the tunnel's) with that port;
* DERP: one connection per region the core wants (:class:`~toolkit.lab.sim.simnode_derp.SimDerpRegions`,
  reconnecting with the DERP backoff); connects and closes go to ``derp_state``;
* control (:class:`~toolkit.lab.sim.control_client.SimControlClient`, HTTP over the sim's TCP): the DERP map
  first (the home region is :func:`~toolkit.node.nodederp.pick_home_region`'s, as ``natkit node`` without
  ``--home-region``), then register with the auth key, keys, hostname, local endpoints and home region, then
  every netmap of the stream goes to ``set_netmap``; the core's ``EndpointsChanged`` goes back as an update;
* the tunnel: a :class:`~toolkit.lab.sim.tun.VirtualTun` (``tailscale0``) holding the tunnel addresses of
  the node's netmap entry; what the host's stack sends there goes to ``send_ip_packet``, and
  ``ip_packets_received`` are injected into the stack, so sim TCP and UDP between tunnel addresses run
  through WireGuard;
* exactly one sim timer, re-armed from ``get_timer()`` after every input.

Keys: the node key comes from the lab's seeded stream ``node-key:HOST`` (one per :class:`SimNode`, kept over
``stop()`` / ``start()``, like ``--state-dir``); a disco key is drawn at every start from ``disco-key:HOST``
(Tailscale regenerates it at every start). ``cache`` (a dict) is the endpoint cache: imported at start,
written back at stop (``NodeCore.export_cache``). Trace records go to ``tracer`` or, without one, to
:attr:`SimNode.records`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from toolkit.codec.derpmap import DERPMap
from toolkit.crypto.keys import generate_disco_key, generate_node_key
from toolkit.errors import UsageError
from toolkit.lab.sim.capture import EPOCH
from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.control_client import SimControlClient
from toolkit.lab.sim.simnode_derp import SimDerpRegions
from toolkit.lab.sim.sockets import UdpSocket
from toolkit.lab.sim.tun import VirtualTun
from toolkit.lab.sim.world import SimWorld
from toolkit.node.nodederp import pick_home_region
from toolkit.sansio.control_netmap import ControlNode, NetMap, RegisterBody, UpdateBody
from toolkit.sansio.nodecore import NodeConfig, NodeCore
from toolkit.sansio.nodestatus import (
    DerpRegionsWanted,
    EndpointsChanged,
    NodeStatus,
    PeerStateChanged,
    PingResult,
    PingUnanswered,
)
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.services.controlclient import ControlError
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, IPAddress, NodePublicKey

NODE_PORT = 41641  # Tailscale's default port


class SimNode:
    """A node on ``host`` of ``world`` (see the module docstring). :meth:`start` it, then run the clock."""

    def __init__(
        self,
        world: SimWorld,
        host: str,
        *,
        control: Endpoint,
        authkey: str,
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
        cache: dict[str, Any] | None = None,
        port: int = NODE_PORT,
    ) -> None:
        self.world, self.host = world, host
        self.machine = world.machine(host)
        self.sched = world.sched
        self.control_endpoint, self.authkey, self.timing, self.port = control, authkey, timing, port
        self.cache = cache
        self.records: list[TraceRecord] = []
        self.tracer: Tracer = tracer if tracer is not None else self.records.append
        self.node_key = generate_node_key(self.sched.rand_bytes(f"node-key:{host}")(32))
        self._disco_rng = self.sched.rand_bytes(f"disco-key:{host}")
        self._rng = self.sched.rand_bytes(f"node:{host}")
        self.counters: Counter[str] = Counter()
        self.events: list[object] = []  # every NodeEvent, in order
        self.pings: list[PingResult | PingUnanswered] = []
        self.netmap: NetMap | None = None
        self.core: NodeCore | None = None
        self.tun: VirtualTun | None = None
        self.sockets: dict[int, UdpSocket] = {}
        self.derp: SimDerpRegions | None = None
        self.control: SimControlClient | None = None
        self.running = False
        self._timer: Timer | None = None
        self._soon: Timer | None = None
        self._pumping = self._again = False
        self._told: tuple[Endpoint, ...] | None = None  # the endpoints control knows (None: not registered)
        self._pending: tuple[Endpoint, ...] | None = None  # endpoints to tell control once registered

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the sockets, create the tunnel, ask control for the DERP map (register follows its answer)."""
        if self.running:
            return
        now = self.sched.now
        config = NodeConfig(self.host, self.node_key, generate_disco_key(self._disco_rng(32)), self.timing, EPOCH)
        self.core = core = NodeCore(config, self._rng, self.tracer)
        if self.cache:
            core.import_cache(self.cache)
        self.tun = VirtualTun(self.machine, self._tun_packet)
        for version in (4, 6):
            ip = next((ip for ip in self._host_ips() if ip.version == version), None)
            if ip is not None:
                self.sockets[version] = UdpSocket(self.machine, Endpoint(ip, self.port), self._datagram)
        self.derp = SimDerpRegions(
            self.machine, self.node_key, on_packet=self._derp_packet, on_state=self._derp_state,
            timing=self.timing, tracer=self.tracer, name=self.host,
        )  # fmt: skip
        self.control = SimControlClient(self.machine, self.control_endpoint, timing=self.timing)
        self._told = self._pending = None
        self.netmap = None
        self.running = True
        core.set_local_endpoints(self.local_endpoints(), now)
        self.control.derp_map(self._got_derp_map, self._control_error)
        self._pump()

    def stop(self) -> None:
        """Close everything start() opened; the endpoint cache goes back into ``cache``."""
        if not self.running:
            return
        self.running = False
        for t in (self._timer, self._soon):
            if t is not None:
                t.cancel()
        self._timer = self._soon = None
        if self.derp is not None:
            self.derp.close()
        if self.control is not None:
            self.control.close()
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()
        if self.tun is not None:
            self.tun.close()
        if self.core is not None and self.cache is not None:
            self.cache.clear()
            self.cache.update(self.core.export_cache())

    # --- queries and commands ------------------------------------------------------------------------

    def _core(self) -> NodeCore:
        if self.core is None:
            raise UsageError(f"node {self.host} is not started: call start() first")
        return self.core

    def status(self) -> NodeStatus:
        return self._core().status(self.sched.now)

    def ping(self, peer: str | NodePublicKey) -> None:
        """``natkit ping PEER`` once: the answer lands in :attr:`pings` (PingResult or PingUnanswered)."""
        self._core().ping(peer, self.sched.now)
        self._pump()

    def local_endpoints(self) -> list[Endpoint]:
        return [Endpoint(ip, self.port) for ip in self._host_ips() if ip.version in self.sockets or not self.sockets]

    @property
    def node_public(self) -> NodePublicKey:
        return self._core().node_public

    def _host_ips(self) -> list[IPAddress]:
        tun = self.tun.iface if self.tun is not None else None
        return [ip for i in self.machine.interfaces.values() if i is not tun for ip, _ in i.addresses]

    # --- control -------------------------------------------------------------------------------------

    def _got_derp_map(self, derp_map: DERPMap) -> None:
        core, control = self.core, self.control
        if not self.running or core is None or control is None:
            return
        home = pick_home_region(derp_map)
        now = self.sched.now
        core.set_derp_map(derp_map, now)
        if home is not None:
            core.set_home_region(home, now)
        assert self.derp is not None
        self.derp.set_map(derp_map, home)
        body = RegisterBody(
            self.authkey, core.node_public, core.disco_public, tuple(self.local_endpoints()), home or 0, self.host
        )
        control.register(body, self._registered, self._control_error)
        control.follow(self._got_netmap, self._control_error)
        self._pump()

    def _registered(self, me: ControlNode) -> None:
        if not self.running:
            return
        if self.tun is not None:
            self.tun.set_addresses(me.addresses)
        self._told = me.endpoints
        if self._pending is not None:  # endpoints changed while registering
            self._tell_endpoints(self._pending)

    def _tell_endpoints(self, endpoints: tuple[Endpoint, ...]) -> None:
        """``EndpointsChanged`` -> ``POST /machine/update`` (held until registered; requests keep their order)."""
        control = self.control
        if control is None or control.token is None or self._told is None:
            self._pending = endpoints
            return
        self._pending = None
        if endpoints != self._told:
            self._told = endpoints
            control.update(UpdateBody(endpoints=endpoints), on_error=self._control_error)

    def _got_netmap(self, netmap: NetMap) -> None:
        core = self.core
        if not self.running or core is None:
            return
        self.netmap = netmap
        if self.tun is not None:
            self.tun.set_addresses(netmap.self_node.addresses)
        if netmap.derp_map is not None and self.derp is not None and netmap.derp_map != self.derp.derp_map:
            self.derp.set_map(netmap.derp_map, self.derp.home)
        core.set_netmap(netmap, self.sched.now)
        self._pump()

    def _control_error(self, error: ControlError) -> None:
        self.counters["control-error"] += 1
        self.tracer(TraceRecord(self.sched.now, self.host, None, "dropped", str(error), "control-error"))

    # --- network inputs ------------------------------------------------------------------------------

    def _datagram(self, data: bytes, src: Endpoint, sock: UdpSocket) -> None:
        if self.running and self.core is not None:
            self.counters["udp-in"] += 1
            self.core.receive_udp(data, src, self.sched.now)
            self._pump()

    def _tun_packet(self, packet: bytes) -> None:
        if self.running and self.core is not None:
            self.counters["tun-in"] += 1
            self.core.send_ip_packet(packet, self.sched.now)
            self._pump_soon()  # called from inside the stack's send: drain in an event of our own

    def _derp_packet(self, region: int, src: NodePublicKey, data: bytes) -> None:
        if self.running and self.core is not None:
            self.counters["derp-in"] += 1
            self.core.receive_derp(region, src, data, self.sched.now)
            self._pump_soon()  # called from inside the DERP driver's pump

    def _derp_state(self, region: int, connected: bool) -> None:
        if self.running and self.core is not None:
            self.core.derp_state(region, connected, self.sched.now)
            self._pump_soon()

    # --- draining the core ---------------------------------------------------------------------------

    def _pump_soon(self) -> None:
        if self._soon is None and self.running:
            self._soon = self.sched.call_at(self.sched.now, self._soon_fired)

    def _soon_fired(self) -> None:
        self._soon = None
        self._pump()

    def _pump(self) -> None:
        if self._pumping:
            self._again = True
            return
        core = self.core
        if core is None or not self.running:
            return
        self._pumping = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._drain(core)
        finally:
            self._pumping = False
        self._rearm(core)

    def _drain(self, core: NodeCore) -> None:
        for data, ep in core.udp_to_send():
            sock = self.sockets.get(ep.ip.version)
            if sock is None:
                self.counters[f"udp-no-ipv{ep.ip.version}"] += 1
                continue
            try:
                sock.sendto(data, ep)
                self.counters["udp-out"] += 1
            except OSError:  # no route: a lost datagram, the core retries
                self.counters["udp-send-error"] += 1
        derp = self.derp
        for region, dst, data in core.derp_to_send():
            if derp is not None and derp.send(region, dst, data):
                self.counters["derp-out"] += 1
            else:
                self.counters["derp-not-sent"] += 1
        tun = self.tun
        for packet in core.ip_packets_received():
            if tun is not None and tun.inject(packet):
                self.counters["tun-out"] += 1
        while (event := core.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, EndpointsChanged):
                self._tell_endpoints(event.endpoints)
            elif isinstance(event, DerpRegionsWanted):
                if derp is not None:
                    derp.want(event.regions)
            elif isinstance(event, PingResult | PingUnanswered):
                self.pings.append(event)
            elif isinstance(event, PeerStateChanged):
                self.counters["peer-state-changes"] += 1

    def _rearm(self, core: NodeCore) -> None:
        when = core.get_timer() if self.running else None
        timer = self._timer
        if timer is not None:
            if when is not None and timer.when == when and not timer.cancelled:
                return
            timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self.sched.call_at(when, self._fire, when)

    def _fire(self, deadline: float) -> None:
        self._timer = None
        if self.running and self.core is not None:
            self.core.handle_timer(max(self.sched.now, deadline))
            self._pump()

    def __repr__(self) -> str:
        return f"<SimNode {self.host} {'running' if self.running else 'stopped'}>"


__all__ = ["NODE_PORT", "SimNode"]
