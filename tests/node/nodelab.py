"""Two real ``natkit node`` processes in a netns lab (easy-easy: two homes behind nftables NAT, with the
lab's STUN, DERP and control servers running): the fixture the ``test_node_*`` tests share."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.netns.netnslab import new_lab
from tests.support import ROOT, NatkitService, wait_until
from toolkit.lab.labservices import LAB_AUTHKEY, control_url
from toolkit.lab.netns import NetnsLab
from toolkit.lab.registry import load_topology


@dataclass
class Node:
    name: str
    service: NatkitService
    api: Path
    trace: Path
    state_dir: Path
    keys: Path  # --keys-out


ALICE_PUBLIC = "203.0.113.1"  # r1's WAN address: alice's side of the internet
BLOCK_TABLE = "nodetest_block"


@dataclass
class NodeLab:
    lab: NetnsLab
    nodes: dict[str, Node] = field(default_factory=dict)
    blocked: bool = False

    def block_direct(self) -> None:
        """r2 drops UDP between bob and alice's public address: STUN and DERP still work, hole punching does not."""
        rules = (
            f"table inet {BLOCK_TABLE} {{\n chain forward {{\n  type filter hook forward priority -10\n"
            f"  ip saddr {ALICE_PUBLIC} meta l4proto udp drop\n  ip daddr {ALICE_PUBLIC} meta l4proto udp drop\n }}\n}}\n"
        )
        done = self.run_in("r2", "nft", "-f", "-", input_text=rules)
        assert done.returncode == 0, done.stderr
        self.blocked = True

    def unblock_direct(self) -> None:
        if self.blocked:
            done = self.run_in("r2", "nft", "delete", "table", "inet", BLOCK_TABLE)
            assert done.returncode == 0, done.stderr
            self.blocked = False

    def natkit(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``natkit ARGS`` in the root namespace (the API sockets are files: reachable from any namespace)."""
        argv = [sys.executable, "-m", "toolkit", *args]
        return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False)

    def run_in(
        self, host: str, *argv: str, timeout: float = 30, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["ip", "netns", "exec", self.lab.netns(host), *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, input=input_text)

    def status(self, name: str) -> str:
        return self.natkit("status", "--api", str(self.nodes[name].api)).stdout


def start_node(lab: NetnsLab, name: str, tmp: Path, *extra: str) -> Node:
    url = control_url(lab.topology)
    assert url is not None
    api, trace, state = tmp / f"{name}.sock", tmp / f"{name}.trace.jsonl", tmp / f"state-{name}"
    keys = tmp / f"{name}.keys.jsonl"
    args = ["node", "--name", name, "--control", url, "--authkey", LAB_AUTHKEY, "--api", str(api)]
    args += ["--trace", str(trace), "--state-dir", str(state), "--keys-out", str(keys), *extra]
    service = NatkitService(args, lab.netns(name), timeout=40)
    return Node(name, service, api, trace, state, keys)


def node_lab(tmp: Path, scenario: str = "easy-easy", *, blocked: bool = False) -> Iterator[NodeLab]:
    """The lab with alice and bob running; everything stopped and deleted afterwards, also on failure.

    ``blocked``: the nodes start while r2 blocks the direct path (:meth:`NodeLab.block_direct`)."""
    lab = new_lab(load_topology(scenario))
    asyncio.run(lab.up())
    out = NodeLab(lab)
    try:
        if blocked:
            out.block_direct()
        for name in ("alice", "bob"):
            out.nodes[name] = start_node(lab, name, tmp)
        yield out
    finally:
        for node in out.nodes.values():
            node.service.stop()
        asyncio.run(lab.down())


def peer_line(text: str, peer: str) -> str:
    return next((line for line in text.splitlines() if f" {peer} " in line), "")


def wait_direct(nl: NodeLab, name: str, peer: str, timeout: float = 30) -> bool:
    return wait_until(lambda: "DirectActive" in peer_line(nl.status(name), peer), timeout, interval=0.3)
