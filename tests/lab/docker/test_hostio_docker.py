"""Host sockets and DERP clients (toolkit/lab/hostio.py) on the docker backend: the host agent in containers.

The same checks as tests/lab/test_hostio.py on sim, through one ``python -m toolkit.lab.hostagent`` per host
under ``docker exec -i``. Closing an agent's stdin ends it inside the container (killing a ``docker exec``
client would not); ``down()`` ends agents the test left open; a malformed command does not kill an agent.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.lab.test_hostio import STUN, check_bind_and_timeout, check_derp, check_stun
from toolkit.lab import hostagentio, hostio
from toolkit.lab.docker import DockerLab
from toolkit.lab.docker.engine import Engine
from toolkit.lab.docker.images import Images
from toolkit.lab.registry import load_topology

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_sockets_derp_and_cleanup_docker(docker_engine: Engine, docker_images: Images) -> None:
    lab = DockerLab(load_topology("easy-easy"), name_prefix=f"h{uuid.uuid4().hex[:8]}", engine=docker_engine,
                    images=docker_images)  # fmt: skip

    async def main() -> None:
        async with lab:
            await check_stun(lab)
            await check_bind_and_timeout(lab)
            await check_derp(lab)
            agents = hostagentio.agents_of(lab)
            assert set(agents) == {"alice", "bob"} and all(a.pid for a in agents.values())

            alice = agents["alice"]
            assert alice.proc.stdin is not None
            alice.proc.stdin.write(b"this is not json\n" + json.dumps({"op": "udp-send", "id": 999}).encode() + b"\n")
            assert await alice.wait(lambda: len(alice.errors) >= 2, 5.0), alice.errors
            assert alice.errors[-1]["id"] == 999 and alice.proc.returncode is None

            await hostio.shutdown(lab)  # stdin closed: the agents end inside their containers
            for host, agent in agents.items():
                assert agent.proc.returncode is not None
                gone = await lab.run(host, ["kill", "-0", str(agent.pid)])
                assert not gone.ok, f"the agent on {host} still runs in its container"

            sock = await lab.udp_socket("alice")  # a new agent, left open: down() must end it
            sock.sendto(b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + bytes(12), STUN)
            assert await sock.recv(timeout=5.0) is not None
            again = hostagentio.agents_of(lab)["alice"]
        assert hostagentio.agents_of(lab) == {} and again.proc.returncode is not None

    asyncio.run(main())
