"""Host sockets and DERP clients (toolkit/lab/hostio.py) on the netns backend: the host agent in namespaces.

The same checks as tests/lab/test_hostio.py on sim, through one ``python -m toolkit.lab.hostagent`` per host
(``ip netns exec``); the agents are gone after ``down()`` although the test never closes them, a malformed
command does not kill an agent, and ``lab.run(host, ["natkit", ...])`` runs this venv's natkit.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.lab.netns.netnslab import require_netns, unique_prefix
from tests.lab.test_hostio import STUN, check_bind_and_timeout, check_derp, check_stun
from toolkit.lab import hostagentio
from toolkit.lab.netns import NetnsLab
from toolkit.lab.netns.state import process_start_time
from toolkit.lab.registry import load_topology

pytestmark = [pytest.mark.root]


def test_sockets_derp_and_cleanup_netns() -> None:
    require_netns()

    async def main() -> None:
        lab = NetnsLab(load_topology("easy-easy"), name_prefix=unique_prefix())
        async with lab:
            await check_stun(lab)
            await check_bind_and_timeout(lab)
            await check_derp(lab)
            agents = hostagentio.agents_of(lab)
            assert set(agents) == {"alice", "bob"}
            starts = {a.proc.pid: process_start_time(a.proc.pid) for a in agents.values()}
            assert all(starts.values())
            recorded = {p.pid for p in (lab.dir.load() or lab.state).processes if p.what == "hostagent"}  # type: ignore[union-attr]
            assert recorded == set(starts)

            # a malformed command is answered with an error; the agent lives on and still works
            alice = agents["alice"]
            assert alice.proc.stdin is not None
            alice.proc.stdin.write(b"this is not json\n" + json.dumps({"op": "udp-send", "id": 999}).encode() + b"\n")
            assert await alice.wait(lambda: len(alice.errors) >= 2, 5.0), alice.errors
            assert alice.errors[-1]["id"] == 999 and alice.proc.returncode is None
            sock = await lab.udp_socket("alice")  # left open: down() must end the agent anyway
            sock.sendto(b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + bytes(12), STUN)
            assert await sock.recv(timeout=5.0) is not None

            result = await lab.run("alice", ["natkit", "--help"])
            assert result.ok and "nat-type" in result.stdout, result.stderr
        assert hostagentio.agents_of(lab) == {}
        assert all(process_start_time(pid) != start for pid, start in starts.items()), "an agent outlived down()"

    asyncio.run(main())
