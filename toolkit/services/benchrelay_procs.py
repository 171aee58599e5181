"""The relays of ``natkit bench relay`` as real processes, and the client pairs that talk through them.

:class:`RelayProcesses` starts ``python -m toolkit derp-server --listen 127.0.0.1:0`` (the URL comes
from its start line, toolkit/services/runner.py) and coturn's ``turnserver`` on a free port of
127.0.0.1 with long-term credentials (RFC 8656 §4, RFC 8489 §9.2; a fresh random password per run,
realm ``natkit``, ``--allow-loopback-peers`` because every peer here is on 127.0.0.1, TLS, DTLS and
the CLI off, the SQLite user database in a temporary directory). Each child runs in its own session
(a Ctrl-C in the terminal reaches only the bench, which then stops it) with ``PR_SET_PDEATHSIG``
(prctl(2)) so it also goes away if the bench is killed; :meth:`RelayProcesses.stop_all` sends
SIGTERM, then SIGKILL after ``STOP_TIMEOUT``, and removes the temporary directory.

:meth:`RelayProcesses.derp_link` and :meth:`RelayProcesses.turn_link` connect the two clients A and B
of one contender and yield the A -> B link the measurement uses (see toolkit/services/benchrelay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.codec import stun
from toolkit.crypto import keys
from toolkit.errors import DecodeError, NatkitError, UsageError
from toolkit.services.runner import stop_process
from toolkit.services.turnclient import TurnClient
from toolkit.types import Endpoint, TxID

if TYPE_CHECKING:
    from toolkit.services.derpclient import DerpClient

UP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


REALM = "natkit"
TURN_USER = "natkit-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_URL = re.compile(r"listening on .*?(https?://[^\s,]+)")


class BenchError(NatkitError):
    """The bench could not measure (a relay did not start, a client could not connect): one line, exit 1."""


def check_requirements() -> str:
    """The path of coturn's ``turnserver``; :class:`UsageError` (exit 2) without it."""
    path = shutil.which("turnserver")
    if path is None:
        raise UsageError("`natkit bench relay` needs coturn's turnserver: apt install coturn")
    return path


def cpu_seconds(pid: int) -> float:
    """CPU time of process ``pid``, all its threads, in seconds: the sum of the first field of each
    ``/proc/PID/task/TID/schedstat`` (nanoseconds on a CPU), else utime + stime from ``/proc/PID/stat``
    (fields 14 and 15, clock ticks; proc(5))."""
    try:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the bench's thread that started it exits (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _free_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise BenchError("found no port free for both UDP and TCP on 127.0.0.1")


def _stun_answers(server: tuple[str, int]) -> bool:
    """One STUN Binding request (RFC 8489 §6): does ``server`` answer within 0.2 s?"""
    txid = TxID(secrets.token_bytes(12))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(stun.binding_request(txid), server)
            data, _ = s.recvfrom(2048)
            return stun.decode(data).txid == txid
        except (OSError, DecodeError):
            return False


