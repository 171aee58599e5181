"""The one interface every lab backend implements: :class:`Lab` and its value types (issue 5).

A backend (``sim``, ``netns``, ``docker``; :mod:`toolkit.lab.registry` finds them by name) realises
a :class:`~toolkit.lab.topology.Topology`. Every method that may do I/O is ``async``: ``netns`` and
``docker`` talk to the kernel and the engine; the ``sim`` backend implements the same coroutines
without real waiting (its clock is virtual: :meth:`Lab.sleep` advances it, :meth:`Lab.now` reads it).

Lifecycle: ``await lab.up()`` builds the network and starts the services the topology lists on its
hosts (:class:`~toolkit.lab.topology.ServiceSpec`); node hosts are marked but no node is started.
``await lab.down()`` removes everything; both are idempotent, and ``down()`` after a failed or
partial ``up()`` (or from another process, for backends whose :attr:`Lab.persistent` is True)
removes whatever exists. ``async with lab:`` does both.

Per element (hosts and routers, by name): :meth:`Lab.run` a command (argv, no shell) on a host;
:meth:`Lab.start_service` a server; :meth:`Lab.open_capture` on any interface (``eth0`` of a host,
``wan``/``lan`` of a router) yields raw IP packets (IPv4/IPv6 with UDP/TCP, no link layer) and writes
them as a pcap (LINKTYPE_RAW); :meth:`Lab.nat_table` reads a NAT router's mappings (the sim's table,
conntrack in ``netns``/``docker``); :meth:`Lab.logs` streams a host's log lines and trace records (JSON
lines, :mod:`toolkit.sansio.trace`). The ``sim`` backend runs no processes: ``run`` supports only the
natkit commands it documents and raises :class:`~toolkit.errors.UsageError` for anything else.
"""

from __future__ import annotations

import abc
import asyncio
import io
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from toolkit.codec.pcapio import LINKTYPE_RAW, PcapWriter
from toolkit.errors import NatkitError, UsageError
from toolkit.lab.topology import Host, Router, ServiceSpec, Topology
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint

if TYPE_CHECKING:
    from toolkit.lab.hostio import HostDerpClient, HostSocket
    from toolkit.lab.nodes import NodeHandle
    from toolkit.types import NodePrivateKey

PREFIX_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,18}[a-z0-9])?$")
PCAP_SNAPLEN = 262144


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a command run on a host did."""

    exit: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit == 0

    def check(self, what: str = "command") -> RunResult:
        """Self, or a :class:`NatkitError` with the exit status and stderr's last line."""
        if self.exit != 0:
            last = (self.stderr.strip().splitlines() or [""])[-1]
            raise NatkitError(f"{what} failed with exit status {self.exit}: {last}")
        return self


@dataclass(frozen=True, slots=True)
class NatMapping:
    """One NAT mapping: ``private`` appears as ``public``; ``remote`` set when the mapping is per destination."""

    proto: str  # "udp" or "tcp"
    private: Endpoint
    public: Endpoint
    remote: Endpoint | None = None
    expires_in: float | None = None  # seconds until the mapping times out; None if the backend cannot tell

    def __str__(self) -> str:
        remote = f" -> {self.remote}" if self.remote is not None else ""
        expires = f" ({self.expires_in:.0f}s left)" if self.expires_in is not None else ""
        return f"{self.proto} {self.private} = {self.public}{remote}{expires}"


@dataclass(frozen=True, slots=True)
class ElementStatus:
    """One host or router of a running (or partly running) lab."""

    name: str
    kind: str  # "host" or "router"
    up: bool
    addresses: tuple[str, ...] = ()  # "192.168.1.10/24 eth0" style
    services: tuple[str, ...] = ()  # "stun-server udp 198.51.100.10:3478" style
    detail: str = ""  # backend-specific: a namespace, a container id


@dataclass(frozen=True, slots=True)
class LabStatus:
    """What :meth:`Lab.status` reports."""

    name: str
    backend: str
    up: bool
    elements: tuple[ElementStatus, ...] = ()

    def format(self) -> str:
        """Human-readable lines, as ``natkit lab status`` prints them."""
        state = "up" if self.up else "down"
        lines = [f"lab {self.name} ({self.backend}): {state}"]
        for e in self.elements:
            mark = "up  " if e.up else "down"
            lines.append(f"  {mark} {e.kind:<6} {e.name:<15} {', '.join(e.addresses)}")
            lines += [f"       {'':<6} {'':<15} {s}" for s in e.services]
        return "\n".join(lines)


class Packet(NamedTuple):
    """A captured packet: a timestamp (seconds; virtual in ``sim``) and the raw IP packet bytes."""

    timestamp: float
    data: bytes


