"""The ICE baseline of ``natkit bench upgrade`` (issue 6): two aioice agents connect across a netns lab.

:func:`ice_connect` starts :mod:`toolkit.lab.iceagent` in two hosts of a running
:class:`~toolkit.lab.netns.NetnsLab` (``ip netns exec NS python -m toolkit.lab.iceagent``, pipes on
stdin/stdout), waits until both have loaded, tells both to start at once, and relays each agent's
candidates line to the other: the signalling channel of RFC 8445 §5.3, out of band and
instantaneous here. Both agents use the same STUN server the natkit nodes use, no TURN, so a
result is always a direct path (host / server-reflexive / peer-reflexive candidates, §5.1.1) or a
failure.

**Time to connected** (what the bench compares with natkit's first packet → DirectActive):
from the earlier of the two agents' ``t_start`` (the instant just before gathering, i.e. before
its first STUN Binding request) to the controlling agent's ``connect()`` returning with a
nominated pair. Both instants are ``time.monotonic()`` (CLOCK_MONOTONIC, one clock for every
process of the machine, whatever its namespace). Interpreter start-up, the data exchange that
follows and process exit are not counted; gathering, signalling and the checks are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from toolkit.errors import NatkitError
from toolkit.lab.labservices import hosts_running, listen_port
from toolkit.lab.netns.lab import NetnsLab
from toolkit.types import Endpoint

START_TIMEOUT = 20.0  # seconds an agent may take to load Python + aioice and print its ready line
EXIT_GRACE = 2.0  # seconds an agent gets to exit after its result (then it is killed)
DIRECT_TYPES = frozenset({"host", "srflx", "prflx"})  # RFC 8445 §5.1.1 candidate types that are not relayed


@dataclass(frozen=True)
class AgentReport:
    """One agent's view (the fields of :mod:`toolkit.lab.iceagent`'s lines; times in seconds)."""

    host: str
    role: str
    candidates: tuple[str, ...]  # its local candidates, SDP a=candidate values
    ok: bool
    error: str | None = None
    gather_s: float | None = None
    connect_s: float | None = None
    total_s: float | None = None
    t_start: float | None = None
    t_connected: float | None = None
    local: tuple[str, str] | None = None  # selected pair: (candidate type, "ip:port")
    remote: tuple[str, str] | None = None
    checks: int | None = None

    @classmethod
    def from_lines(cls, host: str, candidates: dict[str, Any], result: dict[str, Any]) -> AgentReport:
        def pair_end(key: str) -> tuple[str, str] | None:
            end = result.get(key)
            return (str(end["type"]), str(end["address"])) if isinstance(end, dict) else None

        return cls(
            host=host,
            role=str(result.get("role", "?")),
            candidates=tuple(str(c) for c in candidates.get("candidates", ())),
            ok=bool(result.get("ok")),
            error=result.get("error"),
            gather_s=candidates.get("gather_s"),
            connect_s=result.get("connect_s"),
            total_s=result.get("total_s"),
            t_start=candidates.get("t_start"),
            t_connected=result.get("t_connected"),
            local=pair_end("local"),
            remote=pair_end("remote"),
            checks=result.get("checks"),
        )

    def candidate_addresses(self, kind: str) -> list[str]:
        """``"ip:port"`` of this agent's candidates of type ``kind`` (``host``, ``srflx``)."""
        found = []
        for sdp in self.candidates:
            bits = sdp.split()
            if len(bits) >= 8 and bits[7] == kind:
                found.append(f"{bits[4]}:{bits[5]}")
        return found


@dataclass(frozen=True)
class IceResult:
    """What :func:`ice_connect` measured. ``ok`` false: ``error`` says why (timeout, ICE failure)."""

    ok: bool
    time_to_connected: float | None  # seconds, as defined in the module docstring
    direct: bool  # the selected pair has no relayed candidate on either side
    controlling: AgentReport
    controlled: AgentReport
    error: str | None = None

    def summary(self) -> str:
        if not self.ok:
            return f"aioice: failed: {self.error}"
        c = self.controlling
        assert c.local is not None and c.remote is not None and self.time_to_connected is not None
        return (
            f"aioice: connected in {self.time_to_connected * 1000:.0f} ms "
            f"({c.local[0]} {c.local[1]} -> {c.remote[0]} {c.remote[1]}, {c.checks} checks)"
        )


