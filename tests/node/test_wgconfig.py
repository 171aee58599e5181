"""The wg-quick config parser and writer: every field, the decisions, one-line errors, round trips,
and the writer's output accepted by the real ``wg setconf`` (against wireguard-go)."""

from __future__ import annotations

import ipaddress
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import require_tool, wait_until
from toolkit.crypto import keys
from toolkit.errors import UsageError
from toolkit.node.wgconfig import PeerConfig, WgConfig, format_config, interface_name, load_config, parse_config
from toolkit.types import Endpoint, NodePublicKey

PRIV = keys.generate_node_key(b"wgconfig-a")
PEER1 = keys.public_key(keys.generate_node_key(b"wgconfig-b"))
PEER2 = keys.public_key(keys.generate_node_key(b"wgconfig-c"))
PSK = bytes(range(32))

FULL = f"""\
# a comment line
[Interface]
PrivateKey = {PRIV.b64()}
ListenPort = 51820   # trailing comment
Address = 10.99.0.1/24, fd00::1/64
Address = 10.99.1.1
MTU = 1380

[Peer]
PublicKey = {PEER1.b64()}
PresharedKey = {NodePublicKey(PSK).b64()}
AllowedIPs = 10.99.0.2/32, fd00::2/128
AllowedIPs = 10.100.0.7/16
Endpoint = [fd00:1::2]:51821
PersistentKeepalive = 25

[peer]
publickey={PEER2.b64()}
allowedips=0.0.0.0/0
endpoint=192.0.2.1:51820
persistentkeepalive = off
"""


def test_full_config_every_field() -> None:
    cfg = parse_config(FULL, filename="wg0.conf")
    assert cfg.private_key == PRIV
    assert cfg.listen_port == 51820
    assert cfg.mtu == 1380
    assert [str(a) for a in cfg.addresses] == ["10.99.0.1/24", "fd00::1/64", "10.99.1.1/32"]
    p1, p2 = cfg.peers
    assert p1.public_key == PEER1 and p1.preshared_key == PSK
    assert [str(n) for n in p1.allowed_ips] == ["10.99.0.2/32", "fd00::2/128", "10.100.0.0/16"]
    assert p1.endpoint == Endpoint.parse("[fd00:1::2]:51821")
    assert p1.persistent_keepalive == 25
    assert p1.line == 9
    assert p2.public_key == PEER2 and p2.preshared_key is None
    assert p2.allowed_ips == (ipaddress.ip_network("0.0.0.0/0"),)
    assert p2.endpoint == Endpoint.parse("192.0.2.1:51820")
    assert p2.persistent_keepalive is None
    assert cfg.warnings == ()


def test_minimal_config_defaults() -> None:
    cfg = parse_config(f"[Interface]\nPrivateKey={PRIV.b64()}\n")
    assert cfg == WgConfig(private_key=PRIV)
    assert cfg.listen_port is None and cfg.mtu is None and cfg.peers == ()


def test_wg_quick_only_keys_are_ignored_with_a_warning() -> None:
    text = f"[Interface]\nPrivateKey={PRIV.b64()}\nDNS = 1.1.1.1\nPostUp = iptables -A FORWARD\nSaveConfig = true\n"
    cfg = parse_config(text, filename="x.conf")
    assert cfg.warnings == (
        "x.conf:3: DNS: ignored (natkit does not configure resolvers)",
        "x.conf:4: PostUp: ignored (natkit runs no hook scripts)",
        "x.conf:5: SaveConfig: ignored (natkit never rewrites the config file)",
    )


