"""The WireGuard UAPI text protocol: formatting and parsing, natkit's server against the real `wg`
binary, and natkit's client against a real wireguard-go device."""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support import require_root, require_tool, wait_until
from toolkit.crypto import keys
from toolkit.errors import UsageError
from toolkit.node import uapi
from toolkit.node.uapi import CoreBackend, DeviceInfo, PeerChange, PeerInfo, SetRequest, UapiError, UapiServer
from toolkit.node.wgconfig import parse_config
from toolkit.types import Endpoint, NodePrivateKey, NodePublicKey

PRIV = keys.generate_node_key(b"uapi-dev")
PUB = keys.public_key(PRIV)
P1 = keys.public_key(keys.generate_node_key(b"uapi-p1"))
P2 = keys.public_key(keys.generate_node_key(b"uapi-p2"))
PSK = bytes(range(100, 132))

DEVICE = DeviceInfo(
    private_key=PRIV,
    listen_port=51820,
    peers=(
        PeerInfo(
            P1,
            preshared_key=PSK,
            endpoint=Endpoint.parse("[fd00::2]:51821"),
            allowed_ips=("10.99.0.2/32", "fd00::2/128"),
            last_handshake=1_700_000_000.25,
            rx_bytes=1234,
            tx_bytes=5678,
            persistent_keepalive=25,
        ),
        PeerInfo(P2, allowed_ips=("10.99.1.0/24",)),
    ),
)


# --- text ---------------------------------------------------------------------------------------


def test_format_get_matches_wireguard_go_layout() -> None:
    text = uapi.format_get(DEVICE)
    assert text.splitlines()[:14] == [
        f"private_key={PRIV.hex()}",
        "listen_port=51820",
        f"public_key={P1.hex()}",
        f"preshared_key={PSK.hex()}",
        "protocol_version=1",
        "endpoint=[fd00::2]:51821",
        "last_handshake_time_sec=1700000000",
        "last_handshake_time_nsec=250000000",
        "tx_bytes=5678",
        "rx_bytes=1234",
        "persistent_keepalive_interval=25",
        "allowed_ip=10.99.0.2/32",
        "allowed_ip=fd00::2/128",
        f"public_key={P2.hex()}",
    ]
    assert f"preshared_key={'00' * 32}" in text  # P2 has none: zeros, as wireguard-go prints
    assert uapi.parse_get(text + "errno=0\n\n") == DEVICE


def test_parse_get_reports_errno() -> None:
    with pytest.raises(UapiError) as info:
        uapi.parse_get("errno=-22\n\n")
    assert info.value.errno == errno.EINVAL
    with pytest.raises(UapiError, match="no errno line"):
        uapi.parse_get("listen_port=1\n")


def test_parse_set_of_what_wg_set_sends() -> None:
    # the lines wireguard-tools' userspace_set_device writes for
    # `wg set X listen-port 5 peer P1 remove peer P2 preshared-key F endpoint ... allowed-ips ...`
    text = (
        f"listen_port=5\nreplace_peers=true\npublic_key={P1.hex()}\nremove=true\npublic_key={P2.hex()}\n"
        f"preshared_key={PSK.hex()}\nendpoint=[fd00::9]:7\npersistent_keepalive_interval=0\n"
        "replace_allowed_ips=true\nallowed_ip=10.1.2.3/24\nallowed_ip=fd00::/64\nprotocol_version=1\n"
    )
    assert uapi.parse_set(text) == SetRequest(
        listen_port=5,
        replace_peers=True,
        peers=(
            PeerChange(P1, remove=True),
            PeerChange(
                P2,
                preshared_key=PSK,
                endpoint=Endpoint.parse("[fd00::9]:7"),
                persistent_keepalive=0,
                replace_allowed_ips=True,
                allowed_ips=("10.1.2.0/24", "fd00::/64"),
            ),
        ),
    )


@pytest.mark.parametrize(
    "text",
    [
        "bogus=1\n",
        "listen_port=65536\n",
        "private_key=abcd\n",
        "replace_peers=false\n",
        f"public_key={P1.hex()}\nremove=yes\n",
        f"public_key={P1.hex()}\nendpoint=host:1\n",
        f"public_key={P1.hex()}\nallowed_ip=10.0.0.0/33\n",
        f"public_key={P1.hex()}\nprotocol_version=2\n",
        f"public_key={P1.hex()}\nlisten_port=1\n",
    ],
)
def test_parse_set_rejects_bad_lines_with_einval(text: str) -> None:
    with pytest.raises(UapiError) as info:
        uapi.parse_set(text)
    assert info.value.errno == errno.EINVAL


