"""The lab side of the host agents (:mod:`toolkit.lab.hostagent`): sockets and DERP clients on netns/docker.

:func:`host_agent` starts one agent per host and lab on first use (:meth:`toolkit.lab.backend.Lab.spawn`:
``ip netns exec`` or ``docker exec -i``) and keeps it for every later socket and client of that host;
:class:`HostAgent` writes commands on its stdin and a reader task dispatches the JSON events on its stdout
to the :class:`AgentSocket` or :class:`AgentDerpClient` they name (the
:class:`~toolkit.lab.hostio.HostSocket` and :class:`~toolkit.lab.hostio.HostDerpClient` of these backends).
Waiting is real time: an event wakes every waiter, which checks what it waits for.
:func:`shutdown_agents` (``lab.down()``) closes each agent's stdin, so it closes everything and exits, and
kills it after a grace period; an agent also exits when the lab's process dies (its stdin closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from toolkit.errors import NatkitError
from toolkit.lab.hostagent import event_from_json
from toolkit.lab.hostio import HostDerpClient, HostSocket
from toolkit.sansio.derpevents import Closed, Connected, DerpEvent
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

if TYPE_CHECKING:
    from toolkit.lab.backend import Lab

AGENT_PYTHON = {"docker": "/opt/natkit/bin/python"}  # netns: this very interpreter (sys.executable)
AGENT_START_TIMEOUT = 20.0
AGENT_STOP_GRACE = 3.0

_AGENTS: weakref.WeakKeyDictionary[Lab, dict[str, HostAgent]] = weakref.WeakKeyDictionary()


_STARTING: weakref.WeakKeyDictionary[Lab, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


async def host_agent(lab: Lab, host: str) -> HostAgent:
    """The running agent of ``host`` in ``lab``, started on first use (one at a time per host)."""
    async with _STARTING.setdefault(lab, {}).setdefault(host, asyncio.Lock()):
        agents = _AGENTS.setdefault(lab, {})
        agent = agents.get(host)
        if agent is None or agent.dead:
            python = AGENT_PYTHON.get(lab.backend, sys.executable)
            proc = await lab.spawn(host, [python, "-m", "toolkit.lab.hostagent"], what="hostagent")
            agent = agents[host] = HostAgent(lab, host, proc)
            try:
                await agent.started()
            except BaseException:
                agents.pop(host, None)
                await agent.stop()
                raise
        return agent


async def shutdown_agents(lab: Lab) -> None:
    """Stop every agent ``lab`` started (its sockets and DERP clients close with it)."""
    agents = _AGENTS.pop(lab, {})
    _STARTING.pop(lab, None)
    await asyncio.gather(*(a.stop() for a in agents.values()), return_exceptions=True)


def agents_of(lab: Lab) -> dict[str, HostAgent]:
    """The running agents of ``lab`` by host (tests look at their processes)."""
    return dict(_AGENTS.get(lab, {}))


class HostAgent:
    """The lab side of one :mod:`toolkit.lab.hostagent` process (JSON lines over its stdin and stdout)."""

    def __init__(self, lab: Lab, host: str, proc: asyncio.subprocess.Process) -> None:
        self.lab, self.host, self.proc = lab, host, proc
        self.pid: int | None = None  # the agent's pid where it runs (in the container, on docker)
        self.dead = False
        self.stderr: deque[str] = deque(maxlen=20)
        self.errors: list[dict[str, Any]] = []  # error events without an object
        self._ids = itertools.count(1)
        self._objects: dict[int, AgentSocket | AgentDerpClient] = {}
        self._waiting: dict[tuple[int, str], asyncio.Future[dict[str, Any]]] = {}
        self._ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.changed = asyncio.Event()
        self._tasks = [asyncio.ensure_future(self._read()), asyncio.ensure_future(self._read_stderr())]

    def why(self) -> str:
        tail = " | ".join(list(self.stderr)[-3:])
        return f"the host agent on {self.host} exited" + (f": {tail}" if tail else "")

    async def started(self) -> None:
        try:
            self.pid = await asyncio.wait_for(asyncio.shield(self._ready), AGENT_START_TIMEOUT)
        except TimeoutError:
            raise NatkitError(f"the host agent on {self.host} did not start within {AGENT_START_TIMEOUT:g} s") from None

    def command(self, op: str, oid: int, **fields: Any) -> None:
        if self.dead or self.proc.stdin is None:
            raise NatkitError(self.why())
        self.proc.stdin.write((json.dumps({"op": op, "id": oid, **fields}) + "\n").encode())

    async def request(self, op: str, oid: int, reply: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        fut = asyncio.get_running_loop().create_future()
        self._waiting[(oid, reply)] = fut
        try:
            self.command(op, oid, **fields)
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise NatkitError(f"no answer to {op} from the host agent on {self.host} in {timeout:g} s") from None
        finally:
            self._waiting.pop((oid, reply), None)

    async def open_socket(self, bind: Endpoint) -> AgentSocket:
        oid = next(self._ids)
        answer = await self.request("udp-open", oid, "udp-opened", bind=str(bind))
        local = Endpoint.parse(answer["local"])
        if local.ip.is_unspecified:
            local = Endpoint(self.lab.topology.host(self.host).v4, local.port)
        sock = AgentSocket(self, oid, local)
        self._objects[oid] = sock
        return sock

    def connect_derp(self, key: NodePrivateKey, url: str) -> AgentDerpClient:
        oid = next(self._ids)
        client = AgentDerpClient(self, oid, key)
        self._objects[oid] = client
        self.command("derp-connect", oid, url=url, key=key.raw.hex())
        return client

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                try:
                    msg = json.loads(raw)
                    self._dispatch(msg)
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    self.stderr.append(f"bad line from the agent ({exc}): {raw[:200]!r}")
        finally:
            self.dead = True
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(NatkitError(self.why()))
            if not self._ready.done():
                self._ready.set_exception(NatkitError(self.why()))
            for obj in self._objects.values():
                obj.agent_gone()
            self.changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr.append(raw.decode(errors="replace").rstrip())

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind, oid = msg["ev"], msg.get("id")
        if kind == "ready":
            if not self._ready.done():
                self._ready.set_result(int(msg["pid"]))
            return
        fut = self._waiting.get((oid, kind)) if oid is not None else None
        if fut is None and kind == "error" and oid is not None:
            fut = next((f for (i, _), f in self._waiting.items() if i == oid), None)
            if fut is not None:
                fut.set_exception(NatkitError(f"{self.host}: {msg.get('op')}: {msg.get('message')}"))
                return
        if fut is not None and not fut.done():
            fut.set_result(msg)
        obj = self._objects.get(oid) if oid is not None else None
        if obj is not None:
            obj.agent_event(kind, msg)
        elif kind == "error":
            self.errors.append(msg)
        self.changed.set()

    async def wait(self, done: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not done() and not self.dead:
            left = end - loop.time()
            if left <= 0:
                break
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return done()

    def forget(self, oid: int) -> None:
        self._objects.pop(oid, None)

    async def stop(self) -> None:
        """Close stdin (the agent closes everything and exits), then kill it after a grace period."""
        proc = self.proc
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), AGENT_STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.dead = True


class AgentSocket(HostSocket):
    """A UDP socket in a host agent."""

    def __init__(self, agent: HostAgent, oid: int, local: Endpoint) -> None:
        super().__init__(agent.host, local)
        self.agent, self.oid = agent, oid

    def _send(self, data: bytes, dst: Endpoint) -> None:
        self.agent.command("udp-send", self.oid, dst=str(dst), data=data.hex())

    async def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        ok = await self.agent.wait(done, timeout)
        if not ok and self.agent.dead and not self._inbox:
            raise NatkitError(self.agent.why())
        return ok

    async def _close(self) -> None:
        if not self.agent.dead:
            with contextlib.suppress(NatkitError):
                await self.agent.request("udp-close", self.oid, "udp-closed")
        self.agent.forget(self.oid)

    def agent_event(self, kind: str, msg: dict[str, Any]) -> None:
        if kind == "udp-datagram":
            self._inbox.append((bytes.fromhex(msg["data"]), Endpoint.parse(msg["src"])))
        elif kind == "error":
            self.errors.append(str(msg.get("message")))

    def agent_gone(self) -> None:
        self.errors.append(self.agent.why())


class AgentDerpClient(HostDerpClient):
    """A :class:`toolkit.services.derpclient.DerpClient` in a host agent."""

    def __init__(self, agent: HostAgent, oid: int, key: NodePrivateKey) -> None:
        super().__init__(agent.host, key)
        self.agent, self.oid = agent, oid
        self._connected = False
        self._received: list[tuple[NodePublicKey, bytes]] = []
        self._events: list[DerpEvent] = []

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def received(self) -> list[tuple[NodePublicKey, bytes]]:
        return self._received

    @property
    def events(self) -> list[DerpEvent]:
        return self._events

    def send_packet(self, dst: NodePublicKey, payload: bytes) -> None:
        if self.agent.dead:
            self.errors.append(self.agent.why())
            return
        self.agent.command("derp-send", self.oid, dst=dst.hex(), data=bytes(payload).hex())

    async def _wait(self, done: Callable[[], bool], timeout: float) -> bool:
        return await self.agent.wait(done, timeout)

    async def close(self) -> None:
        if self.oid in self.agent._objects and not self.agent.dead:
            with contextlib.suppress(NatkitError):
                await self.agent.request("derp-close", self.oid, "derp-closed")
        self._connected = False
        self.agent.forget(self.oid)

    def agent_event(self, kind: str, msg: dict[str, Any]) -> None:
        if kind == "derp-received":
            self._received.append((NodePublicKey(bytes.fromhex(msg["src"])), bytes.fromhex(msg["data"])))
        elif kind == "derp-event":
            event = event_from_json(msg["event"])
            self._events.append(event)
            if isinstance(event, Connected):
                self._connected = True
            elif isinstance(event, Closed):
                self._connected = False
        elif kind == "derp-connected":
            self._connected = True
        elif kind == "derp-closed":
            self._connected = False
        elif kind == "error":
            self.errors.append(str(msg.get("message")))

    def agent_gone(self) -> None:
        self._connected = False
        self.errors.append(self.agent.why())


__all__ = ["AgentDerpClient", "AgentSocket", "HostAgent", "agents_of", "host_agent", "shutdown_agents"]
