"""Tests of the netcheck text/JSON output (toolkit/services/netcheck_format.py, protocols.md §5.3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from toolkit.codec.derpmap import DERPMap
from toolkit.sansio.netcheck_report import Report
from toolkit.services.netcheck_format import format_latency, format_report, go_duration, go_time, round_duration
from toolkit.types import Endpoint

DM = DERPMap.from_obj(
    {
        "Regions": {
            str(r): {"RegionID": r, "RegionCode": code, "RegionName": name, "Nodes": []}
            for r, code, name in ((1, "nyc", "New York City"), (2, "fra", "Frankfurt"), (10, "x", "Ten"))
        }
    }
)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1_000, "1µs"),
        (1_500, "1.5µs"),
        (400_000, "400µs"),
        (1_200_000, "1.2ms"),
        (12_345_678, "12.345678ms"),
        (999_999_999, "999.999999ms"),
        (1_000_000_000, "1s"),
        (1_500_000_000, "1.5s"),
        (62_500_000_000, "1m2.5s"),
        (120_000_000_000, "2m0s"),
        (3_600_000_000_000, "1h0m0s"),
        (-1_500_000, "-1.5ms"),
    ],
)
def test_go_duration_string(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_latency_is_rounded_to_a_tenth_of_a_millisecond_halves_away_from_zero() -> None:
    assert round_duration(150_000, 100_000) == 200_000 and round_duration(149_999, 100_000) == 100_000
    assert round_duration(-150_000, 100_000) == -200_000
    assert [format_latency(s) for s in (0.00004, 0.00005, 0.0004, 0.01234, 0.0999999, 1.23456)] == [
        "0s",
        "100µs",
        "400µs",
        "12.3ms",
        "100ms",
        "1.2346s",
    ]


def test_go_time_layout() -> None:
    t = datetime(2024, 5, 1, 12, 34, 56, 120000, tzinfo=timezone(timedelta(hours=2)))
    text = go_time(t)  # shown in the local zone, as Go's report.Now.Local()
    local = t.astimezone()
    assert text.startswith(local.strftime("%Y-%m-%d %H:%M:%S") + ".12")
    assert text.endswith("Z") or text[-6] in "+-"
    assert go_time(datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)).count(".") == 0


def full_report() -> Report:
    return Report(
        udp=True,
        ipv4=True,
        os_has_ipv6=True,
        mapping_varies_by_dest_ip=True,
        preferred_derp=2,
        region_latency={1: 0.0305, 2: 0.01234, 10: 0.0305},
        global_v4=Endpoint.parse("203.0.113.7:41641"),
        now=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    )


def test_text_layout() -> None:
    lines = format_report(full_report(), DM).split("\n")
    assert lines[0] == "" and lines[1] == "Report:" and lines[2].startswith("\t* Time: 2024-05-01 ")
    assert lines[3:] == [
        "\t* UDP: true",
        "\t* IPv4: yes, 203.0.113.7:41641",
        "\t* IPv6: no, but OS has support",
        "\t* MappingVariesByDestIP: true",
        "\t* PortMapping: not checked",
        "\t* Nearest DERP: Frankfurt",
        "\t* DERP latency:",
        "\t\t- fra: 12.3ms  (Frankfurt)",
        "\t\t- nyc: 30.5ms  (New York City)",  # a tie: the lower region id first
        "\t\t-   x: 30.5ms  (Ten)",
        "",
    ]


def test_text_variants() -> None:
    base = full_report()
    v6 = Report(ipv6=True, global_v6=Endpoint.parse("[2001:db8::7]:41641"), region_latency={1: 0.001})
    text = format_report(v6, DM)
    assert "\t* IPv4: (no addr found)\n\t* IPv6: yes, [2001:db8::7]:41641\n" in text
    assert "\t* MappingVariesByDestIP: \n" in text and "\t* Nearest DERP: [none]\n" in text
    assert "\t\t- fra:         (Frankfurt)\n" in text  # unmeasured regions: empty latency, last
    assert "\t* IPv6: (no addr found)" in format_report(Report(ipv6=True), DM)
    assert "\t* IPv6: no, unavailable in OS" in format_report(Report(), DM)
    verbose = format_report(base, DM, verbose=True)
    assert "\t\t- fra: 12.3ms  (derp2, Frankfurt)\n" in verbose
    gone = Report(preferred_derp=7, region_latency={7: 0.001})
    assert "\t* Nearest DERP: 7 (region not found in map)\n" in format_report(gone, DM)
    checked = Report(upnp=True, pmp=False, pcp=True, captive_portal=False)
    assert "\t* PortMapping: UPnP, PCP\n\t* CaptivePortal: false\n" in format_report(checked, DM)


def test_no_udp_text() -> None:
    text = format_report(Report(os_has_ipv6=True, now=datetime(2024, 1, 1, tzinfo=UTC)), DM)
    assert "\t* UDP: false\n\t* IPv4: (no addr found)\n\t* IPv6: no, but OS has support\n" in text
    assert text.endswith("\t* PortMapping: not checked\n\t* Nearest DERP: unknown (no response to latency probes)\n")


def test_json_formats() -> None:
    report = full_report()
    pretty = format_report(report, DM, "json")
    line = format_report(report, DM, "json-line")
    assert pretty.endswith("}\n") and '\n\t"UDP": true,' in pretty
    assert line.count("\n") == 1 and line.startswith('{"Now":"2024-05-01T10:00:00Z","UDP":true,')
    assert json.loads(pretty) == json.loads(line)
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        format_report(report, DM, "xml")
