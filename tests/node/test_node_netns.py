"""Two real ``natkit node`` processes behind nftables NAT (labs/easy-easy.yaml on the netns backend), with
the lab's real STUN, DERP and control servers: ping goes from DERP to direct, status shows it, the TUN
carries ICMP, the trace file holds the flowchart walk, --keys-out the keys, bad CLI input is one line and exit 2."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.node.nodelab import NodeLab, node_lab, peer_line, start_node, wait_direct
from tests.support import ROOT, wait_until
from toolkit.crypto.keys import public_key
from toolkit.node.nodekeys import parse_keys
from toolkit.node.nodetrace import read_trace_file
from toolkit.sansio.peergraph import NoSuchTransition, State, transition_of

PONG = re.compile(r"^pong from bob \(100\.64\.0\.2\) via (DERP\(r1\)|\d+\.\d+\.\d+\.\d+:\d+) in \d+ms$")
BOB_PUBLIC = "203.0.113.2:41641"  # bob's socket as r2's endpoint-independent NAT maps it (port preserved)


@pytest.fixture(scope="module")
def nl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeLab]:
    yield from node_lab(tmp_path_factory.mktemp("nodes"), blocked=True)


def test_ping_goes_from_derp_to_direct(nl: NodeLab) -> None:
    """The nodes started while r2 blocked the direct path: the first pong comes over DERP; once the block
    is lifted, discovery punches the hole and the ping ends on bob's public endpoint."""
    argv = [sys.executable, "-m", "toolkit", "ping", "bob", "--count", "30", "--api", str(nl.nodes["alice"].api)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().rstrip("\n")
        nl.unblock_direct()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [first, *out.splitlines()]
    assert proc.returncode == 0, "\n".join(lines) + err
    assert all(PONG.match(line) for line in lines), lines
    assert "via DERP(r1)" in lines[0], "the first pong comes over the relay: the direct path is blocked"
    assert lines[-1].split(" via ")[1].startswith(f"{BOB_PUBLIC} in "), lines[-1]
    assert all("DERP" in line for line in lines[:-1]), "ping stops at the first direct pong"


def test_status_shows_the_peer_direct(nl: NodeLab) -> None:
    nl.unblock_direct()  # (the ping test lifts it; this test may run alone)
    nl.natkit("ping", "bob", "--count", "30", "--api", str(nl.nodes["alice"].api))  # traffic starts discovery
    assert wait_direct(nl, "alice", "bob"), nl.status("alice")
    line = peer_line(nl.status("alice"), "bob")
    assert line.startswith("100.64.0.2 ") and "DirectActive" in line and BOB_PUBLIC in line, line
    result = nl.natkit("status", "--json", "--api", str(nl.nodes["alice"].api))
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["self"]["name"] == "alice" and status["self"]["tunnel_ips"][0] == "100.64.0.1"
    assert "203.0.113.1:41641" in status["self"]["endpoints"], "alice's STUN-discovered endpoint"
    (bob,) = status["peers"]
    assert bob["name"] == "bob" and bob["state"] == "DirectActive" and bob["endpoint"] == BOB_PUBLIC
    assert bob["path"] == "direct", "bob's endpoint is r2's public address: a direct path, not a LAN one"


def test_icmp_through_the_tun_both_ways(nl: NodeLab) -> None:
    for host, other in (("alice", "100.64.0.2"), ("bob", "100.64.0.1")):
        result = nl.run_in(host, "ping", "-c", "3", "-i", "0.2", "-W", "2", other)
        assert result.returncode == 0 and " 0% packet loss" in result.stdout, result.stdout + result.stderr


def test_trace_file_parses_back_with_the_flowchart_walk(nl: NodeLab) -> None:
    node = nl.nodes["alice"]
    records, bad = read_trace_file(node.trace)
    assert bad == 0 and records
    kinds = {r.kind for r in records}
    assert {"sent", "received", "transition"} <= kinds
    assert all(r.node.startswith("alice") for r in records)
    bob = _key_of(nl, "bob")
    walk: list[State] = []
    for record in records:
        try:
            edge = transition_of(record)
        except NoSuchTransition:
            continue  # DERP, STUN and WireGuard machines trace their own transitions too
        if record.peer is not None and record.peer.hex() == bob:
            assert not walk or walk[-1] is edge.src, f"the walk jumps: {walk[-1]} then {edge}"
            walk += [edge.src] if not walk else []
            walk.append(edge.dst)
    assert walk[:1] == [State.Start] and State.DirectActive in walk, walk


def test_keys_out_holds_the_disco_key_and_each_session(nl: NodeLab) -> None:
    """--keys-out: owner-only, the node line first (its keys match status), then the sessions of the
    handshake the ICMP test made, both directions matching the peer's (protocols.md §8.1)."""
    nl.run_in("alice", "ping", "-c", "1", "-W", "2", "100.64.0.2")  # a handshake (this test may run alone)
    keys = {}
    for name in ("alice", "bob"):
        path = nl.nodes[name].keys
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        first = json.loads(path.read_text().splitlines()[0])
        assert first["kind"] == "node" and first["name"] == name
        parsed = parse_keys(path.read_text())
        assert parsed is not None and public_key(parsed.disco_private) == parsed.disco_public
        keys[name] = parsed
    status = json.loads(nl.natkit("status", "--json", "--api", str(nl.nodes["alice"].api)).stdout)
    assert str(keys["alice"].node_public) == status["self"]["node_key"]
    assert str(keys["bob"].node_public) == next(p["node_key"] for p in status["peers"])
    assert wait_until(lambda: (parse_keys(nl.nodes["bob"].keys.read_text()) or keys["bob"]).sessions, 10)
    alice, bob = keys["alice"], parse_keys(nl.nodes["bob"].keys.read_text())
    assert alice.sessions and bob is not None and bob.sessions
    pairs = [(a, b) for a in alice.sessions for b in bob.sessions if a.local_index == b.remote_index]
    assert pairs, "a session of alice is a session of bob, seen from the other side"
    for a, b in pairs:
        assert a.peer == bob.node_public and b.peer == alice.node_public
        assert a.send_key == b.recv_key and a.recv_key == b.send_key and a.remote_index == b.local_index


def _key_of(nl: NodeLab, name: str) -> str:
    status = json.loads(nl.natkit("status", "--json", "--api", str(nl.nodes["alice"].api)).stdout)
    key = next(p["node_key"] for p in status["peers"] if p["name"] == name)
    return str(key).removeprefix("nodekey:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ping", "nobody"], "unknown peer 'nobody'"),
        (["ping", "bob", "--count", "0"], "--count 0"),
        (["status", "--api", "/nonexistent/node.sock"], "is `natkit node` running?"),
        (["status", "--name", "ghost-node"], "is `natkit node --name ghost-node` running?"),
        (["node", "--control", "ftp://x", "--authkey", "k", "--no-tun"], "--control 'ftp://x'"),
        (["node", "--control", "http://127.0.0.1:1", "--no-tun"], "--authkey"),
    ],
)
def test_bad_cli_input_is_one_line_exit_2(nl: NodeLab, args: list[str], message: str) -> None:
    if args[0] == "ping":
        args = [*args, "--api", str(nl.nodes["alice"].api)]
    result = nl.natkit(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("natkit: error: ") and message in lines[0], result.stderr


def test_stop_saves_state_and_a_restart_keeps_the_key(nl: NodeLab) -> None:
    bob = nl.nodes["bob"]
    key = _key_of(nl, "bob")
    assert bob.service.stop() == 0
    output = bob.service.output()
    assert re.search(r"^natkit node: stopped after [\d.]+ s \(1 peer\(s\), ", output, flags=re.M), output
    assert not bob.api.exists(), "the API socket is removed"
    cache = json.loads((bob.state_dir / "endpoints.json").read_text())
    assert cache, "the endpoint cache is saved"
    restarted = start_node(nl.lab, "bob", bob.state_dir.parent)
    nl.nodes["bob"] = restarted
    assert f"nodekey:{key[:8]}.." in restarted.service.start_line, "the node key survives the restart"
    again = nl.natkit("ping", "bob", "--count", "30", "--api", str(nl.nodes["alice"].api))
    assert again.returncode == 0 and BOB_PUBLIC in again.stdout.splitlines()[-1], again.stdout + again.stderr
