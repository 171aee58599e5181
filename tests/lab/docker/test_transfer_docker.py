"""Traffic through the upgrade and the fallback on docker (issue 6): tests/node/test_node_traffic_netns.py's first
two tests on the docker backend. Two ``natkit node`` processes in the easy-easy lab's containers (``docker exec``,
real timers) and a real TCP connection through their TUNs carrying a known stream: tests/node/transfer.py's
``recv`` and ``send`` programs, run in the containers as ``python3 -c SOURCE`` (the containers have natkit's
interpreter but not the repository's ``tests`` package, so :func:`program_source` takes the programs' functions
out of that module; the receiver hashes what it got and echoes the digest back).

The tests run in file order on one lab (the session's engine and offline-built images):

1. the transfer starts on DERP (r1 drops UDP to and from bob's router from the start), the block is lifted
   mid-transfer, the node migrates to direct while the bytes flow: identical sha256, exact byte count, exit 0;
2. the direct path is cut at r1 mid-transfer: FallbackDERP (alice's trace, :func:`walk_of`) within trust
   (6.5 s) + one ping timeout (5 s) + 1 s (status and trace are read through ``docker exec``), the transfer
   completes intact, and unblocking brings DirectActive back.

Every program is killed and the lab removed on failure. Measured times are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.node import transfer
from toolkit.lab.docker import DockerLab
from toolkit.lab.docker.engine import Engine
from toolkit.lab.docker.images import Images
from toolkit.lab.nodes import ServiceNode
from toolkit.lab.registry import load_topology
from toolkit.lab.runreport import walk_of
from toolkit.sansio.peergraph import State
from toolkit.timing import DEFAULT

pytestmark = [pytest.mark.root, pytest.mark.slow]

BOB_PUBLIC = "203.0.113.2"  # r2's WAN address
DOCKER_SLACK = 1.0  # s: status and trace records come through `docker exec` (~0.1-0.3 s a poll)
FALLBACK_LIMIT = DEFAULT.trust_udp_addr_duration + DEFAULT.ping_timeout  # 11.5 s: issue 6
IDLE = 40.0  # s a transfer program waits on a silent connection (the fallback stalls TCP for up to ~12 s)


def program_source() -> str:
    """tests/node/transfer.py's ``recv`` and ``send`` as one script for ``python3 -c`` (stdlib only)."""
    parts = [
        "from __future__ import annotations",
        "import argparse, hashlib, json, socket, sys, time",
        "from pathlib import Path",
        f"CHUNK = {transfer.CHUNK!r}",
        f"SEED = {transfer.SEED!r}",
        "_driver = None  # the WireGuard driver program is not needed here",
    ]
    parts += [inspect.getsource(f) for f in (transfer.pattern, transfer._emit, transfer._recv, transfer._send)]
    parts += [inspect.getsource(transfer.main), "sys.exit(main())"]
    return "\n\n".join(parts)


PROGRAM = program_source()


class ContainerProgram:
    """One transfer program in a lab container under ``docker exec``; a shell prints its pid first, so
    :meth:`stop` can kill it inside the container (killing the ``docker exec`` client would not)."""

    def __init__(self, lab: DockerLab, host: str, *args: str, timeout: float) -> None:
        self.lab, self.host = lab, host
        self.argv = ["--timeout", str(timeout), "--idle", str(IDLE), *args]
        self.pid: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr: asyncio.Task[bytes] | None = None

    async def start(self) -> None:
        script = 'echo "natkit-pid $$"; exec "$@"'
        engine = self.lab.engine
        self.proc = await asyncio.create_subprocess_exec(
            engine.cli, "exec", self.lab.container(self.host), "sh", "-c", script, "transfer",
            "python3", "-c", PROGRAM, *self.argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=engine.env(),
        )  # fmt: skip
        assert self.proc.stderr is not None
        self._stderr = asyncio.ensure_future(self.proc.stderr.read())
        first = await self._line(15.0)
        assert first is not None and first.startswith(b"natkit-pid "), f"{self}: {first!r}, {await self.errors()}"
        self.pid = int(first.split()[1])

    def __str__(self) -> str:
        return f"{self.host}: transfer {' '.join(self.argv[4:])}"

    async def _line(self, timeout: float) -> bytes | None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self}: no output within {timeout:.0f} s") from None
        return line or None

    async def errors(self) -> str:
        if self._stderr is None or not self._stderr.done():
            return "(still running)"
        return self._stderr.result().decode(errors="replace").strip()[-2000:]

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def next_line(self, timeout: float) -> dict[str, Any]:
        """The next JSON line; AssertionError (with the program's stderr) on timeout or exit."""
        line = await self._line(timeout)
        if line is None:
            assert self.proc is not None
            await asyncio.wait_for(self.proc.wait(), 5)
            if self._stderr is not None:
                await asyncio.wait_for(asyncio.shield(self._stderr), 5)
            raise AssertionError(f"{self} exited {self.proc.returncode}: {await self.errors()}")
        result: dict[str, Any] = json.loads(line)
        return result

    async def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None and self.pid is not None:
            await self.lab.run(self.host, ["kill", "-KILL", str(self.pid)], timeout=5)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                pass
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if self._stderr is not None:
            self._stderr.cancel()


