"""``SimLab``: the ``sim`` backend of :class:`toolkit.lab.backend.Lab` (in-process, virtual clock, seeded).

The network is a :class:`~toolkit.lab.sim.world.SimWorld`; this class adds the async
:class:`~toolkit.lab.backend.Lab` interface every backend shares. Nothing here waits for real:

* ``up()`` builds the world and starts the topology's services that run in the simulator today:
  ``stun-server`` (:class:`~toolkit.sansio.stunserver.StunServerCore` on virtual sockets, RFC 5780
  mode on a host with a second address, the same ``--listen`` arguments as the other backends,
  :func:`toolkit.lab.labservices.service_args`) and ``derp-server``
  (:class:`~toolkit.sansio.derpserver.DerpServerCore` over the sim's TCP, :mod:`toolkit.lab.sim.streams`,
  one ``--listen``) and ``control-server`` (:class:`~toolkit.sansio.control.ControlCore` over the
  sim's TCP, :mod:`toolkit.lab.sim.control`: one ``--listen``, its ``--authkey`` values, an in-memory
  store and the lab's DERP map; ``--db`` and ``--derp-map`` are ignored). A service kind the sim does
  not run is listed in :meth:`status` and the host's log as not simulated; :meth:`start_service`
  refuses it.
* ``sleep(s)`` runs the virtual clock ``s`` seconds forward (every packet, timer and NAT timeout in
  between happens), ``now()`` reads it. With ``realtime=True`` (``natkit lab up`` in the foreground, a
  notebook that animates) ``sleep`` paces the virtual clock to the wall clock instead of jumping.
* ``run(host, argv)`` runs the natkit commands the simulator implements in-process, taking virtual
  time: ``natkit nat-type SERVER [--hairpin] [--lifetime] [--max-lifetime S] [--rto S] [--rc N]
  [--rm N] [--format text|json]`` (the JSON is the CLI's; the text is a short verdict). ``timeout``
  counts virtual seconds. Anything else is a :class:`~toolkit.errors.UsageError`.
* ``open_capture`` taps any interface; packets carry virtual timestamps. ``nat_table`` reads the
  NAT engine's table. ``logs(host)`` yields the host's lines (service starts, its machine's drops
  and, for routers, NAT events as JSON trace records) and then waits for more until ``down()``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from toolkit.errors import NatkitError, UsageError
from toolkit.lab.backend import Capture, ElementStatus, Lab, LabStatus, NatMapping, RunResult, ServiceHandle
from toolkit.lab.labservices import LAB_AUTHKEY, service_args
from toolkit.lab.sim.control import ControlServerDriver
from toolkit.lab.sim.packet import UDP, Packet
from toolkit.lab.sim.simhandle import SimNodeHandle
from toolkit.lab.sim.simnode import SimNode
from toolkit.lab.sim.sockets import StunServerDriver
from toolkit.lab.sim.streams import DerpServerDriver
from toolkit.lab.sim.world import SimWorld
from toolkit.lab.topology import ServiceSpec, Topology
from toolkit.sansio.natbehavior import NatBehaviorDiscovery
from toolkit.sansio.trace import Tracer, TraceRecord
from toolkit.sansio.tracejson import dumps_line
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint

SIMULATED = ("stun-server", "derp-server", "control-server")
Driver = StunServerDriver | DerpServerDriver | ControlServerDriver


class SimService(ServiceHandle):
    """A STUN server, a DERP relay or a coordination server running in the simulator."""

    def __init__(self, host: str, spec: ServiceSpec, driver: Driver, listening: Sequence[str]) -> None:
        super().__init__(host, spec, listening)
        self.driver = driver
        self.running = True
        self._lines = [f"natkit {spec.kind}: listening on {', '.join(listening)}"]

    async def stop(self) -> None:
        if self.running:
            self.running = False
            self.driver.close()
            self._lines.append(f"natkit {self.spec.kind}: stopped ({self.driver.summary()})")

    def logs(self) -> list[str]:
        return list(self._lines)


class SimLab(Lab):
    """The in-process backend (see the module docstring). ``tracer`` also receives every trace record."""

    backend = "sim"
    persistent = False

    def __init__(
        self,
        topology: Topology,
        *,
        name_prefix: str | None = None,
        seed: int = 0,
        timing: Timing = DEFAULT,
        tracer: Tracer | None = None,
        realtime: bool = False,
    ) -> None:
        super().__init__(topology, name_prefix=name_prefix, seed=seed, timing=timing)
        self.tracer = tracer
        self.realtime = realtime
        self.world: SimWorld | None = None
        self.services: list[SimService] = []
        self.skipped: list[tuple[str, ServiceSpec]] = []
        self._captures: list[tuple[Capture, Any]] = []
        self._logs: dict[str, list[str]] = {}
        self._log_event: asyncio.Event | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def up(self) -> None:
        if self.world is not None:
            return
        self.world = SimWorld(self.topology, seed=self.seed, tracer=self._trace)
        self._logs = {name: [] for name in self.world.machines}
        for host in self.topology.hosts:
            for spec in host.services:
                if spec.kind in SIMULATED:
                    await self.start_service(host.name, spec)
                else:
                    self.skipped.append((host.name, spec))
                    self._log(host.name, f"natkit {spec.kind}: not simulated (the sim runs {', '.join(SIMULATED)})")

    async def down(self) -> None:
        for node in self.nodes.values():
            await node.stop()
        self.nodes = {}
        for service in self.services:
            await service.stop()
        for capture, remove in self._captures:
            remove()
            capture.close()
        self.services, self._captures, self.skipped = [], [], []
        self.world = None
        self._wake_logs()

    def status(self) -> LabStatus:
        up = self.world is not None
        elements = []
        for router in self.topology.routers:
            addrs = tuple(f"{i.cidr} {i.name}" for i in self.topology.interfaces(router.name))
            nat = f"nat {router.nat.name}" if router.nat is not None else "plain router"
            elements.append(ElementStatus(router.name, "router", up, addrs, (), nat))
        for host in self.topology.hosts:
            addrs = tuple(f"{i.cidr} {i.name}" for i in self.topology.interfaces(host.name))
            running = [f"{s.spec.kind} {', '.join(s.listening)}" for s in self.services if s.host == host.name]
            running += [f"{spec.kind} (not simulated)" for h, spec in self.skipped if h == host.name]
            elements.append(ElementStatus(host.name, "host", up, addrs, tuple(running), "node" if host.node else ""))
        return LabStatus(self.name, self.backend, up, tuple(elements))

    def _world(self) -> SimWorld:
        if self.world is None:
            raise UsageError(f"lab {self.name!r} is not up: call up() first")
        return self.world

    # --- per host / router -------------------------------------------------------------------------

    async def run(self, host: str, argv: Sequence[str], *, timeout: float = 30.0) -> RunResult:
        world = self._world()
        world.machine(host)
        args = list(argv)
        if args[:3] == ["python", "-m", "toolkit"]:
            args = args[3:]
        elif args[:1] == ["natkit"]:
            args = args[1:]
        if not args or args[0] != "nat-type":
            raise UsageError(f"the sim backend runs only `natkit nat-type ...` on hosts, not {' '.join(argv)!r}")
        return self._nat_type(world, host, args[1:], timeout)

    def _nat_type(self, world: SimWorld, host: str, argv: list[str], timeout: float) -> RunResult:
        parser = _NatTypeParser(prog="natkit nat-type", add_help=False)
        parser.add_argument("server")
        parser.add_argument("--hairpin", action="store_true")
        parser.add_argument("--lifetime", action="store_true")
        parser.add_argument("--max-lifetime", type=float, default=60.0)
        parser.add_argument("--rto", type=float, default=0.5)
        parser.add_argument("--rc", type=int, default=4)
        parser.add_argument("--rm", type=int, default=4)
        parser.add_argument("--format", choices=("text", "json"), default="text")
        args = parser.parse_args(argv)
        server = Endpoint.parse(args.server if ":" in args.server else f"{args.server}:3478")
        timing = self.timing.replace(stun_rto=args.rto, stun_rc=args.rc, stun_rm=args.rm)
        discovery = NatBehaviorDiscovery(
            server,
            rng=world.sched.rand_bytes(f"discovery:{host}"),
            timing=timing,
            hairpin=args.hairpin,
            lifetime=args.lifetime,
            max_lifetime=args.max_lifetime,
            lifetime_start=min(1.0, args.max_lifetime),
            tracer=self._trace,
            node=host,
        )
        from toolkit.lab.sim.sockets import DiscoveryDriver

        driver = DiscoveryDriver(world.machine(host), discovery)
        driver.start()
        if not world.sched.run_while(lambda: not driver.done, timeout) or driver.report is None:
            driver.close()
            raise NatkitError(f"natkit nat-type on {host} did not finish within {timeout} simulated seconds")
        report = driver.report
        if args.format == "json":
            return RunResult(0 if not report.udp_blocked else 1, json.dumps(report.to_dict(), indent=2) + "\n", "")
        if report.udp_blocked:
            return RunResult(
                1, "", f"natkit: no answer from {server}: UDP is blocked, or no STUN server listens there\n"
            )
        lines = [
            f"NAT behaviour discovery (RFC 5780) with STUN server {report.server}",
            f"  local address    {report.local}",
            f"  mapped address   {report.mapped}",
            f"verdict: {report.verdict()}",
            f"  mapping          {report.mapping or 'unknown'}",
            f"  filtering        {report.filtering or 'unknown'}",
        ]
        if report.hairpinning is not None:
            lines.append(f"  hairpinning      {'yes' if report.hairpinning else 'no'}")
        return RunResult(0, "\n".join(lines) + "\n", "")

    async def start_service(self, host: str, spec: ServiceSpec) -> ServiceHandle:
        world = self._world()
        h = self._host(host)
        if spec.kind not in SIMULATED:
            raise UsageError(f"the sim backend cannot run {spec.kind} (it runs {', '.join(SIMULATED)})")
        args = service_args(h, spec)
        listen = _listen_args(args)
        if spec.kind == "derp-server":
            return self._start_derp(world, host, spec, listen)
        if spec.kind == "control-server":
            return self._start_control(world, host, spec, listen, _flag_values(args, "--authkey"))
        if len(listen) > 2:
            raise UsageError(f"{spec.kind} on {host}: the sim runs one or two --listen addresses, not {len(listen)}")
        try:
            driver = world.start_stun_server(host, listen)
        except OSError as exc:
            raise UsageError(f"{spec.kind} on {host}: cannot listen: {exc}") from None
        service = SimService(host, spec, driver, [f"udp {ep}" for ep in driver.core.local_endpoints])
        self.services.append(service)
        self._log(host, service.logs()[0])
        return service

    def _start_derp(self, world: SimWorld, host: str, spec: ServiceSpec, listen: list[Endpoint]) -> ServiceHandle:
        if len(listen) > 1:
            raise UsageError(f"{spec.kind} on {host}: the sim runs one --listen address, not {len(listen)}")
        try:
            driver = world.start_derp_server(host, listen[0] if listen else None, timing=self.timing)
        except OSError as exc:
            raise UsageError(f"{spec.kind} on {host}: cannot listen: {exc}") from None
        service = SimService(host, spec, driver, [f"tcp {driver.local}"])
        self.services.append(service)
        self._log(host, service.logs()[0])
        return service

    def _start_control(
        self, world: SimWorld, host: str, spec: ServiceSpec, listen: list[Endpoint], authkeys: list[str]
    ) -> ServiceHandle:
        if len(listen) > 1:
            raise UsageError(f"{spec.kind} on {host}: the sim runs one --listen address, not {len(listen)}")
        if not authkeys:
            raise UsageError(f"{spec.kind} on {host}: the control server needs a pre-auth key: give --authkey KEY")
        try:
            driver = world.start_control_server(host, listen[0] if listen else None, authkeys, timing=self.timing)
        except OSError as exc:
            raise UsageError(f"{spec.kind} on {host}: cannot listen: {exc}") from None
        service = SimService(host, spec, driver, [f"tcp {driver.local}"])
        self.services.append(service)
        self._log(host, service.logs()[0])
        return service

    async def open_capture(self, element: str, interface: str) -> Capture:
        iface = self._world().interface(element, interface)
        capture = Capture(element, interface)

        def seen(time: float, direction: str, point: object, raw: bytes) -> None:
            capture.feed(time, raw)

        self._captures.append((capture, iface.capture.listen(seen)))
        return capture

    async def start_node(self, host: str, *, timing_scale: float = 1.0) -> SimNodeHandle:
        """A :class:`~toolkit.lab.sim.simnode.SimNode` on ``host``, registered with the lab's control server."""
        world = self._world()
        if not self.topology.host(host).node:
            raise UsageError(f"host {host!r} is not a node host (node: true in the scenario)")
        timing = self.timing.scaled(timing_scale) if timing_scale != 1.0 else self.timing
        node = SimNode(world, host, control=world.control_endpoint(), authkey=LAB_AUTHKEY, timing=timing)
        handle = SimNodeHandle(self, node)

        def traced(record: TraceRecord) -> None:
            handle.traced(record)
            self._trace(record)

        node.tracer = traced
        node.start()
        handle.start_echo()
        self.nodes[host] = handle
        self._log(host, f"natkit node: listening on udp {', '.join(str(e) for e in node.local_endpoints())}")
        return handle

    async def block_udp(self, router: str, remote_ip: str, blocked: bool = True) -> None:
        """The router's forward chain drops UDP to and from ``remote_ip`` (:meth:`Lab.block_udp`)."""
        self._router(router)
        machine = self._world().machine(router)
        ip = ipaddress.ip_address(remote_ip)
        machine.filters[:] = [f for f in machine.filters if getattr(f, "blocks", None) != ip]
        if blocked:

            def cut(pkt: Packet) -> str | None:
                return "blocked-by-lab" if pkt.proto == UDP and ip in (pkt.src.ip, pkt.dst.ip) else None

            cut.blocks = ip  # type: ignore[attr-defined]
            machine.filters.append(cut)

    async def flush_nat(self, router: str, *, renumber: bool = False) -> None:
        """Forget the router's mappings; ``renumber``: every flow gets a new public port (sim only)."""
        self._nat_router(router)
        self._world().nat(router).flush(renumber=renumber)

    async def nat_table(self, router: str) -> list[NatMapping]:
        self._nat_router(router)
        return [
            NatMapping(e.proto, e.private, e.public, e.remote, e.expires_in if e.expires_in != float("inf") else None)
            for e in self._world().nat_table(router)
        ]

    async def logs(self, host: str) -> AsyncIterator[str]:
        self._world().machine(host)
        sent = 0
        while True:
            lines = self._logs.get(host, [])
            while sent < len(lines):
                yield lines[sent]
                sent += 1
            if self.world is None:
                return
            self._log_event = self._log_event or asyncio.Event()
            self._log_event.clear()
            await self._log_event.wait()

    async def sleep(self, seconds: float) -> None:
        await self.run_for(seconds)

    async def run_for(self, seconds: float, until: Callable[[], bool] | None = None) -> bool:
        """Run the virtual clock ``seconds`` on, or only until ``until()`` holds; paced to the wall clock when
        ``realtime``. Whether ``until()`` held at the end (True without ``until``)."""
        sched = self._world().sched
        end = sched.now + seconds
        if not self.realtime:
            if until is None or not sched.run_while(lambda: not until(), seconds):
                sched.run_until(end)
            await asyncio.sleep(0)
            return until is None or until()
        loop = asyncio.get_running_loop()
        wall0, virtual0 = loop.time(), sched.now
        while sched.now < end and self.world is not None and not (until is not None and until()):
            nxt = sched.next_time()
            target = end if nxt is None else min(nxt, end)
            delay = (target - virtual0) - (loop.time() - wall0)
            if delay > 0:
                await asyncio.sleep(delay)
            sched.run_until(target)
        await asyncio.sleep(0)
        return until is None or until()

    def now(self) -> float:
        return self._world().sched.now if self.world is not None else 0.0

    # --- logs and traces ---------------------------------------------------------------------------

    def _log(self, host: str, line: str) -> None:
        self._logs.setdefault(host, []).append(line)
        self._wake_logs()

    def _wake_logs(self) -> None:
        if self._log_event is not None:
            self._log_event.set()

    def _trace(self, record: TraceRecord) -> None:
        if self.tracer is not None:
            self.tracer(record)
        if record.node in self._logs:
            self._log(record.node, dumps_line(record))  # the JSON lines out-of-process nodes write


class _NatTypeParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"natkit nat-type: {message}")


def _listen_args(args: Sequence[str]) -> list[Endpoint]:
    return [Endpoint.parse(value) for value in _flag_values(args, "--listen")]


def _flag_values(args: Sequence[str], flag: str) -> list[str]:
    return [value for name, value in itertools.pairwise(args) if name == flag]


__all__ = ["SimLab", "SimService"]
