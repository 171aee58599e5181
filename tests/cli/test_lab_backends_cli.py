"""`natkit lab up|status|down` from the shell on the real netns and docker backends: `up` in one process,
`status` and `down` in others, the services still answering in between, and nothing left afterwards."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.support import require_root, require_tool
from toolkit.lab import benchlab, registry

UP_TIMEOUT = 300.0  # docker: may build the images first (cached per source tree)


def natkit(*argv: str, timeout: float = 60.0, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m toolkit ARGV` as its own process (a separate "shell")."""
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *argv],
        capture_output=True, text=True, timeout=timeout, check=False, env={**os.environ, **env},
    )  # fmt: skip


@pytest.fixture
def lab_name() -> Iterator[str]:
    name = f"c{uuid.uuid4().hex[:10]}"
    yield name
    if name in registry.list_states():  # a failed test: take the lab down anyway
        natkit("lab", "down", name, timeout=120)


def _reachable_from_this_process(name: str) -> list[str]:
    """The bench's probe (STUN through each NAT, TCP to DERP and control) on the lab attached by name."""
    return asyncio.run(benchlab.probe(registry.attach(name)))


def test_netns_lab_up_status_down_from_separate_processes(lab_name: str) -> None:
    require_root()
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")
    from toolkit.lab.netns import plumbing

    up = natkit("lab", "up", "easy-easy", "--backend", "netns", "--name", lab_name)
    assert up.returncode == 0, up.stderr
    assert f"lab {lab_name} (netns): up" in up.stdout and f"`natkit lab down {lab_name}`" in up.stdout
    assert len(plumbing.existing_namespaces(lab_name)) == 10  # 7 hosts and routers, 3 segment switches

    status = natkit("lab", "status", lab_name)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"lab {lab_name} (netns): up\n")
    assert "stun-server pid " in status.stdout and "  up   router r1 " in status.stdout
    lines = _reachable_from_this_process(lab_name)  # the services outlived the `up` process
    assert any(x.startswith("alice -> stun 198.51.100.10:3478: mapped 203.0.113.1:") for x in lines)
    assert "bob -> tcp 198.51.100.30:8081: connected" in lines

    down = natkit("lab", "down", lab_name)
    assert (down.returncode, down.stdout) == (0, f"natkit lab: {lab_name} down\n"), down.stderr
    assert plumbing.existing_namespaces(lab_name) == []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert f"nk-{lab_name}-" not in listed
    assert lab_name not in registry.list_states() and not registry.state_dir(lab_name).exists()
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"/run/natkit/labs/{lab_name}/" not in procs  # the control server's --db lived there
    again = natkit("lab", "status", lab_name)
    assert again.returncode == 2 and f"no lab named {lab_name!r} is up" in again.stderr


def test_docker_lab_up_status_down_from_separate_processes(lab_name: str) -> None:
    require_root()
    for tool in ("docker", "dockerd", "debootstrap"):
        require_tool(tool, "docker.io" if tool.startswith("docker") else tool)
    from toolkit.lab.docker import engine as engine_mod
    from toolkit.lab.docker.compose import LABEL_LAB

    up = natkit("lab", "up", "easy-easy", "--backend", "docker", "--name", lab_name, timeout=UP_TIMEOUT,
                NATKIT_DOCKER_OFFLINE="1")  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert "images offline (NATKIT_DOCKER_OFFLINE=1)" in up.stdout
    assert f"lab {lab_name} (docker): up" in up.stdout
    engine = engine_mod.find_engine()
    assert engine is not None
    label = f"label={LABEL_LAB}={lab_name}"
    assert len(engine.docker("ps", "-q", "--filter", label).stdout.split()) == 7

    status = natkit("lab", "status", lab_name)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"lab {lab_name} (docker): up\n") and "  up   host   bob " in status.stdout
    assert "stun-server running: --listen 198.51.100.10:3478" in status.stdout  # found from this other process
    assert "NOT running" not in status.stdout
    lines = _reachable_from_this_process(lab_name)  # services started by `docker exec` outlived `natkit lab up`
    assert any(x.startswith("bob -> stun 198.51.100.11:3479: mapped 203.0.113.2:") for x in lines)
    assert "alice -> tcp 198.51.100.20:3340: connected" in lines

    down = natkit("lab", "down", lab_name, timeout=120)
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith(f"natkit lab: {lab_name} down\n")
    assert lab_name not in registry.list_states()
    engine = engine_mod.find_engine()
    if engine is not None:  # still running: it was there before, or other labs use it
        assert engine.docker("ps", "-aq", "--filter", label).stdout.split() == []
        assert engine.docker("network", "ls", "-q", "--filter", label).stdout.split() == []
    else:  # `up` started dockerd and `down` stopped it once no lab container was left
        assert "stopped the Docker engine" in down.stdout


# a netns lab opened from Python (as a notebook does), its process killed before `await lab.down()`
ORPHAN = """
import asyncio, os, sys
from toolkit.lab.registry import load_topology, open_lab
async def main():
    lab = open_lab(load_topology("easy-easy"), "netns", name_prefix=sys.argv[1])
    await lab.up()
    print("up", flush=True)
    os.kill(os.getpid(), 9)
asyncio.run(main())
"""


def test_netns_lab_left_by_a_killed_python_process_goes_down_by_name(lab_name: str) -> None:
    require_root()
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")
    from toolkit.lab.netns import plumbing

    killed = subprocess.run([sys.executable, "-c", ORPHAN, lab_name], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9 and killed.stdout == "up\n", killed.stderr
    assert lab_name in registry.list_states()
    status = natkit("lab", "status", lab_name)
    assert status.returncode == 0 and status.stdout.startswith(f"lab {lab_name} (netns): up\n"), status.stderr
    down = natkit("lab", "down", lab_name, timeout=120)
    assert down.returncode == 0 and down.stdout.strip() == f"natkit lab: {lab_name} down", down.stderr
    assert plumbing.existing_namespaces(lab_name) == []
    assert lab_name not in registry.list_states() and not registry.state_dir(lab_name).exists()
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert f"/run/natkit/labs/{lab_name}/" not in procs  # the services the killed process started are gone too
    gone = natkit("lab", "down", lab_name)
    assert gone.returncode == 2 and gone.stderr.count("\n") == 1 and f"no lab named {lab_name!r}" in gone.stderr
