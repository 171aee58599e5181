"""The coordination server's core without sockets: every endpoint, every error, addresses, versions, streams."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec.derpmap import DERPMap, DERPNode, DERPRegion
from toolkit.crypto.keys import disco_key_pair, node_key_pair
from toolkit.sansio.control import ControlCore
from toolkit.sansio.control_api import (
    QUAD_100,
    ROUTES,
    SSE_KEEPALIVE,
    TRANSITIONS,
    NodeState,
    PollPending,
    Request,
    Response,
    StreamOpened,
    address_pair,
)
from toolkit.sansio.control_netmap import ControlNode, NetMap, RegisterBody
from toolkit.sansio.trace import TraceLog
from toolkit.services.controlstore import MemoryStore, SQLiteStore
from toolkit.timing import DEFAULT
from toolkit.types import DiscoPublicKey, NodePublicKey

KEY = "lab-key"
TIMING = DEFAULT.replace(control_stream_keepalive=15.0, control_long_poll=30.0)
DERP = DERPMap({1: DERPRegion(1, "lab", "Lab", (DERPNode("1a", 1, "derp.lab", ipv4="10.0.0.2", scheme="http"),))})


class Rng:
    """Deterministic bytes: a counter through SHA-256."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, size: int) -> bytes:
        self.n += 1
        return hashlib.sha256(self.n.to_bytes(8, "big")).digest()[:size]


def make_core(store: Any = None, **kwargs: Any) -> ControlCore:
    return ControlCore(store or MemoryStore(), [KEY, "other-key"], rng=Rng(), epoch=1.7e9, timing=TIMING, **kwargs)


@pytest.fixture(params=["memory", "sqlite"])
def core(request: pytest.FixtureRequest) -> Iterator[ControlCore]:
    store = MemoryStore() if request.param == "memory" else SQLiteStore(":memory:")
    yield make_core(store)
    store.close()


def keys(seed: int) -> tuple[NodePublicKey, DiscoPublicKey]:
    return node_key_pair(bytes([seed]) * 4)[1], disco_key_pair(bytes([seed]) * 4)[1]


def post(core: ControlCore, path: str, obj: Any, token: str | None = None, now: float = 1.0) -> Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    reply = core.handle(Request("POST", path, headers, json.dumps(obj).encode()), now)
    assert isinstance(reply, Response)
    return reply


def get(core: ControlCore, target: str, token: str | None = None, now: float = 1.0) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return core.handle(Request("GET", target, headers), now)


def register_body(seed: int, **changes: Any) -> dict[str, Any]:
    nk, dk = keys(seed)
    body: dict[str, Any] = RegisterBody(KEY, nk, dk, (), 0, f"host{seed}").to_obj()
    body["Endpoints"] = [f"192.0.2.{seed}:41641"]
    body.update(changes)
    return body


def register(core: ControlCore, seed: int, **changes: Any) -> tuple[dict[str, Any], str]:
    reply = post(core, "/machine/register", register_body(seed, **changes))
    assert reply.status == 200, reply.body
    return reply.body["Node"], reply.body["Token"]


def events(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(chunk.split("data: ", 1)[1]) for chunk in data.decode().split("\n\n") if "data: " in chunk]


# --- registration and addresses ------------------------------------------------------------------------


def test_register_answers_the_node_its_addresses_and_a_token(core: ControlCore) -> None:
    node, token = register(core, 1, Hostname="Alice's Laptop", HomeDERP=0)
    assert node["ID"] == 1 and node["Name"] == "alice-s-laptop" and node["Hostname"] == "Alice's Laptop"
    assert node["Addresses"] == ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"]
    assert node["NodeKey"] == str(keys(1)[0]) and node["DiscoKey"] == str(keys(1)[1])
    assert node["Endpoints"] == ["192.0.2.1:41641"] and node["Online"] is False
    assert len(token) == 64 and core.version == 1
    stored = core.store.node(1)
    assert stored is not None and stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(stored)  # only the hash is kept


