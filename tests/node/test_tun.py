"""TUN devices in a test namespace: open, configure (v4 and v6), packets both ways, cleanup."""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.node import inet_checksum, ping
from tests.support import require_root
from toolkit.errors import UsageError
from toolkit.node.tun import TunDevice, ip_command, link_exists, run_in_netns

V4 = ipaddress.ip_interface("10.99.0.1/24")
V6 = ipaddress.ip_interface("fd00:99::1/64")
ROUTES = [ipaddress.ip_network("10.98.0.0/16"), ipaddress.ip_network("fd00:98::/64"), ipaddress.ip_network("::/0")]


def _udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet carrying one UDP datagram, checksums filled in."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    length = 8 + len(payload)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, length)
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", length, 17)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", inet_checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    if s.version == 6:
        return struct.pack("!IHBB", 6 << 28, length, 17, 64) + s.packed + d.packed + udp
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 1, 0, 64, 17, 0, s.packed, d.packed)
    header = header[:10] + struct.pack("!H", inet_checksum(header)) + header[12:]
    return header + udp


def _read(tun: TunDevice, want: int, proto: int, timeout: float = 3.0) -> bytes:
    """The next IPv``want`` packet of protocol ``proto`` (router solicitations, MLD... are skipped)."""
    while select.select([tun.fd], [], [], timeout)[0]:
        packet = tun.read()
        if packet and packet[0] >> 4 == want and packet[9 if want == 4 else 6] == proto:
            return packet
    raise AssertionError("no packet arrived on the TUN")


@pytest.fixture
def tun(netns: str) -> Iterator[TunDevice]:
    device = TunDevice.open("nktun0", netns=netns)
    skipped = device.configure(addresses=[V4, V6], mtu=1380, routes=ROUTES)
    assert skipped == [ipaddress.ip_network("::/0")]
    yield device
    device.close()


def test_configure_sets_mtu_addresses_routes_and_up(netns: str, tun: TunDevice) -> None:
    link = ip_command(netns, "link", "show", "dev", "nktun0")
    assert "mtu 1380" in link and ",UP," in link and "POINTOPOINT" in link
    addrs = ip_command(netns, "address", "show", "dev", "nktun0")
    assert "inet 10.99.0.1/24" in addrs and "inet6 fd00:99::1/64" in addrs
    assert "10.98.0.0/16 dev nktun0" in ip_command(netns, "-4", "route")
    routes6 = ip_command(netns, "-6", "route")
    assert "fd00:98::/64 dev nktun0" in routes6 and "default" not in routes6
    assert not link_exists("nktun0")  # the root namespace has no such interface


def test_kernel_routes_udp_to_the_tun_and_takes_replies_v4(netns: str, tun: TunDevice) -> None:
    sock = run_in_netns(netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with sock:
        sock.bind(("10.99.0.1", 0))
        port = sock.getsockname()[1]
        sock.sendto(b"hello tun", ("10.98.1.2", 9999))
        packet = _read(tun, 4, 17)
        assert packet[9] == 17 and packet[12:16] == V4.ip.packed and packet[16:20] == bytes([10, 98, 1, 2])
        assert packet[20:24] == struct.pack("!HH", port, 9999) and packet[28:] == b"hello tun"
        tun.write(_udp_packet("10.98.1.2", "10.99.0.1", 9999, port, b"reply"))
        sock.settimeout(3)
        assert sock.recvfrom(100) == (b"reply", ("10.98.1.2", 9999))


def test_kernel_routes_udp_to_the_tun_and_takes_replies_v6(netns: str, tun: TunDevice) -> None:
    sock = run_in_netns(netns, lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
    with sock:
        sock.bind(("fd00:99::1", 0))
        port = sock.getsockname()[1]
        sock.sendto(b"hello tun6", ("fd00:98::2", 9999))
        packet = _read(tun, 6, 17)
        assert packet[6] == 17 and packet[8:24] == V6.ip.packed
        assert packet[40:44] == struct.pack("!HH", port, 9999) and packet[48:] == b"hello tun6"
        tun.write(_udp_packet("fd00:98::2", "fd00:99::1", 9999, port, b"reply6"))
        sock.settimeout(3)
        data, src = sock.recvfrom(100)
        assert data == b"reply6" and src[:2] == ("fd00:98::2", 9999)


def test_ping_own_address_and_echo_through_the_tun(netns: str, tun: TunDevice) -> None:
    assert ping(netns, "10.99.0.1") and ping(netns, "fd00:99::1")  # local delivery, link up
    assert not ping(netns, "10.98.7.7", timeout=0.5)  # goes into the TUN, nobody answers
    request = _read(tun, 4, 1)
    assert request[9] == 1 and request[16:20] == bytes([10, 98, 7, 7]) and request[20] == 8


def test_close_removes_the_interface(netns: str) -> None:
    device = TunDevice.open("nktun1", netns=netns)
    assert link_exists("nktun1", netns)
    device.close()
    assert device.closed and not link_exists("nktun1", netns)
    device.close()  # idempotent


def test_name_in_use_and_bad_names(netns: str, tun: TunDevice) -> None:
    with pytest.raises(UsageError, match="'nktun0' already exists in namespace"):
        TunDevice.open("nktun0", netns=netns)
    with pytest.raises(UsageError, match="1 to 15 bytes"):
        TunDevice.open("x" * 16, netns=netns)


def test_unknown_namespace_is_a_usage_error() -> None:
    require_root()
    with pytest.raises(UsageError, match="network namespace 'natkit-absent-ns' does not exist"):
        TunDevice.open("nktun2", netns="natkit-absent-ns")


def test_run_in_netns_binds_sockets_to_the_namespace(netns: str) -> None:
    names = run_in_netns(netns, lambda: [n for _, n in socket.if_nameindex()])
    assert names == ["lo"]
    with pytest.raises(ZeroDivisionError):
        run_in_netns(netns, lambda: 1 // 0)
