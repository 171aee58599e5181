"""UDP sockets and DERP clients on lab hosts, the same on every backend (issue 7).

Notebooks send a STUN request from a LAN host, or relay a packet through the lab's DERP server, with::

    sock = await lab.udp_socket("alice")                # or bind="0.0.0.0:40000"
    sock.sendto(stun.binding_request(txid), "198.51.100.10:3478")
    answer = await sock.recv(timeout=2.0)               # (bytes, Endpoint) or None
    client = await lab.derp_client("alice", key=alice_priv)
    await client.wait_connected()
    client.send_packet(bob_pub, b"hello")

* ``sim`` (:class:`SimHostSocket`, :class:`SimDerpClient`): the simulator's own sockets
  (:class:`toolkit.lab.sim.sockets.UdpSocket`) and DERP client cores (:meth:`SimWorld.derp_client`). Waiting
  (``recv``, ``recv_all``, ``wait_connected``) runs the virtual clock as :meth:`SimLab.sleep` does: it jumps,
  or keeps pace with the wall clock in a ``realtime`` lab, and stops as soon as what it waits for happened.
* ``netns`` and ``docker`` (:class:`~toolkit.lab.hostagentio.AgentSocket`,
  :class:`~toolkit.lab.hostagentio.AgentDerpClient`): real sockets and
  :class:`toolkit.services.derpclient.DerpClient` in the host, in one :mod:`toolkit.lab.hostagent` process per
  host and lab (started on first use with :meth:`Lab.spawn`, shared by the host's sockets and clients;
  :mod:`toolkit.lab.hostagentio` is its lab side); waiting is real time. ``lab.down()`` stops every agent the
  lab started (:func:`shutdown`), also when a notebook forgot to close its sockets; an agent also exits when
  its stdin closes (the lab's process died).

Differences that remain: ``sim`` has no wildcard source address, so :attr:`HostSocket.local` is always the
host's own address and the real port (also on the kernel backends); ``events`` never holds
``PacketReceived`` (packets are in ``received``); errors of a fire-and-forget send land in ``errors``.
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from toolkit.crypto.keys import public_key
from toolkit.errors import NatkitError, UsageError
from toolkit.lab.labservices import derp_map
from toolkit.sansio.derpevents import Closed, DerpEvent, PacketReceived
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

if TYPE_CHECKING:
    from toolkit.lab.backend import Lab
    from toolkit.lab.sim import SimLab
    from toolkit.lab.sim.sockets import UdpSocket
    from toolkit.lab.sim.streams import DerpClientDriver

Datagram = tuple[bytes, Endpoint]


def parse_bind(bind: Endpoint | str | int | None) -> Endpoint:
    """``None`` (any port, IPv4), a port number, ``"0.0.0.0:40000"`` or an Endpoint."""
    if bind is None:
        return Endpoint.parse("0.0.0.0:0")
    if isinstance(bind, int):
        return Endpoint.parse(f"0.0.0.0:{bind}")
    return bind if isinstance(bind, Endpoint) else Endpoint.parse(bind)


def _endpoint(dst: Endpoint | str) -> Endpoint:
    return dst if isinstance(dst, Endpoint) else Endpoint.parse(dst)


class HostSocket(abc.ABC):
    """A UDP socket on a lab host: ``sendto`` now, ``recv``/``recv_all`` wait (lab time on sim)."""

    def __init__(self, host: str, local: Endpoint) -> None:
        self.host = host
        self.local = local
        self.errors: list[str] = []  # what a send could not do (no route, closed agent ...)
        self.closed = False
        self._inbox: deque[Datagram] = deque()

    @abc.abstractmethod
    def _send(self, data: bytes, dst: Endpoint) -> None: ...

    @abc.abstractmethod
    async def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        """Let up to ``timeout`` seconds pass, stopping early once ``done()``; whether it holds."""

    @abc.abstractmethod
    async def _close(self) -> None: ...

    def sendto(self, data: bytes, dst: Endpoint | str) -> None:
        """Send one datagram (fire and forget)."""
        if self.closed:
            raise NatkitError(f"the socket {self.local} on {self.host} is closed")
        self._send(bytes(data), _endpoint(dst))

    async def recv(self, timeout: float = 2.0) -> Datagram | None:
        """The next datagram and its source, or None when nothing came within ``timeout`` seconds."""
        if not self._inbox and not self.closed:
            await self._wait(lambda: bool(self._inbox), timeout)
        return self._inbox.popleft() if self._inbox else None

    async def recv_all(self, wait: float = 0.5) -> list[Datagram]:
        """Every datagram queued now or arriving within ``wait`` seconds."""
        if not self.closed:
            await self._wait(lambda: False, wait)
        out = list(self._inbox)
        self._inbox.clear()
        return out

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self._close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host} {self.local}{' closed' if self.closed else ''}>"


class HostDerpClient(abc.ABC):
    """A DERP client on a lab host: ``received`` packets and ``events`` (no PacketReceived) in arrival order."""

    def __init__(self, host: str, key: NodePrivateKey) -> None:
        self.host = host
        self.public_key: NodePublicKey = public_key(key)
        self.errors: list[str] = []

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @property
    @abc.abstractmethod
    def received(self) -> list[tuple[NodePublicKey, bytes]]: ...

    @property
    @abc.abstractmethod
    def events(self) -> list[DerpEvent]: ...

    @abc.abstractmethod
    def send_packet(self, dst: NodePublicKey, payload: bytes) -> None:
        """Relay ``payload`` to ``dst`` (fire and forget)."""

    @abc.abstractmethod
    async def _wait(self, done: Callable[[], bool], timeout: float) -> bool: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    def _closed(self) -> Closed | None:
        return next((e for e in reversed(self.events) if isinstance(e, Closed)), None)

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Return once the handshake is done; :class:`NatkitError` if it failed or took over ``timeout`` s."""
        await self._wait(lambda: self.connected or self._closed() is not None or bool(self.errors), timeout)
        if not self.connected:
            why = self._closed() or (self.errors[-1] if self.errors else f"not connected within {timeout:g} s")
            raise NatkitError(f"DERP client on {self.host}: {why}")

    async def wait_received(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until ``count`` packets were received in all (at most ``timeout`` s); whether they were."""
        return await self._wait(lambda: len(self.received) >= count, timeout)

    async def wait_event(self, kind: type, timeout: float = 5.0) -> DerpEvent | None:
        """The first event of class ``kind`` (waiting up to ``timeout`` s for it), or None."""
        await self._wait(lambda: any(isinstance(e, kind) for e in self.events), timeout)
        return next((e for e in self.events if isinstance(e, kind)), None)

    def __repr__(self) -> str:
        state = "connected" if self.connected else "not connected"
        return f"<{type(self).__name__} {self.host} {self.public_key.short()} {state}>"


# --- sim -------------------------------------------------------------------------------------------------


async def sim_wait(lab: SimLab, done: Callable[[], bool], timeout: float) -> bool:
    """Run ``lab``'s virtual clock up to ``timeout`` s until ``done()`` (paced to the wall clock if realtime)."""
    return await lab.run_for(timeout, done)


class SimHostSocket(HostSocket):
    """A :class:`~toolkit.lab.sim.sockets.UdpSocket` of the simulator."""

    def __init__(self, lab: SimLab, host: str, sock: UdpSocket) -> None:
        local = sock.local
        if local.ip.is_unspecified:
            local = Endpoint(lab.topology.host(host).v4, local.port)
        super().__init__(host, local)
        self.lab, self.sock = lab, sock
        sock.on_datagram = lambda data, src, _: self._inbox.append((data, src))

    def _send(self, data: bytes, dst: Endpoint) -> None:
        try:
            self.sock.sendto(data, dst)
        except OSError as exc:
            self.errors.append(str(exc))

    async def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        return await sim_wait(self.lab, done, timeout)

    async def _close(self) -> None:
        self.sock.close()


class SimDerpClient(HostDerpClient):
    """A DERP client core of the simulator (:class:`~toolkit.lab.sim.streams.DerpClientDriver`)."""

    def __init__(self, lab: SimLab, host: str, key: NodePrivateKey, driver: DerpClientDriver) -> None:
        super().__init__(host, key)
        self.lab, self.driver = lab, driver

    @property
    def connected(self) -> bool:
        return self.driver.connected

    @property
    def received(self) -> list[tuple[NodePublicKey, bytes]]:
        return self.driver.received

    @property
    def events(self) -> list[DerpEvent]:
        return [e for e in self.driver.events if not isinstance(e, PacketReceived)]

    def send_packet(self, dst: NodePublicKey, payload: bytes) -> None:
        if not self.driver.send_packet(dst, bytes(payload)):
            self.errors.append("packet dropped (not connected, too large or rate-limited)")

    async def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        return await sim_wait(self.lab, done, timeout)

    async def close(self) -> None:
        if self.lab.world is not None:
            self.driver.close()
        await asyncio.sleep(0)


# --- the lab's entry points -------------------------------------------------------------------------------


async def udp_socket(lab: Lab, host: str, bind: Endpoint | str | int | None = None) -> HostSocket:
    """A UDP socket on ``host`` (see :meth:`toolkit.lab.backend.Lab.udp_socket`)."""
    lab.topology.host(host)
    local = parse_bind(bind)
    if lab.backend == "sim":
        from toolkit.lab.sim import SimLab
        from toolkit.lab.sim.sockets import UdpSocket

        assert isinstance(lab, SimLab)
        try:
            sock = UdpSocket(lab._world().machine(host), local)
        except OSError as exc:
            raise NatkitError(f"cannot bind {local} on {host}: {exc}") from None
        return SimHostSocket(lab, host, sock)
    from toolkit.lab.hostagentio import host_agent

    agent = await host_agent(lab, host)
    return await agent.open_socket(local)


async def derp_client(
    lab: Lab, host: str, *, key: NodePrivateKey, server: str | Endpoint | None = None
) -> HostDerpClient:
    """A DERP client on ``host`` to ``server`` (see :meth:`toolkit.lab.backend.Lab.derp_client`)."""
    lab.topology.host(host)
    target = _derp_server(lab, server)
    if lab.backend == "sim":
        from toolkit.lab.sim import SimLab

        assert isinstance(lab, SimLab)
        world = lab._world()
        driver = world.derp_client(host, target, key=key, timing=lab.timing)
        return SimDerpClient(lab, host, key, driver)
    from toolkit.lab.hostagentio import host_agent

    agent = await host_agent(lab, host)
    return agent.connect_derp(key, f"http://{target}/derp")


def _derp_server(lab: Lab, server: str | Endpoint | None) -> Endpoint:
    """The relay's endpoint: a host name of a DERP server, an endpoint, or (None) the lab's first DERP server."""
    if isinstance(server, Endpoint):
        return server
    nodes = [n for r in derp_map(lab.topology).regions.values() for n in r.nodes if not n.stun_only]
    if server is not None and server not in {n.host_name for n in nodes}:
        try:
            return Endpoint.parse(server)
        except (ValueError, UsageError):
            names = ", ".join(n.host_name for n in nodes) or "none"
            raise UsageError(f"no DERP server {server!r} in lab {lab.name!r}; DERP servers: {names}") from None
    for node in nodes:
        if server is None or node.host_name == server:
            return Endpoint.parse(f"{node.dial_host()}:{node.dial_port}")
    raise UsageError(f"lab {lab.name!r} has no DERP server: add derp-server to a host's services")


# --- netns and docker: the agent (toolkit.lab.hostagentio) ---------------------------------------------------


async def shutdown(lab: Lab) -> None:
    """Stop every host agent ``lab`` started (their sockets and DERP clients close with them)."""
    from toolkit.lab.hostagentio import shutdown_agents

    await shutdown_agents(lab)


__all__ = [
    "HostDerpClient",
    "HostSocket",
    "SimDerpClient",
    "SimHostSocket",
    "derp_client",
    "parse_bind",
    "shutdown",
    "sim_wait",
    "udp_socket",
]
