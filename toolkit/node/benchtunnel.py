"""``natkit bench tunnel``: TCP throughput through natkit's WireGuard and through wireguard-go, one run.

natkit issue 3. Two fresh network namespaces ``natkit-bench-<tag>-a`` and ``-b`` are joined by a veth
pair (10.200.0.1 <-> 10.200.0.2). Over that one link run two tunnels side by side:

* natkit <-> natkit: ``natkit wg up CONFIG --netns NS --foreground`` in each namespace (one Python
  process per device, started by this module so it can read their /proc entries), tunnel addresses
  10.201.1.1 <-> 10.201.1.2;
* wireguard-go <-> wireguard-go (Debian ``wireguard-go``), configured over its UAPI socket
  (:func:`toolkit.node.uapi.set_device`), tunnel addresses 10.201.2.1 <-> 10.201.2.2.

Both use MTU 1420 (wg-quick's default). For each repeat, natkit's tunnel and then wireguard-go's
carries one iperf3 test (Debian ``iperf3 -J``): client in ``a``, one-off server (``-s -1``) in ``b``,
``--seconds`` long; the figure is the receiver's ``end.sum_received.bits_per_second``. The median of
the repeats is reported for each, and their ratio (natkit / wireguard-go; the issue's goal is >= 0.5).
Interleaving the contenders spreads background noise of the machine over both.

CPU of a device process is ``utime + stime`` from ``/proc/PID/stat`` (proc(5), fields 14 and 15, in
clock ticks) sampled just before and after each iperf3 test, summed over the tests and divided by
their wall time: 100 % is one core busy for the whole test. Peak memory is ``VmHWM`` from
``/proc/PID/status`` (the peak resident set) at the end. ``a`` sends the bulk data (encrypts),
``b`` receives it (decrypts) and sends the ACKs.

Everything this module creates (processes, namespaces with their veth and TUN devices, UAPI sockets,
the temporary config directory) is torn down in ``finally`` blocks, also on Ctrl-C and SIGTERM; the
child processes run in their own sessions, so a Ctrl-C reaches only the bench, which then stops them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from toolkit.crypto import keys
from toolkit.errors import NatkitError, UsageError
from toolkit.node import uapi
from toolkit.node.tun import ip_command
from toolkit.node.uapi_text import PeerChange, SetRequest
from toolkit.services.runner import stop_process
from toolkit.types import Endpoint

PREFIX = "natkit-bench-"
UNDERLAY = ("10.200.0.1", "10.200.0.2")
TUNNELS = {"natkit": ("10.201.1.1", "10.201.1.2"), "wireguard-go": ("10.201.2.1", "10.201.2.2")}
PORTS = {"natkit": (51801, 51802), "wireguard-go": (51803, 51804)}
MTU = 1420
IPERF_PORT = 5201
GOAL = 0.5
UP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
NATKIT_RUN_DIR = Path("/var/run/natkit")  # where `natkit wg up --foreground` keeps its pid file
CLK_TCK = os.sysconf("SC_CLK_TCK")

Progress = Callable[[str], None]


class BenchError(NatkitError):
    """The bench could not measure (a device did not come up, iperf3 failed): one line, exit 1."""


def check_requirements() -> dict[str, str]:
    """Paths of iperf3 and wireguard-go; :class:`UsageError` (exit 2) without root or without one of them."""
    if os.geteuid() != 0:
        raise UsageError("`natkit bench tunnel` needs root (network namespaces, TUN devices): run it with sudo")
    tools = {}
    for tool in ("ip", "ss", "iperf3", "wireguard-go"):
        package = "iproute2" if tool in ("ip", "ss") else tool  # the Debian package of each
        path = shutil.which(tool)
        if path is None:
            raise UsageError(f"`natkit bench tunnel` needs {tool}: install the Debian package {package}")
        tools[tool] = path
    return tools


# --- processes ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (proc(5) /proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_memory_kib(pid: int) -> int:
    """VmHWM of ``pid`` in KiB: its peak resident set size (proc(5) /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no VmHWM line")


class _Interrupts:
    """In the main thread, SIGINT and SIGTERM raise KeyboardInterrupt, except inside :meth:`deferred`
    (a child being started and registered for teardown), where they are held until its end: a child
    whose ``Popen`` was interrupted half-way would otherwise run on unnoticed."""

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.depth = 0
        self.pending = False

    def _handler(self, signum: int, frame: object) -> None:
        self.pending = True
        if not self.depth:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if not self.active:
            yield
            return
        old = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending:
                raise KeyboardInterrupt

    def teardown(self, stack: contextlib.ExitStack) -> None:
        """Unwind ``stack`` (processes, then namespaces) deaf to further Ctrl-C, so none leaves half of it."""
        self.depth += 1
        try:
            stack.close()
        finally:
            self.depth -= 1


def _wait_for(what: str, ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path | None) -> None:
    deadline = time.monotonic() + UP_TIMEOUT
    while not ready():
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log is not None else []
            raise BenchError(f"{what} exited with status {proc.returncode}" + (f": {tail[0]}" if tail else ""))
        if time.monotonic() > deadline:
            raise BenchError(f"{what} was not ready within {UP_TIMEOUT:.0f} s")
        time.sleep(0.05)


# --- the bench ------------------------------------------------------------------------------------


class TunnelBench:
    """The topology and both tunnels; :meth:`measure` runs one iperf3 test through one tunnel."""

    def __init__(self, tools: dict[str, str], workdir: Path, interrupts: _Interrupts, progress: Progress) -> None:
        self.tools = tools
        self.workdir = workdir
        self.stack = contextlib.ExitStack()  # teardown, last in first out: processes, then namespaces
        self.interrupts = interrupts
        self.progress = progress
        self.tag = uuid.uuid4().hex[:6]
        self.namespaces = (f"{PREFIX}{self.tag}-a", f"{PREFIX}{self.tag}-b")
        self.names = {
            c: (f"{p}{self.tag}a", f"{p}{self.tag}b") for c, p in (("natkit", "nkb"), ("wireguard-go", "wgb"))
        }
        self.devices: dict[str, tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]] = {}
        self.pids: list[int] = []  # every process started, for the report (tests check they are gone)

    def start(
        self, argv: list[str], log: Path | None = None, *, capture: bool = False, stop: Callable[[], None] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session (Ctrl-C in the terminal reaches only the bench) with output
        to ``log`` (or a pipe with ``capture``), and register its teardown: ``stop_process``, then ``stop``."""
        out: Any = subprocess.PIPE if capture else subprocess.DEVNULL
        with self.interrupts.deferred(), contextlib.ExitStack() as files:
            if log is not None:
                out = files.enter_context(log.open("wb"))
            err = subprocess.PIPE if capture else subprocess.STDOUT
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
            self.pids.append(proc.pid)
            if stop is not None:
                self.stack.callback(stop)
            self.stack.callback(stop_process, proc, STOP_TIMEOUT)
        return proc

    def build(self) -> None:
        """Namespaces, veth, both tunnels up and shaken hands."""
        ns_a, ns_b = self.namespaces
        for ns in self.namespaces:
            with self.interrupts.deferred():
                ip_command(None, "netns", "add", ns)
                self.stack.callback(subprocess.run, ["ip", "netns", "delete", ns], capture_output=True, check=False)
            ip_command(ns, "link", "set", "lo", "up")
        veth = (f"nkv{self.tag}a", f"nkv{self.tag}b")
        ip_command(None, "link", "add", veth[0], "netns", ns_a, "type", "veth", "peer", veth[1], "netns", ns_b)
        for ns, dev, address in zip(self.namespaces, veth, UNDERLAY, strict=True):
            ip_command(ns, "address", "add", f"{address}/24", "dev", dev)
            ip_command(ns, "link", "set", dev, "up")
        self.progress(f"topology: {ns_a} {UNDERLAY[0]} <-veth-> {UNDERLAY[1]} {ns_b}")
        self._natkit_pair()
        self._wireguard_go_pair()

    def _end(self, contender: str, i: int) -> tuple[str, str, int, str, str]:
        """Side ``i`` (0: a, 1: b) of a tunnel: namespace, interface, port, its tunnel address, peer's endpoint."""
        peer = f"{UNDERLAY[1 - i]}:{PORTS[contender][1 - i]}"
        return self.namespaces[i], self.names[contender][i], PORTS[contender][i], TUNNELS[contender][i], peer

    def _natkit_pair(self) -> None:
        priv = (keys.generate_node_key(), keys.generate_node_key())
        procs = {}
        for i in (1, 0):  # b first: a's persistent keepalive starts the handshake at once
            ns, name, port, address, peer = self._end("natkit", i)
            conf = self.workdir / f"{name}.conf"
            conf.write_text(
                f"[Interface]\nPrivateKey = {priv[i].b64()}\nListenPort = {port}\nAddress = {address}/24\n"
                f"MTU = {MTU}\n\n[Peer]\nPublicKey = {keys.public_key(priv[1 - i]).b64()}\nEndpoint = {peer}\n"
                f"AllowedIPs = {TUNNELS['natkit'][1 - i]}/32\n" + ("PersistentKeepalive = 25\n" if i == 0 else "")
            )
            log = self.workdir / f"{name}.log"
            argv = [sys.executable, "-m", "toolkit", "wg", "up", str(conf), "--netns", ns, "--foreground"]
            procs[i] = self.start(argv, log, stop=functools.partial(self._forget_natkit, name))
            _wait_for(f"natkit device {name}", functools.partial(uapi.interface_answers, name), procs[i], log)
        self.devices["natkit"] = (procs[0], procs[1])
        self._handshake("natkit")

    @staticmethod
    def _forget_natkit(name: str) -> None:
        """After a natkit device stopped: its UAPI socket and pid file, left only if it had to be killed."""
        uapi.socket_path(name).unlink(missing_ok=True)
        (NATKIT_RUN_DIR / f"{name}.pid").unlink(missing_ok=True)

    def _wireguard_go_pair(self) -> None:
        priv = (keys.generate_node_key(), keys.generate_node_key())
        procs = {}
        for i in (1, 0):
            ns, name, port, address, peer = self._end("wireguard-go", i)
            log = self.workdir / f"{name}.log"
            argv = ["ip", "netns", "exec", ns, self.tools["wireguard-go"], "-f", name]  # ip execs: same pid
            procs[i] = self.start(argv, log, stop=functools.partial(uapi.socket_path(name).unlink, missing_ok=True))
            _wait_for(f"wireguard-go {name}", functools.partial(uapi.interface_answers, name), procs[i], log)
            change = PeerChange(
                keys.public_key(priv[1 - i]),
                endpoint=Endpoint.parse(peer),
                persistent_keepalive=25 if i == 0 else None,
                replace_allowed_ips=True,
                allowed_ips=(f"{TUNNELS['wireguard-go'][1 - i]}/32",),
            )
            uapi.set_device(name, SetRequest(private_key=priv[i], listen_port=port, peers=(change,)))
            ip_command(ns, "address", "add", f"{address}/24", "dev", name)
            ip_command(ns, "link", "set", "dev", name, "mtu", str(MTU), "up")
        self.devices["wireguard-go"] = (procs[0], procs[1])
        self._handshake("wireguard-go")

    def _handshake(self, contender: str) -> None:
        name_a, name_b = self.names[contender]

        def done() -> bool:
            return all(uapi.get_device(n).peers[0].last_handshake is not None for n in (name_a, name_b))

        _wait_for(f"the {contender} handshake", done, self.devices[contender][0], None)
        self.progress(f"{contender} <-> {contender}: tunnel {TUNNELS[contender][0]} <-> {TUNNELS[contender][1]} up")

    def measure(self, contender: str, seconds: float) -> tuple[float, float, list[float]]:
        """One iperf3 test through ``contender``'s tunnel: (bits/s, wall seconds, CPU seconds of a and b)."""
        ns_a, ns_b = self.namespaces
        server = self.start(["ip", "netns", "exec", ns_b, self.tools["iperf3"], "-s", "-1", "-p", str(IPERF_PORT)])
        try:
            _wait_for("the iperf3 server", lambda: self._listening(ns_b), server, None)
            pids = [p.pid for p in self.devices[contender]]
            before = [cpu_seconds(pid) for pid in pids]
            start = time.monotonic()
            argv = ["ip", "netns", "exec", ns_a, self.tools["iperf3"], "-c", TUNNELS[contender][1]]
            argv += ["-p", str(IPERF_PORT), "-t", f"{seconds:g}", "-J", "--connect-timeout", "5000"]
            client = self.start(argv, capture=True)
            try:
                out, err = client.communicate(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                raise BenchError(f"iperf3 through {contender} did not finish within {seconds + 30:g} s") from None
            wall = time.monotonic() - start
            cpu = [cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)]
        finally:
            stop_process(server, STOP_TIMEOUT)
        if client.returncode != 0 and not out.strip():
            raise BenchError(f"iperf3 through {contender} failed: {err.decode(errors='replace').strip()}")
        return _iperf_bits_per_second(out.decode(errors="replace"), contender), wall, cpu

    def _listening(self, ns: str) -> bool:
        argv = ["ss", "-H", "-N", ns, "-ltn", f"sport = :{IPERF_PORT}"]
        return bool(subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip())


def _iperf_bits_per_second(output: str, contender: str) -> float:
    """The receiver's throughput from ``iperf3 -J`` (``end.sum_received.bits_per_second``)."""
    try:
        result = json.loads(output)
    except json.JSONDecodeError:
        raise BenchError(f"iperf3 through {contender} printed no JSON: {output[:200]!r}") from None
    if "error" in result:
        raise BenchError(f"iperf3 through {contender}: {result['error']}")
    try:
        return float(result["end"]["sum_received"]["bits_per_second"])
    except (KeyError, TypeError, ValueError):
        raise BenchError(f"iperf3 through {contender}: no end.sum_received.bits_per_second in its JSON") from None


def run_tunnel_bench(*, seconds: float = 10.0, repeat: int = 3, progress: Progress | None = None) -> dict[str, Any]:
    """Build, measure ``repeat`` times per contender, tear down; the report (JSON-ready, see the module doc)."""
    if seconds <= 0 or repeat < 1:
        raise UsageError(f"--seconds must be positive and --repeat at least 1, got {seconds:g} and {repeat}")
    tools = check_requirements()
    say = progress or (lambda line: None)
    runs: dict[str, list[float]] = {"natkit": [], "wireguard-go": []}
    wall: dict[str, float] = {"natkit": 0.0, "wireguard-go": 0.0}
    cpu: dict[str, list[float]] = {"natkit": [0.0, 0.0], "wireguard-go": [0.0, 0.0]}
    interrupts = _Interrupts()
    with interrupts.installed(), tempfile.TemporaryDirectory(prefix=PREFIX) as tmp:
        bench = TunnelBench(tools, Path(tmp), interrupts, say)
        try:
            bench.build()
            for r in range(repeat):
                for contender in runs:
                    say(f"{contender} <-> {contender}: run {r + 1}/{repeat} ({seconds:g} s of iperf3)...")
                    bps, seconds_taken, used = bench.measure(contender, seconds)
                    runs[contender].append(bps)
                    wall[contender] += seconds_taken
                    cpu[contender] = [c + u for c, u in zip(cpu[contender], used, strict=True)]
                    say(f"{contender} <-> {contender}: run {r + 1}/{repeat}: {bps / 1e6:.1f} Mbit/s")
            memory = {c: [peak_memory_kib(p.pid) for p in bench.devices[c]] for c in runs}
        finally:
            say("tearing down: devices, iperf3, namespaces")
            interrupts.teardown(bench.stack)
    report: dict[str, Any] = {"seconds": seconds, "repeat": repeat, "namespaces": list(bench.namespaces)}
    for contender in runs:
        report[contender] = {
            "runs_bits_per_second": runs[contender],
            "median_bits_per_second": statistics.median(runs[contender]),
            "cpu_percent": {
                side: round(100 * used / wall[contender], 1) for side, used in zip("ab", cpu[contender], strict=True)
            },
            "peak_memory_kib": dict(zip("ab", memory[contender], strict=True)),
        }
    report["ratio"] = report["natkit"]["median_bits_per_second"] / report["wireguard-go"]["median_bits_per_second"]
    report["goal"] = GOAL
    report["pids"] = bench.pids
    return report


def format_report(report: dict[str, Any]) -> str:
    """The human-readable summary ``natkit bench tunnel`` prints."""
    lines = [
        f"TCP through WireGuard, iperf3 {report['seconds']:g} s, median of {report['repeat']} "
        "(a sends, b receives; CPU: 100% = one core busy for the whole test; memory: VmHWM)"
    ]
    for contender in ("natkit", "wireguard-go"):
        r = report[contender]
        label = f"{contender} <-> {contender}"
        runs = ", ".join(f"{bps / 1e6:.1f}" for bps in r["runs_bits_per_second"])
        cpu, mem = r["cpu_percent"], r["peak_memory_kib"]
        lines.append(f"{label:<30} {r['median_bits_per_second'] / 1e6:9.1f} Mbit/s  (runs: {runs})")
        lines.append(
            f"{'':<30} CPU a {cpu['a']:.0f}%, b {cpu['b']:.0f}%; peak memory a {mem['a'] / 1024:.1f} MiB, "
            f"b {mem['b'] / 1024:.1f} MiB"
        )
    met = "met" if report["ratio"] >= report["goal"] else "not met"
    lines.append(
        f"{'ratio natkit / wireguard-go':<30} {report['ratio']:9.3f}x   (goal: at least {report['goal']}x: {met})"
    )
    return "\n".join(lines)


__all__ = ["BenchError", "TunnelBench", "check_requirements", "cpu_seconds", "format_report", "run_tunnel_bench"]
