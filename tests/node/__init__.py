"""Tests of toolkit.node (TUN, UAPI, wg-quick config, WireGuard device driver) and helpers they share.

:func:`ping` is a small ICMP echo over a raw socket made inside a namespace, because this machine
(and a minimal CI image) has no ``ping`` binary.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import require_root, require_tool
from toolkit.node.tun import run_in_netns


def inet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement sum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def ping(netns: str | None, address: str, *, timeout: float = 3.0, payload: bytes = b"natkit-ping") -> bool:
    """One ICMP/ICMPv6 echo from inside ``netns``; True if the matching reply came back in time."""
    ip = ipaddress.ip_address(address)
    v6 = ip.version == 6
    ident = os.getpid() & 0xFFFF
    seq = int(time.monotonic() * 1000) & 0xFFFF

    def make() -> socket.socket:
        if v6:
            return socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

    sock = run_in_netns(netns, make)
    with sock:
        kind, reply_kind = (128, 129) if v6 else (8, 0)
        header = struct.pack("!BBHHH", kind, 0, 0, ident, seq)
        csum = 0 if v6 else inet_checksum(header + payload)  # the kernel fills in ICMPv6 checksums
        sock.sendto(struct.pack("!BBHHH", kind, 0, csum, ident, seq) + payload, (address, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                break
            data, src = sock.recvfrom(65535)
            if not v6:
                data = data[(data[0] & 0x0F) * 4 :]  # raw IPv4 sockets deliver the IP header
            if len(data) < 8 or ipaddress.ip_address(src[0].split("%")[0]) != ip:
                continue
            got_kind, _, _, got_id, got_seq = struct.unpack("!BBHHH", data[:8])
            if got_kind == reply_kind and got_id == ident and got_seq == seq and data[8:] == payload:
                return True
    return False


@dataclass(frozen=True)
class Link:
    """Two namespaces joined by a veth pair: ``a`` has ``.1``, ``b`` has ``.2`` (v4 and v6)."""

    a: str
    b: str
    a4: str
    b4: str
    a6: str
    b6: str
    veth_a: str
    veth_b: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@contextmanager
def linked_namespaces() -> Iterator[Link]:
    """Two fresh namespaces and a veth pair between them (10.99.N.0/24, fd00:99:N::/64); all deleted
    on exit, also when the test fails. Names are unique per call and veth names have <= 15 chars."""
    require_root()
    require_tool("ip", "iproute2")
    tag = uuid.uuid4().hex[:8]
    net = int(tag[:2], 16)
    link = Link(
        f"natkit-t-{tag}a",
        f"natkit-t-{tag}b",
        f"10.99.{net}.1",
        f"10.99.{net}.2",
        f"fd00:99:{net:x}::1",
        f"fd00:99:{net:x}::2",
        f"nk{tag[:6]}a",
        f"nk{tag[:6]}b",
    )
    created: list[str] = []
    try:
        for ns in (link.a, link.b):
            _ip("netns", "add", ns)
            created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", link.veth_a, "netns", link.a, "type", "veth", "peer", link.veth_b, "netns", link.b)
        for ns, dev, v4, v6 in ((link.a, link.veth_a, link.a4, link.a6), (link.b, link.veth_b, link.b4, link.b6)):
            _ip("-n", ns, "address", "add", f"{v4}/24", "dev", dev)
            _ip("-n", ns, "-6", "address", "add", f"{v6}/64", "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up")
        yield link
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


@contextmanager
def wireguard_go(netns: str, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """wireguard-go running interface ``name`` in ``netns``; killed and its socket removed on exit."""
    wggo = require_tool("wireguard-go")
    sock = Path(f"/var/run/wireguard/{name}.sock")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, wggo, "-f", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert sock.exists(), f"wireguard-go did not create {sock}"
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.unlink(missing_ok=True)


def stop_natkit_interface(name: str) -> None:
    """Teardown for a `natkit wg up` interface: SIGTERM its process (SIGKILL after 5 s), remove its pid
    file, log and UAPI socket. Safe when it is already down; used also when a test fails."""
    import signal

    from tests.support import wait_until
    from toolkit.cli import wg as wg_cli
    from toolkit.node import uapi

    pid_file = wg_cli.RUN_DIR / f"{name}.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        pid = 0
    if pid and wg_cli._alive(pid) and wg_cli._is_natkit_wg(pid, name):
        os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not wg_cli._alive(pid), 5):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    (wg_cli.RUN_DIR / f"{name}.log").unlink(missing_ok=True)
    uapi.socket_path(name).unlink(missing_ok=True)
