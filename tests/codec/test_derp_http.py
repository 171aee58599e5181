"""Tests of DERP's HTTP upgrade (protocols.md §2.1) and the ClientInfo/ServerInfo JSON bodies (§2.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.codec.derp import (
    MAX_HTTP_HEAD,
    ClientInfoJSON,
    ServerInfoJSON,
    http_response,
    parse_upgrade_request,
    parse_upgrade_response,
    split_http_head,
    upgrade_request,
    upgrade_response,
)
from toolkit.errors import BadLengthError, BadValueError, DecodeError, TruncatedError
from toolkit.types import NodePublicKey

SERVER_KEY = NodePublicKey(bytes(range(32)))

# --- HTTP upgrade ---------------------------------------------------------------------------------


def test_upgrade_request_bytes_and_round_trip() -> None:
    raw = upgrade_request("derp.example.net")
    assert raw == b"GET /derp HTTP/1.1\r\nHost: derp.example.net\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
    req = parse_upgrade_request(raw)
    assert (req.method, req.path, req.http_version) == ("GET", "/derp", "HTTP/1.1")
    assert req.headers == {"host": "derp.example.net", "upgrade": "DERP", "connection": "Upgrade"}
    assert req.is_derp_upgrade and not req.fast_start and req.ideal_node is None and not req.is_probe


def test_upgrade_request_options() -> None:
    req = parse_upgrade_request(upgrade_request("h", fast_start=True, ideal_node="1b", path="/derp?x=1"))
    assert req.fast_start and req.ideal_node == "1b" and req.path == "/derp"
    with pytest.raises(BadValueError):
        upgrade_request("evil\r\nX: y")


def test_upgrade_header_is_case_insensitive_and_websocket_is_not_derp() -> None:
    req = parse_upgrade_request(b"GET /derp HTTP/1.1\r\nUPGRADE: derp\r\nconnection: upgrade\r\n\r\n")
    assert req.is_derp_upgrade
    ws = parse_upgrade_request(b"GET /derp HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
    assert ws.is_websocket_upgrade and not ws.is_derp_upgrade


def test_upgrade_response_bytes_and_round_trip() -> None:
    raw = upgrade_response(SERVER_KEY)
    assert raw == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n"
        b"Derp-Public-Key: " + SERVER_KEY.hex().encode() + b"\r\n\r\n"
    )
    resp = parse_upgrade_response(raw)
    assert (resp.status, resp.reason, resp.version, resp.server_key) == (101, "Switching Protocols", 2, SERVER_KEY)
    assert resp.is_upgrade


def test_426_for_a_plain_get() -> None:
    req = parse_upgrade_request(b"GET /derp HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not req.is_derp_upgrade and not req.is_websocket_upgrade
    raw = http_response(426, "Upgrade Required", b"DERP requires connection upgrade\n")
    head, body = split_http_head(raw) or (b"", b"")
    assert body == b"DERP requires connection upgrade\n"
    resp = parse_upgrade_response(head)
    assert resp.status == 426 and not resp.is_upgrade and resp.server_key is None and resp.version is None
    assert resp.headers["content-length"] == str(len(body))


def test_probe_paths_get_an_empty_200() -> None:
    assert parse_upgrade_request(b"GET /derp/probe HTTP/1.1\r\n\r\n").is_probe
    assert parse_upgrade_request(b"HEAD /derp/latency-check HTTP/1.1\r\n\r\n").is_probe
    raw = http_response(200, "OK", headers={"Access-Control-Allow-Origin": "*"})
    assert raw == b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nContent-Length: 0\r\n\r\n"


def test_split_http_head_in_a_stream() -> None:
    stream = upgrade_response(SERVER_KEY) + b"\x01\x00\x00\x00\x28"
    for cut in range(len(stream) - 5):
        assert split_http_head(stream[:cut]) is None
    assert split_http_head(stream) == (stream[:-5], b"\x01\x00\x00\x00\x28")
    with pytest.raises(BadLengthError):
        split_http_head(b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HTTP_HEAD)
    assert split_http_head(b"x" * MAX_HTTP_HEAD) is None  # could still end


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", TruncatedError),
        (b"GET /derp\r\n\r\n", BadValueError),
        (b"GET derp HTTP/1.1\r\n\r\n", BadValueError),
        (b"GET /derp HTTP/1.1\r\nno colon\r\n\r\n", BadValueError),
        (b"GET /derp HTTP/1.1\r\nbad name: x\r\n\r\n", BadValueError),
        (b"GET /derp HTTP/1.1\r\n" + b"X: " + b"a" * MAX_HTTP_HEAD + b"\r\n\r\n", BadLengthError),
    ],
)
def test_bad_requests(raw: bytes, error: type[DecodeError]) -> None:
    with pytest.raises(error):
        parse_upgrade_request(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 1010 Switching\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nDerp-Public-Key: abcd\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nDerp-Version: two\r\n\r\n",
        b"SIP/2.0 101 OK\r\n\r\n",
    ],
)
def test_bad_responses(raw: bytes) -> None:
    with pytest.raises(BadValueError):
        parse_upgrade_response(raw)


@settings(max_examples=300)
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: ("GET /" + t + "\r\n\r\n").encode()))
def test_http_parsers_raise_only_decode_error(data: bytes) -> None:
    for parse in (parse_upgrade_request, parse_upgrade_response):
        try:
            parse(data)
        except DecodeError:
            pass
    try:
        split_http_head(data, max_len=64)
    except DecodeError:
        pass


# --- JSON bodies ----------------------------------------------------------------------------------


def test_client_info_default_json_is_gos() -> None:
    assert ClientInfoJSON().to_json() == b'{"version":2,"CanAckPings":true}'  # protocols.md §2.3


def test_client_info_all_fields_in_go_order() -> None:
    info = ClientInfoJSON(mesh_key="ab" * 32, is_prober=True, app_name="lab<&>", can_ack_pings=False)
    assert info.to_json() == (
        b'{"meshKey":"' + b"ab" * 32 + b'","version":2,"CanAckPings":false,"IsProber":true,'
        b'"AppName":"lab\\u003c\\u0026\\u003e"}'
    )
    assert ClientInfoJSON.from_json(info.to_json()) == info


def test_server_info_json() -> None:
    assert ServerInfoJSON().to_json() == b'{"version":2}'
    info = ServerInfoJSON(token_bucket_bytes_per_second=1000, token_bucket_bytes_burst=5000)
    assert info.to_json() == b'{"version":2,"TokenBucketBytesPerSecond":1000,"TokenBucketBytesBurst":5000}'
    assert ServerInfoJSON.from_json(info.to_json()) == info


def test_json_decoding_follows_go_unmarshal() -> None:
    assert ClientInfoJSON.from_json(b"{}") == ClientInfoJSON(version=0, can_ack_pings=False)
    got = ClientInfoJSON.from_json(b'{"VERSION":2,"canackpings":true,"Unknown":[1],"AppName":null}')
    assert got == ClientInfoJSON()
    assert ServerInfoJSON.from_json(b' {"version":1,"version":3} ').version == 3


@pytest.mark.parametrize(
    "raw",
    [
        *[b"", b"{", b"[]", b"null", b'{"version":"2"}', b'{"version":2.0}', b'{"CanAckPings":1}', b'{"version":NaN}'],
        *[b'{"meshKey":"short"}', b'{"AppName":"\xff"}', b'{"version":99999999999999999999}', b"[" * 100000],
    ],
)
def test_bad_json(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        ClientInfoJSON.from_json(raw)


client_infos = st.builds(
    ClientInfoJSON,
    version=st.integers(-(2**63), 2**63 - 1),
    can_ack_pings=st.booleans(),
    mesh_key=st.just("") | st.text("0123456789abcdef", min_size=64, max_size=64),
    is_prober=st.booleans(),
    app_name=st.text(st.characters(exclude_categories=["Cs"]), max_size=30),
)
server_infos = st.builds(ServerInfoJSON, *[st.integers(-(2**63), 2**63 - 1)] * 3)


@settings(max_examples=300)
@given(client_infos, server_infos)
def test_json_round_trips(ci: ClientInfoJSON, si: ServerInfoJSON) -> None:
    assert ClientInfoJSON.from_json(ci.to_json()) == ci
    assert ServerInfoJSON.from_json(si.to_json()) == si


@settings(max_examples=300)
@given(st.binary(max_size=100) | st.text(max_size=60).map(lambda t: ('{"AppName":' + t + "}").encode()))
def test_json_decoders_raise_only_decode_error(data: bytes) -> None:
    for cls in (ClientInfoJSON, ServerInfoJSON):
        try:
            cls.from_json(data)
        except DecodeError:
            pass