def test_addresses_are_handed_out_in_order_unique_in_both_families(core: ControlCore) -> None:
    nodes = [register(core, seed)[0] for seed in range(1, 8)]
    v4 = [n["Addresses"][0] for n in nodes]
    v6 = [n["Addresses"][1] for n in nodes]
    assert v4 == [f"100.64.0.{i}/32" for i in range(1, 8)]
    assert v6 == [f"fd7a:115c:a1e0::{i}/128" for i in range(1, 8)]
    assert [n["ID"] for n in nodes] == list(range(1, 8))
    assert all(ipaddress.ip_interface(a).network.prefixlen in (32, 128) for a in v4 + v6)


def test_the_tailscale_service_address_is_never_handed_out() -> None:
    store = MemoryStore()
    quad_index = int(QUAD_100) - int(ipaddress.IPv4Address("100.64.0.0"))
    assert address_pair(quad_index)[0] == QUAD_100
    store._counters["address"] = quad_index - 1
    core = make_core(store)
    node, _ = register(core, 1)
    assert node["Addresses"][0] == "100.100.100.101/32"


def test_same_node_key_again_is_the_same_node_with_a_new_token(core: ControlCore) -> None:
    first, token1 = register(core, 1)
    register(core, 2)
    version = core.version
    again, token2 = register(core, 1)
    assert (again["ID"], again["Addresses"]) == (first["ID"], first["Addresses"])
    assert token2 != token1 and core.version == version  # nothing peers see changed
    assert get(core, "/machine/map", token1).status == 401
    assert get(core, "/machine/map", token2).status == 200
    moved, _ = register(core, 1, Endpoints=["198.51.100.1:1"], AuthKey="other-key")
    assert moved["ID"] == 1 and moved["Endpoints"] == ["198.51.100.1:1"] and core.version == version + 1
    assert len(core.store.nodes()) == 2


def test_names_are_unique(core: ControlCore) -> None:
    names = [register(core, seed, Hostname="laptop")[0]["Name"] for seed in (1, 2, 3)]
    assert names == ["laptop", "laptop-2", "laptop-3"]
    assert register(core, 4, Hostname="")[0]["Name"] == "node-4"


@pytest.mark.parametrize("authkey", ["wrong", "", "lab-key "])
def test_unknown_preauth_key_is_401(core: ControlCore, authkey: str) -> None:
    reply = post(core, "/machine/register", register_body(1, AuthKey=authkey))
    assert reply.status == 401 and "unknown pre-auth key" in str(reply.error) and "--authkey" in str(reply.error)
    assert core.store.nodes() == [] and core.counters["bad-authkey"] == 1


BAD_REGISTER = [
    ("AuthKey", None),
    ("AuthKey", 5),
    ("NodeKey", None),
    ("NodeKey", "nodekey:abcd"),
    ("NodeKey", "discokey:" + "ab" * 32),
    ("NodeKey", "ab" * 32),
    ("NodeKey", ["nodekey:" + "ab" * 32]),
    ("DiscoKey", None),
    ("DiscoKey", "nodekey:" + "ab" * 32),
    ("DiscoKey", 7),
    ("Endpoints", "192.0.2.1:1"),
    ("Endpoints", [1]),
    ("Endpoints", ["192.0.2.1"]),
    ("Endpoints", ["192.0.2.1:0"]),
    ("Endpoints", ["example.com:1"]),
    ("Endpoints", [f"192.0.2.1:{p}" for p in range(1, 40)]),
    ("HomeDERP", "1"),
    ("HomeDERP", -1),
    ("HomeDERP", True),
    ("HomeDERP", 1.5),
    ("HomeDERP", 2**40),
    ("Hostname", 5),
    ("Hostname", "x" * 64),
    ("Hostname", "a\nb"),
]


@pytest.mark.parametrize(("field", "value"), BAD_REGISTER)
def test_register_400_names_the_field(core: ControlCore, field: str, value: Any) -> None:
    body = register_body(1)
    if value is None:
        del body[field]
    else:
        body[field] = value
    reply = post(core, "/machine/register", body)
    assert reply.status == 400 and str(reply.error).startswith(f"field {field!r}: "), reply.body
    assert core.store.nodes() == [] and core.counters["bad-field"] == 1


