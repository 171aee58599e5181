"""NetnsLab: lifecycle, services, commands, captures, logs, isolation, speed, and cleanup after crashes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.lab.netns.netnslab import STUN, nat_lab, nat_type, new_lab, require_netns, run, unique_prefix
from tests.support import ROOT, wait_until
from toolkit.codec import pcapio
from toolkit.errors import UsageError
from toolkit.lab.netns import NetnsLab, plumbing
from toolkit.lab.netns.state import StateDir
from toolkit.lab.registry import load_topology
from toolkit.lab.topology import ServiceSpec, Topology


def _gone(lab: NetnsLab, pids: list[int]) -> None:
    """Nothing of ``lab`` is left: namespaces, processes, state directory."""
    assert plumbing.existing_namespaces(lab.name_prefix) == []
    assert not lab.dir.path.exists()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rfind(")") + 2 :].split()[0]


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def test_easy_easy_scenario_up_use_down() -> None:
    topo = load_topology("easy-easy")
    lab = new_lab(topo)
    before = _root_links()

    async def body() -> list[int]:
        async with lab:
            assert {s.spec.kind for s in lab.services} == {"stun-server", "derp-server", "control-server"}
            stun = next(s for s in lab.services if s.spec.kind == "stun-server")
            assert "udp 198.51.100.10:3478" in stun.listening and "udp 198.51.100.11:3479" in stun.listening
            assert any("listening on" in line for line in stun.logs())
            # nothing in the root namespace: every interface lives in a lab namespace
            names = [h.name for h in topo.hosts] + [r.name for r in topo.routers] + [s.name for s in topo.segments]
            created = {"eth0", "wan", "lan", *names}
            assert not (_root_links() - before) & created
            status = lab.status()
            assert status.up and {e.name for e in status.elements if e.up} == {e.name for e in lab._elements()}
            r1 = next(e for e in status.elements if e.name == "r1")
            assert "203.0.113.1/24 wan" in r1.addresses and "192.168.1.1/24 lan" in r1.addresses
            assert "lab " in status.format() and "stun-server pid" in status.format()
            # alice reaches the internet through r1 (masqueraded), but not bob's private address
            ok = await lab.run("alice", ["ping", "-c1", "-W1", STUN])
            assert ok.ok, ok.stdout + ok.stderr
            assert not (await lab.run("alice", ["ping", "-c1", "-W1", "192.168.2.10"])).ok
            derp = await lab.run("alice", [sys.executable, "-c", _HTTP_GET.format(url="http://198.51.100.20:3340/")])
            assert derp.ok, derp.stderr
            ruleset = await lab.run("r1", ["nft", "list", "ruleset"])
            assert "masquerade" in ruleset.stdout
            with pytest.raises(UsageError, match="no host or router 'nobody'"):
                await lab.run("nobody", ["true"])
            return [s.pid for s in lab.services]

    pids = run(body())
    _gone(lab, pids)


_HTTP_GET = "import urllib.request, urllib.error\ntry: urllib.request.urlopen('{url}', timeout=3)\nexcept urllib.error.HTTPError: pass"


def test_run_timeout_and_exit_status() -> None:
    lab = new_lab(nat_lab("easy"))

    async def body() -> None:
        async with lab:
            r = await lab.run("h1", ["sh", "-c", "echo out; echo err >&2; exit 3"])
            assert (r.exit, r.stdout, r.stderr) == (3, "out\n", "err\n")
            started = time.monotonic()
            with pytest.raises(Exception, match=r"did not finish within 0\.3 s"):
                await lab.run("h1", ["sleep", "10"], timeout=0.3)
            assert time.monotonic() - started < 3

    run(body())


def test_capture_yields_ip_packets_and_writes_pcap(tmp_path: Path) -> None:
    lab = new_lab(nat_lab("easy"))

    async def body() -> None:
        async with lab:
            wan = await lab.open_capture("r1", "wan")
            eth = await lab.open_capture("h1", "eth0")
            port = await lab.open_capture("lan1", "h1")  # the switch port of h1 on its LAN's bridge
            await nat_type(lab, "h1")
            await asyncio.sleep(0.2)
            await wan.aclose()
            seen = [p async for p in wan]  # everything queued, then the end
            assert seen and all(p.data[0] >> 4 in (4, 6) for p in seen)
            out = tmp_path / "wan.pcap"
            assert wan.write_pcap(out) == len(wan.packets)
            udp = [t for t in pcapio.udp_payloads(out)]
            public = bytes([203, 0, 113, 1])
            assert any(t.src_ip == public and t.dst_port == 3478 for t in udp)  # the masqueraded source
            assert not any(t.src_ip == bytes([192, 168, 1, 10]) for t in udp)  # never the private one
            await asyncio.sleep(0)
            private = [pcapio.transport(pcapio.Record(p.timestamp, pcapio.LINKTYPE_RAW, p.data)) for p in eth.packets]
            assert any(t is not None and t.src_ip == bytes([192, 168, 1, 10]) for t in private)
            assert len(port.packets) >= len([t for t in private if t is not None])
            with pytest.raises(UsageError, match="no interface 'eth9'"):
                await lab.open_capture("h1", "eth9")
            with pytest.raises(UsageError, match="segment 'lan1' has no interface"):
                await lab.open_capture("lan1", "eth0")
        assert eth.closed and port.closed  # down() ends the captures still open

    run(body())


def test_logs_stream_a_hosts_service_output() -> None:
    lab = new_lab(nat_lab("easy"))

    async def body() -> None:
        async with lab:
            stream = lab.logs("stun1").__aiter__()
            first = await asyncio.wait_for(stream.__anext__(), 5)
            assert first.startswith("natkit stun-server: listening on ")
            extra = await lab.start_service("peer", ServiceSpec("stun-server", ("--listen", "198.51.100.12:3478")))
            assert extra.listening[:2] == ("udp 198.51.100.12:3478", "tcp 198.51.100.12:3478")
            line = await asyncio.wait_for(lab.logs("peer").__anext__(), 5)
            assert "listening on udp 198.51.100.12:3478" in line
            await extra.stop()
            assert extra not in lab.services and extra.record.pid not in [p.pid for p in lab.state.processes]  # type: ignore[union-attr]
            assert wait_until(lambda: not extra.record.alive(), 5)
            assert "stopped after" in extra.logs()[-1]

    run(body())


def test_two_labs_side_by_side_do_not_interfere() -> None:
    topo = nat_lab("easy", "hard")
    one, two = new_lab(topo), new_lab(topo)

    async def body() -> None:
        async with one, two:
            assert set(one.namespaces()).isdisjoint(two.namespaces())
            a, b = await asyncio.gather(nat_type(one, "h1"), nat_type(two, "h2"))
            assert (a["mapping"], b["mapping"]) == ("endpoint-independent", "address-and-port-dependent")
            assert a["mapped"].startswith("203.0.113.1:") and b["mapped"].startswith("203.0.113.2:")
            await one.down()
            assert plumbing.existing_namespaces(one.name_prefix) == []
            assert all(e.up for e in two.status().elements)  # the other lab is untouched
            assert (await nat_type(two, "h1"))["filtering"] == "address-and-port-dependent"

    run(body())
    assert plumbing.existing_namespaces(two.name_prefix) == []


def test_up_and_down_are_idempotent_and_down_works_from_a_fresh_object() -> None:
    topo = nat_lab("easy")
    lab = new_lab(topo)
    run(lab.up())
    try:
        run(lab.up())  # nothing happens
        pids = [s.pid for s in lab.services]
        adopted = NetnsLab(topo, name_prefix=lab.name_prefix)
        run(adopted.up())  # another object of the same lab adopts it instead of failing
        assert adopted.status().up
        run(adopted.down())  # another object (as `natkit lab down` in another shell) removes it all
        _gone(lab, pids)
    finally:
        run(lab.down())
    run(lab.down())


def test_ipv6_is_routed_and_filtered_by_the_nat_router() -> None:
    from toolkit.lab.scenario import TopologyBuilder

    t = TopologyBuilder("six")
    home = t.lan("home1")
    t.nat_router("r1", lan=home, nat="easy")
    t.host("alice", home, v6=True)
    t.host("server", t.internet, v6=True)
    topo = t.build()
    lab = new_lab(topo)

    async def body() -> None:
        async with lab:
            alice, server = str(topo.host("alice").v6), str(topo.host("server").v6)
            assert (await lab.run("alice", ["ping", "-6", "-c1", "-W2", server])).ok  # out, and the answer back
            assert not (await lab.run("server", ["ping", "-6", "-c1", "-W1", alice])).ok  # unsolicited: dropped

    run(body())


_CHILD = """
import asyncio, sys
sys.path.insert(0, {root!r})
from toolkit.lab.netns import NetnsLab
from toolkit.lab.topology import Topology
lab = NetnsLab(Topology.from_dict({topo!r}), name_prefix={prefix!r})
async def main():
    {body}