def pcap_bytes(packets: Iterable[Packet], linktype: int = LINKTYPE_RAW) -> bytes:
    """A classic pcap file (microsecond timestamps, little endian) of ``packets``."""
    buf = io.BytesIO()
    writer = PcapWriter(buf, linktype, PCAP_SNAPLEN)
    for ts, data in packets:
        writer.write(data, ts)
    return buf.getvalue()


class Capture:
    """Packets seen on one interface since the capture was opened.

    Backends call :meth:`feed` for every packet and :meth:`close` when the capture ends (the lab goes
    down, or the user calls :meth:`aclose`). Users ``async for ts, data in capture`` (live, ends
    after close) or read :attr:`packets` and :meth:`write_pcap` (everything captured so far).
    """

    def __init__(self, element: str, interface: str) -> None:
        self.element = element
        self.interface = interface
        self.packets: list[Packet] = []
        self._pending: deque[Packet] = deque()
        self._wakeup: asyncio.Event | None = None
        self.closed = False

    def feed(self, timestamp: float, data: bytes) -> None:
        if self.closed:
            return
        packet = Packet(timestamp, bytes(data))
        self.packets.append(packet)
        self._pending.append(packet)
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    async def aclose(self) -> None:
        """Stop capturing (backends override to stop their source, then call super)."""
        self.close()

    def __aiter__(self) -> AsyncIterator[Packet]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Packet]:
        while True:
            while self._pending:
                yield self._pending.popleft()
            if self.closed:
                return
            self._wakeup = self._wakeup or asyncio.Event()
            self._wakeup.clear()
            await self._wakeup.wait()

    def write_pcap(self, path: str | Path) -> int:
        """Write the packets captured so far as a pcap file; returns how many."""
        with PcapWriter(path, LINKTYPE_RAW, PCAP_SNAPLEN) as writer:
            for ts, data in list(self.packets):
                writer.write(data, ts)
            return writer.count


class ServiceHandle(abc.ABC):
    """A server started on a lab host."""

    def __init__(self, host: str, spec: ServiceSpec, listening: Sequence[str] = ()) -> None:
        self.host = host
        self.spec = spec
        self.listening = tuple(listening)  # "udp 198.51.100.10:3478" as run_service prints

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop the service (idempotent)."""

    @abc.abstractmethod
    def logs(self) -> list[str]:
        """The service's output lines so far."""

    def __str__(self) -> str:
        return f"{self.spec.kind} on {self.host}: {', '.join(self.listening) or 'starting'}"


CUT_TABLE = "natkit_cut"  # the nftables table of Lab.block_udp


