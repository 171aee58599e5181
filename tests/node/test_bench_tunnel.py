"""`natkit bench tunnel` (toolkit.node.benchtunnel): a short real run through both tunnels, its figures,
and that nothing of it is left behind, after a normal run and after Ctrl-C; its one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import require_root, require_tool
from toolkit.cli import main
from toolkit.node import benchtunnel
from toolkit.node.benchtunnel import BenchError, format_report


@dataclass
class BenchRun:
    returncode: int
    stdout: str
    progress: list[str]
    namespaces: list[str] = field(default_factory=list)
    netns_inodes: set[int] = field(default_factory=set)  # of the bench's namespaces, read while it ran


def _bench(*args: str, interrupt_after: str | None = None, timeout: float = 120) -> BenchRun:
    """`natkit bench tunnel ARGS` in a fresh process; the namespaces' inodes are read when the
    topology line appears. With ``interrupt_after``, SIGINT (Ctrl-C) is sent when a progress line
    contains that text."""
    require_root()
    for tool, package in (("iperf3", "iperf3"), ("wireguard-go", "wireguard-go"), ("ss", "iproute2")):
        require_tool(tool, package)
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "bench", "tunnel", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = BenchRun(0, "", [])
    deadline = time.monotonic() + timeout
    try:
        assert proc.stderr is not None and proc.stdout is not None
        for line in proc.stderr:
            run.progress.append(line.rstrip("\n"))
            if line.startswith("topology: "):
                words = line.split()
                run.namespaces = [words[1], words[-1]]
                run.netns_inodes = {os.stat(f"/var/run/netns/{ns}").st_ino for ns in run.namespaces}
            if interrupt_after is not None and interrupt_after in line:
                proc.send_signal(signal.SIGINT)
                interrupt_after = None
            assert time.monotonic() < deadline, "the bench took too long"
        run.stdout = proc.stdout.read()
        run.returncode = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return run


def _processes_in(inodes: set[int]) -> list[str]:
    """Processes whose network namespace is one of ``inodes`` (a deleted namespace lives on in them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.joinpath("ns/net").stat().st_ino in inodes:
                    found.append(f"{entry.name}: {entry.joinpath('cmdline').read_bytes()!r}")
            except OSError:
                continue
    return found


def _processes_naming(tag: str) -> list[str]:
    """Processes with ``tag`` in their command line (natkit's configs and wireguard-go's interfaces carry it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = entry.joinpath("cmdline").read_bytes()
            except OSError:
                continue
            if tag.encode() in cmdline:
                found.append(f"{entry.name}: {cmdline!r}")
    return found


def _assert_nothing_left(run: BenchRun) -> None:
    assert len(run.namespaces) == 2 and all(ns.startswith("natkit-bench-") for ns in run.namespaces)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [ns for ns in run.namespaces if ns in listed]
    assert _processes_in(run.netns_inodes) == []  # no wireguard-go, iperf3 (or anything) inside them
    tag = run.namespaces[0].removeprefix("natkit-bench-").removesuffix("-a")
    assert _processes_naming(tag) == []  # no natkit device (its config path) nor wireguard-go (its interface)
    leftovers = (
        [p for p in Path("/var/run/wireguard").glob(f"*{tag}*.sock")] if Path("/var/run/wireguard").exists() else []
    )
    assert leftovers == []


def test_short_run_reports_both_tunnels_and_leaves_nothing() -> None:
    run = _bench("--seconds", "2", "--repeat", "1", "--json")
    assert run.returncode == 0, run.progress
    report = json.loads(run.stdout)
    natkit, wggo = report["natkit"], report["wireguard-go"]
    for side in (natkit, wggo):
        assert len(side["runs_bits_per_second"]) == 1 and side["median_bits_per_second"] > 1e6  # > 1 Mbit/s
        assert side["median_bits_per_second"] == side["runs_bits_per_second"][0]
        assert all(0 < side["cpu_percent"][d] < 100 * (os.cpu_count() or 1) + 5 for d in "ab")
        assert all(1024 < side["peak_memory_kib"][d] < 4 * 2**20 for d in "ab")  # 1 MiB .. 4 GiB
    assert report["ratio"] == natkit["median_bits_per_second"] / wggo["median_bits_per_second"]
    assert report["goal"] == 0.5 and report["namespaces"] == run.namespaces
    for contender in ("natkit", "wireguard-go"):
        assert any(line.startswith(f"{contender} <-> {contender}: run 1/1: ") for line in run.progress)
    assert run.progress[-1].startswith("tearing down")
    _assert_nothing_left(run)
    assert len(report["pids"]) == 8  # 2 natkit devices, 2 wireguard-go, iperf3 server + client per contender
    assert [pid for pid in report["pids"] if Path(f"/proc/{pid}").exists()] == []  # all gone, not even zombies


def test_ctrl_c_during_a_run_tears_everything_down() -> None:
    run = _bench("--seconds", "5", "--repeat", "1", interrupt_after="natkit <-> natkit: run 1/1 (")
    assert run.returncode == 130 and run.stdout == ""
    assert run.progress[-2:] == ["tearing down: devices, iperf3, namespaces", "natkit: interrupted"]
    _assert_nothing_left(run)


# --- errors, without a run ------------------------------------------------------------------------


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_not_root_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, out, err = _run(capsys, "bench", "tunnel")
    assert (code, out) == (2, "")
    assert (
        err == "natkit: error: `natkit bench tunnel` needs root (network namespaces, TUN devices): run it with sudo\n"
    )


@pytest.mark.parametrize(("tool", "package"), [("iperf3", "iperf3"), ("wireguard-go", "wireguard-go")])
def test_missing_tool_names_the_debian_package(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tool: str, package: str
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real_which = benchtunnel.shutil.which
    monkeypatch.setattr(benchtunnel.shutil, "which", lambda name: None if name == tool else real_which(name))
    code, out, err = _run(capsys, "bench", "tunnel")
    assert (code, out) == (2, "")
    assert err == f"natkit: error: `natkit bench tunnel` needs {tool}: install the Debian package {package}\n"


@pytest.mark.parametrize("args", [("--repeat", "0"), ("--seconds", "0")])
def test_bad_numbers_are_usage_errors(capsys: pytest.CaptureFixture[str], args: tuple[str, str]) -> None:
    code, out, err = _run(capsys, "bench", "tunnel", *args)
    assert (
        (code, out) == (2, "") and err.startswith("natkit: error: --seconds must be positive") and err.count("\n") == 1
    )


# --- parsing and formatting -----------------------------------------------------------------------


def test_iperf_json_receiver_figure_and_errors() -> None:
    good = json.dumps({"end": {"sum_sent": {"bits_per_second": 2e8}, "sum_received": {"bits_per_second": 1.5e8}}})
    assert benchtunnel._iperf_bits_per_second(good, "natkit") == 1.5e8
    with pytest.raises(BenchError, match="unable to connect"):
        benchtunnel._iperf_bits_per_second(json.dumps({"start": {}, "error": "unable to connect"}), "natkit")
    with pytest.raises(BenchError, match=r"no end\.sum_received"):
        benchtunnel._iperf_bits_per_second(json.dumps({"end": {}}), "natkit")
    with pytest.raises(BenchError, match="printed no JSON"):
        benchtunnel._iperf_bits_per_second("iperf3: error", "natkit")


def test_format_report() -> None:
    side = {"cpu_percent": {"a": 51.2, "b": 67.0}, "peak_memory_kib": {"a": 27340, "b": 27400}}
    report = {
        "seconds": 10.0,
        "repeat": 3,
        "natkit": {**side, "runs_bits_per_second": [2.1e8, 1.8e8, 2.5e8], "median_bits_per_second": 2.1e8},
        "wireguard-go": {**side, "runs_bits_per_second": [7e8, 7.1e8, 8.9e8], "median_bits_per_second": 7.1e8},
        "ratio": 2.1e8 / 7.1e8,
        "goal": 0.5,
    }
    lines = format_report(report).splitlines()
    assert lines[1].split() == ["natkit", "<->", "natkit", "210.0", "Mbit/s", "(runs:", "210.0,", "180.0,", "250.0)"]
    assert "CPU a 51%, b 67%; peak memory a 26.7 MiB, b 26.8 MiB" in lines[2]
    assert lines[3].split()[3:5] == ["710.0", "Mbit/s"]
    assert lines[-1] == f"{'ratio natkit / wireguard-go':<30}     0.296x   (goal: at least 0.5x: not met)"
