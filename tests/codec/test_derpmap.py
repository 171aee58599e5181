"""Tests of the DERP map codec (toolkit/codec/derpmap.py, Tailscale ``tailcfg.DERPMap`` JSON)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec.derpmap import DERPMap, DERPNode, DERPRegion
from toolkit.errors import BadValueError, DecodeError
from toolkit.types import Endpoint

# The shape Tailscale's control plane serves (controlplane.tailscale.com/derpmap/default), trimmed to two
# regions, with fields natkit does not model (Latitude, CanPort80, CertName, omitDefaultRegions): they are ignored.
TAILSCALE_MAP = {
    "Regions": {
        "1": {
            "RegionID": 1,
            "RegionCode": "nyc",
            "RegionName": "New York City",
            "Latitude": 40.7128,
            "Longitude": -74.006,
            "Nodes": [
                {
                    "Name": "1f",
                    "RegionID": 1,
                    "HostName": "derp1f.tailscale.com",
                    "IPv4": "199.38.181.104",
                    "IPv6": "2607:f740:f::bc",
                    "CanPort80": True,
                },
                {
                    "Name": "1g",
                    "RegionID": 1,
                    "HostName": "derp1g.tailscale.com",
                    "IPv4": "209.177.145.120",
                    "IPv6": "2607:f740:f::3eb",
                    "CanPort80": True,
                },
            ],
        },
        "900": {
            "RegionID": 900,
            "RegionCode": "lab",
            "RegionName": "Lab relay",
            "Avoid": True,
            "Nodes": [
                {
                    "Name": "900a",
                    "RegionID": 900,
                    "HostName": "derp.lab.example",
                    "CertName": "sha256-raw:00",
                    "IPv4": "10.0.0.2",
                    "IPv6": "none",
                    "STUNPort": 3479,
                    "DERPPort": 8080,
                    "InsecureForTests": True,
                    "Scheme": "http",
                },
                {"Name": "900s", "RegionID": 900, "HostName": "stun.lab.example", "STUNOnly": True, "STUNPort": -1},
            ],
        },
    },
    "HomeParams": {"RegionScore": {"1": 1.5, "900": 0.5}},
    "omitDefaultRegions": True,
}


def test_tailscale_shaped_map_decodes() -> None:
    dm = DERPMap.from_json(json.dumps(TAILSCALE_MAP))
    assert sorted(dm.regions) == [1, 900]
    nyc = dm.region(1)
    assert (nyc.region_code, nyc.region_name, nyc.avoid, len(nyc.nodes)) == ("nyc", "New York City", False, 2)
    node = nyc.nodes[0]
    assert node.url == "https://derp1f.tailscale.com/derp" and node.dial_port == 443
    assert node.stun_endpoints() == [Endpoint.parse("199.38.181.104:3478"), Endpoint.parse("[2607:f740:f::bc]:3478")]
    lab = dm.region(900)
    assert lab.avoid and not lab.no_measure_no_home
    relay, stun_only = lab.nodes
    assert relay.url == "http://derp.lab.example:8080/derp" and relay.insecure_for_tests
    assert relay.ipv6 == "none" and relay.family_disabled(6) and relay.address(6) == ""
    assert relay.stun_endpoints() == [Endpoint.parse("10.0.0.2:3479")]
    assert relay.dial_host() == "10.0.0.2"
    assert stun_only.stun_only and not stun_only.stun_enabled and stun_only.stun_endpoints() == []
    assert lab.relay_nodes() == [relay]
    assert dm.region_score == {1: 1.5, 900: 0.5}
    assert [r.region_id for r in dm.sorted_regions()] == [1, 900]


def test_round_trip_keeps_every_modelled_field() -> None:
    dm = DERPMap.from_json(json.dumps(TAILSCALE_MAP))
    again = DERPMap.from_json(dm.to_json())
    assert again == dm
    assert DERPMap.from_json(again.to_json(indent=2)) == dm
    obj = json.loads(dm.to_json())
    # the unmodelled fields are gone, the modelled ones keep Tailscale's names; defaults are omitted
    assert set(obj) == {"Regions", "HomeParams"}
    assert obj["Regions"]["900"]["Avoid"] is True and "NoMeasureNoHome" not in obj["Regions"]["900"]
    node = obj["Regions"]["900"]["Nodes"][0]
    assert node == {
        "Name": "900a",
        "RegionID": 900,
        "HostName": "derp.lab.example",
        "IPv4": "10.0.0.2",
        "IPv6": "none",
        "STUNPort": 3479,
        "DERPPort": 8080,
        "InsecureForTests": True,
        "Scheme": "http",
    }
    assert "Scheme" not in obj["Regions"]["1"]["Nodes"][0]  # https is the default, as in Tailscale


def test_built_map_round_trips() -> None:
    node = DERPNode("7a", 7, "", ipv6="2001:db8::7", stun_port=0, scheme="http")
    dm = DERPMap({7: DERPRegion(7, "sev", "Seven", (node,), no_measure_no_home=True)}, {7: 2.0})
    assert DERPMap.from_json(dm.to_json()) == dm
    assert node.url == "http://[2001:db8::7]/derp" and node.dial_host() == "2001:db8::7"
    assert node.stun_endpoints() == [Endpoint.parse("[2001:db8::7]:3478")]


def test_host_name_literal_is_a_stun_target_and_names_are_left_to_dns() -> None:
    literal = DERPNode("a", 1, "127.0.0.3", stun_port=3478)
    assert literal.stun_endpoints() == [Endpoint.parse("127.0.0.3:3478")]
    assert DERPNode("b", 1, "derp.example").stun_endpoints() == []


def test_missing_and_null_fields_take_defaults() -> None:
    dm = DERPMap.from_obj({"Regions": {"5": {"RegionID": 5, "Nodes": [{"Name": "5a", "HostName": "h", "IPv4": None}]}}})
    node = dm.region(5).nodes[0]
    assert (node.ipv4, node.stun_port, node.derp_port, node.scheme, node.region_id) == ("", 0, 0, "https", 0)
    assert DERPMap.from_obj({}) == DERPMap() and DERPMap.from_obj({"Regions": None}) == DERPMap()


def test_unknown_region_lookup_names_the_known_ones() -> None:
    dm = DERPMap.from_json(json.dumps(TAILSCALE_MAP))
    with pytest.raises(BadValueError, match=r"no region 2 \(regions: 1, 900\)"):
        dm.region(2)


# --- every rejection names what is wrong -------------------------------------------------------------


def _node(obj: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = obj["Regions"]["900"]["Nodes"][0]
    return node


Mutation = Callable[[dict[str, Any]], None]

BAD: list[tuple[str, Mutation, str]] = [
    ("regions-not-object", lambda o: o.update(Regions=[1]), "'Regions' must be a dict"),
    ("region-key", lambda o: o["Regions"].update({"x1": o["Regions"]["1"]}), "'Regions' key 'x1'"),
    ("region-key-underscore", lambda o: o["Regions"].update({"1_0": {"RegionID": 10}}), "'Regions' key '1_0'"),
    ("region-key-twice", lambda o: o["Regions"].update({"01": o["Regions"]["1"]}), "'Regions' keys '1' and '01'"),
    ("region-not-object", lambda o: o["Regions"].update({"2": "x"}), "region 2: a region must be an object"),
    ("region-id-missing", lambda o: o["Regions"]["1"].pop("RegionID"), "'RegionID' must be a positive"),
    ("region-id-negative", lambda o: o["Regions"]["1"].update(RegionID=-1), "'RegionID' must be a positive"),
    ("region-id-too-big", lambda o: o["Regions"].update({"9007199254740992": {"RegionID": 2**53}}), "'RegionID'"),
    ("region-id-mismatch", lambda o: o["Regions"].update({"3": {"RegionID": 4}}), "under key 3 says RegionID 4"),
    ("region-id-string", lambda o: o["Regions"]["1"].update(RegionID="1"), "'RegionID' must be a int"),
    ("region-id-bool", lambda o: o["Regions"]["1"].update(RegionID=True), "'RegionID' must be a int"),
    ("region-code", lambda o: o["Regions"]["1"].update(RegionCode=5), "'RegionCode' must be a str"),
    ("region-name", lambda o: o["Regions"]["1"].update(RegionName=[]), "'RegionName' must be a str"),
    ("avoid", lambda o: o["Regions"]["1"].update(Avoid="yes"), "'Avoid' must be a bool"),
    ("no-measure", lambda o: o["Regions"]["1"].update(NoMeasureNoHome=1), "'NoMeasureNoHome' must be a bool"),
    ("nodes", lambda o: o["Regions"]["1"].update(Nodes={}), "'Nodes' must be a list"),
    ("node-not-object", lambda o: o["Regions"]["1"].update(Nodes=[3]), "a node must be an object"),
    ("node-name", lambda o: _node(o).update(Name=9), "'Name' must be a str"),
    ("node-region", lambda o: _node(o).update(RegionID=1), "says RegionID 1 but sits in region 900"),
    ("host-name", lambda o: _node(o).update(HostName=1), "'HostName' must be a str"),
    ("no-address", lambda o: _node(o).update(HostName="", IPv4="none"), "needs a 'HostName'"),
    ("ipv4-text", lambda o: _node(o).update(IPv4="10.0.0.256"), "'IPv4' '10.0.0.256' is not an IP address"),
    ("ipv4-is-v6", lambda o: _node(o).update(IPv4="::1"), "'IPv4' '::1' is not an IPv4 address"),
    ("ipv4-type", lambda o: _node(o).update(IPv4=167772162), "'IPv4' must be a str"),
    ("ipv6-is-v4", lambda o: _node(o).update(IPv6="10.0.0.1"), "'IPv6' '10.0.0.1' is not an IPv6 address"),
    ("stun-port-range", lambda o: _node(o).update(STUNPort=-2), "'STUNPort' -2 is not in -1..65535"),
    ("stun-port-type", lambda o: _node(o).update(STUNPort=3478.0), "'STUNPort' must be a int"),
    ("derp-port-range", lambda o: _node(o).update(DERPPort=65536), "'DERPPort' 65536 is not in 0..65535"),
    ("stun-only", lambda o: _node(o).update(STUNOnly="true"), "'STUNOnly' must be a bool"),
    ("insecure", lambda o: _node(o).update(InsecureForTests=0), "'InsecureForTests' must be a bool"),
    ("scheme-value", lambda o: _node(o).update(Scheme="ftp"), "'Scheme' must be http or https"),
    ("scheme-type", lambda o: _node(o).update(Scheme=None) or _node(o).update(Scheme=1), "'Scheme' must be a str"),
    ("home-params", lambda o: o.update(HomeParams=[]), "'HomeParams' must be a dict"),
    ("region-score", lambda o: o["HomeParams"].update(RegionScore=1.0), "'RegionScore' must be a dict"),
    ("score-key", lambda o: o["HomeParams"]["RegionScore"].update(one=1), "'RegionScore' key 'one'"),
    ("score-string", lambda o: o["HomeParams"]["RegionScore"].update({"1": "1.5"}), "'RegionScore'['1'] = '1.5'"),
    ("score-bool", lambda o: o["HomeParams"]["RegionScore"].update({"1": True}), "'RegionScore'['1'] = True"),
    ("score-huge", lambda o: o["HomeParams"]["RegionScore"].update({"1": 10**400}), "'RegionScore'['1']"),
]


@pytest.mark.parametrize(("mutate", "field"), [pytest.param(m, f, id=name) for name, m, f in BAD])
def test_every_bad_value_names_its_field(mutate: Mutation, field: str) -> None:
    obj = copy.deepcopy(TAILSCALE_MAP)
    mutate(obj)
    with pytest.raises(BadValueError) as info:
        DERPMap.from_obj(obj)
    assert field in str(info.value)
    assert str(info.value).startswith("DERP map")


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "not JSON"), ("{", "not JSON"), ("[]", "top level must be an object"), ("\xff", "not JSON")],
)
def test_not_a_map(text: str, message: str) -> None:
    with pytest.raises(BadValueError, match=message):
        DERPMap.from_json(text.encode("latin-1"))


def test_deep_nesting_and_nan_are_decode_errors() -> None:
    with pytest.raises(DecodeError):
        DERPMap.from_json("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadValueError, match="RegionScore"):
        DERPMap.from_json('{"HomeParams": {"RegionScore": {"1": NaN}}}')


def test_zero_and_negative_scores_load_as_given() -> None:
    # tailcfg: "Scores should not be 0 or negative; such scores will be ignored" - by netcheck, not the decoder
    dm = DERPMap.from_obj({"HomeParams": {"RegionScore": {"3": 0, "4": -1.5}}})
    assert dm.region_score == {3: 0.0, 4: -1.5}


# --- Hypothesis: any JSON gives a map or a DecodeError ---------------------------------------------

LEAVES = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
FIELD_NAMES = st.sampled_from(
    [
        "Regions", "HomeParams", "RegionScore", "RegionID", "RegionCode", "RegionName", "Avoid", "NoMeasureNoHome",
        "Nodes", "Name", "HostName", "IPv4", "IPv6", "STUNPort", "STUNOnly", "DERPPort", "InsecureForTests", "Scheme",
        "1", "2", "-1", "01",
    ]
)  # fmt: skip
JSON = st.recursive(
    LEAVES | st.sampled_from(["none", "127.0.0.1", "::1", "http", "https", 3478, -1, 1, 2]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(FIELD_NAMES | st.text(max_size=4), inner, max_size=6),
    max_leaves=40,
)


@settings(max_examples=300)
@given(JSON)
def test_arbitrary_json_object_only_raises_decode_error(obj: Any) -> None:
    try:
        dm = DERPMap.from_obj(obj)
    except DecodeError:
        return
    assert DERPMap.from_json(dm.to_json()) == dm  # whatever loads also round-trips


@settings(max_examples=200)
@given(st.binary(max_size=200) | JSON.map(lambda o: json.dumps(o, allow_nan=True).encode()))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    try:
        DERPMap.from_json(data)
    except DecodeError:
        pass
