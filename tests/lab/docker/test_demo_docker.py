"""`natkit demo --backend docker`: the node demo in containers (the session's engine answers, so the demo
finds it; its images are the ones the session built)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from toolkit.lab.docker.engine import Engine
from toolkit.lab.docker.images import Images

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_demo_on_docker_goes_direct_falls_back_and_returns(docker_engine: Engine, docker_images: Images) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "toolkit", "demo", "--backend", "docker", "--timing-scale", "0.2"],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, DOCKER_HOST=docker_engine.host, NATKIT_DOCKER_OFFLINE="1"),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    assert "natkit demo: easy-easy on docker:" in out
    for edge in ("CheckDirect -[Behind NAT]-> StartDERP", "AnalyzeResponses -[Yes]-> ValidatePath",
                 "DirectStable -[No]-> FallbackDERP"):  # fmt: skip
        assert edge in out, f"missing {edge!r}"
    assert "pong from bob (100.64.0.2) via 203.0.113.2:41641" in out
    fell = next(line for line in out.splitlines() if line.startswith("fell back to DERP"))
    assert float(fell.split()[4]) <= (6.5 + 5.0) * 0.2 + 2.0  # trust + one ping timeout, scaled, + docker exec polls
    assert "direct again" in out and out.rstrip().endswith("lab down")
    left = subprocess.run(
        ["docker", "-H", docker_engine.host, "ps", "-aq", "--filter", "label=org.natkit.lab"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    assert not [c for c in left.split() if c], "the demo left containers behind"