class _Agent:
    """One iceagent process in a lab host (stdin/stdout JSON lines; stderr kept for error messages)."""

    def __init__(self, host: str, role: str, proc: asyncio.subprocess.Process) -> None:
        self.host = host
        self.role = role
        self.proc = proc
        self.stderr: list[str] = []
        self.candidates: dict[str, Any] = {}
        self.result: dict[str, Any] = {}
        self._stderr_task = asyncio.ensure_future(self._drain_stderr())

    @classmethod
    async def start(cls, lab: NetnsLab, host: str, stun: Endpoint, controlling: bool, timeout: float) -> _Agent:
        argv = [
            sys.executable,
            "-m",
            "toolkit.lab.iceagent",
            "--stun",
            str(stun),
            "--wait-go",
            "--timeout",
            str(timeout),
        ]
        if controlling:
            argv.append("--controlling")
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", lab.netns(host), *argv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        return cls(host, "controlling" if controlling else "controlled", proc)

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for line in self.proc.stderr:
            self.stderr.append(line.decode(errors="replace").rstrip())

    async def read(self, want: str) -> dict[str, Any]:
        """The next stdout line, which must be a JSON object with key ``want`` (an error line ends the agent)."""
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            await self.proc.wait()
            await asyncio.wait([self._stderr_task], timeout=1.0)
            tail = " | ".join(self.stderr[-5:])
            raise _AgentFailed(f"iceagent on {self.host} exited with status {self.proc.returncode}: {tail}")
        obj = json.loads(line)
        if not isinstance(obj, dict) or (want not in obj and "error" not in obj):
            raise _AgentFailed(f"iceagent on {self.host} said {line[:300]!r}, expected {want!r}")
        if "error" in obj:
            self.result = obj
            raise _AgentFailed(f"iceagent on {self.host}: {obj['error']}")
        return obj

    def send(self, obj: dict[str, Any] | None) -> None:
        """A JSON line to the agent's stdin; ``None`` closes it."""
        assert self.proc.stdin is not None
        if obj is None:
            self.proc.stdin.close()
        else:
            self.proc.stdin.write(json.dumps(obj).encode() + b"\n")

    async def stop(self) -> None:
        """Close its stdin, keep a result line it still prints, wait briefly, then kill its group; reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            if not self.result and self.candidates:  # it is past gathering: its own timeout or error line follows
                with contextlib.suppress(TimeoutError, _AgentFailed, ValueError):
                    self.result = await asyncio.wait_for(self.read("ok"), EXIT_GRACE)
            try:
                await asyncio.wait_for(self.proc.wait(), EXIT_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        self._stderr_task.cancel()
        await asyncio.gather(self._stderr_task, return_exceptions=True)

    def report(self) -> AgentReport:
        result = self.result or {"ok": False, "role": self.role, "error": "no result line"}
        return AgentReport.from_lines(self.host, self.candidates, result)


class _AgentFailed(Exception):
    pass


async def ice_connect(lab: NetnsLab, a: str, b: str, stun: Endpoint, timeout: float = 30.0) -> IceResult:
    """aioice agents in hosts ``a`` (controlling) and ``b`` (controlled) of ``lab`` establish an ICE connection.

    ``stun`` is the STUN server both gather server-reflexive candidates from (:func:`lab_stun`).
    ICE failures and ``timeout`` (seconds from the agents' start to both results) give an
    :class:`IceResult` with ``ok`` false; an agent that cannot start raises
    :class:`~toolkit.errors.NatkitError`. The agent processes are gone when this returns or raises.
    """
    agents: list[_Agent] = []
    try:
        for host, controlling in ((a, True), (b, False)):
            agents.append(await _Agent.start(lab, host, stun, controlling, timeout))
        try:
            async with asyncio.timeout(START_TIMEOUT):
                await asyncio.gather(*(agent.read("ready") for agent in agents))
        except (TimeoutError, _AgentFailed) as exc:
            raise NatkitError(f"the ICE agents did not start: {exc or 'timeout'}") from None
        ctrl, ctld = agents
        error: str | None = None
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout + EXIT_GRACE):  # the agents time out themselves first
                for agent in agents:
                    agent.send({"go": True})
                for agent in agents:
                    agent.candidates = await agent.read("candidates")
                ctrl.send(ctld.candidates)
                ctld.send(ctrl.candidates)
                ctrl.result = await ctrl.read("ok")
                ctld.send(None)  # the controlling agent has its pong: the controlled one may stop answering
                ctld.result = await ctld.read("ok")
        except TimeoutError:
            error = f"no ICE connection between {a} and {b} within {time.monotonic() - started:.1f} s"
        except _AgentFailed as exc:
            error = str(exc)
    finally:
        await asyncio.gather(*(agent.stop() for agent in agents))
    return _result(ctrl.report(), ctld.report(), error)


def _result(ctrl: AgentReport, ctld: AgentReport, error: str | None) -> IceResult:
    if error is not None or not ctrl.ok or not ctld.ok:
        return IceResult(False, None, False, ctrl, ctld, error or ctrl.error or ctld.error)
    assert ctrl.t_connected is not None and ctrl.t_start is not None and ctld.t_start is not None
    assert ctrl.local is not None and ctrl.remote is not None
    direct = ctrl.local[0] in DIRECT_TYPES and ctrl.remote[0] in DIRECT_TYPES
    return IceResult(True, ctrl.t_connected - min(ctrl.t_start, ctld.t_start), direct, ctrl, ctld)


def lab_stun(lab: NetnsLab) -> Endpoint:
    """The lab's first STUN server (``198.51.100.10:3478`` in ``labs/``): the one its DERP map gives the nodes."""
    for host in hosts_running(lab.topology, "stun-server"):
        spec = next(s for s in host.services if s.kind == "stun-server")
        return Endpoint.parse(f"{host.v4}:{listen_port(host, spec)}")
    raise NatkitError(f"lab {lab.name!r} runs no stun-server")


__all__ = ["AgentReport", "IceResult", "ice_connect", "lab_stun"]