def test_nodekey_message_says_what_a_key_looks_like(core: ControlCore) -> None:
    reply = post(core, "/machine/register", register_body(1, NodeKey="nodekey:00"))
    assert reply.error == "field 'NodeKey': not a nodekey:<64 hex> key"


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b"\xff\xfe", b'"text"', b"null", b"[" * 50000])
def test_a_body_that_is_no_json_object_is_400(core: ControlCore, body: bytes) -> None:
    reply = core.handle(Request("POST", "/machine/register", {}, body), 1.0)
    assert isinstance(reply, Response) and reply.status == 400 and "body" in str(reply.error)
    assert core.counters["bad-json"] == 1


def test_unknown_path_404_and_wrong_method_405(core: ControlCore) -> None:
    reply = get(core, "/machine/nope")
    assert reply.status == 404 and "no such path" in reply.error
    reply = get(core, "/machine/register")
    assert reply.status == 405 and ("Allow", "POST") in reply.headers
    reply = post(core, "/machine/map", {})
    assert reply.status == 405 and ("Allow", "GET") in reply.headers
    assert core.handle(Request("get", "/health"), 1.0).status == 405  # methods are case-sensitive


def test_info_health_and_derpmap() -> None:
    core = make_core()
    register(core, 1)
    info = get(core, "/")
    assert info.status == 200 and info.body["Nodes"] == 1 and info.body["NetmapVersion"] == 1
    assert "POST /machine/register" in info.body["API"]
    assert get(core, "/health").body == {"Status": "ok"}
    reply = get(core, "/derpmap")
    assert reply.status == 404 and "--derp-map" in reply.error
    with_map = make_core(derp_map=DERP)
    assert get(with_map, "/derpmap").body == DERP.to_obj()
    assert DERPMap.from_obj(get(with_map, "/derpmap").body) == DERP


def test_home_derp_must_be_a_region_of_the_map() -> None:
    core = make_core(derp_map=DERP)
    reply = post(core, "/machine/register", register_body(1, HomeDERP=7))
    assert reply.status == 400 and reply.error.startswith("field 'HomeDERP': no region 7")
    node, token = register(core, 1, HomeDERP=1)
    assert node["HomeDERP"] == 1
    assert post(core, "/machine/update", {"HomeDERP": 9}, token).status == 400


# --- tokens and updates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "words"),
    [({}, "missing"), ({"authorization": "Bearer nope"}, "unknown token"), ({"authorization": "Basic x"}, "missing")],
)
def test_bearer_token_is_required(core: ControlCore, headers: dict[str, str], words: str) -> None:
    register(core, 1)
    for request in (Request("GET", "/machine/map", headers), Request("POST", "/machine/update", headers, b"{}")):
        reply = core.handle(request, 1.0)
        assert isinstance(reply, Response) and reply.status == 401 and words in str(reply.error)


def test_update_bumps_the_version_only_when_something_changed(core: ControlCore) -> None:
    _, token = register(core, 1)
    version = core.version
    reply = post(core, "/machine/update", {"Endpoints": ["203.0.113.9:41641"], "HomeDERP": 0}, token)
    assert reply.status == 200 and reply.body["Version"] == version + 1 == core.version
    assert reply.body["Node"]["Endpoints"] == ["203.0.113.9:41641"]
    assert post(core, "/machine/update", {}, token).body["Version"] == version + 1
    new_disco = str(keys(9)[1])
    reply = post(core, "/machine/update", {"DiscoKey": new_disco, "Hostname": "renamed"}, token)
    assert reply.body["Node"]["DiscoKey"] == new_disco and reply.body["Node"]["Name"] == "renamed"
    assert core.version == version + 2


@pytest.mark.parametrize(
    ("field", "value"), [("Endpoints", "x"), ("HomeDERP", "1"), ("DiscoKey", "discokey:1"), ("Hostname", 3)]
)
def test_update_400_names_the_field(core: ControlCore, field: str, value: Any) -> None:
    _, token = register(core, 1)
    reply = post(core, "/machine/update", {field: value}, token)
    assert reply.status == 400 and str(reply.error).startswith(f"field {field!r}")


# --- netmaps, streams, long polls -------------------------------------------------------------------------


def test_map_shows_self_and_peers(core: ControlCore) -> None:
    _, token1 = register(core, 1)
    register(core, 2)
    netmap = NetMap.from_obj(get(core, "/machine/map", token1).body)
    assert netmap.version == core.version == 2
    assert netmap.self_node.node_key == keys(1)[0]
    assert [p.node_key for p in netmap.peers] == [keys(2)[0]] and netmap.derp_map is None


