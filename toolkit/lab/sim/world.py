"""A :class:`~toolkit.lab.topology.Topology` built as a simulated network: :class:`SimWorld` (synchronous).

:class:`~toolkit.lab.sim.lab.SimLab` is the async :class:`~toolkit.lab.backend.Lab` over this; tests
and notebooks that want plain function calls use the world directly::

    world = SimWorld(topology, seed=1)
    world.start_stun_servers()
    report = world.discover_nat("alice")          # RFC 5780 discovery from a LAN host
    world.sched.run_for(60)                        # let 60 virtual seconds pass

What is built: one :class:`~toolkit.lab.sim.net.Segment` per topology segment, with its link
properties (``latency`` one way, ``loss``, ``bandwidth``) on every interface attached to it; one
:class:`~toolkit.lab.sim.net.Machine` per host (``eth0``) and per router (``wan``, ``lan``,
forwarding on) with the addresses :meth:`Topology.interfaces` lists and the routes
:meth:`Topology.routes` lists. A NAT router gets a :class:`~toolkit.lab.sim.nat.NatEngine` on
``wan`` with its WAN address as the public address; a ``one_to_one`` NAT maps the one host on its
LAN. Every random choice comes from the scheduler's streams for this seed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence

from toolkit.crypto.keys import generate_node_key
from toolkit.errors import UsageError
from toolkit.lab.labservices import CONTROL_PORT, LAB_AUTHKEY, derp_map
from toolkit.lab.sim.capture import EPOCH, Capture, CapturePoint
from toolkit.lab.sim.clock import Scheduler
from toolkit.lab.sim.control import ControlServerDriver, SimControlClient
from toolkit.lab.sim.link import LinkParams
from toolkit.lab.sim.nat import NatEngine, NatEntry
from toolkit.lab.sim.net import Interface, Machine, Segment
from toolkit.lab.sim.sockets import StunServerDriver, run_discovery
from toolkit.lab.sim.streams import DerpClientDriver, DerpServerDriver
from toolkit.lab.topology import Topology
from toolkit.sansio.control import ControlCore
from toolkit.sansio.derpclient import DerpClientConn
from toolkit.sansio.derpevents import DerpEvent
from toolkit.sansio.derpserver import DerpServerCore
from toolkit.sansio.natbehavior import NatBehaviorDiscovery
from toolkit.sansio.natreport import NatReport
from toolkit.sansio.stunserver import StunServerCore
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.services.controlstore import MemoryStore
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, NodePrivateKey

STUN_PORT, STUN_ALT_PORT = 3478, 3479
DERP_PORT = 3340  # natkit's lab DERP port (toolkit.lab.labservices.DERP_PORT)


class SimWorld:
    """The machines, segments and NATs of one topology on one virtual clock (see the module doc)."""

    def __init__(self, topology: Topology, *, seed: int | str = 0, tracer: Tracer | None = None) -> None:
        self.topology = topology
        self.sched = Scheduler(seed)
        self.tracer = tracer
        self.segments: dict[str, Segment] = {}
        self.machines: dict[str, Machine] = {}
        self.stun_servers: dict[str, StunServerDriver] = {}
        self.derp_servers: dict[str, DerpServerDriver] = {}
        self.control_servers: dict[str, ControlServerDriver] = {}
        self.control_stores: dict[str, MemoryStore] = {}  # kept across restarts: nothing registered is lost
        self._control_args: dict[str, tuple[Endpoint | None, tuple[str, ...], Timing]] = {}
        for seg in topology.segments:
            params = LinkParams(latency=seg.latency, loss=seg.loss, bandwidth=seg.bandwidth)
            self.segments[seg.name] = Segment(seg.name, self.sched, params)
        for name in [r.name for r in topology.routers] + [h.name for h in topology.hosts]:
            self._build(name)
        for router in topology.routers:
            if router.nat is not None:
                self._add_nat(router.name)

    def _build(self, name: str) -> None:
        is_router = any(r.name == name for r in self.topology.routers)
        machine = Machine(name, self.sched, forwarding=is_router, tracer=self.tracer)
        self.machines[name] = machine
        for spec in self.topology.interfaces(name):
            addrs: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = [(spec.v4, spec.prefixlen)]
            addrs += [(ip, spec.prefixlen) for ip in spec.extra_v4]
            if spec.v6 is not None:
                addrs.append((spec.v6, spec.v6_prefixlen))
            machine.add_interface(spec.name, self.segments[spec.segment], addrs)
        for route in self.topology.routes(name):
            machine.add_route(route.prefix, route.interface, route.via)

    def _add_nat(self, name: str) -> None:
        router = self.topology.router(name)
        assert router.nat is not None
        machine = self.machines[name]
        wan_ip = router.wan_v4
        lan_hosts = self.topology.hosts_on(router.lan)
        host = lan_hosts[0].v4 if router.nat.one_to_one and len(lan_hosts) == 1 else None

        def busy(proto: int, port: int) -> bool:
            return machine.port_in_use(proto, wan_ip, port)

        def event(kind: str, detail: str) -> None:
            if self.tracer is not None:
                self.tracer(TraceRecord(self.sched.now, name, None, "transition", detail, kind))

        engine = NatEngine(
            router.nat, wan_ip, self.sched.rng_for(f"nat:{name}"), port_busy=busy, host=host, on_event=event
        )
        machine.set_nat(engine, "wan")

    # --- lookups ----------------------------------------------------------------------------------

    def machine(self, name: str) -> Machine:
        try:
            return self.machines[name]
        except KeyError:
            self.topology.element(name)  # raises the UsageError listing the names
            raise

    def interface(self, element: str, interface: str) -> Interface:
        machine = self.machine(element)
        try:
            return machine.interfaces[interface]
        except KeyError:
            names = ", ".join(machine.interfaces)
            raise UsageError(f"{element!r} has no interface {interface!r}; interfaces: {names}") from None

    def nat(self, router: str) -> NatEngine:
        engine = self.machine(router).nat
        if engine is None:
            raise UsageError(f"router {router!r} is a plain router and has no NAT table")
        return engine

    def nat_table(self, router: str) -> list[NatEntry]:
        """The live mappings of NAT router ``router`` now."""
        return self.nat(router).table(self.sched.now)

    def capture_points(self, elements: Iterable[str] | None = None) -> list[CapturePoint]:
        names = list(self.machines) if elements is None else list(elements)
        return [iface.capture for n in names for iface in self.machine(n).interfaces.values()]

    def capture(self, element: str | None = None, interface: str | None = None) -> Capture:
        """Start recording: one interface, every interface of ``element``, or (no arguments) every interface."""
        if element is None:
            return Capture(self.capture_points())
        if interface is None:
            return Capture(self.capture_points([element]))
        return Capture([self.interface(element, interface).capture])

    # --- services ---------------------------------------------------------------------------------

    def start_stun_server(self, host: str, listen: list[Endpoint] | None = None) -> StunServerDriver:
        """A STUN server on ``host``: RFC 5780 mode (V4:3478 + EXTRA:3479) when the host has two addresses."""
        h = self.topology.host(host)
        if listen is None:
            listen = [Endpoint(h.v4, STUN_PORT)]
            if h.extra_v4:
                listen.append(Endpoint(h.extra_v4[0], STUN_ALT_PORT))
        core = StunServerCore(listen[0], listen[1] if len(listen) > 1 else None, name=f"stun-server {host}")
        driver = StunServerDriver(self.machine(host), core)
        self.stun_servers.setdefault(host, driver)  # the host's first server stays its entry; a second (v6) runs beside
        return driver

    def start_stun_servers(self) -> None:
        """A STUN server on every host whose services include ``stun-server``."""
        for h in self.topology.hosts:
            if any(s.kind == "stun-server" for s in h.services) and h.name not in self.stun_servers:
                self.start_stun_server(h.name)

    def start_derp_server(
        self, host: str, listen: Endpoint | None = None, *, timing: Timing = DEFAULT
    ) -> DerpServerDriver:
        """A DERP relay (the ``natkit derp-server`` core over sim TCP) on ``host``, default ``V4:3340``;
        its key comes from the lab's seeded stream ``derp-key:HOST``."""
        h = self.topology.host(host)
        key = generate_node_key(self.sched.rand_bytes(f"derp-key:{host}")(32))
        core = DerpServerCore(
            key,
            rng=self.sched.rand_bytes(f"derp:{host}"),
            timing=timing,
            tracer=self.tracer,
            name=f"derp-server {host}",
        )
        driver = DerpServerDriver(self.machine(host), core, listen or Endpoint(h.v4, DERP_PORT))
        self.derp_servers[host] = driver
        return driver

    def derp_client(
        self,
        host: str,
        server: str | Endpoint | None = None,
        *,
        key: NodePrivateKey | None = None,
        timing: Timing = DEFAULT,
        on_event: Callable[[DerpEvent], None] | None = None,
    ) -> DerpClientDriver:
        """Connect ``host`` to a DERP relay (a host name of a started one, an endpoint, or the first started);
        ``key`` defaults to one from the seeded stream ``node-key:HOST``. The TCP SYN leaves now."""
        if server is None or isinstance(server, str):
            if not self.derp_servers:
                raise UsageError("no DERP server runs in this lab: start one first")
            server = self.derp_servers[server or next(iter(self.derp_servers))].local
        if key is None:
            key = generate_node_key(self.sched.rand_bytes(f"node-key:{host}")(32))
        core = DerpClientConn(
            key,
            rng=self.sched.rand_bytes(f"derp-client:{host}"),
            host=str(server.ip),
            timing=timing,
            tracer=self.tracer,
            name=f"derp-client {host}",
        )
        return DerpClientDriver(self.machine(host), core, server, on_event)

    def start_control_server(
        self,
        host: str,
        listen: Endpoint | None = None,
        authkey: str | Sequence[str] = LAB_AUTHKEY,
        *,
        timing: Timing = DEFAULT,
    ) -> ControlServerDriver:
        """The coordination server (the ``natkit control-server`` core over sim TCP, :mod:`.control`) on
        ``host``, default ``V4:8081``, with the lab's DERP map (:func:`toolkit.lab.labservices.derp_map`) and
        a :class:`~toolkit.services.controlstore.MemoryStore` kept in :attr:`control_stores`: starting it
        again on the same host (after ``close()``, or :meth:`restart_control_server`) uses the same store,
        so nodes, tokens and addresses survive. Tokens come from the seeded stream ``control:HOST``."""
        old = self.control_servers.get(host)
        if old is not None and old.running:
            raise UsageError(f"a control server already runs on {host}: close() it first (or restart it)")
        h = self.topology.host(host)
        keys = (authkey,) if isinstance(authkey, str) else tuple(authkey)
        store = self.control_stores.setdefault(host, MemoryStore())
        core = ControlCore(
            store, keys, derp_map(self.topology), rng=self.sched.rand_bytes(f"control:{host}"), epoch=EPOCH,
            timing=timing, tracer=self.tracer, name=f"control-server {host}",
        )  # fmt: skip
        driver = ControlServerDriver(
            self.machine(host), core, listen or Endpoint(h.v4, CONTROL_PORT), tracer=self.tracer
        )
        self.control_servers[host] = driver
        self._control_args[host] = (listen, keys, timing)
        return driver

    def restart_control_server(self, host: str | None = None) -> ControlServerDriver:
        """Stop the control server on ``host`` (default: the first started) and start it again at once, on
        the same address with the same store, keys and timing (its connections are reset)."""
        host = host or self._control_host()
        self.control_servers[host].close()
        listen, keys, timing = self._control_args[host]
        return self.start_control_server(host, listen, keys, timing=timing)

    def control_endpoint(self, host: str | None = None) -> Endpoint:
        """Where the control server on ``host`` (default: the first started) listens."""
        return self.control_servers[host or self._control_host()].local

    def control_client(
        self, host: str, server: str | Endpoint | None = None, *, timing: Timing = DEFAULT, retry: bool = True
    ) -> SimControlClient:
        """A control client on ``host`` for a started control server (its host name, an endpoint, or the first)."""
        if server is None or isinstance(server, str):
            server = self.control_endpoint(server)
        return SimControlClient(self.machine(host), server, timing=timing, retry=retry)

    def _control_host(self) -> str:
        if not self.control_servers:
            raise UsageError("no control server runs in this lab: start one first")
        return next(iter(self.control_servers))

    def stun_endpoint(self, host: str | None = None) -> Endpoint:
        """The primary address of the STUN server on ``host`` (default: the first one started)."""
        if host is None:
            if not self.stun_servers:
                raise UsageError("no STUN server runs in this lab: start one first")
            host = next(iter(self.stun_servers))
        return self.stun_servers[host].core.primary

    def discover_nat(
        self,
        host: str,
        server: Endpoint | None = None,
        *,
        hairpin: bool = False,
        lifetime: bool = False,
        max_lifetime: float = 60.0,
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
    ) -> NatReport:
        """Run RFC 5780 discovery from ``host`` against ``server`` (default: the lab's STUN server)."""
        discovery = NatBehaviorDiscovery(
            server or self.stun_endpoint(),
            rng=self.sched.rand_bytes(f"discovery:{host}"),
            timing=timing,
            hairpin=hairpin,
            lifetime=lifetime,
            max_lifetime=max_lifetime,
            lifetime_start=min(1.0, max_lifetime),
            tracer=tracer,
            node=host,
        )
        return run_discovery(self.machine(host), discovery, timeout=max_lifetime * 4 + 600.0)


__all__ = ["STUN_ALT_PORT", "STUN_PORT", "SimWorld"]