HEAD = f"[Interface]\nPrivateKey = {PRIV.b64()}\n"  # lines 1-2; each case's text starts at line 3
BAD = [
    ("ListenPort = 70000\n", "x.conf:3: ListenPort: '70000' is not a whole number in 0..65535"),
    ("MTU = big\n", "x.conf:3: MTU: 'big' is not a whole number"),
    ("Address = 10.99.0.300/24\n", "x.conf:3: Address: '10.99.0.300/24' is not an address"),
    ("Colour = blue\n", "x.conf:3: Colour: unknown setting in [Interface]"),
    ("just words\n", "x.conf:3: 'just words' is not 'Key = Value'"),
    ("ListenPort =\n", "x.conf:3: ListenPort: has no value"),
    ("ListenPort = 1\nListenPort = 2\n", "x.conf:4: ListenPort: given twice in this section (also at line 3)"),
    ("PrivateKey = nope\n", "x.conf:3: PrivateKey: given twice"),
    ("[Peer]\nAllowedIPs = 10.0.0.0/8\n", "x.conf:3: PublicKey: missing in this [Peer]"),
    (
        f"[Peer]\nPublicKey = {PEER1.b64()}\nEndpoint = vpn.example.com:51820\n",
        "x.conf:5: Endpoint: 'vpn.example.com:51820' is not IP:port",
    ),
    (f"[Peer]\nPublicKey = {PEER1.b64()}\nEndpoint = fd00::1:51820\n", "x.conf:5: Endpoint:"),
    (
        f"[Peer]\nPublicKey = {PEER1.b64()}\nAllowedIPs = 10.0.0.0/33\n",
        "x.conf:5: AllowedIPs: '10.0.0.0/33' is not a network",
    ),
    (f"[Peer]\nPublicKey = {PEER1.b64()}\nPersistentKeepalive = -1\n", "x.conf:5: PersistentKeepalive:"),
    (f"[Peer]\nPublicKey = {PEER1.b64()}\nPresharedKey = abc\n", "x.conf:5: PresharedKey: not a 32-byte key"),
    (f"[Peer]\nPublicKey = {PEER1.b64()[:-2]}\n", "x.conf:4: PublicKey: not a 32-byte key"),
    (f"[Peer]\nPublicKey = {PEER1.b64()}\nListenPort = 5\n", "x.conf:5: ListenPort: unknown setting in [Peer]"),
    (
        f"[Peer]\nPublicKey = {PEER1.b64()}\n[Peer]\nPublicKey = {PEER1.b64()}\n",
        "x.conf:6: PublicKey: the same peer is already configured at line 3",
    ),
    ("[Interface]\n", "x.conf:3: [Interface]: a second [Interface] section (the first is at line 1)"),
    ("[Wireguard]\n", "x.conf:3: [Wireguard]: unknown section"),
    ("MTU = 1200\nAddress = fd00::1/64\n", "x.conf:3: MTU: 1200 is below 1280"),
]


