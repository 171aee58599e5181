"""`discover_nat` and the `natkit stun` / `natkit nat-type` commands against coturn's RFC 5780 mode.

On loopback there is no NAT: coturn listens on 127.0.0.1 and 127.0.0.2 (two ports each), so the
verdict must be "no NAT", endpoint-independent mapping and filtering, hairpinning yes.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.coturn import Coturn, start_coturn
from tests.support import ROOT, free_udp_port
from toolkit.sansio.natreport import Behavior
from toolkit.services.stunclient import discover_nat
from toolkit.timing import Timing
from toolkit.types import Endpoint

FAST = Timing(stun_rto=0.05, stun_rc=3, stun_rm=4)
FAST_ARGS = ("--rto", "0.05", "--rc", "3", "--rm", "4")


@pytest.fixture(scope="module")
def coturn5780(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Coturn]:
    yield from start_coturn(tmp_path_factory.mktemp("coturn5780"), ("127.0.0.1", "127.0.0.2"))


def _ep(server: Coturn) -> Endpoint:
    return Endpoint.parse(f"127.0.0.1:{server.port}")


def natkit(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "toolkit", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False)


def test_discover_on_loopback_finds_no_nat(coturn5780: Coturn) -> None:
    report = asyncio.run(discover_nat(_ep(coturn5780), hairpin=True, timing=FAST))
    assert report.behind_nat is False and report.mapped == report.local
    assert report.mapping is Behavior.ENDPOINT_INDEPENDENT and report.filtering is Behavior.ENDPOINT_INDEPENDENT
    assert report.hairpinning is True and report.notes == ()
    assert report.other_address == Endpoint.parse(f"127.0.0.2:{coturn5780.alt_port}")
    assert [e.test for e in report.tests] == ["mapping test I", "filtering test II", "hairpinning"]
    f2 = report.tests[1]
    assert f2.source == report.other_address and f2.response_origin == report.other_address
    assert f2.local is not None and f2.local != report.local  # a fresh socket for the filtering tests


def test_discover_lifetime_on_loopback_outlives_the_ladder(coturn5780: Coturn) -> None:
    report = asyncio.run(
        discover_nat(_ep(coturn5780), lifetime=True, max_lifetime=0.6, lifetime_start=0.2, timing=FAST)
    )
    assert report.lifetime_tested and report.lifetime_max is None
    assert report.lifetime_min is not None and 0.6 <= report.lifetime_min < 0.8  # the real idle time of the last probe
    probes = [e for e in report.tests if e.test.startswith("lifetime probe")]
    assert probes and all(e.outcome == "answered" and e.received_on != "lifetime-probe" for e in probes)
    for probe in probes:
        binding = probe.received_on
        assert binding is not None
        opened = next(e for e in report.tests if e.socket == binding)
        assert probe.attributes == (f"RESPONSE-PORT {opened.mapped.port if opened.mapped else 0}",)


def test_cli_stun_text_and_json(coturn5780: Coturn) -> None:
    server = f"127.0.0.1:{coturn5780.port}"
    p = natkit("stun", server, "--count", "2", "--interval", "0.05")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    local = re.fullmatch(rf"STUN {re.escape(server)} from (127\.0\.0\.1:\d+)", lines[0])
    assert local is not None
    assert lines[1].startswith(f"query 1: mapped {local[1]}  rtt ") and "no NAT" in lines[1]
    assert lines[2].startswith(f"query 2: mapped {local[1]}  rtt ")
    assert lines[3].startswith("2 queries, 2 answered, rtt min/avg/max ")
    p = natkit("stun", f"localhost:{coturn5780.port}", "--format", "json", "--local", "127.0.0.1")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    [q] = data["queries"]
    assert q["mapped"] == data["local"] and q["software"].startswith("Coturn") and q["rtt_ms"] > 0
    assert q["other_address"] == f"127.0.0.2:{coturn5780.alt_port}"


def test_cli_nat_type_text(coturn5780: Coturn) -> None:
    p = natkit("nat-type", f"127.0.0.1:{coturn5780.port}", "--hairpin", *FAST_ARGS)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "verdict: no NAT: mapping endpoint-independent, filtering endpoint-independent, hairpinning yes" in out
    assert f"other address    127.0.0.2:{coturn5780.alt_port}" in out
    assert re.search(r"mapping test I +sent from mapping 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+\n", out)
    assert "CHANGE-REQUEST change IP and port" in out
    assert f"-> answer on filtering from 127.0.0.2:{coturn5780.alt_port}: mapped 127.0.0.1:" in out
    assert "socket 'mapping' received it: the NAT hairpins" in out
    assert "classic name     open internet" in out


def test_cli_nat_type_json(coturn5780: Coturn) -> None:
    p = natkit("nat-type", f"127.0.0.1:{coturn5780.port}", "--format", "json", *FAST_ARGS)
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    assert data["behind_nat"] is False and data["udp_blocked"] is False
    assert (data["mapping"], data["filtering"]) == ("endpoint-independent", "endpoint-independent")
    assert data["hairpinning"] is None and data["lifetime"] is None
    assert [t["test"] for t in data["tests"]] == ["mapping test I", "filtering test II"]
    assert data["path"][-1] == ["filtering test II", "answered from the address asked for", "done"]


@pytest.fixture
def free_port() -> int:
    return free_udp_port("127.0.0.1")


def test_cli_server_that_does_not_answer(free_port: int) -> None:
    p = natkit("stun", f"127.0.0.1:{free_port}", "--rto", "0.02", "--rc", "2", "--rm", "2")
    assert p.returncode == 1
    assert (
        p.stderr.strip().splitlines()[-1]
        == f"natkit: error: no answer from 127.0.0.1:{free_port}: 2 requests in 0.06 s"
    )
    p = natkit("nat-type", f"127.0.0.1:{free_port}", "--rto", "0.02", "--rc", "2", "--rm", "2")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.strip() == (
        f"natkit: error: no answer from 127.0.0.1:{free_port} after 2 requests: "
        "UDP is blocked, or no STUN server listens there"
    )
    p = natkit("nat-type", f"127.0.0.1:{free_port}", "--format", "json", "--rto", "0.02", "--rc", "1", "--rm", "1")
    assert p.returncode == 1 and json.loads(p.stdout)["udp_blocked"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stun", "127.0.0.1:70000"], "the port must be a number in 1..65535"),
        (["stun", "no-such-host.invalid"], "cannot resolve 'no-such-host.invalid'"),
        (["stun", "127.0.0.1", "--count", "0"], "--count 0: give at least 1"),
        (["stun", "127.0.0.1", "--local", "nonsense"], "--local 'nonsense': give an IP address or IP:PORT"),
        (["stun", "127.0.0.1", "--local", "192.0.2.254"], "cannot bind a UDP socket to 192.0.2.254:0"),
        (["stun", "127.0.0.1", "--rto", "0"], "--rto 0.0: give a positive number of seconds"),
        (["nat-type", "127.0.0.1", "--rc", "0"], "--rc 0: give a whole number of at least 1"),
        (["nat-type", "127.0.0.1", "--max-lifetime", "5"], "--max-lifetime only makes sense with --lifetime"),
        (["nat-type", "127.0.0.1", "--lifetime", "--max-lifetime", "-1"], "--max-lifetime -1.0: give a positive"),
        (["nat-type", "[::1"], "write an IPv6 server as [2001:db8::1]:3478"),
        (["nat-type"], "the following arguments are required: HOST[:PORT]"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    p = natkit(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    [line] = p.stderr.strip().splitlines()
    assert line.startswith("natkit: error: ") and message in line
