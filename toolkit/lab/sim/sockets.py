"""Virtual UDP sockets, and the drivers that plug natkit's sans-IO cores into them.

A :class:`UdpSocket` is bound on a simulated :class:`~toolkit.lab.sim.net.Machine` like a kernel
socket: a concrete address or the wildcard (``0.0.0.0`` for v4; ``::`` for both families, Linux's
dual-stack default), port 0 for a random ephemeral port; :meth:`UdpSocket.sendto` builds a real UDP packet (source address picked by the routing table
when the socket is bound to the wildcard) and hands it to the machine; datagrams arrive through
``on_datagram`` (or queue in :attr:`UdpSocket.inbox`). Sending without a route raises OSError
(ENETUNREACH), as the kernel does.

Drivers are as thin as the asyncio ones in :mod:`toolkit.services` (design.md §2): feed the core
with the virtual clock's ``now``, send what it returns, re-arm one timer. No protocol decisions.

* :class:`StunServerDriver` runs :class:`toolkit.sansio.stunserver.StunServerCore` on one socket per
  server address (A:P, A:Q, B:P, B:Q in RFC 5780 mode); replies leave from the socket the core names.
* :class:`DiscoveryDriver` runs :class:`toolkit.sansio.natbehavior.NatBehaviorDiscovery` (RFC 5780
  §4): each socket name the core uses gets a socket on the host's address towards the server, port
  0, reported with ``socket_bound``; when the core is done the sockets close. :func:`run_discovery`
  drives one to the end on the scheduler and returns the :class:`~toolkit.sansio.natreport.NatReport`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from functools import partial

from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.net import Machine
from toolkit.lab.sim.packet import UDP, Packet
from toolkit.sansio.natbehavior import NatBehaviorDiscovery
from toolkit.sansio.natreport import NatReport
from toolkit.sansio.stunserver import StunServerCore
from toolkit.types import Endpoint

DatagramHandler = Callable[[bytes, Endpoint, "UdpSocket"], None]
ANY4 = Endpoint.parse("0.0.0.0:0")


class UdpSocket:
    """A UDP socket on a simulated machine (see the module docstring)."""

    def __init__(self, machine: Machine, local: Endpoint = ANY4, on_datagram: DatagramHandler | None = None) -> None:
        self.machine = machine
        self.on_datagram = on_datagram
        self.inbox: deque[tuple[bytes, Endpoint]] = deque()
        self.sent = self.received = 0
        self.local = machine.bind(UDP, local, self._packet)
        self.closed = False

    def sendto(self, data: bytes, dest: Endpoint) -> None:
        if self.closed:
            raise OSError(9, f"{self.machine.name}: socket {self.local} is closed")
        ip = self.local.ip
        if ip.version != dest.ip.version and not (ip.is_unspecified and ip.version == 6):
            raise OSError(97, f"{self.machine.name}: socket {self.local} cannot send to {dest} (address family)")
        if ip.is_unspecified:
            src_ip = self.machine.source_for(dest.ip)
            if src_ip is None:
                raise OSError(101, f"{self.machine.name}: network is unreachable: {dest}")
            ip = src_ip
        self.sent += 1
        self.machine.send(Packet.udp(Endpoint(ip, self.local.port), dest, data))

    def _packet(self, pkt: Packet) -> None:
        self.received += 1
        if self.on_datagram is not None:
            self.on_datagram(pkt.payload, pkt.src, self)
        else:
            self.inbox.append((pkt.payload, pkt.src))

    def recv(self) -> tuple[bytes, Endpoint] | None:
        """The oldest queued datagram and its source (only without ``on_datagram``), or None."""
        return self.inbox.popleft() if self.inbox else None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.machine.unbind(UDP, self.local)

    def __repr__(self) -> str:
        return f"<UdpSocket {self.machine.name} {self.local}>"


class StunServerDriver:
    """A :class:`StunServerCore` answering on ``machine`` (one socket per local endpoint of the core)."""

    def __init__(self, machine: Machine, core: StunServerCore) -> None:
        self.machine = machine
        self.core = core
        self.sockets: dict[Endpoint, UdpSocket] = {}
        for local in core.local_endpoints:
            self.sockets[local] = UdpSocket(machine, local, partial(self._datagram, local))

    def _datagram(self, local: Endpoint, data: bytes, src: Endpoint, sock: UdpSocket) -> None:
        for reply in self.core.handle(data, src, local, "udp", self.machine.sched.now):
            out = self.sockets.get(reply.from_local, sock)
            out.sendto(reply.data, reply.to)

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()

    def summary(self) -> str:
        return self.core.summary()


class DiscoveryDriver:
    """Runs a :class:`NatBehaviorDiscovery` on ``machine``'s sockets; :attr:`report` once :attr:`done`."""

    def __init__(self, machine: Machine, discovery: NatBehaviorDiscovery, local_ip: Endpoint | None = None) -> None:
        self.machine = machine
        self.discovery = discovery
        self.sockets: dict[str, UdpSocket] = {}
        ip = local_ip.ip if local_ip is not None else machine.source_for(discovery.server.ip)
        if ip is None:
            raise OSError(101, f"{machine.name}: no route to the STUN server {discovery.server}")
        self.ip = ip
        self._timer: Timer | None = None

    @property
    def done(self) -> bool:
        return self.discovery.done

    @property
    def report(self) -> NatReport | None:
        return self.discovery.report

    def start(self) -> None:
        self.discovery.start(self.machine.sched.now)
        self._pump()

    def _pump(self) -> None:
        d = self.discovery
        for out in d.datagrams_to_send():
            sock = self.sockets.get(out.socket)
            if sock is None:
                sock = self.sockets[out.socket] = UdpSocket(
                    self.machine, Endpoint(self.ip, 0), partial(self._datagram, out.socket)
                )
                d.socket_bound(out.socket, sock.local)
            sock.sendto(out.data, out.dest)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = d.get_timer()
        if when is not None and not d.done:
            self._timer = self.machine.sched.call_at(when, self._fire)
        if d.done:
            self.close()

    def _datagram(self, name: str, data: bytes, src: Endpoint, sock: UdpSocket) -> None:
        self.discovery.receive_datagram(name, data, src, self.machine.sched.now)
        self._pump()

    def _fire(self) -> None:
        self._timer = None
        self.discovery.handle_timer(self.machine.sched.now)
        self._pump()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sock in self.sockets.values():
            sock.close()


def run_discovery(machine: Machine, discovery: NatBehaviorDiscovery, timeout: float = 600.0) -> NatReport:
    """Run ``discovery`` from ``machine`` on the scheduler until it is done; its report.
    Raises TimeoutError when it is not done after ``timeout`` virtual seconds."""
    driver = DiscoveryDriver(machine, discovery)
    driver.start()
    machine.sched.run_while(lambda: not driver.done, timeout)
    if driver.report is None:
        driver.close()
        raise TimeoutError(f"{machine.name}: NAT discovery not done after {timeout} simulated seconds")
    return driver.report


__all__ = ["ANY4", "DiscoveryDriver", "StunServerDriver", "UdpSocket", "run_discovery"]