class RelayProcesses:
    """Both relays as child processes, and their teardown."""

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.say = progress
        self.workdir = Path(tempfile.mkdtemp(prefix="natkit-bench-relay-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []  # every process started (tests check they are gone)
        self.descriptions: dict[str, str] = {}
        self.derp_pid = 0
        self.coturn_pid = 0
        self.password = secrets.token_hex(16)

    def _start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # only prctl in the child
            )
        self.procs.append(proc)
        self.pids.append(proc.pid)
        return proc

    def stop_all(self) -> None:
        """SIGTERM (then SIGKILL) every child, newest first; remove the temporary directory."""
        while self.procs:
            stop_process(self.procs.pop(), STOP_TIMEOUT)
        shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _last_line(log: Path) -> str:
        lines = log.read_text(errors="replace").strip().splitlines()
        return f": {lines[-1]}" if lines else ""

    async def start_derp_server(self) -> str:
        """Start ``natkit derp-server`` on 127.0.0.1:0; its URL from the start line."""
        log = self.workdir / "derp-server.log"
        argv = [sys.executable, "-m", "toolkit", "derp-server", "--listen", "127.0.0.1:0"]
        self.say("starting natkit derp-server --listen 127.0.0.1:0")
        proc = self._start(argv, log)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UP_TIMEOUT
        while (match := _URL.search(log.read_text(errors="replace"))) is None:
            if proc.poll() is not None:
                raise BenchError(f"natkit derp-server exited with status {proc.returncode}{self._last_line(log)}")
            if loop.time() > deadline:
                raise BenchError(f"natkit derp-server printed no start line within {UP_TIMEOUT:.0f} s")
            await asyncio.sleep(0.05)
        self.derp_pid = proc.pid
        self.descriptions["natkit"] = f"natkit derp-server {match.group(1)} (pid {proc.pid})"
        self.say(self.descriptions["natkit"])
        return match.group(1)

    async def start_coturn(self) -> Endpoint:
        """Start coturn with long-term credentials on a free port of 127.0.0.1; its address."""
        exe = check_requirements()
        version = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        self.say(f"starting coturn {version} (turnserver) on 127.0.0.1")
        for attempt in range(4):
            port = _free_port()
            db = self.workdir / f"turndb-{port}"
            argv = [exe, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1"]
            argv += ["--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers", "--lt-cred-mech"]
            argv += [f"--realm={REALM}", f"--user={TURN_USER}:{self.password}", f"--userdb={db}"]
            argv += [f"--pidfile={self.workdir / 'turnserver.pid'}", "--log-file=stdout", "--simple-log"]
            log = self.workdir / f"turnserver-{attempt}.log"
            proc = self._start(argv, log)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + UP_TIMEOUT
            while proc.poll() is None and loop.time() < deadline:
                if await asyncio.to_thread(_stun_answers, ("127.0.0.1", port)):
                    self.coturn_pid = proc.pid
                    self.descriptions["coturn"] = f"coturn {version} 127.0.0.1:{port} (pid {proc.pid})"
                    self.say(self.descriptions["coturn"])
                    return Endpoint.parse(f"127.0.0.1:{port}")
                await asyncio.sleep(0.05)
            stop_process(proc, STOP_TIMEOUT)
            self.say(f"coturn did not answer on port {port}{self._last_line(log)}; trying another port")
        raise BenchError(f"coturn did not start; its logs are in {self.workdir}")

    @contextlib.asynccontextmanager
    async def derp_link(self, url: str) -> AsyncIterator[DerpLink]:
        """Two DERP clients on ``url``; yields the link from A to B."""
        from toolkit.services.derpclient import DerpClient

        a = DerpClient(url, keys.generate_node_key(), reconnect=False)
        b = DerpClient(url, keys.generate_node_key(), reconnect=False)
        try:
            for client in (b, a):
                try:
                    await client.connect()
                except NatkitError as exc:
                    raise BenchError(f"DERP client could not connect to {url}: {exc}") from None
            self.say(f"natkit DERP: A {a.public_key.short()} -> B {b.public_key.short()} via {url}")
            yield DerpLink(a, b)
        finally:
            for client in (a, b):
                with contextlib.suppress(Exception):
                    await client.close()

    @contextlib.asynccontextmanager
    async def turn_link(self, server: Endpoint, turn_peer: str) -> AsyncIterator[TurnLink | TurnToUdpLink]:
        """Two TURN clients (or one and a plain UDP socket, ``turn_peer="direct"``); yields the A -> B link."""
        a = TurnClient(server, TURN_USER, self.password)
        b = TurnClient(server, TURN_USER, self.password)
        sink: UdpSink | None = None
        link: TurnLink | TurnToUdpLink
        try:
            try:
                relayed_a = await a.allocate()
                if turn_peer == "relayed":
                    relayed_b = await b.allocate()
                    await a.bind_channel(relayed_b)  # ChannelBind also installs the permission (RFC 8656 §12.1)
                    await b.bind_channel(relayed_a)
                    self.say(f"coturn TURN: A {a.local} -> relayed {relayed_a} -> relayed {relayed_b} -> B {b.local}")
                    link = TurnLink(a, b)
                else:
                    sink = await UdpSink.open()
                    await a.bind_channel(sink.endpoint)
                    self.say(f"coturn TURN: A {a.local} -> relayed {relayed_a} -> B {sink.endpoint} (plain UDP)")
                    link = TurnToUdpLink(a, sink)
            except NatkitError as exc:
                raise BenchError(f"TURN setup with coturn at {server} failed: {exc}") from None
            yield link
        finally:
            for client in (a, b):
                await client.close()
            if sink is not None:
                sink.close()


class DerpLink:
    """A -> B through the DERP relay: SendPacket to B's key, RecvPacket at B."""

    def __init__(self, a: DerpClient, b: DerpClient) -> None:
        self.a, self.b, self.dst = a, b, b.public_key

    async def send(self, packet: bytes) -> None:
        await self.a.send(self.dst, packet)

    async def recv(self) -> bytes:
        return (await self.b.recv())[1]


class TurnLink:
    """A -> B through two TURN allocations: ChannelData to B's relayed address, ChannelData at B."""

    def __init__(self, a: TurnClient, b: TurnClient) -> None:
        assert b.relayed is not None
        self.a, self.b, self.dst = a, b, b.relayed

    async def send(self, packet: bytes) -> None:
        await self.a.send(self.dst, packet)

    async def recv(self) -> bytes:
        return (await self.b.recv())[1]


class UdpSink(asyncio.DatagramProtocol):
    """A plain UDP socket on 127.0.0.1 whose datagrams :meth:`get` returns."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.endpoint = Endpoint.parse("127.0.0.1:0")

    @classmethod
    async def open(cls) -> UdpSink:
        loop = asyncio.get_running_loop()
        transport, sink = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        sink.transport = transport
        sink.endpoint = Endpoint.parse(f"127.0.0.1:{transport.get_extra_info('sockname')[1]}")
        return sink

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queue.put_nowait(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TurnToUdpLink:
    """A -> B with one TURN allocation: ChannelData from A, plain UDP from A's relayed address at B."""

    def __init__(self, a: TurnClient, sink: UdpSink) -> None:
        self.a, self.sink = a, sink

    async def send(self, packet: bytes) -> None:
        await self.a.send(self.sink.endpoint, packet)

    async def recv(self) -> bytes:
        return await self.sink.queue.get()


__all__ = [
    "BenchError",
    "DerpLink",
    "RelayProcesses",
    "TurnLink",
    "TurnToUdpLink",
    "UdpSink",
    "check_requirements",
    "cpu_seconds",
]