class Lab(abc.ABC):
    """One running lab network on one backend. Subclasses implement the abstract methods."""

    backend: ClassVar[str] = ""
    persistent: ClassVar[bool] = False  # True: the lab outlives this process (netns, docker)
    services: Sequence[ServiceHandle]  # the services started on this lab's hosts, in start order (each backend's list)

    def __init__(
        self, topology: Topology, *, name_prefix: str | None = None, seed: int = 0, timing: Timing = DEFAULT
    ) -> None:
        prefix = name_prefix if name_prefix is not None else topology.name[:20].rstrip("-")
        if not PREFIX_RE.match(prefix):
            raise UsageError(f"lab name {prefix!r}: use 1-20 lowercase letters, digits or '-', starting with a letter")
        self.topology = topology
        self.nodes: dict[str, NodeHandle] = {}  # started by start_node, by host (stopped ones stay: their keys)
        self.name_prefix = prefix
        self.seed = seed
        self.timing = timing

    @property
    def name(self) -> str:
        return self.name_prefix

    # --- lifecycle ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def up(self) -> None:
        """Build the network and start the topology's services (idempotent)."""

    @abc.abstractmethod
    async def down(self) -> None:
        """Remove everything of this lab that exists, also after a failed up (idempotent)."""

    @abc.abstractmethod
    def status(self) -> LabStatus:
        """What is up, with addresses (the real state for persistent backends)."""

    async def __aenter__(self) -> Lab:
        try:
            await self.up()
        except BaseException:
            await self.down()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.down()

    # --- per host / router -------------------------------------------------------------------------

    @abc.abstractmethod
    async def run(self, host: str, argv: Sequence[str], *, timeout: float = 30.0) -> RunResult:
        """Run ``argv`` (no shell) on ``host``; a timeout kills it and raises :class:`NatkitError`."""

    @abc.abstractmethod
    async def start_service(self, host: str, spec: ServiceSpec) -> ServiceHandle:
        """Start a server on ``host``; returns once it listens."""

    @abc.abstractmethod
    async def open_capture(self, element: str, interface: str) -> Capture:
        """Capture raw IP packets on interface ``interface`` of host or router ``element``."""

    @abc.abstractmethod
    async def nat_table(self, router: str) -> list[NatMapping]:
        """The current mappings of NAT router ``router`` (UsageError for a plain router)."""

    @abc.abstractmethod
    def logs(self, host: str) -> AsyncIterator[str]:
        """Stream ``host``'s log lines and trace records (implement as ``async def ... yield``)."""

    async def start_node(self, host: str, *, timing_scale: float = 1.0) -> NodeHandle:
        """Start a natkit node on ``host`` (registered with the lab's control server); returns once it runs.

        ``timing_scale`` multiplies every timer (:meth:`toolkit.timing.Timing.scaled`): below 1 a lab
        runs the flowchart faster (tests), above 1 slower (teaching).
        """
        raise UsageError(f"the {self.backend} backend cannot start nodes yet")

    # --- sockets and DERP clients on hosts (toolkit.lab.hostio) -------------------------------------

    async def udp_socket(self, host: str, bind: Endpoint | str | int | None = None) -> HostSocket:
        """A UDP socket on ``host``: ``bind`` None (any port), a port, ``"0.0.0.0:40000"`` or an Endpoint.

        ``sock.sendto(data, dst)``, ``await sock.recv(timeout)`` (None after the timeout; lab time on
        ``sim``), ``await sock.recv_all(wait)``, ``await sock.close()``; ``sock.local`` is the host's
        address and the bound port (:class:`toolkit.lab.hostio.HostSocket`).
        """
        from toolkit.lab import hostio

        return await hostio.udp_socket(self, host, bind)

    async def derp_client(
        self, host: str, *, key: NodePrivateKey, server: str | Endpoint | None = None
    ) -> HostDerpClient:
        """A DERP client on ``host`` with node key ``key``, to ``server`` (a DERP host's name, an endpoint,
        or None: the lab's first DERP server); it starts connecting now (:class:`toolkit.lab.hostio.HostDerpClient`).
        """
        from toolkit.lab import hostio

        return await hostio.derp_client(self, host, key=key, server=server)

    async def spawn(self, host: str, argv: Sequence[str], *, what: str = "process") -> asyncio.subprocess.Process:
        """Start ``argv`` on ``host`` with pipes for stdin, stdout and stderr (a long-running helper such as
        :mod:`toolkit.lab.hostagent`); the backend stops what it spawned in :meth:`down`. ``what`` names it."""
        raise UsageError(f"the {self.backend} backend runs no processes on its hosts")

    # --- breaking the direct path (the fallback lessons) -------------------------------------------

    async def block_udp(self, router: str, remote_ip: str, blocked: bool = True) -> None:
        """Make router ``router`` drop (or stop dropping) forwarded UDP to and from ``remote_ip``.

        The direct path between two nodes dies while DERP (TCP) and STUN (another address) keep
        working: the node must fall back to DERP, and come back when unblocked. The kernel backends
        put one rule pair in a table of its own (``inet natkit_cut``, before the NAT's filter), so
        the NAT's ruleset is untouched and unblocking is deleting that table; ``sim`` overrides this.
        """
        self._router(router)
        table = f"inet {CUT_TABLE}"
        if not blocked:
            await self.run(router, ["sh", "-c", f"nft delete table {table} 2>/dev/null || true"])
            return
        family = "ip6" if ":" in remote_ip else "ip"
        cmds = [
            f"add table {table}",
            f"add chain {table} forward {{ type filter hook forward priority -10 ; policy accept ; }}",
            f"add rule {table} forward meta l4proto udp {family} daddr {remote_ip} drop",
            f"add rule {table} forward meta l4proto udp {family} saddr {remote_ip} drop",
        ]
        for cmd in cmds:
            (await self.run(router, ["nft", *cmd.split(" ")])).check(f"nft {cmd} on {router}")

    async def flush_nat(self, router: str) -> None:
        """Forget every NAT mapping of ``router`` at once (``conntrack -F``; ``sim`` clears its table).

        What a router reboot or a mapping timeout does to a live flow: the node's next packet gets a
        new mapping (on a port-preserving NAT, often the same port) and the peer's old view is stale.
        """
        self._nat_router(router)
        (await self.run(router, ["conntrack", "-F"])).check(f"conntrack -F on {router}")

    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass: real time here; the ``sim`` backend advances its virtual clock."""
        await asyncio.sleep(seconds)

    def now(self) -> float:
        """The lab's clock in seconds (monotonic; virtual in ``sim``)."""
        return time.monotonic()

    # --- helpers for subclasses --------------------------------------------------------------------

    def _host(self, name: str) -> Host:
        return self.topology.host(name)

    def _router(self, name: str) -> Router:
        return self.topology.router(name)

    def _nat_router(self, name: str) -> Router:
        router = self.topology.router(name)
        if router.nat is None:
            raise UsageError(f"router {name!r} is a plain router and has no NAT table")
        return router


__all__ = [
    "LINKTYPE_RAW",
    "Capture",
    "ElementStatus",
    "Lab",
    "LabStatus",
    "NatMapping",
    "Packet",
    "RunResult",
    "ServiceHandle",
    "pcap_bytes",
]
