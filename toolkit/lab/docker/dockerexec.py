"""Processes in lab containers: commands, services, captures, and the conntrack table (issue 5).

* :func:`exec_run`: ``docker exec CONTAINER timeout -s KILL T ARGV`` - the ``timeout`` inside the container
  ends the process there too (killing a ``docker exec`` client leaves its process running).
* :func:`exec_spawn`: ``docker exec -i`` with pipes, for a helper that reads commands on stdin.
* :class:`ExecService`: a ``natkit`` server under ``docker exec``; a shell prints ``natkit-pid N`` and
  ``exec``\\ s the server, so :meth:`ExecService.stop` can SIGTERM it inside the container; ready once it
  prints ``natkit NAME: listening on ...`` (toolkit/services/runner.py).
* :class:`TcpdumpCapture`: the host's ``tcpdump`` in the container's network namespace (``nsenter -n``),
  writing a pcap stream; Ethernet headers are stripped so a :class:`~toolkit.lab.backend.Capture` holds raw
  IP packets (LINKTYPE_RAW) as on every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import struct
from collections.abc import Sequence

from toolkit.errors import NatkitError
from toolkit.lab.backend import Capture, RunResult, ServiceHandle
from toolkit.lab.docker.engine import Engine
from toolkit.lab.topology import ServiceSpec

START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
ETHERTYPE_IP = (0x0800, 0x86DD)


async def exec_run(
    engine: Engine, container: str, argv: Sequence[str], *, timeout: float = 30.0, input: bytes | None = None
) -> RunResult:
    """Run ``argv`` in ``container``; a :class:`NatkitError` if it outlives ``timeout`` seconds."""
    inner = ["timeout", "-s", "KILL", str(max(1, math.ceil(timeout))), *argv]
    flags = ["-i"] if input is not None else []
    proc = await asyncio.create_subprocess_exec(
        engine.cli, "exec", *flags, container, *inner,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=engine.env(),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout + 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise NatkitError(f"{argv[0]} on {container}: no answer from docker exec after {timeout:.0f}s") from None
    if proc.returncode == 137:
        raise NatkitError(f"{argv[0]} on {container} timed out after {timeout:.0f}s (killed)")
    return RunResult(proc.returncode if proc.returncode is not None else -1, out.decode(errors="replace"),
                     err.decode(errors="replace"))  # fmt: skip


async def exec_spawn(engine: Engine, container: str, argv: Sequence[str]) -> asyncio.subprocess.Process:
    """``docker exec -i CONTAINER ARGV``, all three streams piped: a long-running helper fed on stdin.

    Killing the ``docker exec`` client does not end the process in the container; closing its stdin does,
    for a program that exits on EOF (:mod:`toolkit.lab.hostagent`), and removing the container always does.
    """
    return await asyncio.create_subprocess_exec(
        engine.cli, "exec", "-i", container, *argv,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=engine.env(), limit=1 << 22,
    )  # fmt: skip


class ExecService(ServiceHandle):
    """A natkit server in a container (see the module docstring)."""

    def __init__(self, engine: Engine, container: str, host: str, spec: ServiceSpec, argv: Sequence[str]) -> None:
        super().__init__(host, spec)
        self.engine = engine
        self.container = container
        self.argv = list(argv)
        self.pid: int | None = None
        self.lines: list[str] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def start(self) -> None:
        script = 'echo "natkit-pid $$"; exec "$@"'
        self._proc = await asyncio.create_subprocess_exec(
            self.engine.cli, "exec", self.container, "sh", "-c", script, "natkit-service", *self.argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=self.engine.env(),
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        waiter = asyncio.create_task(self._listening.wait())
        await asyncio.wait({waiter, self._reader}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not self._listening.is_set():
            await self.stop()
            tail = " | ".join(self.lines[-3:]) or "no output"
            raise NatkitError(f"{self.spec.kind} on {self.host} did not start: {tail}")

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if self.pid is None and line.startswith("natkit-pid "):
                self.pid = int(line.split()[1])
                continue
            self.lines.append(line)
            if ": listening on " in line and not self._listening.is_set():
                self.listening = tuple(p.strip() for p in line.split(": listening on ", 1)[1].split(","))
                self._listening.set()

    async def stop(self) -> None:
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        if proc.returncode is None and self.pid is not None:
            await _quiet_exec(self.engine, self.container, ["kill", "-TERM", str(self.pid)])
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                await _quiet_exec(self.engine, self.container, ["kill", "-KILL", str(self.pid)])
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)

    def logs(self) -> list[str]:
        return list(self.lines)


async def _quiet_exec(engine: Engine, container: str, argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        engine.cli, "exec", container, *argv,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=engine.env(),
    )  # fmt: skip
    await proc.wait()


class TcpdumpCapture(Capture):
    """Packets on one interface of a container, from the host's tcpdump in its network namespace."""

    def __init__(self, engine: Engine, container: str, element: str, interface: str) -> None:
        super().__init__(element, interface)
        self.engine = engine
        self.container = container
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for tool, pkg in (("tcpdump", "tcpdump"), ("nsenter", "util-linux")):
            if shutil.which(tool) is None:
                raise NatkitError(f"a docker capture needs {tool} on the host (Debian package {pkg})")
        pid = await asyncio.to_thread(self.engine.docker, "inspect", "--format", "{{.State.Pid}}", self.container)
        self._proc = await asyncio.create_subprocess_exec(
            "nsenter", "-t", pid.stdout.strip(), "-n", "tcpdump", "-i", self.interface, "--immediate-mode", "-U", "-w", "-",
            "-s", "262144", "-Z", "root", "ip or ip6",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._proc.stderr is not None
        line = await asyncio.wait_for(self._proc.stderr.readline(), START_TIMEOUT)  # "listening on IFACE, ..."
        if b"listening on" not in line:
            await self.aclose()
            raise NatkitError(f"capture on {self.element} {self.interface}: {line.decode(errors='replace').strip()}")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        try:
            header = await stream.readexactly(24)
            order = "<" if header[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
            nano = header[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
            while True:
                sec, frac, incl, _ = struct.unpack(order + "IIII", await stream.readexactly(16))
                frame = await stream.readexactly(incl)
                if len(frame) > 14 and struct.unpack("!H", frame[12:14])[0] in ETHERTYPE_IP:
                    self.feed(sec + frac / (1e9 if nano else 1e6), frame[14:])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.close()

    async def aclose(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
            await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
        await super().aclose()


__all__ = ["ExecService", "TcpdumpCapture", "exec_run", "exec_spawn"]
