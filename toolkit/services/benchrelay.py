"""``natkit bench relay``: packets/s and latency through natkit's DERP relay and coturn's TURN relay, one run.

natkit issue 4. Both relays run as real processes on 127.0.0.1, started by this module and removed
afterwards (also on error, Ctrl-C and SIGTERM; the children run in their own sessions and get
SIGTERM if the bench dies, ``PR_SET_PDEATHSIG``):

* natkit: ``python -m toolkit derp-server --listen 127.0.0.1:0``; its start line gives the URL.
  Two :class:`~toolkit.services.derpclient.DerpClient` A and B connect to it; A sends SendPacket
  frames addressed to B's key, the server forwards them as RecvPacket frames to B (protocols.md §2.4):
  client -> relay -> client, over TCP.
* coturn (Debian ``turnserver``) with long-term credentials (a fresh random password per run) and
  ``--allow-loopback-peers``. Two :class:`~toolkit.services.turnclient.TurnClient` A and B each
  allocate a relayed address and bind a channel to the other's relayed address (RFC 8656 §12); A
  sends ChannelData to coturn, which sends it from A's relayed address to B's relayed address and on
  to B as ChannelData. This is the symmetric setup closest to DERP's: both ends talk only to the
  relay, neither needs to be reachable by the other (the case DERP exists for). It costs coturn one
  extra loopback hop between the two allocations; ``turn_peer="direct"`` measures the one-hop
  variant instead (only A allocates; B is a plain UDP socket the relay sends to).

Method, the same for both (one process, one event loop, both clients in it):

* throughput: A sends ``packets`` datagrams of ``size`` bytes to B, at most ``window`` in flight
  (sent - received); packets/s = received / (last receive - first send). A packet that does not
  arrive is written off after ``STALL`` seconds without progress and counted as lost; a second stall
  with nothing received since the first ends the stream (``aborted``: the relay stopped relaying).
  Duplicates and strays are counted too. Each packet carries a run id, a sequence number and its send time.
* latency: ``latency_samples`` packets, one at a time, A to B; one-way time = arrival - send time on
  this process's monotonic clock (``time.perf_counter_ns``); p50 and p99 (nearest rank).
* ``repeat`` rounds, natkit then coturn in each (interleaving spreads machine noise over both); the
  medians of the rounds are reported, and the ratio natkit / coturn of the median packets/s (the
  issue's goal: at least 0.5). CPU of each relay process (``/proc/PID/stat`` utime + stime, all
  threads) and of the bench process itself during the throughput phase shows which side was busy:
  100 % = one core for the whole phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import statistics
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from toolkit.errors import UsageError
from toolkit.services.benchrelay_procs import BenchError, RelayProcesses, check_requirements, cpu_seconds

GOAL = 0.5
STALL = 0.5  # seconds without progress after which the packets in flight count as lost
LATENCY_TIMEOUT = 1.0  # one latency sample waits at most this long
WARMUP = 500  # packets streamed through each path before the first measurement
_HEAD = struct.Struct("!IIQ")  # run id, sequence number, send time (ns, perf_counter_ns)
CONTENDERS = ("natkit", "coturn")

Progress = Callable[[str], None]


class Link(Protocol):
    """One direction, A to B, through one relay."""

    async def send(self, packet: bytes) -> None: ...

    async def recv(self) -> bytes: ...


@dataclass(frozen=True)
class StreamResult:
    sent: int
    received: int
    lost: int
    aborted: bool  # the relay stopped relaying mid-stream (two stalls in a row); the rest was not sent
    duplicates: int
    strays: int
    seconds: float
    packets_per_second: float
    relay_cpu_percent: float
    relay_cpu_us_per_packet: float
    client_cpu_percent: float


@dataclass(frozen=True)
class LatencyResult:
    samples: int
    lost: int
    p50_us: float
    p99_us: float


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


class _Receiver:
    """B's side of a measurement: reads the link, keeps per-run bookkeeping, wakes the sender.

    ``highest`` is one past the largest sequence number seen: the sender's window counts from it, so a
    lost packet does not hold the window shut (neither relay reorders on loopback)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.run = 0
        self.count = 0
        self.seen = bytearray()
        self.received = 0
        self.highest = 0
        self.duplicates = 0
        self.strays = 0
        self.last_arrival = 0
        self.last_latency_ns = 0
        self.last_seq = -1
        self.limit = 0  # wake the sender when highest reaches this
        self.progress = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._loop())

    def reset(self, run: int, count: int) -> None:
        self.run, self.count, self.seen = run, count, bytearray(count)
        self.received = self.highest = self.duplicates = self.strays = 0
        self.limit, self.last_seq = 0, -1

    async def _loop(self) -> None:
        while True:
            data = await self.link.recv()
            now = time.perf_counter_ns()
            if len(data) < _HEAD.size:
                self.strays += 1
                continue
            run, seq, stamp = _HEAD.unpack_from(data)
            if run != self.run or seq >= self.count:
                self.strays += 1  # a late packet of an earlier run, or not ours
                continue
            if self.seen[seq]:
                self.duplicates += 1
                continue
            self.seen[seq] = 1
            self.received += 1
            self.last_arrival = now
            self.last_latency_ns = now - stamp
            self.last_seq = seq
            if seq >= self.highest:
                self.highest = seq + 1
                if self.highest >= self.limit:
                    self.progress.set()

    async def wait(self, target: int, timeout: float) -> bool:
        """Until ``highest >= target``; False after ``timeout`` seconds without any new packet."""
        while self.highest < target:
            before = self.received
            self.limit = target
            self.progress.clear()
            try:
                async with asyncio.timeout(timeout):  # not wait_for: in 3.11 it can swallow a cancel (SIGTERM)
                    await self.progress.wait()
            except TimeoutError:
                if self.received == before:
                    return False
        return True

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


