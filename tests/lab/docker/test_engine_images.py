"""The engine natkit starts and the images it builds offline (toolkit/lab/docker/engine.py, images.py)."""

from __future__ import annotations

import subprocess

from toolkit.lab.docker import engine
from toolkit.lab.docker.engine import Engine
from toolkit.lab.docker.images import Images, ensure_images


def test_dockerd_flags_leave_the_root_namespace_firewall_alone() -> None:
    argv = engine.dockerd_argv()
    for flag in ("--iptables=false", "--ip-masq=false", "--ip-forward=false", "--bridge=none"):
        assert flag in argv
    assert any(a.startswith("--host=unix:///run/natkit/docker/") for a in argv)


def test_engine_answers_and_adds_no_docker_rules_to_the_root_namespace(docker_engine: Engine) -> None:
    assert engine.probe(docker_engine.host, docker_engine.cli) == docker_engine.version
    if docker_engine.host == engine.natkit_socket():
        ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
        assert "DOCKER" not in ruleset  # --iptables=false: no DOCKER chains, FORWARD policy untouched


def test_offline_images_run_natkit_and_the_router_tools(docker_engine: Engine, docker_images: Images) -> None:
    assert docker_images.base == "natkit/base:bookworm"
    out = docker_engine.docker(
        "run", "--rm", "--network", "none", docker_images.router,
        "sh", "-c", "natkit --version && nft --version && conntrack --version && ip -V",
    ).stdout  # fmt: skip
    assert "natkit" in out and "nftables" in out and "conntrack" in out and "iproute2" in out
    again = ensure_images(docker_engine, offline=True)  # same sources: cached, nothing rebuilt
    assert again.node == docker_images.node or again.seconds["node"] > 0
