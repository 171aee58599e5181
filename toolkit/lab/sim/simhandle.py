"""A :class:`~toolkit.lab.nodes.NodeHandle` for the ``sim`` backend: a :class:`~.simnode.SimNode` in process.

The handle answers what the kernel backends answer through ``natkit status``/``ping`` and the trace file,
from the node core itself: :meth:`SimNodeHandle.status` is ``NodeStatus.to_json()``, :meth:`records` the
records the node traced, :meth:`ping` the lines ``natkit ping`` prints (each ping's answer waited for on
the virtual clock).

Traffic (:class:`SimTraffic`): the sim's stack has no ICMP echo, so the node sends a small UDP datagram
through its tunnel every ``interval`` to port 7 (echo, RFC 862) of the peer's tunnel address, where an
echo socket on the peer's machine sends it back; both directions cross WireGuard like ``ping`` would.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from toolkit.errors import NatkitError
from toolkit.lab.nodes import NodeHandle, NodeKeys, NodeSession, Traffic
from toolkit.lab.sim.clock import Timer
from toolkit.lab.sim.sockets import UdpSocket
from toolkit.sansio.nodestatus import PingResult
from toolkit.sansio.trace import TraceRecord
from toolkit.types import Endpoint

if TYPE_CHECKING:
    from toolkit.lab.sim.lab import SimLab
    from toolkit.lab.sim.simnode import SimNode

ECHO_PORT = 7  # RFC 862
TRAFFIC_PORT = 40007  # the sender's tunnel-side port


class SimTraffic(Traffic):
    """UDP echo through the tunnel (see the module docstring); counts sent and echoed datagrams."""

    def __init__(self, lab: SimLab, node: SimNode, dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
                 interval: float = 0.2) -> None:  # fmt: skip
        self.lab, self.node, self.interval = lab, node, interval
        tun = node.tun
        assert tun is not None, "the node is not started"
        src_ip = tun.address(dst.version)
        if src_ip is None:
            raise ValueError(f"{node.host} has no IPv{dst.version} tunnel address yet")
        self.dst = Endpoint(dst, ECHO_PORT)
        self.sent = self.answered = 0
        self.sock = UdpSocket(node.machine, Endpoint(src_ip, TRAFFIC_PORT), self._echoed)
        self._timer: Timer | None = None
        self._send()

    def _echoed(self, data: bytes, src: Endpoint, sock: UdpSocket) -> None:
        self.answered += 1

    def _send(self) -> None:
        self.sent += 1
        self.sock.sendto(b"natkit echo %d" % self.sent, self.dst)
        self._timer = self.node.sched.call_later(self.interval, self._send)

    async def stop(self) -> dict[str, Any]:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.sock.close()
        return {"kind": "udp echo", "to": str(self.dst), "sent": self.sent, "answered": self.answered}


class SimNodeHandle(NodeHandle):
    """One :class:`SimNode` of a :class:`SimLab` (see the module docstring)."""

    def __init__(self, lab: SimLab, node: SimNode) -> None:
        super().__init__(node.host)
        self.lab, self.node = lab, node
        self.trace: list[TraceRecord] = []
        self.echo: UdpSocket | None = None

    def traced(self, record: TraceRecord) -> None:
        self.trace.append(record)

    def start_echo(self) -> None:
        """Answer UDP echo on the node's tunnel addresses once it has them (the peer's traffic target)."""
        if self.echo is not None:
            return
        tun = self.node.tun
        ip = tun.address(4) if tun is not None else None
        if ip is None:
            self.node.sched.call_later(0.05, self.start_echo)
            return
        self.echo = UdpSocket(self.node.machine, Endpoint(ip, ECHO_PORT), lambda d, src, s: s.sendto(d, src))

    async def status(self) -> dict[str, Any]:
        out: dict[str, Any] = self.node.status().to_json()
        return out

    async def records(self) -> list[TraceRecord]:
        return list(self.trace)

    async def keys(self) -> NodeKeys:
        core = self.node.core
        if core is None:
            raise NatkitError(f"the node on {self.host} has no keys yet: it is not started")
        sessions = tuple(NodeSession.of(r) for r in core.session_keys())
        return NodeKeys(core.node_public, core.config.disco_key, core.disco_public, sessions)

    async def ping(self, peer: str, *, count: int = 10, until_direct: bool = True) -> list[str]:
        lines = []
        for _ in range(count):
            before = len(self.node.pings)
            self.node.ping(peer)
            deadline = self.lab.now() + self.node.timing.ping_timeout + 0.001
            while len(self.node.pings) == before and self.lab.now() < deadline:
                await self.lab.sleep(0.001)
            if len(self.node.pings) == before:
                lines.append(f'ping "{peer}" timed out')
                continue
            answer = self.node.pings[-1]
            if isinstance(answer, PingResult):
                lines.append(answer.format())
                if until_direct and answer.is_direct:
                    break
            else:
                lines.append(f'ping "{peer}" timed out')
            await self.lab.sleep(0.5)
        return lines

    async def start_traffic(self, dst_ip: str) -> Traffic:
        return SimTraffic(self.lab, self.node, ipaddress.ip_address(dst_ip))

    async def stop(self) -> None:
        if self.echo is not None:
            self.echo.close()
            self.echo = None
        if self.node.running:
            self.node.stop()
