"""`natkit wg up/show/down`: one-line errors, `wg show`-identical output, and (with natkit's WireGuard
core) real tunnels: natkit <-> natkit and natkit <-> wireguard-go in namespaces joined by a veth pair."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.node import Link, linked_namespaces, ping, stop_natkit_interface, wireguard_go
from tests.node.transfer import natkit as _natkit
from tests.support import require_root, require_tool, wait_until
from toolkit.cli import main
from toolkit.cli import wg as wg_cli
from toolkit.crypto import keys
from toolkit.node import uapi
from toolkit.node.tun import ip_command, link_exists, run_in_netns
from toolkit.node.uapi import DeviceInfo, PeerInfo
from toolkit.node.wgconfig import PeerConfig, WgConfig, format_config, parse_config
from toolkit.packets.keyring import Keyring
from toolkit.types import Endpoint, NodePublicKey

PRIV = keys.generate_node_key(b"cli-wg-a")
PUB = keys.public_key(PRIV)
PEER = keys.public_key(keys.generate_node_key(b"cli-wg-b"))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.conf"
    path.write_text(text)
    return path


# --- errors ---------------------------------------------------------------------------------------


def test_wg_without_subcommand_prints_help_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "wg")
    assert code == 2 and "up" in err and "show" in err and "down" in err


def test_up_bad_config_is_one_line_with_file_line_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = _write(tmp_path, "nkbad0", f"[Interface]\nPrivateKey = {PRIV.b64()}\nListenPort = many\n")
    code, out, err = _run(capsys, "wg", "up", str(conf))
    assert code == 2 and out == ""
    assert err == f"natkit: error: {conf}:3: ListenPort: 'many' is not a whole number in 0..65535\n"


def test_up_bad_interface_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = _write(tmp_path, "much-too-long-name", f"[Interface]\nPrivateKey = {PRIV.b64()}\n")
    code, _, err = _run(capsys, "wg", "up", str(conf))
    assert code == 2 and "is not a valid one" in err and err.count("\n") == 1


def test_up_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = _run(capsys, "wg", "up", str(tmp_path / "nk0.conf"))
    assert code == 2 and "cannot read the config" in err and err.count("\n") == 1


def test_up_not_root(capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _write(tmp_path, "nk0", f"[Interface]\nPrivateKey = {PRIV.b64()}\nDNS = 10.0.0.53\n")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code, _, err = _run(capsys, "wg", "up", str(conf))
    assert code == 2
    assert err.splitlines() == [
        f"natkit: warning: {conf}:3: DNS: ignored (natkit does not configure resolvers)",
        "natkit: error: `natkit wg up` needs root (it creates a TUN device): run it with sudo",
    ]


def test_up_unknown_netns(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    require_root()
    conf = _write(tmp_path, "nk0", f"[Interface]\nPrivateKey = {PRIV.b64()}\n")
    code, _, err = _run(capsys, "wg", "up", str(conf), "--netns", "natkit-no-such-ns")
    assert code == 2 and "network namespace 'natkit-no-such-ns' does not exist" in err


def test_up_name_in_use_by_wireguard_go(capsys: pytest.CaptureFixture[str], tmp_path: Path, netns: str) -> None:
    name = f"nki{uuid.uuid4().hex[:6]}"
    conf = _write(tmp_path, name, f"[Interface]\nPrivateKey = {PRIV.b64()}\n")
    with wireguard_go(netns, name):
        code, _, err = _run(capsys, "wg", "up", str(conf), "--netns", netns)
    assert code == 2 and f"a WireGuard interface '{name}' is already running" in err


def test_up_name_in_use_by_another_link(capsys: pytest.CaptureFixture[str], tmp_path: Path, netns: str) -> None:
    subprocess.run(
        ["ip", "-n", netns, "link", "add", "nkdummy0", "type", "veth", "peer", "name", "nkdummy1"], check=True
    )
    conf = _write(tmp_path, "nkdummy0", f"[Interface]\nPrivateKey = {PRIV.b64()}\n")
    code, _, err = _run(capsys, "wg", "up", str(conf), "--netns", netns)
    assert code == 2 and f"an interface 'nkdummy0' already exists in namespace {netns}" in err


def test_down_and_show_unknown_interface(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(wg_cli, "RUN_DIR", tmp_path)
    code, _, err = _run(capsys, "wg", "down", "nkabsent0")
    assert code == 2 and "no interface 'nkabsent0' is up" in err
    code, _, err = _run(capsys, "wg", "show", "nkabsent0")
    assert code == 2 and "no WireGuard interface 'nkabsent0'" in err


def test_down_removes_a_stale_pid_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(wg_cli, "RUN_DIR", tmp_path)
    pid_file = tmp_path / "nkstale0.pid"
    pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a natkit wg process
    code, _, err = _run(capsys, "wg", "down", "nkstale0")
    assert code == 2 and "was not running" in err and not pid_file.exists()


# --- wg show formatting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (3 * 2**20, "3.00 MiB"),
        (5 * 2**30, "5.00 GiB"),
        (2**41, "2.00 TiB"),
    ],
)
def test_bytes_like_wg(count: int, text: str) -> None:
    assert wg_cli._bytes(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1 second"),
        (59, "59 seconds"),
        (61, "1 minute, 1 second"),
        (3600, "1 hour"),
        (90061, "1 day, 1 hour, 1 minute, 1 second"),
        (2 * 365 * 86400, "2 years"),
    ],
)
def test_pretty_time_like_wg(seconds: int, text: str) -> None:
    assert wg_cli._pretty_time(seconds) == text
    assert wg_cli._ago(1000, 1000 + seconds) == f"{text} ago"


def test_format_show_sorts_peers_newest_handshake_first() -> None:
    other = keys.public_key(keys.generate_node_key(b"cli-wg-c"))
    device = DeviceInfo(
        private_key=PRIV,
        listen_port=51820,
        peers=(
            PeerInfo(PEER, allowed_ips=()),
            PeerInfo(
                other,
                preshared_key=bytes(range(32)),
                endpoint=Endpoint.parse("10.99.0.2:51820"),
                allowed_ips=("10.99.0.2/32",),
                last_handshake=995.5,
                rx_bytes=92,
                tx_bytes=148,
                persistent_keepalive=25,
            ),
        ),
    )
    assert wg_cli.format_show("nk0", device, 1000.0) == (
        f"interface: nk0\n  public key: {PUB.b64()}\n  private key: (hidden)\n  listening port: 51820\n\n"
        f"peer: {other.b64()}\n  preshared key: (hidden)\n  endpoint: 10.99.0.2:51820\n  allowed ips: 10.99.0.2/32\n"
        "  latest handshake: 5 seconds ago\n  transfer: 92 B received, 148 B sent\n"
        "  persistent keepalive: every 25 seconds\n\n"
        f"peer: {PEER.b64()}\n  allowed ips: (none)\n"
    )


def _setconf(netns: str, name: str, config: WgConfig, tmp_path: Path) -> None:
    path = tmp_path / f"{name}-setconf.conf"
    path.write_text(format_config(config, wg_quick=False))
    subprocess.run(["ip", "netns", "exec", netns, "wg", "setconf", name, str(path)], check=True)
    for address in config.addresses:
        subprocess.run(["ip", "-n", netns, "address", "add", str(address), "dev", name], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", name, "up"], check=True)


def _pair_configs(link: Link, a_port: int, b_port: int, *, keepalive: int = 1) -> tuple[WgConfig, WgConfig]:
    """Configs for a tunnel 10.99.250.1 <-> 10.99.250.2 (fd00:250::1 <-> ::2) over ``link``'s veth:
    a reaches b at b's IPv4 address, b reaches a at a's IPv6 address; a sends keepalives."""
    a_priv, b_priv = keys.generate_node_key(), keys.generate_node_key()
    psk = NodePublicKey(os.urandom(32)).b64()
    a = f"""[Interface]
