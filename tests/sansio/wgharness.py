"""An in-memory network for two sans-IO WireGuard devices (design.md §6: two cores, no sockets).

:class:`WgNet` moves what one device wants to send to the other's ``receive_datagram``, keeps a fake
clock and fires ``handle_timer`` exactly when a device's ``get_timer`` says so. Datagrams wait in
``in_flight`` until a test delivers, drops, duplicates or reorders them; ``settle()`` delivers
everything in order (a perfect network).
"""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field
from typing import Any

from toolkit.crypto.keys import node_key_pair
from toolkit.sansio.trace import TraceLog
from toolkit.sansio.wireguard import WireGuardDevice
from toolkit.timing import Timing
from toolkit.types import Endpoint, NodePublicKey

EPOCH = 1_700_000_000.0
A_EP = Endpoint.parse("192.0.2.1:51820")
B_EP = Endpoint.parse("198.51.100.2:51821")
A_IP, B_IP = "10.0.0.1", "10.0.0.2"


def ipv4(src: str, dst: str, payload: bytes = b"", *, proto: int = 17) -> bytes:
    """A minimal IPv4 packet (no checksum: WireGuard does not look at it)."""
    total = 20 + len(payload)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0, ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )  # fmt: skip
    return header + payload


def ipv6(src: str, dst: str, payload: bytes = b"") -> bytes:
    header = struct.pack("!IHBB", 6 << 28, len(payload), 17, 64)
    return header + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload


@dataclass
class Datagram:
    src: Endpoint
    dst: Endpoint
    data: bytes
    at: float = 0.0

    @property
    def type(self) -> int:
        return self.data[0]


@dataclass
class WgNet:
    """Two (or more) devices by endpoint, a clock, and the datagrams in flight."""

    devices: dict[Endpoint, WireGuardDevice]
    now: float = 0.0
    in_flight: list[Datagram] = field(default_factory=list)
    delivered: dict[Endpoint, list[bytes]] = field(default_factory=dict)
    sent_log: list[Datagram] = field(default_factory=list)
    muted: set[Endpoint] = field(default_factory=set)  # what these endpoints send is lost

    def sent_by(self, device: WireGuardDevice, msg_type: int | None = None) -> list[Datagram]:
        """Every datagram ``device`` sent so far (of one WireGuard message type)."""
        self.pump()
        ep = self.endpoint_of(device)
        return [d for d in self.sent_log if d.src == ep and (msg_type is None or d.type == msg_type)]

    def endpoint_of(self, device: WireGuardDevice) -> Endpoint:
        return next(ep for ep, d in self.devices.items() if d is device)

    def pump(self) -> None:
        """Collect what every device wants sent and what it decrypted."""
        for ep, dev in self.devices.items():
            for data, dst in dev.datagrams_to_send():
                dgram = Datagram(ep, dst, data, self.now)
                self.sent_log.append(dgram)
                if ep not in self.muted:
                    self.in_flight.append(dgram)
            self.delivered.setdefault(ep, []).extend(dev.packets_received())

    def deliver(self, i: int = 0, *, src: Endpoint | None = None) -> Datagram:
        """Hand datagram ``i`` of ``in_flight`` to its destination (optionally from another source)."""
        dgram = self.in_flight.pop(i)
        dev = self.devices.get(dgram.dst)
        if dev is not None:
            dev.receive_datagram(dgram.data, src or dgram.src, self.now)
        self.pump()
        return dgram

    def settle(self, limit: int = 1000) -> int:
        """Deliver everything in flight, in order, until the network is quiet; returns how many."""
        n = 0
        self.pump()
        while self.in_flight and n < limit:
            self.deliver(0)
            n += 1
        return n

    def drop_all(self) -> list[Datagram]:
        self.pump()
        gone, self.in_flight = self.in_flight, []
        return gone

    def next_timer(self) -> float | None:
        timers = [t for d in self.devices.values() if (t := d.get_timer()) is not None]
        return min(timers) if timers else None

    def advance(self, dt: float, *, deliver: bool = True) -> None:
        """Move the clock ``dt`` seconds, firing timers when due (and delivering their output if ``deliver``)."""
        end = self.now + dt
        for _ in range(100_000):
            due = self.next_timer()
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            for dev in self.devices.values():
                t = dev.get_timer()
                if t is not None and t <= self.now:
                    dev.handle_timer(self.now)
            if deliver:
                self.settle()
            else:
                self.pump()
        self.now = end

    def send(self, device: WireGuardDevice, packet: bytes, *, deliver: bool = True) -> None:
        device.send_packet(packet, self.now)
        if deliver:
            self.settle()
        else:
            self.pump()

    def received(self, device: WireGuardDevice) -> list[bytes]:
        """Inner packets the device delivered to its TUN so far (taken)."""
        self.pump()
        ep = self.endpoint_of(device)
        out, self.delivered[ep] = self.delivered.get(ep, []), []
        return out


