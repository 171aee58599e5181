"""`natkit bench relay` (toolkit/services/benchrelay.py): the measurement machinery on in-memory links,
short real runs through natkit's DERP relay and coturn's TURN relay, the CLI, and that no relay process
is left behind after a run, SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

import pytest

from tests.support import ROOT, require_tool
from toolkit.services import benchrelay
from toolkit.services.benchrelay import Path, format_report, percentile, run_relay_bench


class MemoryLink:
    """An in-memory A -> B link that drops the packets ``drop(i)`` picks (i counts sends from 0)."""

    def __init__(self, drop: Callable[[int], bool] = lambda i: False) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.drop = drop
        self.sent = 0

    async def send(self, packet: bytes) -> None:
        if not self.drop(self.sent):
            self.queue.put_nowait(packet)
        self.sent += 1
        await asyncio.sleep(0)  # let B read, as a socket would

    async def recv(self) -> bytes:
        return await self.queue.get()


def _on_memory(link: MemoryLink, job: Callable[[Path], Any]) -> Any:
    async def go() -> Any:
        path = Path(link, os.getpid())
        try:
            return await job(path)
        finally:
            await path.receiver.close()

    return asyncio.run(go())


def _gone(pid: int) -> bool:
    try:
        state = FsPath(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # reaped by nobody yet is still "gone" as a relay


# --- the machinery -----------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0 and percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_stream_delivers_everything_on_a_perfect_link() -> None:
    link = MemoryLink()
    result = _on_memory(link, lambda p: p.stream(5000, 100, 16))
    assert (result.sent, result.received, result.lost, result.duplicates, result.strays) == (5000, 5000, 0, 0, 0)
    assert not result.aborted
    assert result.packets_per_second > 1000 and result.seconds > 0
    assert link.sent == 5000


def test_stream_counts_losses_exactly_and_does_not_stall_on_them() -> None:
    link = MemoryLink(drop=lambda i: i % 7 == 3)
    started = time.monotonic()
    result = _on_memory(link, lambda p: p.stream(7000, 100, 16))
    assert result.lost == 1000 and result.received == 6000 and not result.aborted
    assert time.monotonic() - started < 2 * benchrelay.STALL + 1, "a lost packet must not hold the window shut"


def test_stream_writes_off_a_dead_link_after_the_stall_time() -> None:
    link = MemoryLink(drop=lambda i: i >= 100)  # the relay dies after 100 packets
    started = time.monotonic()
    result = _on_memory(link, lambda p: p.stream(4000, 100, 32))
    assert result.aborted and result.received == 100
    assert result.sent == link.sent < 200 and result.lost == result.sent - 100  # no more than two windows
    assert time.monotonic() - started < 3 * benchrelay.STALL + 0.5  # two stalls, not one per window


def test_latency_samples_one_at_a_time() -> None:
    link = MemoryLink(drop=lambda i: i == 5)
    result = _on_memory(link, lambda p: p.latency(20, 64))
    assert result.samples == 19 and result.lost == 1
    assert 0 < result.p50_us <= result.p99_us < 1e6


# --- real runs -----------------------------------------------------------------------------------------


def _check_report(report: dict[str, Any], packets: int, repeat: int) -> None:
    for name in ("natkit", "coturn"):
        r = report[name]
        assert len(r["runs"]) == repeat
        for run in r["runs"]:
            assert run["sent"] == packets and run["received"] + run["lost"] == packets and not run["aborted"]
            assert run["lost"] <= packets // 100, f"{name} lost {run['lost']} of {packets} on loopback"
            assert run["duplicates"] == 0
            assert 1000 < run["packets_per_second"] < 5_000_000
            assert 0 < run["latency"]["p50_us"] <= run["latency"]["p99_us"] < 1_000_000
            assert run["relay_cpu_percent"] > 0 and run["relay_cpu_us_per_packet"] > 0
        assert r["median_packets_per_second"] > 0
    assert report["ratio"] == pytest.approx(
        report["natkit"]["median_packets_per_second"] / report["coturn"]["median_packets_per_second"]
    )
    assert report["goal"] == 0.5
    assert all(_gone(pid) for pid in report["pids"]) and len(report["pids"]) == 2


def test_in_process_run_through_both_relays() -> None:
    require_tool("turnserver", "coturn")
    lines: list[str] = []
    report = run_relay_bench(packets=3000, repeat=1, latency_samples=50, progress=lines.append)
    _check_report(report, 3000, 1)
    assert report["turn_peer"] == "relayed"
    assert any(line.startswith("natkit: run 1/1: ") for line in lines)
    assert any(line.startswith("coturn: run 1/1: ") for line in lines)
    text = format_report(report)
    assert re.search(r"^ratio natkit / coturn +\d+\.\d{3}x", text, re.M), text


def _natkit(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "toolkit", "bench", "relay", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, cwd=ROOT, env=env)


def test_cli_json_two_repeats_direct_turn_peer() -> None:
    require_tool("turnserver", "coturn")
    done = _natkit(
        "--packets", "2000", "--repeat", "2", "--latency-samples", "30", "--turn-peer", "direct", "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    _check_report(report, 2000, 2)
    assert report["turn_peer"] == "direct" and report["window"] == 32 and report["size"] == 1000
    assert "coturn TURN: A " in done.stderr and "(plain UDP)" in done.stderr  # progress lines on stderr
    assert "tearing down" in done.stderr


def test_cli_text_prints_both_relays_and_the_ratio() -> None:
    require_tool("turnserver", "coturn")
    done = _natkit("--packets", "1000", "--repeat", "1", "--latency-samples", "20", "--size", "200")
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("relay bench: 1000 packets of 200 B")
    assert any(line.startswith("natkit DERP ") and "pkt/s" in line for line in out)
    assert any(line.startswith("coturn TURN (relayed) ") and "pkt/s" in line for line in out)
    assert re.match(r"ratio natkit / coturn +\d+\.\d{3}x +pkt/s \(goal: at least 0\.5x: (met|not met)\)", out[-1])


def test_missing_coturn_is_one_line_exit_2(tmp_path: FsPath) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no turnserver there
    done = _natkit("--packets", "10", env=env, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "natkit: error: `natkit bench relay` needs coturn's turnserver: apt install coturn"
    ]


@pytest.mark.parametrize(
    ("args", "what"),
    [(("--size", "8"), "--size"), (("--packets", "0"), "--packets"), (("--window", "0"), "--window")],
)
def test_bad_arguments_are_one_line_exit_2(args: tuple[str, ...], what: str) -> None:
    done = _natkit(*args, timeout=30)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("natkit: error: ") and what in lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_mid_run_removes_both_relays(sig: signal.Signals) -> None:
    require_tool("turnserver", "coturn")
    argv = [sys.executable, "-m", "toolkit", "bench", "relay", "--packets", "2000000", "--repeat", "1"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    pids: list[int] = []
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        for line in proc.stderr:
            pids += [int(p) for p in re.findall(r"\(pid (\d+)\)", line)]
            if line.startswith("natkit: run 1/1: 2000000 packets"):
                time.sleep(0.3)  # into the stream
                proc.send_signal(sig)
                break
            assert time.monotonic() < deadline, "the bench did not start its first run"
        assert proc.wait(30) == 130
        assert proc.stderr.read().strip().splitlines()[-1] == "natkit: interrupted"
        assert len(pids) == 2
        assert all(_gone(pid) for pid in pids), pids
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