PrivateKey = {a_priv.b64()}
ListenPort = {a_port}
Address = 10.99.250.1/24, fd00:250::1/64

[Peer]
PublicKey = {keys.public_key(b_priv).b64()}
PresharedKey = {psk}
AllowedIPs = 10.99.250.2/32, fd00:250::2/128
Endpoint = {link.b4}:{b_port}
PersistentKeepalive = {keepalive}
"""
    b = f"""[Interface]
PrivateKey = {b_priv.b64()}
ListenPort = {b_port}
Address = 10.99.250.2/24, fd00:250::2/64

[Peer]
PublicKey = {keys.public_key(a_priv).b64()}
PresharedKey = {psk}
AllowedIPs = 10.99.250.1/32, fd00:250::1/128
Endpoint = [{link.a6}]:{a_port}
"""
    return parse_config(a), parse_config(b)


def test_show_prints_what_wg_show_prints_for_wireguard_go(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Two wireguard-go devices shake hands over a veth; `natkit wg show X` == `wg show X`, byte for byte."""
    require_tool("wg", "wireguard-tools")
    tag = uuid.uuid4().hex[:6]
    name_a, name_b = f"nkga{tag}", f"nkgb{tag}"
    with linked_namespaces() as link, wireguard_go(link.a, name_a), wireguard_go(link.b, name_b):
        cfg_a, cfg_b = _pair_configs(link, 51901, 51902)
        _setconf(link.a, name_a, cfg_a, tmp_path)
        _setconf(link.b, name_b, cfg_b, tmp_path)
        assert wait_until(lambda: uapi.get_device(name_a).peers[0].last_handshake is not None, 10)
        for name in (name_a, name_b):
            for _ in range(3):  # the "N seconds ago" of both must fall in the same second
                code, ours, _ = _run(capsys, "wg", "show", name)
                theirs = subprocess.run(["wg", "show", name], capture_output=True, text=True, check=True).stdout
                if ours == theirs:
                    break
            assert code == 0 and ours == theirs
            assert "latest handshake:" in ours and "transfer:" in ours
        code, everything, _ = _run(capsys, "wg", "show")
        assert f"interface: {name_a}\n" in everything and f"interface: {name_b}\n" in everything