@pytest.mark.parametrize(("tail", "message"), BAD, ids=[f"{i}-{m.split(': ')[1]}" for i, (_, m) in enumerate(BAD)])
def test_bad_config_one_line_error_with_file_line_field(tail: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_config(HEAD + tail, filename="x.conf")
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text


def test_bad_private_key() -> None:
    with pytest.raises(UsageError, match=r"^x.conf:2: PrivateKey: not a 32-byte key: give the 44 base64 .*wg genkey"):
        parse_config("[Interface]\nPrivateKey = nope\n", filename="x.conf")


def test_missing_sections_and_keys() -> None:
    with pytest.raises(UsageError, match=r"^c:1: \[Interface\]: missing"):
        parse_config("", filename="c")
    with pytest.raises(UsageError, match=r"^c:2: PrivateKey: missing in \[Interface\]"):
        parse_config("\n[Interface]\nListenPort=1\n", filename="c")
    with pytest.raises(UsageError, match=r"^c:1: ListenPort: this setting comes before any section"):
        parse_config("ListenPort=1\n[Interface]\n", filename="c")


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read the config"):
        load_config(tmp_path / "absent.conf")
    path = tmp_path / "wg7.conf"
    path.write_text(FULL)
    assert load_config(path) == parse_config(FULL)


@pytest.mark.parametrize(
    ("path", "name"), [("/etc/wireguard/wg0.conf", "wg0"), ("lab/natkit-a.conf", "natkit-a"), ("x_1+=.conf", "x_1+=")]
)
def test_interface_name_is_the_stem(path: str, name: str) -> None:
    assert interface_name(path) == name


@pytest.mark.parametrize("path", ["a-name-longer-than-15.conf", "bad name.conf", ".conf"])
def test_interface_name_rejects_invalid(path: str) -> None:
    with pytest.raises(UsageError, match="not a valid one"):
        interface_name(path)


def test_writer_round_trip_of_the_full_config() -> None:
    cfg = parse_config(FULL)
    assert parse_config(format_config(cfg)) == cfg
    setconf = parse_config(format_config(cfg, wg_quick=False))
    assert setconf.addresses == () and setconf.mtu is None and setconf.peers == cfg.peers


_keys = st.binary(min_size=32, max_size=32)
_v4 = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False), st.integers(0, 2**32 - 1), st.integers(0, 32))
_v6 = st.builds(
    lambda a, p: ipaddress.ip_network((a, p), strict=False), st.integers(0, 2**128 - 1), st.integers(0, 128)
)
_endpoints = st.one_of(
    st.builds(lambda a, p: Endpoint(ipaddress.IPv4Address(a), p), st.integers(0, 2**32 - 1), st.integers(0, 65535)),
    st.builds(lambda a, p: Endpoint(ipaddress.IPv6Address(a), p), st.integers(0, 2**128 - 1), st.integers(0, 65535)),
)
_peers = st.builds(
    PeerConfig,
    public_key=_keys.map(NodePublicKey),
    preshared_key=st.none() | _keys,
    allowed_ips=st.lists(_v4 | _v6, max_size=4, unique=True).map(tuple),
    endpoint=st.none() | _endpoints,
    persistent_keepalive=st.none() | st.integers(1, 65535),
)
_configs = st.builds(
    WgConfig,
    private_key=_keys.map(lambda raw: keys.generate_node_key(raw)),
    listen_port=st.none() | st.integers(0, 65535),
    addresses=st.lists(
        st.builds(lambda a, p: ipaddress.ip_interface((a, p)), st.integers(1, 2**32 - 1), st.integers(1, 32)),
        max_size=3,
    ).map(tuple),
    mtu=st.none() | st.integers(1280, 65535),
    peers=st.lists(_peers, max_size=3, unique_by=lambda p: p.public_key).map(tuple),
)


@settings(max_examples=200)
@given(_configs)
def test_writer_then_parser_is_identity(cfg: WgConfig) -> None:
    assert parse_config(format_config(cfg)) == cfg


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_parser_raises_only_usage_error(text: str) -> None:
    try:
        parse_config(text)
    except UsageError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200)
@given(st.lists(st.sampled_from(FULL.splitlines()), max_size=25))
def test_shuffled_real_lines_parse_or_fail_cleanly(lines: list[str]) -> None:
    try:
        parse_config("\n".join(lines))
    except UsageError as exc:
        assert str(exc).startswith("<config>:")


def test_writer_output_is_accepted_by_wg_setconf_on_wireguard_go(netns: str, tmp_path: Path) -> None:
    """`wg setconf` (the non-wg-quick subset) configures wireguard-go; `wg showconf` gives it back."""
    wg = require_tool("wg", "wireguard-tools")
    wggo = require_tool("wireguard-go")
    name = f"nkc{uuid.uuid4().hex[:6]}"
    cfg = parse_config(FULL)
    conf = tmp_path / "setconf.conf"
    conf.write_text(format_config(cfg, wg_quick=False))
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, wggo, "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert wait_until(lambda: Path(f"/var/run/wireguard/{name}.sock").exists(), 5.0)
        subprocess.run(["ip", "netns", "exec", netns, wg, "setconf", name, str(conf)], check=True)
        shown = subprocess.run(
            ["ip", "netns", "exec", netns, wg, "showconf", name], check=True, capture_output=True, text=True
        ).stdout
        back = parse_config(shown)
        assert back.private_key == cfg.private_key and back.listen_port == cfg.listen_port
        assert _peer_table(back) == _peer_table(cfg)
    finally:
        proc.terminate()
        proc.wait(5)
        Path(f"/var/run/wireguard/{name}.sock").unlink(missing_ok=True)


def _peer_table(cfg: WgConfig) -> dict[NodePublicKey, tuple[object, ...]]:
    """Peers by key, allowed IPs as a set (wg showconf may reorder them)."""
    return {
        p.public_key: (p.preshared_key, frozenset(p.allowed_ips), p.endpoint, p.persistent_keepalive) for p in cfg.peers
    }