asyncio.run(main())
"""


def _child(topo: Topology, prefix: str, body: str) -> subprocess.Popen[str]:
    code = _CHILD.format(root=str(ROOT), topo=topo.to_dict(), prefix=prefix, body=textwrap.indent(body, "    ").strip())
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _await_up(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "up", f"child said {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_nothing_survives_a_crash_or_ctrl_c(how: str) -> None:
    """SIGKILL: `down` from another process cleans up. SIGINT (Ctrl-C): the lab takes itself down."""
    require_netns()
    topo, prefix = nat_lab("easy", "hard"), unique_prefix()
    body = "async with lab:\n    print('up', flush=True)\n    await asyncio.sleep(60)"
    proc = _child(topo, prefix, body)
    try:
        _await_up(proc)
        state = StateDir(prefix, NetnsLab(topo, name_prefix=prefix).dir.path.parent).load()
        assert state is not None and state.status == "up" and len(state.namespaces) == 9
        pids = [p.pid for p in state.processes]
        assert pids and all(Path(f"/proc/{pid}").exists() for pid in pids)
        # a stray process started by hand in a lab namespace: `down` must end it too
        stray = subprocess.Popen(["ip", "netns", "exec", state.namespaces[-1], "sleep", "60"])
        # only once it really runs inside the namespace (ip netns exec enters it after the fork)
        assert wait_until(lambda: str(stray.pid) in _ns_pids(state.namespaces[-1]), 10)
        if how == "sigkill":
            proc.kill()
            proc.wait(10)
            assert plumbing.existing_namespaces(prefix)  # the crash left everything behind ...
            lab = NetnsLab(topo, name_prefix=prefix)
            run(lab.down())  # ... and down from here removes it
        else:
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            assert "KeyboardInterrupt" in err, err  # Ctrl-C went through `async with lab` (down ran) ...
            lab = NetnsLab(topo, name_prefix=prefix)
        assert stray.wait(10) is not None
        _gone(lab, [*pids, stray.pid])  # ... and left nothing
    finally:
        if proc.poll() is None:
            proc.kill()
        run(NetnsLab(topo, name_prefix=prefix).down())


def test_down_sweeps_namespaces_without_a_state_file() -> None:
    require_netns()
    topo, prefix = nat_lab("easy"), unique_prefix()
    lab = NetnsLab(topo, name_prefix=prefix)
    run(lab.up())
    try:
        lab.dir.remove()  # lost (or never written): the nk-PREFIX- names still find everything
        subprocess.run(["ip", "netns", "add", f"nk-{prefix}-leftover"], check=True)
        run(NetnsLab(topo, name_prefix=prefix).down())
        assert plumbing.existing_namespaces(prefix) == []
    finally:
        run(lab.down())


def test_up_time_of_a_two_nat_lab() -> None:
    """Median of 5 up/down cycles of easy-easy: network alone, with its three services, and down."""
    topo = load_topology("easy-easy")
    samples: dict[str, list[float]] = {"network": [], "total": [], "down": []}
    for _ in range(5):
        lab = new_lab(topo)
        started = time.perf_counter()
        try:
            run(lab.up())
            samples["total"].append(time.perf_counter() - started)
            samples["network"].append(lab.timings["network"])
        finally:
            run(lab.down())
        samples["down"].append(lab.timings["down"])
    medians = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    print(f"netns easy-easy medians (s): {json.dumps(medians)}")
    assert medians["network"] < 0.5, medians
    assert medians["total"] < 2.0 and medians["down"] < 2.0, medians


def test_status_of_a_lab_that_is_not_up() -> None:
    lab = new_lab(nat_lab("easy"))
    status = lab.status()
    assert not status.up and not any(e.up for e in status.elements)
    with pytest.raises(UsageError, match="not up"):
        run(lab.start_service("stun1", ServiceSpec("stun-server")))
    assert os.geteuid() == 0


def test_nested_prefixes_do_not_touch_each_other() -> None:
    """Lab ``P-c`` owns ``nk-P-c-stun1``; lab ``P`` with a host ``c-stun1`` would need the same name."""
    from toolkit.lab.scenario import TopologyBuilder

    require_netns()
    base = unique_prefix()
    inner = NetnsLab(nat_lab("easy"), name_prefix=f"{base}-c")
    t = TopologyBuilder("outer")
    t.host("c-stun1", t.internet)
    outer = NetnsLab(t.build(), name_prefix=base)
    run(inner.up())
    try:
        with pytest.raises(UsageError, match=f"nk-{base}-c-stun1 already exists"):
            run(outer.__aenter__())  # fails, then takes down what it made: none of inner's namespaces
        assert sorted(plumbing.existing_namespaces(f"{base}-c")) == sorted(inner.namespaces())
        run(outer.down())  # the nk-BASE- sweep skips what inner's state file lists
        assert sorted(plumbing.existing_namespaces(base)) == sorted(inner.namespaces())
        assert inner.status().up
    finally:
        run(inner.down())
        run(outer.down())
    assert plumbing.existing_namespaces(base) == []


def test_cli_lab_outlives_up_and_down_removes_it() -> None:
    """`natkit lab up --backend netns` returns with the lab running; `natkit lab down` in another process ends it."""
    require_netns()
    name = unique_prefix()

    def natkit(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "toolkit", "lab", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)

    up = natkit("up", "easy-easy", "--backend", "netns", "--name", name)
    lab = NetnsLab(load_topology("easy-easy"), name_prefix=name)
    try:
        assert up.returncode == 0, up.stderr
        assert f"lab {name} (netns): up" in up.stdout
        state = lab.dir.load()
        assert state is not None and all(p.alive() for p in state.processes) and len(state.processes) == 3
        report = run(nat_type(lab, "alice"))  # the services of the exited `up` still answer
        assert report["tailscale"] == "easy"
        assert "stun-server pid" in natkit("status", name).stdout
        down = natkit("down", name)
        assert down.returncode == 0, down.stderr
        _gone(lab, [p.pid for p in state.processes])
    finally:
        run(lab.down())


def _ns_pids(ns: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False).stdout
    return out.split()