def events(device: WireGuardDevice) -> list[Any]:
    out = []
    while (event := device.next_event()) is not None:
        out.append(event)
    return out


def of_type(items: list[Any], cls: type) -> list[Any]:
    return [x for x in items if isinstance(x, cls)]


@dataclass
class Pair:
    net: WgNet
    a: WireGuardDevice
    b: WireGuardDevice
    a_key: NodePublicKey
    b_key: NodePublicKey
    a_log: TraceLog
    b_log: TraceLog

    def a_to_b(self, payload: bytes = b"hello") -> bytes:
        return ipv4(A_IP, B_IP, payload)

    def b_to_a(self, payload: bytes = b"hello") -> bytes:
        return ipv4(B_IP, A_IP, payload)


def make_pair(
    timing: Timing | None = None,
    *,
    seed: int = 1,
    psk: bytes | None = None,
    b_knows_a_endpoint: bool = True,
    keepalive_a: int | None = None,
    keepalive_b: int | None = None,
) -> Pair:
    """Devices A (10.0.0.1 at A_EP) and B (10.0.0.2 at B_EP), each the other's peer."""
    timing = timing or Timing()
    rng = random.Random(seed)
    a_priv, a_pub = node_key_pair(seed=b"wg-a-%d" % seed)
    b_priv, b_pub = node_key_pair(seed=b"wg-b-%d" % seed)
    a_log, b_log = TraceLog(), TraceLog()
    a = WireGuardDevice(a_priv, rng=rng.randbytes, epoch=EPOCH, timing=timing, tracer=a_log, name="A")
    b = WireGuardDevice(b_priv, rng=rng.randbytes, epoch=EPOCH, timing=timing, tracer=b_log, name="B")
    a.add_peer(b_pub, preshared_key=psk, allowed_ips=[f"{B_IP}/32", "fd00::2/128"], endpoint=B_EP,
               persistent_keepalive=keepalive_a)  # fmt: skip
    b.add_peer(a_pub, preshared_key=psk, allowed_ips=[f"{A_IP}/32", "fd00::1/128"],
               endpoint=A_EP if b_knows_a_endpoint else None, persistent_keepalive=keepalive_b)  # fmt: skip
    net = WgNet({A_EP: a, B_EP: b})
    return Pair(net, a, b, a_pub, b_pub, a_log, b_log)


def established(**kwargs: Any) -> Pair:
    """A pair after A's first packet went through and B answered (both keypairs current)."""
    p = make_pair(**kwargs)
    p.net.send(p.a, p.a_to_b(b"hi"))
    p.net.send(p.b, p.b_to_a(b"hi back"))
    assert p.net.received(p.b) == [p.a_to_b(b"hi")]
    assert p.net.received(p.a) == [p.b_to_a(b"hi back")]
    events(p.a), events(p.b)
    return p


def held(p: Pair, device: WireGuardDevice, packet: bytes) -> bytes:
    """Make ``device`` send ``packet`` and take the one transport datagram off the network."""
    p.net.send(device, packet, deliver=False)
    [dgram] = [d for d in p.net.drop_all() if d.type == 4]
    return dgram.data