class Transfer:
    """``size`` bytes from alice to ``host`` (bob's tunnel address) over one TCP connection, paced to ``rate`` B/s."""

    def __init__(self, lab: DockerLab, host: str, size: int, rate: float, port: int, timeout: float = 60.0) -> None:
        self.size, self.port = size, port
        self.recv = ContainerProgram(lab, "bob", "recv", "--port", str(port), timeout=timeout)
        args = ["send", "--host", host, "--port", str(port), "--bytes", str(size), "--rate", str(rate)]
        self.send = ContainerProgram(lab, "alice", *args, timeout=timeout)
        self.started = 0.0

    async def start(self) -> None:
        await self.recv.start()
        assert await self.recv.next_line(15) == {"listening": self.port}
        await self.send.start()
        self.started = time.monotonic()

    def running(self) -> bool:
        return self.send.running()

    async def check_intact(self, timeout: float) -> dict[str, Any]:
        """Both ends' reports; identical sha256 both ways, exactly ``size`` bytes, both exit 0 (a reset or a
        stall makes a program exit non-zero and :meth:`ContainerProgram.next_line` raise with its stderr)."""
        sent = await self.send.next_line(timeout)
        got = await self.recv.next_line(15)
        assert await self.send.wait(5) == 0 and await self.recv.wait(5) == 0
        assert sent["bytes"] == got["bytes"] == self.size, (sent, got)
        assert sent["sha256"] == got["sha256"] == sent["peer_sha256"], (sent, got)
        return {"sent": sent, "received": got}

    async def stop(self) -> None:
        await self.send.stop()
        await self.recv.stop()


def direct(peer: dict[str, Any]) -> bool:
    return peer.get("state") == "DirectActive" and peer.get("path") == "direct"


def on_derp(peer: dict[str, Any]) -> bool:
    return peer.get("path") == "derp"


