""":class:`NetnsLab`: a topology as Linux network namespaces with nftables NAT (issue 5, design.md §1, §5).

``up`` checks that every NAT preset is expressible in nftables (a :class:`~toolkit.errors.UsageError`
naming the preset and the missing feature otherwise, before anything is created), records the
namespaces it is about to make in the state directory (:mod:`.state`), builds the network
(:mod:`.plumbing`), then starts the topology's services, each as ``ip netns exec NS python -m
toolkit KIND ARGS`` in its own session with its output in ``logs/HOST-KIND.log``. The services
outlive the process that started them (``natkit lab up`` returns; ``natkit lab down`` in another
shell ends them), so they are plain child processes, not asyncio ones (asyncio kills its
subprocesses when the loop closes). :meth:`NetnsLab.spawn` starts a helper with pipes instead (the host
agent of :mod:`toolkit.lab.hostio`), recorded in the state file the same way; ``run`` and ``spawn`` turn
``natkit ...`` into this interpreter's ``python -m toolkit ...`` (a namespace's PATH has no natkit).

``down`` works from any process and after a crash of the one that called ``up``: it terminates
every recorded process (pid *and* start time must match, so a recycled pid is never hit) and every
other process still inside a lab namespace, deletes the recorded namespaces plus any
``nk-PREFIX-*`` namespace no other lab claims, and removes the state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from toolkit.errors import NatkitError, UsageError
from toolkit.lab import registry
from toolkit.lab.backend import Capture, ElementStatus, Lab, LabStatus, NatMapping, RunResult, ServiceHandle
from toolkit.lab.labservices import derp_map, service_argv
from toolkit.lab.nat import Mapping
from toolkit.lab.netns import conntrack, plumbing
from toolkit.lab.netns.capture import NetnsCapture
from toolkit.lab.netns.state import (
    LabState,
    ProcessRecord,
    StateDir,
    claimed_elsewhere,
    new_state,
    process_start_time,
    sweep_candidates,
)
from toolkit.lab.nodes import ServiceNode, node_args
from toolkit.lab.topology import Host, Router, ServiceSpec, Topology
from toolkit.node.tun import NETNS_DIR
from toolkit.timing import DEFAULT, Timing

START_TIMEOUT = 20.0  # seconds a service may take to print its "listening on" line
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
_LISTEN_RE = re.compile(r"(?:udp|tcp) [^\s,]+|https?://[^\s,]+")  # run_service's "udp 1.2.3.4:3478" items


class NetnsService(ServiceHandle):
    """A server process in a host's namespace (recorded in the lab's state file)."""

    def __init__(self, lab: NetnsLab, host: str, spec: ServiceSpec, record: ProcessRecord, listening: list[str]):
        super().__init__(host, spec, listening)
        self._lab = lab
        self.record = record

    @property
    def pid(self) -> int:
        return self.record.pid

    async def stop(self) -> None:
        await asyncio.to_thread(terminate, [self.record])
        self._lab._forget(self.record)

    def logs(self) -> list[str]:
        try:
            return Path(self.record.log).read_text(errors="replace").splitlines()
        except OSError:
            return []


def terminate(records: Sequence[ProcessRecord], extra_pids: Sequence[int] = (), grace: float = STOP_GRACE) -> None:
    """SIGTERM the live ones (their process groups), wait up to ``grace`` s, SIGKILL what is left."""
    targets = [(r.pid, r.start_time) for r in records if r.alive()]
    targets += [(pid, process_start_time(pid)) for pid in extra_pids]
    targets = [(pid, start) for pid, start in targets if start and pid != os.getpid()]
    for pid, _ in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid, start) for pid, start in targets):
        _reap()
        time.sleep(0.02)
    for pid, start in targets:
        if _alive(pid, start):
            _signal(pid, signal.SIGKILL)
    _reap()


def _alive(pid: int, start: int) -> bool:
    if process_start_time(pid) != start:
        return False
    try:  # a zombie has exited; its parent (maybe us) just has not reaped it yet
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # a session leader (our services): its whole group
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # services this process started (reaped here, not elsewhere)


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


class NetnsLab(Lab):
    """The ``netns`` backend (module docstring). Needs root, iproute2 and nftables."""

    backend = "netns"
    persistent = True

    def __init__(
        self,
        topology: Topology,
        *,
        name_prefix: str | None = None,
        seed: int = 0,
        timing: Timing = DEFAULT,
    ) -> None:
        super().__init__(topology, name_prefix=name_prefix, seed=seed, timing=timing)
        self.dir = StateDir(self.name_prefix, registry.state_root())
        self.state: LabState | None = None
        self.services: list[NetnsService] = []
        self.captures: list[NetnsCapture] = []
        self.timings: dict[str, float] = {}  # seconds: "network", "services", "down"
        self._spawned: set[asyncio.Future[None]] = set()  # watchers of spawned processes

    # --- names -------------------------------------------------------------------------------------

    def netns(self, name: str) -> str:
        """The namespace of host, router or segment ``name`` (``nk-PREFIX-NAME``)."""
        if name not in {s.name for s in self.topology.segments}:
            self.topology.element(name)  # UsageError listing the names
        return plumbing.ns_name(self.name_prefix, name)

    def namespaces(self) -> list[str]:
        """Every namespace this lab's topology has (segments, hosts, routers)."""
        names = [s.name for s in self.topology.segments] + [e.name for e in self._elements()]
        return [plumbing.ns_name(self.name_prefix, n) for n in names]

    # --- lifecycle ---------------------------------------------------------------------------------

    async def up(self) -> None:
        if self.state is not None and self.state.status == "up":
            return
        _require_tools()
        plan = plumbing.layout(self.topology, self.name_prefix)  # UsageError for NATs nftables cannot do
        old = self.dir.load()
        if old is not None:
            if old.status == "up" and all((NETNS_DIR / ns).exists() for ns in old.namespaces):
                self.state = old  # already up (another process started it): adopt it
                return
            await asyncio.to_thread(self._teardown, keep_dir=True)  # leftovers of a crashed up()
        plumbing.check_free(plan)  # before the state file claims the names: down() must not take them
        self.state = new_state(self.name_prefix, list(plan.namespaces.values()), self.topology.to_dict())
        self.dir.save(self.state)  # before anything exists: down() finds it all
        started = time.perf_counter()
        await asyncio.to_thread(plumbing.apply, plan)
        self.timings["network"] = time.perf_counter() - started
        started = time.perf_counter()
        await asyncio.gather(*(self.start_service(h.name, s) for h in self.topology.hosts for s in h.services))
        self.timings["services"] = time.perf_counter() - started
        self.state.status = "up"
        self.state.timings = dict(self.timings)
        self.dir.save(self.state)

    async def down(self) -> None:
        started = time.perf_counter()
        from toolkit.lab import hostio

        await hostio.shutdown(self)  # host agents: closing stdin ends them; _teardown kills what is left
        for watcher in list(self._spawned):
            watcher.cancel()
        await asyncio.gather(*self._spawned, return_exceptions=True)
        for cap in self.captures:
            await cap.aclose()
        self.captures.clear()
        await asyncio.to_thread(self._teardown, keep_dir=False)
        self.services.clear()
        self.state = None
        self.timings["down"] = time.perf_counter() - started

    def _teardown(self, *, keep_dir: bool) -> None:
        recorded = self.dir.load()
        records = list(recorded.processes) if recorded else []
        records += [s.record for s in self.services if s.record not in records]
        root = self.dir.path.parent
        mine = set(self.namespaces()) - claimed_elsewhere(self.name_prefix, root)  # prefixes may nest
        names = mine | set(recorded.namespaces if recorded else [])
        names |= set(sweep_candidates(self.name_prefix, plumbing.existing_namespaces(self.name_prefix), root))
        inside = [pid for pids in plumbing.namespace_pids(names).values() for pid in pids]
        terminate(records, inside)
        plumbing.delete_namespaces(sorted(names))
        if keep_dir:
            with contextlib.suppress(OSError):
                self.dir.file.unlink()
            shutil.rmtree(self.dir.logs, ignore_errors=True)
        else:
            self.dir.remove()

    def status(self) -> LabStatus:
        recorded = self.dir.load()
        alive = [p for p in (recorded.processes if recorded else []) if p.alive()]
        elements = []
        for element in self._elements():
            ns = plumbing.ns_name(self.name_prefix, element.name)
            exists = (NETNS_DIR / ns).exists()
            addresses = _addresses(ns) if exists else ()
            services = tuple(f"{p.what} pid {p.pid}" for p in alive if p.host == element.name)
            kind = "host" if isinstance(element, Host) else "router"
            elements.append(ElementStatus(element.name, kind, exists, addresses, services, ns))
        up = recorded is not None and recorded.status == "up" and all(e.up for e in elements)
        return LabStatus(self.name, self.backend, up, tuple(elements))

    # --- per host / router -------------------------------------------------------------------------

    async def run(self, host: str, argv: Sequence[str], *, timeout: float = 30.0) -> RunResult:
        ns = self._element_ns(host)
        argv = _natkit_argv(argv)
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, *argv,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise NatkitError(f"{' '.join(argv)} on {host} did not finish within {timeout} s") from None
        rc = proc.returncode if proc.returncode is not None else -1
        return RunResult(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    async def spawn(self, host: str, argv: Sequence[str], *, what: str = "process") -> asyncio.subprocess.Process:
        """``ip netns exec NS ARGV`` with stdin/stdout/stderr pipes, in its own session, recorded in the
        state file (``down`` from any process ends it); forgotten again when it exits."""
        ns = self._element_ns(host)
        if self.state is None:
            raise UsageError(f"lab {self.name!r} is not up: call `await lab.up()` first")
        argv = _natkit_argv(argv)
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, *argv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, limit=1 << 22,
        )  # fmt: skip
        record = ProcessRecord(proc.pid, host, what, list(argv), "", process_start_time(proc.pid))
        self.state.processes.append(record)
        self.dir.save(self.state)

        async def forget() -> None:
            await proc.wait()
            self._forget(record)

        watcher = asyncio.ensure_future(forget())
        self._spawned.add(watcher)
        watcher.add_done_callback(self._spawned.discard)
        return proc

    async def start_service(self, host: str, spec: ServiceSpec) -> NetnsService:
        h = self._host(host)
        if self.state is None:
            raise UsageError(f"lab {self.name!r} is not up: start services after `await lab.up()`")
        ns = plumbing.ns_name(self.name_prefix, h.name)
        argv = [sys.executable, "-m", "toolkit", *service_argv(h, spec)]
        if spec.kind == "control-server":
            argv += self._control_files(h, argv)
        self.dir.logs.mkdir(parents=True, exist_ok=True)
        log = self.dir.logs / f"{h.name}-{spec.kind}.log"
        n = 1
        while log.exists():
            n += 1
            log = self.dir.logs / f"{h.name}-{spec.kind}-{n}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        _CHILDREN[proc.pid] = proc
        record = ProcessRecord(proc.pid, h.name, spec.kind, argv, str(log), process_start_time(proc.pid))
        self.state.processes.append(record)
        self.dir.save(self.state)
        line = await self._wait_listening(proc, log, f"{spec.kind} on {h.name}")
        listening = _LISTEN_RE.findall(line.split(": listening on ", 1)[1])
        service = NetnsService(self, h.name, spec, record, listening)
        self.services.append(service)
        return service

    async def start_node(self, host: str, *, timing_scale: float = 1.0) -> ServiceNode:
        """``natkit node`` in ``host``'s namespace, its files in the lab directory (``nodes/HOST/``)."""
        files = self.dir.path / "nodes" / self._host(host).name
        files.mkdir(parents=True, exist_ok=True)
        for stale in ("trace.jsonl", "api.sock", "keys.jsonl"):
            (files / stale).unlink(missing_ok=True)
        args = node_args(self.topology, host, files, timing_scale=timing_scale)
        service = await self.start_service(host, ServiceSpec("node", tuple(args)))
        node = self.nodes[host] = ServiceNode(self, host, service, files, [sys.executable, "-m", "toolkit"])
        return node

    def _control_files(self, host: Host, argv: list[str]) -> list[str]:
        extra = []
        if "--db" not in argv:
            extra += ["--db", str(self.dir.path / f"{host.name}-control.db")]
        if "--derp-map" not in argv:
            path = self.dir.path / "derpmap.json"
            path.write_bytes(derp_map(self.topology).to_json(indent=1))
            extra += ["--derp-map", str(path)]
        return extra

    async def _wait_listening(self, proc: subprocess.Popen[bytes], log: Path, what: str) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = log.read_text(errors="replace")
            for line in text.splitlines():
                if ": listening on " in line:
                    return line
            if proc.poll() is not None:
                raise NatkitError(f"{what} exited with status {proc.returncode}: {text.strip()[-500:]}")
            if time.monotonic() > deadline:
                raise NatkitError(f"{what} printed no 'listening on' line within {START_TIMEOUT} s: {text[-500:]}")
            await asyncio.sleep(0.02)

    def _forget(self, record: ProcessRecord) -> None:
        self.services = [s for s in self.services if s.record is not record]
        if self.state is not None and record in self.state.processes:
            self.state.processes.remove(record)
            self.dir.save(self.state)

    async def open_capture(self, element: str, interface: str) -> Capture:
        segments = {s.name for s in self.topology.segments}
        if element in segments:  # a switch: its bridge or the port of an element on it
            ports = {element} | {plumbing.port_name(name) for name in self._attached(element)}
            if interface not in ports:
                raise UsageError(
                    f"segment {element!r} has no interface {interface!r}; interfaces: {', '.join(sorted(ports))}"
                )
        else:
            self.topology.interface(element, interface)  # UsageError listing the interfaces
        capture = NetnsCapture(element, interface, self.netns(element))
        self.captures.append(capture)
        return capture

    def _attached(self, segment: str) -> list[str]:
        """Names of the hosts and routers with an interface on ``segment``."""
        topo = self.topology
        router = topo.router_for(segment)
        names = [h.name for h in topo.hosts_on(segment)] + [r.name for r in topo.routers_on(segment)]
        return names + ([router.name] if router is not None else [])

    async def nat_table(self, router: str) -> list[NatMapping]:
        r = self._nat_router(router)
        assert r.nat is not None
        text = await asyncio.to_thread(conntrack.read_table, self.netns(router))
        entries = conntrack.parse(text)
        return conntrack.mappings(entries, per_destination=r.nat.mapping is not Mapping.ENDPOINT_INDEPENDENT)

    async def logs(self, host: str) -> AsyncIterator[str]:
        """Lines of ``host``'s service logs (every ``logs/HOST-*.log``) as they are written, until the lab is down."""
        self._host(host)
        offsets: dict[Path, int] = {}
        pending: dict[Path, str] = {}
        while self.dir.logs.is_dir():
            for path in sorted(self.dir.logs.glob(f"{host}-*.log")):
                try:
                    with open(path, "rb") as fh:
                        fh.seek(offsets.get(path, 0))
                        chunk = fh.read()
                except OSError:
                    continue
                offsets[path] = offsets.get(path, 0) + len(chunk)
                text = pending.pop(path, "") + chunk.decode(errors="replace")
                *lines, rest = text.split("\n")
                if rest:
                    pending[path] = rest
                for line in lines:
                    yield line
            await asyncio.sleep(0.1)

    def _elements(self) -> tuple[Host | Router, ...]:
        return (*self.topology.hosts, *self.topology.routers)

    def _element_ns(self, name: str) -> str:
        self.topology.element(name)
        return plumbing.ns_name(self.name_prefix, name)


def _natkit_argv(argv: Sequence[str]) -> list[str]:
    """``natkit ...`` runs as this interpreter's ``python -m toolkit ...`` (a lab host's PATH has no natkit)."""
    args = list(argv)
    return [sys.executable, "-m", "toolkit", *args[1:]] if args[:1] == ["natkit"] else args


def _addresses(ns: str) -> tuple[str, ...]:
    """``192.168.1.10/24 eth0`` style, read from the namespace (``ip -brief addr``)."""
    done = subprocess.run(["ip", "-n", ns, "-brief", "addr", "show"], capture_output=True, text=True, check=False)
    found = []
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) < 3 or words[0] == "lo":
            continue
        iface = words[0].split("@")[0]
        found += [f"{a} {iface}" for a in words[2:] if not a.startswith("fe80:")]
    return tuple(found)


def _require_tools() -> None:
    if os.geteuid() != 0:
        raise UsageError("the netns backend needs root (network namespaces, nftables): run with sudo")
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            raise UsageError(f"the netns backend needs `{tool}`: install the Debian package {package}")


__all__ = ["NetnsLab", "NetnsService", "terminate"]