# --- real tunnels (natkit's WireGuard core) --------------------------------------------------------


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Interface names a test brings up with `natkit wg up`; each is stopped on teardown (SIGTERM,
    then SIGKILL) and its pid file and UAPI socket are removed, also when the test fails."""
    names: list[str] = []
    yield names
    for name in names:
        stop_natkit_interface(name)


def _pings(netns: str, address: str) -> Callable[[], bool]:
    return lambda: ping(netns, address, timeout=1.0)


@contextmanager
def _capture(netns: str, iface: str, pcap: Path, port: int) -> Iterator[None]:
    """tshark capturing UDP ``port`` on ``iface`` inside ``netns`` into ``pcap``; stopped on exit."""
    tshark = require_tool("tshark")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, tshark, "-i", iface, "-f", f"udp port {port}", "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = ""
        while "Capturing on" not in line and proc.poll() is None:
            line = proc.stderr.readline()
        yield
    finally:
        time.sleep(0.3)  # let the last packets reach the file
        proc.terminate()
        proc.wait(10)


def test_two_natkit_devices_ping_through_the_tunnel(tmp_path: Path, cleanup: list[str]) -> None:
    """`natkit wg up` in two namespaces joined by a veth; ping v4 and v6 both ways through the tunnel;
    `natkit wg show` and `wg show` see the handshake; the keys file opens the tunnel for natkit's
    sniffer and the Wireshark key log for tshark; `natkit wg down` removes everything."""
    require_root()
    tag = uuid.uuid4().hex[:6]
    name_a, name_b = f"nka{tag}", f"nkb{tag}"
    with linked_namespaces() as link:
        cfg_a, cfg_b = _pair_configs(link, 51911, 51912)
        conf_a = _write(tmp_path, name_a, format_config(cfg_a))
        conf_b = _write(tmp_path, name_b, format_config(cfg_b))
        keys_a, keylog_a, pcap = tmp_path / "a-keys.json", tmp_path / "a.keylog", tmp_path / "tunnel.pcap"
        cleanup += [name_a, name_b]
        with _capture(link.a, link.veth_a, pcap, 51911):
            # b first: a's persistent keepalive starts the handshake at once, and b is there to answer
            # (the other order works too, after REKEY_TIMEOUT = 5 s: protocols.md §8.5)
            up_b = _natkit("wg", "up", str(conf_b), "--netns", link.b)
            assert up_b.returncode == 0, up_b.stderr
            args = ["--keys-out", str(keys_a), "--wireshark-keylog", str(keylog_a)]
            up_a = _natkit("wg", "up", str(conf_a), "--netns", link.a, *args)
            assert up_a.returncode == 0, up_a.stderr
            assert up_a.stdout.startswith(f"{name_a} up in netns {link.a} (pid ") and up_a.stdout.count("\n") == 1
            again = _natkit("wg", "up", str(conf_b), "--netns", link.b)
            assert again.returncode == 2 and f"'{name_b}' is already running" in again.stderr

            assert "mtu 1420" in ip_command(link.a, "link", "show", name_a)
            assert "10.99.250.2 dev" in ip_command(link.a, "-4", "route")
            for src, dst in (
                (link.a, "10.99.250.2"),
                (link.b, "10.99.250.1"),
                (link.a, "fd00:250::2"),
                (link.b, "fd00:250::1"),
            ):
                assert wait_until(_pings(src, dst), 15), f"{src} cannot ping {dst}"

        for _ in range(3):  # `natkit wg show` == `wg show` on natkit's device (same second for "ago")
            shown = _natkit("wg", "show", name_a)
            theirs = subprocess.run(["wg", "show", name_a], capture_output=True, text=True, check=True).stdout
            if shown.stdout == theirs:
                break
        assert shown.returncode == 0 and shown.stdout == theirs
        assert f"peer: {cfg_a.peers[0].public_key.b64()}" in theirs
        assert "latest handshake:" in theirs and "transfer:" in theirs and "preshared key: (hidden)" in theirs
        dump = subprocess.run(["wg", "show", name_b, "dump"], capture_output=True, text=True, check=True).stdout
        peer_line = dump.splitlines()[1].split("\t")
        # b was configured with a's IPv6 address, but a's packets came over IPv4: b roamed to them
        assert peer_line[2] == f"{link.a4}:51911" and int(peer_line[4]) > 0 and int(peer_line[5]) > 0

        # the keys file: natkit's own keyring format, read back by natkit decode
        ring = Keyring.load(keys_a)
        assert ring.has_wireguard_keys and len(ring.wireguard) % 2 == 0
        decoded = _natkit("decode", str(pcap), "--keys", str(keys_a))
        assert decoded.returncode == 0, decoded.stderr
        assert "echo-request" in decoded.stdout and "echo-reply" in decoded.stdout

        # the Wireshark key log: tshark validates the handshake and dissects the pings inside
        log_lines = keylog_a.read_text().splitlines()
        assert log_lines[0] == f"LOCAL_STATIC_PRIVATE_KEY = {cfg_a.private_key.b64()}"
        assert log_lines[1] == f"REMOTE_STATIC_PUBLIC_KEY = {cfg_a.peers[0].public_key.b64()}"
        assert log_lines[2].startswith("LOCAL_EPHEMERAL_PRIVATE_KEY = ")
        assert log_lines[3] == f"PRESHARED_KEY = {NodePublicKey(cfg_a.peers[0].preshared_key or b'').b64()}"
        fields = subprocess.run(
            [
                require_tool("tshark"),
                "-r",
                str(pcap),
                "-o",
                f"wg.keylog_file:{keylog_a}",
                "-d",
                "udp.port==51911,wg",
                "-T",
                "fields",
                "-e",
                "wg.handshake_ok",
                "-e",
                "icmp.type",
                "-e",
                "icmpv6.type",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "1" in {f.split("\t")[0] for f in fields.splitlines()}  # a handshake checked out
        seen = {f.split("\t")[1] for f in fields.splitlines()} | {f.split("\t")[2] for f in fields.splitlines()}
        assert {"8", "0", "128", "129"} <= seen  # echo request/reply, v4 and v6, decrypted

        for name, ns in ((name_a, link.a), (name_b, link.b)):
            down = _natkit("wg", "down", name)
            assert down.returncode == 0 and down.stdout == f"{name} down\n", down.stderr
            assert not uapi.socket_path(name).exists() and not (wg_cli.RUN_DIR / f"{name}.pid").exists()
            assert not link_exists(name, ns)


def test_natkit_and_wireguard_go_ping_both_ways(tmp_path: Path, cleanup: list[str]) -> None:
    """natkit in one namespace, wireguard-go in the other: the same tunnel works in both directions."""
    require_root()
    require_tool("wg", "wireguard-tools")
    tag = uuid.uuid4().hex[:6]
    name_a, name_b = f"nka{tag}", f"nkgo{tag}"
    with linked_namespaces() as link, wireguard_go(link.b, name_b):
        cfg_a, cfg_b = _pair_configs(link, 51921, 51922, keepalive=0)
        _setconf(link.b, name_b, cfg_b, tmp_path)
        for peer in cfg_b.peers:
            for network in peer.allowed_ips:
                ip_command(link.b, f"-{network.version}", "route", "replace", str(network), "dev", name_b)
        conf_a = _write(tmp_path, name_a, format_config(cfg_a))
        cleanup.append(name_a)
        up = _natkit("wg", "up", str(conf_a), "--netns", link.a)
        assert up.returncode == 0, up.stderr
        # wireguard-go initiates (it knows natkit's endpoint), then natkit initiates after a rekey-free restart
        assert wait_until(lambda: ping(link.b, "10.99.250.1", timeout=1.0), 10), "wireguard-go -> natkit v4"
        assert ping(link.a, "10.99.250.2") and ping(link.a, "fd00:250::2") and ping(link.b, "fd00:250::1")
        # and with the ping(8) a student would type, both ways, IPv4 and IPv6 inside the tunnel
        ping8 = require_tool("ping", "iputils-ping")
        for ns, address in ((link.a, "10.99.250.2"), (link.b, "10.99.250.1"), (link.a, "fd00:250::2")):
            res = subprocess.run(["ip", "netns", "exec", ns, ping8, "-c", "2", "-W", "2", address],
                                 capture_output=True, text=True, timeout=15, check=False)  # fmt: skip
            assert res.returncode == 0 and " 0% packet loss" in res.stdout, res.stdout + res.stderr
        dev = uapi.get_device(name_a)
        assert dev.peers[0].last_handshake is not None and dev.peers[0].rx_bytes > 0
        # `wg set` on natkit's device: a new port (the socket is rebound); wireguard-go roams to it
        subprocess.run(["wg", "set", name_a, "listen-port", "51925"], check=True)
        assert uapi.get_device(name_a).listen_port == 51925
        assert wait_until(_pings(link.a, "10.99.250.2"), 5)
        roamed = uapi.get_device(name_b).peers[0].endpoint
        assert roamed is not None and roamed.port == 51925 and str(roamed.ip) in (link.a4, link.a6)
        assert _natkit("wg", "down", name_a).returncode == 0


def test_natkit_initiates_to_wireguard_go(tmp_path: Path, cleanup: list[str]) -> None:
    """The other direction of the handshake: natkit's first packet starts it, wireguard-go responds."""
    require_root()
    require_tool("wg", "wireguard-tools")
    tag = uuid.uuid4().hex[:6]
    name_a, name_b = f"nka{tag}", f"nkgo{tag}"
    with linked_namespaces() as link, wireguard_go(link.b, name_b):
        cfg_a, cfg_b = _pair_configs(link, 51931, 51932, keepalive=0)
        cfg_b = WgConfig(
            cfg_b.private_key,
            cfg_b.listen_port,
            cfg_b.addresses,
            cfg_b.mtu,
            tuple(PeerConfig(p.public_key, p.preshared_key, p.allowed_ips, None, None) for p in cfg_b.peers),
        )
        _setconf(link.b, name_b, cfg_b, tmp_path)
        for peer in cfg_b.peers:
            for network in peer.allowed_ips:
                ip_command(link.b, f"-{network.version}", "route", "replace", str(network), "dev", name_b)
        conf_a = _write(tmp_path, name_a, format_config(cfg_a))
        cleanup.append(name_a)
        assert _natkit("wg", "up", str(conf_a), "--netns", link.a).returncode == 0
        assert wait_until(lambda: ping(link.a, "10.99.250.2", timeout=1.0), 10), "natkit -> wireguard-go v4"
        assert ping(link.a, "fd00:250::2") and ping(link.b, "10.99.250.1")
        theirs = uapi.get_device(name_b)
        assert theirs.peers[0].endpoint == Endpoint.parse(f"{link.a4}:51931")


def test_up_port_in_use_is_one_line_and_leaves_nothing(tmp_path: Path, cleanup: list[str], netns: str) -> None:
    holder = run_in_netns(netns, lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
    with holder:
        holder.bind(("::", 0))
        port = holder.getsockname()[1]
        name = f"nkp{uuid.uuid4().hex[:6]}"
        conf = _write(tmp_path, name, f"[Interface]\nPrivateKey = {PRIV.b64()}\nListenPort = {port}\n")
        cleanup.append(name)
        done = _natkit("wg", "up", str(conf), "--netns", netns)
    assert done.returncode == 2 and done.stdout == ""
    assert (
        done.stderr
        == f"natkit: error: {name}: ListenPort {port} is already in use: pick another port or stop the program that holds it\n"
    )
    assert not link_exists(name, netns) and not uapi.socket_path(name).exists()