class Path:
    """A link with its receiver and the pid of the relay it goes through."""

    def __init__(self, link: Link, relay_pid: int) -> None:
        self.link = link
        self.relay_pid = relay_pid
        self.receiver = _Receiver(link)
        self.runs = 0

    def _next_run(self, count: int) -> int:
        self.runs += 1
        self.receiver.reset(self.runs, count)
        return self.runs

    async def stream(self, count: int, size: int, window: int) -> StreamResult:
        """Send ``count`` packets of ``size`` bytes, at most ``window`` unanswered (module docstring)."""
        rx = self.receiver
        run = self._next_run(count)
        pad = bytes(size - _HEAD.size)
        floor = 0  # after a stall, everything sent so far counts as answered (lost)
        stalled_at = -1  # rx.received at the last stall: two stalls with nothing between end the stream
        aborted = False
        gc.collect()
        cpu_relay, cpu_self = cpu_seconds(self.relay_pid), time.process_time()
        start = time.perf_counter_ns()
        seq = 0
        while seq < count:
            if seq - max(rx.highest, floor) >= window:
                if not await rx.wait(seq - window // 2, STALL):
                    if rx.received == stalled_at:
                        aborted = True  # the relay stopped relaying: do not send the rest into the void
                        break
                    floor, stalled_at = seq, rx.received
                continue
            await self.link.send(_HEAD.pack(run, seq, time.perf_counter_ns()) + pad)
            seq += 1
        if not aborted:
            await rx.wait(count, STALL)
        for _ in range(10):  # a short grace for stragglers; the figures end at the last arrival anyway
            if rx.received >= seq:
                break
            await asyncio.sleep(0.005)
        end = rx.last_arrival if rx.received else time.perf_counter_ns()
        seconds = max(end - start, 1) / 1e9
        wall = (time.perf_counter_ns() - start) / 1e9
        relay_cpu = cpu_seconds(self.relay_pid) - cpu_relay
        client_cpu = time.process_time() - cpu_self
        return StreamResult(
            sent=seq,
            received=rx.received,
            lost=seq - rx.received,
            aborted=aborted,
            duplicates=rx.duplicates,
            strays=rx.strays,
            seconds=round(seconds, 4),
            packets_per_second=round(rx.received / seconds, 1),
            relay_cpu_percent=round(100 * relay_cpu / wall, 1),
            relay_cpu_us_per_packet=round(1e6 * relay_cpu / rx.received, 2) if rx.received else 0.0,
            client_cpu_percent=round(100 * client_cpu / wall, 1),
        )

    async def latency(self, samples: int, size: int) -> LatencyResult:
        """One packet at a time: one-way latencies in microseconds, p50 and p99."""
        rx = self.receiver
        run = self._next_run(samples)
        pad = bytes(size - _HEAD.size)
        values: list[float] = []
        gc.collect()
        missed = 0
        for seq in range(samples):
            before = rx.received
            await self.link.send(_HEAD.pack(run, seq, time.perf_counter_ns()) + pad)
            if await rx.wait(before + 1, LATENCY_TIMEOUT) and rx.last_seq == seq:
                values.append(rx.last_latency_ns / 1e3)
                missed = 0
            else:
                missed += 1
                if missed == 3:  # the relay stopped relaying: the rest would only time out too
                    break
        if not values:
            raise BenchError(f"no latency sample arrived (sent {samples})")
        return LatencyResult(
            samples=len(values),
            lost=samples - len(values),
            p50_us=round(percentile(values, 50), 1),
            p99_us=round(percentile(values, 99), 1),
        )


async def _measure(
    paths: dict[str, Path], packets: int, size: int, window: int, repeat: int, latency_samples: int, say: Progress
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for name, path in paths.items():
        say(f"{name}: warm-up ({WARMUP} packets)")
        await path.stream(WARMUP, size, window)
    for r in range(repeat):
        for name, path in paths.items():
            say(f"{name}: run {r + 1}/{repeat}: {packets} packets of {size} B, then {latency_samples} latency samples")
            stream = await path.stream(packets, size, window)
            lat = await path.latency(latency_samples, size)
            runs[name].append({**asdict(stream), "latency": asdict(lat)})
            say(
                f"{name}: run {r + 1}/{repeat}: {stream.packets_per_second:,.0f} pkt/s, lost {stream.lost}"
                f"{' (ABORTED: the relay stopped relaying)' if stream.aborted else ''}, "
                f"p50 {lat.p50_us:.0f} us, p99 {lat.p99_us:.0f} us (relay CPU {stream.relay_cpu_percent:.0f}%, "
                f"bench CPU {stream.client_cpu_percent:.0f}%)"
            )
    return runs


async def _bench(
    packets: int, size: int, repeat: int, latency_samples: int, window: int, turn_peer: str, say: Progress
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    if main is not None:
        with contextlib.suppress(RuntimeError, ValueError):  # only the main thread can (SIGTERM: teardown runs)
            loop.add_signal_handler(signal.SIGTERM, main.cancel)
    procs = RelayProcesses(say)
    try:
        derp_url = await procs.start_derp_server()
        turn = await procs.start_coturn()
        async with procs.derp_link(derp_url) as derp_link, procs.turn_link(turn, turn_peer) as turn_link:
            paths = {"natkit": Path(derp_link, procs.derp_pid), "coturn": Path(turn_link, procs.coturn_pid)}
            try:
                runs = await _measure(paths, packets, size, window, repeat, latency_samples, say)
            finally:
                for path in paths.values():
                    await path.receiver.close()
    finally:
        say("tearing down: clients, natkit derp-server, coturn")
        procs.stop_all()
        with contextlib.suppress(RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGTERM)
    report: dict[str, Any] = {
        "packets": packets,
        "size": size,
        "repeat": repeat,
        "latency_samples": latency_samples,
        "window": window,
        "turn_peer": turn_peer,
        "relays": procs.descriptions,
    }
    for name in CONTENDERS:
        rs = runs[name]
        report[name] = {
            "runs": rs,
            "median_packets_per_second": statistics.median(r["packets_per_second"] for r in rs),
            "median_p50_us": statistics.median(r["latency"]["p50_us"] for r in rs),
            "median_p99_us": statistics.median(r["latency"]["p99_us"] for r in rs),
            "lost": sum(r["lost"] for r in rs),
            "sent": sum(r["sent"] for r in rs),
            "median_relay_cpu_percent": statistics.median(r["relay_cpu_percent"] for r in rs),
            "median_relay_cpu_us_per_packet": statistics.median(r["relay_cpu_us_per_packet"] for r in rs),
            "median_client_cpu_percent": statistics.median(r["client_cpu_percent"] for r in rs),
        }
    coturn_pps = report["coturn"]["median_packets_per_second"]
    if coturn_pps <= 0:
        raise BenchError("no packet came through coturn: see the progress lines")
    report["ratio"] = report["natkit"]["median_packets_per_second"] / coturn_pps
    report["latency_ratio_p50"] = report["natkit"]["median_p50_us"] / report["coturn"]["median_p50_us"]
    report["goal"] = GOAL
    report["pids"] = procs.pids
    return report


def run_relay_bench(
    *,
    packets: int = 20_000,
    size: int = 1000,
    repeat: int = 3,
    latency_samples: int = 500,
    window: int = 32,
    turn_peer: str = "relayed",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Start both relays, measure, tear down; the report (JSON-ready, see the module docstring)."""
    if packets < 1 or repeat < 1 or latency_samples < 1 or window < 1:
        raise UsageError("--packets, --repeat, --latency-samples and --window must be at least 1")
    if not _HEAD.size <= size <= 65000:
        raise UsageError(f"--size must be {_HEAD.size}..65000 bytes (a packet carries a {_HEAD.size}-byte header)")
    if turn_peer not in ("relayed", "direct"):
        raise UsageError(f"--turn-peer must be 'relayed' or 'direct', not {turn_peer!r}")
    check_requirements()
    say = progress or (lambda line: None)
    try:
        return asyncio.run(_bench(packets, size, repeat, latency_samples, window, turn_peer, say))
    except asyncio.CancelledError:  # SIGTERM cancelled the main task; teardown has run
        raise KeyboardInterrupt from None


def format_report(report: dict[str, Any]) -> str:
    """The human-readable summary ``natkit bench relay`` prints."""
    lines = [
        f"relay bench: {report['packets']} packets of {report['size']} B A->B (window {report['window']}), "
        f"{report['latency_samples']} one-way latency samples; median of {report['repeat']} runs "
        "(CPU: 100% = one core busy for the whole stream)"
    ]
    labels = {"natkit": "natkit DERP", "coturn": f"coturn TURN ({report['turn_peer']})"}
    for name in CONTENDERS:
        r = report[name]
        runs = ", ".join(f"{x['packets_per_second']:,.0f}" for x in r["runs"])
        lines.append(f"{labels[name]:<22} {r['median_packets_per_second']:>10,.0f} pkt/s  (runs: {runs})")
        lines.append(
            f"{'':<22} p50 {r['median_p50_us']:.0f} us, p99 {r['median_p99_us']:.0f} us; lost {r['lost']}/{r['sent']}; "
            f"relay CPU {r['median_relay_cpu_percent']:.0f}% ({r['median_relay_cpu_us_per_packet']:.2f} us/packet), "
            f"bench CPU {r['median_client_cpu_percent']:.0f}%"
        )
    met = "met" if report["ratio"] >= report["goal"] else "not met"
    lines.append(
        f"{'ratio natkit / coturn':<22} {report['ratio']:>10.3f}x  pkt/s (goal: at least {report['goal']}x: {met}); "
        f"p50 latency {report['latency_ratio_p50']:.2f}x"
    )
    return "\n".join(lines)


__all__ = ["BenchError", "LatencyResult", "Link", "Path", "StreamResult", "format_report", "run_relay_bench"]
