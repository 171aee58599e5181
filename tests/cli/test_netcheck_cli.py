"""`natkit netcheck` as a process: Tailscale's text layout (protocols.md §5.3), JSON, a map from a URL, bad maps."""

from __future__ import annotations

import http.server
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.services.test_netcheck import stun_regions
from tests.support import ROOT, require_root
from toolkit.sansio.netcheck_report import Report

NAMES = {"1": "Lab one", "2": "Lab two", "3": "Lab three", "4": "Dead region"}


@pytest.fixture(scope="module")
def map_obj(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with stun_regions(tmp_path_factory.mktemp("coturn")) as obj:
        yield obj


@pytest.fixture
def map_file(tmp_path: Path, map_obj: dict[str, Any]) -> Path:
    path = tmp_path / "derpmap.json"
    path.write_text(json.dumps(map_obj))
    return path


def natkit(*args: str, netns: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    argv = [*prefix, sys.executable, "-m", "toolkit", *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False)


def test_text_report_in_tailscale_layout(map_file: Path) -> None:
    proc = natkit("netcheck", "--derp-map", str(map_file))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert lines[:2] == ["", "Report:"] and lines[-1] == ""
    assert re.fullmatch(r"\t\* Time: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", lines[2])
    assert lines[3] == "\t* UDP: true"
    assert re.fullmatch(r"\t\* IPv4: yes, 127\.0\.0\.1:\d+", lines[4])
    assert re.fullmatch(r"\t\* IPv6: (yes, \[::1\]:\d+|no, but OS has support)", lines[5])
    assert lines[6] == "\t* MappingVariesByDestIP: false"
    assert lines[7] == "\t* PortMapping: not checked"
    nearest = lines[8].removeprefix("\t* Nearest DERP: ")
    assert lines[9] == "\t* DERP latency:"
    rows = [re.fullmatch(r"\t\t- ([ a-z]{3}): (\S*)\s*\((.+)\)", line) for line in lines[10:-1]]
    assert all(rows) and len(rows) == 4, lines[10:]
    codes = [m.group(1).strip() for m in rows if m]
    latencies = [m.group(2) for m in rows if m]
    assert codes[-1] == "ded" and latencies[-1] == ""  # the dead region: no latency, listed last
    assert sorted(codes[:3]) == ["one", "thr", "two"]
    assert all(re.fullmatch(r"\d+(\.\d)?(µs|ms)", lat) for lat in latencies[:3]), latencies

    def value(text: str) -> float:
        return float(text[:-2]) * (1 if text.endswith("µs") else 1000)

    assert [value(t) for t in latencies[:3]] == sorted(value(t) for t in latencies[:3])
    assert nearest == rows[0].group(3)  # type: ignore[union-attr]  # the fastest region is the home
    assert proc.stderr == ""


def test_json_report_has_tailscale_field_names(map_file: Path) -> None:
    proc = natkit("netcheck", "--derp-map", str(map_file), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith('{\n\t"Now": "') and proc.stdout.endswith("}\n")
    report = json.loads(proc.stdout)
    assert {"UDP", "IPv4", "IPv6", "MappingVariesByDestIP", "PreferredDERP", "RegionLatency", "GlobalV4"} <= set(report)
    assert report["UDP"] is True and report["PreferredDERP"] in (1, 2, 3)
    assert sorted(report["RegionLatency"]) == ["1", "2", "3"]
    assert all(isinstance(ns, int) and 0 < ns < 500_000_000 for ns in report["RegionLatency"].values())
    assert report["GlobalV4"].startswith("127.0.0.1:") and report["UPnP"] is None


def test_every_repeats_json_lines(map_file: Path) -> None:
    argv = [sys.executable, "-m", "toolkit", "netcheck", "--derp-map", str(map_file), "--format", "json-line"]
    argv += ["--every", "0.2"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        first, second = json.loads(proc.stdout.readline()), json.loads(proc.stdout.readline())
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130 and err.strip() == "natkit: interrupted"
    assert first["UDP"] and second["UDP"] and first["GlobalV4"] == second["GlobalV4"]  # one socket for every run
    assert Report.from_obj(first).now < Report.from_obj(second).now  # type: ignore[operator]


class _MapHandler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path != "/derpmap":
            self.send_error(404, "no such map")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def map_server(map_obj: dict[str, Any]) -> Iterator[str]:
    handler = type("Handler", (_MapHandler,), {"body": json.dumps(map_obj).encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_map_from_a_url(map_server: str) -> None:
    proc = natkit("netcheck", "--derp-map", f"{map_server}/derpmap", "--format", "json-line")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["UDP"] is True
    missing = natkit("netcheck", "--derp-map", f"{map_server}/nothing")
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr == f"natkit: error: --derp-map {map_server}/nothing: the server answered 404 no such map\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it: No such file or directory"),
        ("{not json", "DERP map is not JSON"),
        ('{"Regions": {"1": {"RegionID": 1, "Nodes": [{"Name": "1a", "HostName": "h", "STUNPort": 70000}]}}}', "'STUNPort' 70000"),
        ('{"Regions": {}}', "the map has no regions"),
    ],
)  # fmt: skip
def test_bad_derp_map_is_one_line_and_exit_2(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "map.json"
    if content is not None:
        path.write_text(content)
    proc = natkit("netcheck", "--derp-map", str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"natkit: error: --derp-map {path}: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--derp-map", "ftp://example.net/map"], "only http:// and https:// URLs"),
        (["--derp-map", "http://127.0.0.1:1/derpmap"], "cannot fetch it"),
        (["--derp-map", "x.json", "--every", "0"], "--every 0.0: give a positive number"),
        (["--derp-map", "x.json", "--format", "yaml"], "invalid choice: 'yaml'"),
        ([], "the following arguments are required: --derp-map"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    proc = natkit("netcheck", *args)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1


def test_no_udp_at_all_is_a_report_not_an_error(netns: str, tmp_path: Path) -> None:
    """A namespace with only ``lo``: every send fails (no route), the report says UDP: false, exit 0."""
    require_root()
    path = tmp_path / "far.json"
    node = {"Name": "9a", "HostName": "far.example", "IPv4": "192.0.2.9", "IPv6": "2001:db8::9"}
    path.write_text(json.dumps({"Regions": {"9": {"RegionID": 9, "RegionCode": "far", "Nodes": [node]}}}))
    proc = natkit("netcheck", "--derp-map", str(path), "--format", "json", netns=netns)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["UDP"] is False and report["IPv4"] is False and report["IPv6"] is False
    assert report["IPv4CanSend"] is False and report["IPv6CanSend"] is False  # ENETUNREACH for every probe
    assert report["OSHasIPv6"] is True  # lo has ::1
    assert report["RegionLatency"] == {} and report["PreferredDERP"] == 0 and report["GlobalV4"] == ""
