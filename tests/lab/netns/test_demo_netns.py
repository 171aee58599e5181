"""`natkit demo --backend netns`: the same story as on sim, with real processes, kernel NAT and real time."""

from __future__ import annotations

import subprocess
import sys

from tests.support import require_root
from toolkit.lab.netns import plumbing


def test_demo_on_netns_goes_direct_falls_back_and_returns() -> None:
    require_root()
    res = subprocess.run(
        [sys.executable, "-m", "toolkit", "demo", "--backend", "netns", "--timing-scale", "0.2"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout
    assert out.startswith("natkit demo: easy-easy on netns:")
    for edge in ("CheckDirect -[Behind NAT]-> StartDERP", "AnalyzeResponses -[Yes]-> ValidatePath",
                 "DirectStable -[No]-> FallbackDERP"):  # fmt: skip
        assert edge in out, f"missing {edge!r}"
    assert "pong from bob (100.64.0.2) via 203.0.113.2:41641" in out
    fell = next(line for line in out.splitlines() if line.startswith("fell back to DERP"))
    assert float(fell.split()[4]) <= (6.5 + 5.0) * 0.2 + 1.0  # trust + one ping timeout, scaled, + polling
    assert "direct again" in out and out.rstrip().endswith("lab down")
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert plumbing.ns_name("demo", "") not in leftover  # nk-demo<pid>-*: the demo's lab is gone
