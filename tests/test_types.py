"""Value types: endpoints, keys and transaction ids (toolkit/types.py), and timing."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.errors import BadValueError, UsageError
from toolkit.timing import DEFAULT, Timing
from toolkit.types import DiscoPrivateKey, DiscoPublicKey, Endpoint, NodePublicKey, TxID


@pytest.mark.parametrize(
    ("text", "ip", "port"),
    [
        ("1.2.3.4:567", "1.2.3.4", 567),
        ("[2001::3456]:789", "2001::3456", 789),
        ("[::ffff:1.2.3.4]:5", "1.2.3.4", 5),
        ("203.0.113.7:41641", "203.0.113.7", 41641),
    ],
)
def test_endpoint_parse_and_text(text: str, ip: str, port: int) -> None:
    ep = Endpoint.parse(text)
    assert ep.ip == ipaddress.ip_address(ip)
    assert ep.port == port
    assert Endpoint.parse(str(ep)) == ep


@pytest.mark.parametrize("bad", ["1.2.3.4", "1.2.3.4:99999", "::1:80", "[::1]80", "host:80", ""])
def test_endpoint_parse_rejects_with_a_hint(bad: str) -> None:
    with pytest.raises(UsageError, match=r"1\.2\.3\.4:567"):
        Endpoint.parse(bad)


def test_endpoint_packed16_unmaps_v4() -> None:
    ep = Endpoint.parse("1.2.3.4:567")
    packed = ep.packed16()
    assert packed == bytes(10) + b"\xff\xff\x01\x02\x03\x04"
    assert Endpoint.from_packed16(packed, 567) == ep
    v6 = Endpoint.parse("[fed0::12]:6666")
    assert Endpoint.from_packed16(v6.packed16(), 6666) == v6
    assert v6.is_ipv6 and not ep.is_ipv6


def test_endpoint_port_range() -> None:
    with pytest.raises(BadValueError):
        Endpoint(ipaddress.ip_address("1.2.3.4"), 70000)


@given(st.binary(min_size=32, max_size=32))
def test_key_text_forms_round_trip(raw: bytes) -> None:
    k = DiscoPublicKey(raw)
    assert DiscoPublicKey.parse(str(k)) == k
    assert DiscoPublicKey.parse(k.hex()) == k
    assert DiscoPublicKey.parse(k.b64()) == k
    assert str(k) == "discokey:" + raw.hex()
    assert k.b64() == base64.b64encode(raw).decode()


def test_keys_of_different_roles_differ_and_private_keys_hide() -> None:
    raw = bytes(range(32))
    assert DiscoPublicKey(raw) != NodePublicKey(raw)
    priv = DiscoPrivateKey(raw)
    assert raw.hex() not in str(priv) and raw.hex() not in repr(priv)
    assert priv.text().endswith(raw.hex())
    with pytest.raises(UsageError, match="discokey"):
        DiscoPublicKey.parse("nodekey:" + raw.hex())
    with pytest.raises(BadValueError):
        NodePublicKey(b"short")
    with pytest.raises(AttributeError):
        priv.raw = b"x" * 32  # type: ignore[misc]


def test_txid() -> None:
    t = TxID(bytes(range(1, 13)))
    assert str(t) == "0102030405060708090a0b0c"
    assert TxID.parse(str(t)) == t
    with pytest.raises(BadValueError):
        TxID(b"123")
    with pytest.raises(UsageError):
        TxID.parse("zz")


def test_timing_defaults_follow_tailscale_and_wireguard() -> None:
    assert DEFAULT.heartbeat_interval == 3.0
    assert DEFAULT.trust_udp_addr_duration == 6.5
    assert DEFAULT.upgrade_udp_direct_interval == 60.0
    assert DEFAULT.ping_timeout == 5.0
    assert DEFAULT.rekey_after_time == 120.0
    assert DEFAULT.reject_after_time == 180.0
    assert DEFAULT.max_timer_handshakes == 18
    assert DEFAULT.zero_keys_after == 540.0
    assert DEFAULT.new_handshake_timeout == 15.0


def test_timing_scaled_and_replace() -> None:
    slow = DEFAULT.scaled(10)
    assert slow.heartbeat_interval == 30.0
    assert slow.stun_rc == DEFAULT.stun_rc  # counts are not scaled
    fast = DEFAULT.replace(rekey_after_time=1.0)
    assert fast.rekey_after_time == 1.0 and isinstance(fast, Timing)
    with pytest.raises(ValueError):
        DEFAULT.scaled(0)
    with pytest.raises(TypeError):
        DEFAULT.replace(no_such_timer=1.0)