def test_stream_sends_netmaps_on_change_and_keepalives(core: ControlCore) -> None:
    _, token1 = register(core, 1)
    _, token2 = register(core, 2)
    opened = get(core, "/machine/map?stream=1", token1, now=10.0)
    assert isinstance(opened, StreamOpened) and core.state(1) is NodeState.ONLINE
    (sid, data), *_ = core.stream_writes()
    assert sid == opened.stream_id and data.startswith(b"event: netmap\ndata: ")
    first = events(data)[0]
    assert first["Self"]["Online"] is True and first["Version"] == core.version
    assert core.stream_writes() == []  # nothing new
    post(core, "/machine/update", {"Endpoints": ["203.0.113.2:2"]}, token2, now=11.0)
    (_, data), *_ = core.stream_writes()
    assert events(data)[0]["Peers"][0]["Endpoints"] == ["203.0.113.2:2"]
    assert core.get_timer() == 10.0 + TIMING.control_stream_keepalive
    core.handle_timer(25.0)
    assert core.stream_writes() == [(sid, SSE_KEEPALIVE)]
    assert core.get_timer() == 25.0 + TIMING.control_stream_keepalive


def test_online_while_a_stream_is_open(core: ControlCore) -> None:
    _, token1 = register(core, 1)
    _, token2 = register(core, 2)
    opened = get(core, "/machine/map?stream=true", token1)
    second = get(core, "/machine/map?stream=1", token1)
    version = core.version
    peer_view = get(core, "/machine/map", token2).body
    assert peer_view["Peers"][0]["Online"] is True
    core.close_stream(opened.stream_id, 5.0)
    assert core.state(1) is NodeState.ONLINE and core.version == version  # one stream is still open
    core.close_stream(second.stream_id, 6.0)
    core.close_stream(second.stream_id, 6.0)  # twice is harmless
    assert core.state(1) is NodeState.OFFLINE and core.version == version + 1
    assert get(core, "/machine/map", token2).body["Peers"][0]["Online"] is False


def test_long_poll_answers_on_change_or_after_the_timeout(core: ControlCore) -> None:
    _, token1 = register(core, 1)
    _, token2 = register(core, 2)
    version = core.version
    assert get(core, f"/machine/map?since={version - 1}", token1).status == 200  # already newer: at once
    pending = get(core, f"/machine/map?since={version}", token1, now=100.0)
    assert isinstance(pending, PollPending) and core.poll_answers() == []
    assert core.get_timer() == 100.0 + TIMING.control_long_poll
    post(core, "/machine/update", {"Endpoints": ["203.0.113.3:3"]}, token2)
    ((poll_id, answer),) = core.poll_answers()
    assert poll_id == pending.poll_id and answer.body["Version"] == version + 1
    waiting = get(core, f"/machine/map?since={version + 1}", token1, now=200.0)
    core.handle_timer(200.0 + TIMING.control_long_poll - 0.01)
    assert core.poll_answers() == []
    core.handle_timer(200.0 + TIMING.control_long_poll)
    ((poll_id, answer),) = core.poll_answers()
    assert poll_id == waiting.poll_id and answer.body["Version"] == version + 1
    cancelled = get(core, f"/machine/map?since={version + 1}", token1)
    core.cancel_poll(cancelled.poll_id)
    assert core.get_timer() is None


@pytest.mark.parametrize("query", ["stream=yes", "since=-1", "since=abc", "since=1&stream=1", "since="])
def test_bad_map_query_is_400(core: ControlCore, query: str) -> None:
    _, token = register(core, 1)
    reply = get(core, f"/machine/map?{query}", token)
    assert reply.status == 400 and str(reply.error).startswith("query")


def test_transitions_are_traced_and_follow_the_table() -> None:
    log = TraceLog()
    core = make_core(tracer=log)
    _, token = register(core, 1)
    opened = get(core, "/machine/map?stream=1", token)
    core.close_stream(opened.stream_id, 2.0)
    post(core, "/machine/register", register_body(2, AuthKey="bad"))
    edges = [r.reason for r in log.of_kind("transition")]
    assert edges == ["registered", "stream opened", "last stream closed"]
    assert {edge for (_, edge) in TRANSITIONS} == set(edges)
    assert log.reasons() == ["bad-authkey"]
    assert all(r.peer == keys(1)[0] for r in log.of_kind("transition"))