_keys = st.binary(min_size=32, max_size=32)
_prefixes = st.sampled_from(["10.0.0.0/8", "10.99.0.2/32", "fd00::/64", "::/0", "0.0.0.0/0"])
_eps = st.none() | st.sampled_from([Endpoint.parse("192.0.2.1:1"), Endpoint.parse("[fd00::1]:65535")])
_peer_infos = st.builds(
    PeerInfo,
    public_key=_keys.map(NodePublicKey),
    preshared_key=st.none() | _keys.filter(any),
    endpoint=_eps,
    allowed_ips=st.lists(_prefixes, unique=True, max_size=3).map(tuple),
    last_handshake=st.none() | st.integers(1, 2**40).map(float),
    rx_bytes=st.integers(0, 2**64 - 1),
    tx_bytes=st.integers(0, 2**64 - 1),
    persistent_keepalive=st.none() | st.integers(1, 65535),
)
_devices = st.builds(
    DeviceInfo,
    private_key=st.none() | _keys.filter(any).map(NodePrivateKey),
    listen_port=st.none() | st.integers(1, 65535),
    peers=st.lists(_peer_infos, max_size=3).map(tuple),
)
_changes = st.builds(
    PeerChange,
    public_key=_keys.map(NodePublicKey),
    update_only=st.booleans(),
    preshared_key=st.none() | _keys,
    endpoint=_eps,
    persistent_keepalive=st.none() | st.integers(0, 65535),
    replace_allowed_ips=st.booleans(),
    allowed_ips=st.lists(_prefixes, max_size=3).map(tuple),
) | st.builds(PeerChange, public_key=_keys.map(NodePublicKey), remove=st.just(True))
_requests = st.builds(
    SetRequest,
    private_key=st.none() | _keys.map(NodePrivateKey),
    listen_port=st.none() | st.integers(0, 65535),
    replace_peers=st.booleans(),
    peers=st.lists(_changes, max_size=3).map(tuple),
)


@settings(max_examples=200)
@given(_devices)
def test_get_round_trip(device: DeviceInfo) -> None:
    assert uapi.parse_get(uapi.format_get(device) + "errno=0\n\n") == device


@settings(max_examples=200)
@given(_requests)
def test_set_round_trip(request: SetRequest) -> None:
    text = uapi.format_set(request)
    assert text.startswith("set=1\n") and text.endswith("\n\n")
    assert uapi.parse_set(text.removeprefix("set=1\n")) == request


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_parsers_raise_only_uapi_error(text: str) -> None:
    for parse in (uapi.parse_get, uapi.parse_set):
        try:
            parse(text)
        except UapiError:
            pass


# --- natkit's server, driven by the real `wg` -----------------------------------------------------


@dataclass
class _PeerStatusForUapiTest:
    public_key: NodePublicKey
    preshared_key: bytes | None
    endpoint: Endpoint | None
    allowed_ips: list[str]
    persistent_keepalive: int | None
    last_handshake: float | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass
class MinimalCoreForUapiTextTest:
    """ONLY for this UAPI text test: the peer table part of the sans-IO WireGuardDevice contract
    (private_key, set_private_key, add_peer, remove_peer, peer_status), no protocol at all."""

    key: NodePrivateKey
    peers: dict[NodePublicKey, _PeerStatusForUapiTest] = field(default_factory=dict)

    @property
    def private_key(self) -> NodePrivateKey:
        return self.key

    def set_private_key(self, key: NodePrivateKey) -> None:
        self.key = key

    def add_peer(
        self,
        public_key: NodePublicKey,
        *,
        preshared_key: bytes | None = None,
        allowed_ips: Iterable[str] = (),
        endpoint: Endpoint | None = None,
        persistent_keepalive: int | None = None,
    ) -> None:
        old = self.peers.get(public_key)
        status = _PeerStatusForUapiTest(public_key, preshared_key, endpoint, list(allowed_ips), persistent_keepalive)
        if old is not None:
            status.last_handshake, status.rx_bytes, status.tx_bytes = old.last_handshake, old.rx_bytes, old.tx_bytes
        self.peers[public_key] = status

    def remove_peer(self, public_key: NodePublicKey) -> None:
        self.peers.pop(public_key, None)

    def peer_status(self) -> list[_PeerStatusForUapiTest]:
        return list(self.peers.values())