@dataclass
class TrafficLab:
    lab: DockerLab
    runner: asyncio.Runner
    alice: ServiceNode
    bob: ServiceNode
    bob_tunnel: str = ""
    blocked: bool = False

    def run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    async def peer(self, node: ServiceNode) -> dict[str, Any]:
        peers = (await node.status()).get("peers") or [{}]
        return dict(peers[0])

    async def counter(self, node: ServiceNode, name: str) -> int:
        return int((await node.status())["counters"].get(name, 0))

    async def wait(self, node: ServiceNode, check: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Poll the node's status until ``check(first peer)``; AssertionError with the last one."""
        deadline = time.monotonic() + timeout
        while True:
            peer = await self.peer(node)
            if check(peer):
                return peer
            assert time.monotonic() < deadline, f"{node.host}: not within {timeout} s: {peer}"
            await asyncio.sleep(0.1)

    async def block(self, blocked: bool) -> None:
        """r1 drops (or stops dropping) UDP to and from r2: the direct path dies, STUN and DERP (TCP) live."""
        await self.lab.block_udp("r1", BOB_PUBLIC, blocked)
        self.blocked = blocked

    async def entered(self, node: ServiceNode, state: State, since: float, deadline: float) -> list[float]:
        """When ``node``'s walk for its peer entered ``state`` after ``since`` (trace times: the kernel's
        monotonic clock, shared by the containers), polled until one shows or the clock passes ``deadline``."""
        while True:
            walk = walk_of(await node.records(), node.host)
            times = [t for s, t in zip(walk.states, walk.times, strict=True) if s == state.value and t >= since]
            if times or time.monotonic() >= deadline:
                return times
            await asyncio.sleep(0.2)

    async def walk_since(self, node: ServiceNode, since: float) -> str:
        walk = walk_of(await node.records(), node.host)
        return " -> ".join(f"{s}@{t - since:.2f}" for s, t in zip(walk.states, walk.times, strict=True) if t >= since)

    async def explain(self, exc: AssertionError, since: float) -> AssertionError:
        """``exc`` with both nodes' walks and peers since ``since`` appended (what the machines did)."""
        lines = [str(exc)]
        for n in (self.alice, self.bob):
            lines.append(f"{n.host}'s walk (s since the mark): {await self.walk_since(n, since)}")
            lines.append(f"{n.host}'s peer: {await self.peer(n)}")
        return AssertionError("\n".join(lines))

    async def ensure_direct(self, timeout: float = 30.0) -> None:
        if self.blocked:
            await self.block(False)
        if not direct(await self.peer(self.alice)):
            await self.alice.ping("bob", count=30)  # traffic: disco starts lazily, as in magicsock
        await self.wait(self.alice, direct, timeout)

    async def transfer(self, size: int, rate: float, port: int, started: list[Transfer]) -> Transfer:
        t = Transfer(self.lab, self.bob_tunnel, size, rate, port)
        started.append(t)
        await t.start()
        return t


@pytest.fixture
def transfers(tl: TrafficLab) -> Iterator[list[Transfer]]:
    """Transfers a test starts; killed afterwards, also on failure."""
    started: list[Transfer] = []
    yield started
    for t in started:
        tl.run(t.stop())


@pytest.fixture(scope="module")
def tl(docker_engine: Engine, docker_images: Images) -> Iterator[TrafficLab]:
    lab = DockerLab(
        load_topology("easy-easy"), name_prefix=f"t{uuid.uuid4().hex[:8]}", engine=docker_engine, images=docker_images
    )
    with asyncio.Runner() as runner:
        try:
            began = time.monotonic()
            runner.run(lab.__aenter__())  # removes what it made if it fails; lab.down() below otherwise
            runner.run(lab.block_udp("r1", BOB_PUBLIC))  # test 1 starts on DERP
            alice = runner.run(lab.start_node("alice"))
            bob = runner.run(lab.start_node("bob"))
            out = TrafficLab(lab, runner, alice, bob, blocked=True)
            peer = runner.run(out.wait(alice, lambda p: bool(p.get("tunnel_ips")), 30.0))  # bob known from control
            out.bob_tunnel = peer["tunnel_ips"][0]
            print(f"\n[lab] easy-easy on docker up, nodes registered, in {time.monotonic() - began:.1f} s")
            yield out
        finally:
            runner.run(lab.down())


def test_transfer_started_on_derp_survives_the_upgrade_to_direct(tl: TrafficLab, transfers: list[Transfer]) -> None:
    if not tl.blocked:
        pytest.skip(reason="runs first on the module's lab: the nodes must start with the direct path blocked")

    async def scenario() -> str:
        assert on_derp(await tl.peer(tl.alice)), await tl.peer(tl.alice)
        t = await tl.transfer(8_000_000, 1_000_000, 5301, transfers)  # ~8 s
        await asyncio.sleep(2.5)
        peer = await tl.peer(tl.alice)
        assert on_derp(peer) and t.running(), peer
        assert await tl.counter(tl.alice, "wg-sent-derp") > 100, "the transfer's first packets went over DERP"
        unblocked = time.monotonic()
        await tl.block(False)
        try:
            await tl.wait(tl.alice, direct, 20.0)
            upgrade = time.monotonic() - unblocked
            assert t.running(), "the node migrated while the transfer was under way"
            sent_udp = await tl.counter(tl.alice, "wg-sent-udp")
            result = await t.check_intact(60.0)
        except AssertionError as exc:
            raise await tl.explain(exc, t.started) from None
        counters = (await tl.alice.status())["counters"]
        assert counters.get("wg-sent-udp", 0) > sent_udp + 100, "the rest of the transfer went direct"
        return (
            f"[upgrade] direct {upgrade:.2f} s after unblocking; transfer {result['received']['seconds']:.1f} s, "
            f"wg-sent-derp {counters.get('wg-sent-derp')}, wg-sent-udp {counters.get('wg-sent-udp')}"
        )

    print("\n" + tl.run(scenario()))


def test_cut_direct_path_falls_back_to_derp_and_upgrades_again(tl: TrafficLab, transfers: list[Transfer]) -> None:
    async def scenario() -> str:
        await tl.ensure_direct()
        t = await tl.transfer(12_000_000, 600_000, 5302, transfers)  # ~20 s
        await asyncio.sleep(2.0)
        assert t.running() and direct(await tl.peer(tl.alice))
        await tl.block(True)
        cut = time.monotonic()
        try:
            await tl.wait(tl.alice, on_derp, FALLBACK_LIMIT + DOCKER_SLACK)
            noticed = time.monotonic() - cut
            fallbacks = await tl.entered(tl.alice, State.FallbackDERP, cut, cut + FALLBACK_LIMIT + 2 * DOCKER_SLACK)
            assert fallbacks, "alice's trace has the DirectActive -> ... -> FallbackDERP walk"
            fallback = fallbacks[0] - cut
            assert 0 < fallback <= FALLBACK_LIMIT + DOCKER_SLACK, fallback
            derp_then = await tl.counter(tl.alice, "wg-sent-derp")
            await asyncio.sleep(1.5)
            assert t.running() and on_derp(await tl.peer(tl.alice))
            derp_now = await tl.counter(tl.alice, "wg-sent-derp")
            assert derp_now > derp_then + 50, ("the transfer goes on over DERP", derp_then, derp_now)
            await tl.block(False)
            restored = time.monotonic()
            await tl.wait(tl.alice, direct, 30.0)
            reupgrade = time.monotonic() - restored
            still_running = t.running()
            result = await t.check_intact(60.0)
        except AssertionError as exc:
            raise await tl.explain(exc, cut) from None
        return (
            f"[fallback] FallbackDERP {fallback:.2f} s after the cut (status showed derp after {noticed:.2f} s), "
            f"DirectActive {reupgrade:.2f} s after unblocking (transfer still running: {still_running}); "
            f"transfer {result['received']['seconds']:.1f} s"
        )

    print("\n" + tl.run(scenario()))