def test_a_failing_store_is_500_not_an_exception() -> None:
    class Broken(MemoryStore):
        def put_node(self, node: Any) -> None:
            raise OSError("disk full")

    core = make_core(Broken())
    reply = post(core, "/machine/register", register_body(1))
    assert reply.status == 500 and "disk full" in reply.error and core.counters["internal-error"] == 1


def test_state_survives_a_new_core_on_the_same_database(tmp_path: Any) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    core = make_core(store)
    node1, token1 = register(core, 1)
    register(core, 2)
    version = core.version
    store.close()
    store = SQLiteStore(tmp_path / "c.db")
    core = make_core(store)
    assert core.version == version
    assert get(core, "/machine/map", token1, now=5.0).body["Self"] == {**node1, "LastSeen": "2023-11-14T22:13:25Z"}
    assert register(core, 3)[0]["Addresses"][0] == "100.64.0.3/32"
    assert register(core, 1)[0]["Addresses"] == node1["Addresses"]
    store.close()


# --- the JSON model ---------------------------------------------------------------------------------------


def test_netmap_json_round_trips() -> None:
    core = make_core(derp_map=DERP)
    _, token = register(core, 1, HomeDERP=1, Endpoints=["192.0.2.1:1", "[2001:db8::1]:2"])
    register(core, 2)
    obj = get(core, "/machine/map", token).body
    netmap = NetMap.from_obj(obj)
    assert netmap.to_obj() == obj and netmap.derp_map == DERP
    assert netmap.self_node.ipv4 == ipaddress.IPv4Address("100.64.0.1")
    assert netmap.self_node.ipv6 == ipaddress.IPv6Address("fd7a:115c:a1e0::1")
    assert netmap.peer(keys(2)[0]) == netmap.peers[0]
    assert ControlNode.from_obj(obj["Self"]) == netmap.self_node


# --- never raises -----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["AuthKey", "NodeKey", "DiscoKey", "Endpoints", "HomeDERP", "Hostname"]


def _check(reply: object) -> None:
    assert isinstance(reply, Response | StreamOpened | PollPending)
    if isinstance(reply, Response):
        assert 200 <= reply.status <= 599
        json.loads(reply.body_bytes())
        if reply.status >= 400:
            assert isinstance(reply.error, str) and reply.error


@settings(max_examples=300)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"]) | st.text(max_size=8),
    path=st.sampled_from(sorted(ROUTES)) | st.text(max_size=30),
    query=st.sampled_from(["", "?stream=1", "?since=0", "?since=99", "?stream=%zz", "?a=b&&=="]) | st.text(max_size=20),
    headers=st.dictionaries(st.sampled_from(["authorization", "content-type", "x"]), st.text(max_size=40), max_size=3),
    body=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()),
    with_token=st.booleans(),
)
def test_any_request_gets_a_well_formed_answer(
    method: str, path: str, query: str, headers: dict[str, str], body: bytes, with_token: bool
) -> None:
    core = make_core()
    _, token = register(core, 1)
    if with_token:
        headers = {**headers, "authorization": f"Bearer {token}"}
    _check(core.handle(Request(method, path + query, headers, body), 2.0))
    core.handle_timer(1e6)
    for _, answer in core.poll_answers():
        _check(answer)
    core.stream_writes()
    assert core.counters["internal-error"] == 0


@settings(max_examples=300)
@given(values=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6), update=st.booleans())
def test_any_field_values_get_200_400_or_401(values: dict[str, Any], update: bool) -> None:
    core = make_core(derp_map=DERP)
    _, token = register(core, 1)
    if update:
        reply = post(core, "/machine/update", values, token)
    else:
        reply = post(core, "/machine/register", {**register_body(2), **values})
    _check(reply)
    assert reply.status in (200, 400, 401), reply.body
    if reply.status == 400:
        assert any(f"field {f!r}" in str(reply.error) for f in FIELDS)
    assert core.counters["internal-error"] == 0