@pytest.fixture
def served() -> Iterator[tuple[str, MinimalCoreForUapiTextTest, list[int]]]:
    """A UapiServer on /var/run/wireguard/NAME.sock in a background event loop; removed on teardown."""
    require_root()
    require_tool("wg", "wireguard-tools")
    name = f"nku{uuid.uuid4().hex[:6]}"
    core = MinimalCoreForUapiTextTest(PRIV)
    core.add_peer(
        P1,
        preshared_key=PSK,
        allowed_ips=["10.99.0.2/32", "fd00::2/128"],
        endpoint=Endpoint.parse("[fd00::2]:51821"),
        persistent_keepalive=25,
    )
    core.peers[P1].last_handshake = time.time() - 42
    core.peers[P1].rx_bytes, core.peers[P1].tx_bytes = 2048, 3 * 1024 * 1024
    port = [51820]

    def rebind(new: int) -> None:
        if new == 1:
            raise UapiError(errno.EADDRINUSE, "port 1 in use")
        port[0] = new

    backend = CoreBackend(core, listen_port=lambda: port[0], rebind=rebind)
    loop = asyncio.new_event_loop()
    server = UapiServer(name, backend)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield name, core, port
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        assert not server.path.exists()


def _wg(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["wg", *args], capture_output=True, text=True, check=check, timeout=10)


def test_wg_show_dump_reads_natkit_device(served: tuple[str, MinimalCoreForUapiTextTest, list[int]]) -> None:
    name, _, _ = served
    iface, peer = _wg("show", name, "dump").stdout.splitlines()
    assert iface.split("\t") == [PRIV.b64(), PUB.b64(), "51820", "off"]
    fields = peer.split("\t")
    assert fields[:4] == [P1.b64(), NodePublicKey(PSK).b64(), "[fd00::2]:51821", "10.99.0.2/32,fd00::2/128"]
    assert abs(int(fields[4]) - (time.time() - 42)) < 5
    assert fields[5:] == ["2048", str(3 * 1024 * 1024), "25"]
    assert name in _wg("show", "interfaces").stdout.split()


def test_wg_show_pretty_and_showconf(served: tuple[str, MinimalCoreForUapiTextTest, list[int]]) -> None:
    name, _, _ = served
    pretty = _wg("show", name).stdout
    assert f"interface: {name}" in pretty and f"public key: {PUB.b64()}" in pretty
    assert "transfer: 2.00 KiB received, 3.00 MiB sent" in pretty
    assert "persistent keepalive: every 25 seconds" in pretty
    cfg = parse_config(_wg("showconf", name).stdout)
    assert cfg.private_key == PRIV and cfg.listen_port == 51820
    assert cfg.peers[0].public_key == P1 and cfg.peers[0].preshared_key == PSK


def test_wg_set_changes_natkit_device(
    served: tuple[str, MinimalCoreForUapiTextTest, list[int]], tmp_path: Path
) -> None:
    name, core, port = served
    psk_file = tmp_path / "psk"
    psk_file.write_text(NodePublicKey(bytes(range(32))).b64() + "\n")
    _wg(
        "set",
        name,
        "listen-port",
        "40000",
        "peer",
        P2.b64(),
        "allowed-ips",
        "10.99.5.0/24,fd00:5::/64",
        "endpoint",
        "192.0.2.7:9",
        "persistent-keepalive",
        "10",
        "preshared-key",
        str(psk_file),
    )
    assert port == [40000]
    p2 = core.peers[P2]
    assert (p2.allowed_ips, p2.endpoint, p2.persistent_keepalive, p2.preshared_key) == (
        ["10.99.5.0/24", "fd00:5::/64"],
        Endpoint.parse("192.0.2.7:9"),
        10,
        bytes(range(32)),
    )
    # allowed-ips on an existing peer replaces them; counters survive
    _wg("set", name, "peer", P1.b64(), "allowed-ips", "10.99.9.9/32")
    assert core.peers[P1].allowed_ips == ["10.99.9.9/32"] and core.peers[P1].rx_bytes == 2048
    assert core.peers[P1].endpoint == Endpoint.parse("[fd00::2]:51821")
    _wg("set", name, "peer", P1.b64(), "remove")
    assert list(core.peers) == [P2]
    new_key = tmp_path / "key"
    new_priv = keys.generate_node_key(b"uapi-new")
    new_key.write_text(new_priv.b64())
    _wg("set", name, "private-key", str(new_key))
    assert core.private_key == new_priv
    assert _wg("show", name, "public-key").stdout.strip() == keys.public_key(new_priv).b64()


def test_wg_set_errors_come_back_as_errno(served: tuple[str, MinimalCoreForUapiTextTest, list[int]]) -> None:
    name, _, port = served
    done = _wg("set", name, "fwmark", "7", check=False)
    assert done.returncode != 0 and "Invalid argument" in done.stderr
    done = _wg("set", name, "listen-port", "1", check=False)
    assert done.returncode != 0 and "Address already in use" in done.stderr
    assert port == [51820]


def test_natkit_client_against_natkit_server(served: tuple[str, MinimalCoreForUapiTextTest, list[int]]) -> None:
    name, core, _ = served
    dev = uapi.get_device(name)
    assert dev.private_key == PRIV and dev.public_key == PUB and dev.listen_port == 51820
    assert dev.peers[0].allowed_ips == ("10.99.0.2/32", "fd00::2/128")
    uapi.set_device(name, SetRequest(peers=(PeerChange(P1, remove=True),)))
    assert core.peers == {}
    with pytest.raises(UapiError) as info:
        uapi.set_device(name, SetRequest(fwmark=3))
    assert info.value.errno == errno.EINVAL
    assert name in uapi.list_interfaces()


def test_client_errors_for_missing_interface(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no WireGuard interface 'nope0'"):
        uapi.get_device("nope0", directory=tmp_path)
    assert uapi.list_interfaces(tmp_path) == []
    assert uapi.list_interfaces(tmp_path / "absent") == []


# --- natkit's client against wireguard-go ---------------------------------------------------------


def test_natkit_client_reads_and_sets_wireguard_go(netns: str) -> None:
    wg = require_tool("wg", "wireguard-tools")
    wggo = require_tool("wireguard-go")
    name = f"nkg{uuid.uuid4().hex[:6]}"
    sock = Path(f"/var/run/wireguard/{name}.sock")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, wggo, "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert wait_until(lambda: uapi.interface_answers(name), 5.0)
        uapi.set_device(
            name,
            SetRequest(
                private_key=PRIV,
                listen_port=51999,
                peers=(
                    PeerChange(
                        P1,
                        preshared_key=PSK,
                        endpoint=Endpoint.parse("[fd00::2]:51821"),
                        persistent_keepalive=25,
                        allowed_ips=("10.99.0.2/32", "fd00::2/128"),
                    ),
                ),
            ),
        )
        dump = subprocess.run(
            ["ip", "netns", "exec", netns, wg, "show", name, "dump"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert dump[0].split("\t")[:3] == [PRIV.b64(), PUB.b64(), "51999"]
        assert dump[1].split("\t")[:4] == [
            P1.b64(),
            NodePublicKey(PSK).b64(),
            "[fd00::2]:51821",
            "10.99.0.2/32,fd00::2/128",
        ]
        dev = uapi.get_device(name)
        assert dev.private_key == PRIV and dev.listen_port == 51999
        (peer,) = dev.peers
        assert (peer.public_key, peer.preshared_key, peer.endpoint, peer.persistent_keepalive) == (
            P1,
            PSK,
            Endpoint.parse("[fd00::2]:51821"),
            25,
        )
        assert set(peer.allowed_ips) == {"10.99.0.2/32", "fd00::2/128"}
        assert peer.last_handshake is None
        # wireguard-go's own error for a bad key reaches natkit's parser as errno=-22
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b"set=1\nbogus=1\n\n")
            answer = s.recv(4096).decode()
        with pytest.raises(UapiError) as info:
            uapi.parse_get(answer)
        assert info.value.errno == errno.EINVAL
    finally:
        proc.terminate()
        proc.wait(5)
        sock.unlink(missing_ok=True)
