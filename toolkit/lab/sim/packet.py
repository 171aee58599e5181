"""Real packet bytes for the simulator: IPv4 / IPv6 headers with UDP or TCP, checksums included.

Every packet the ``sim`` backend moves is a :class:`Packet`: its parsed fields (addresses, ports,
protocol, hop limit, payload, TCP sequence numbers) *and* the exact bytes a kernel would put on the
wire (``raw``), built once when the packet is made and rebuilt when a router rewrites it (NAT,
TTL). Capture points hand ``raw`` to pcap files and sniffers; :meth:`Packet.parse` turns bytes
back into a packet and checks every checksum, so tests can prove the two agree.

Formats: IPv4 RFC 791 (20-byte header, no options, DF set, identification 0 as Linux sends atomic
datagrams, RFC 6864 §4.1), IPv6 RFC 8200 §3 (no extension headers), UDP RFC 768 (a computed
checksum of zero is sent as all ones; zero on IPv4 means "none", RFC 8200 §8.1 forbids it on IPv6),
TCP RFC 9293 §3.1 (20-byte header, no options). Checksums are the Internet checksum (RFC 1071)
over the pseudo-header (RFC 768, RFC 8200 §8.1) and the segment.

The checksum uses 65536 ≡ 1 (mod 65535): the ones'-complement sum of a buffer's 16-bit words is the
buffer read as one big-endian integer modulo 0xFFFF (0xFFFF itself when that is 0 and the buffer is
not all zero). One ``int.from_bytes`` and one modulo, both in C, however long the payload is.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from toolkit.errors import BadChecksumError, BadLengthError, BadValueError, TruncatedError
from toolkit.types import Endpoint

UDP = 17
TCP = 6
DEFAULT_TTL = 64  # Linux's net.ipv4.ip_default_ttl / IPv6 hop limit

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

_V4 = struct.Struct("!BBHHHBBH4s4s")
_V6 = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")


def inet_sum(data: bytes) -> int:
    """The folded ones'-complement sum of ``data``'s 16-bit words (RFC 1071), 0..0xFFFF."""
    if len(data) & 1:
        data += b"\x00"
    value = int.from_bytes(data, "big")
    if value == 0:
        return 0
    folded = value % 0xFFFF
    return folded or 0xFFFF


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    return 0xFFFF - inet_sum(data)


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)  # RFC 768
    return src + dst + struct.pack("!IxxxB", length, proto)  # RFC 8200 §8.1


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """The TCP header fields besides the ports (RFC 9293 §3.1)."""

    seq: int = 0
    ack: int = 0
    flags: int = TCP_PSH | TCP_ACK
    window: int = 65535


@dataclass(frozen=True, slots=True)
class Packet:
    """One IP packet: fields and wire bytes. Build with :meth:`udp` / :meth:`tcp`, parse with :meth:`parse`."""

    proto: int
    src: Endpoint
    dst: Endpoint
    payload: bytes
    ttl: int
    raw: bytes
    tcp_info: TcpInfo | None = None

    @property
    def version(self) -> int:
        return self.src.ip.version

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def is_udp(self) -> bool:
        return self.proto == UDP

    # --- building --------------------------------------------------------------------------------

    @classmethod
    def udp(cls, src: Endpoint, dst: Endpoint, payload: bytes, ttl: int = DEFAULT_TTL) -> Packet:
        """A UDP datagram from ``src`` to ``dst`` (one address family)."""
        return cls(UDP, src, dst, bytes(payload), ttl, _build(UDP, src, dst, payload, ttl, None))

    @classmethod
    def tcp(cls, src: Endpoint, dst: Endpoint, payload: bytes, info: TcpInfo, ttl: int = DEFAULT_TTL) -> Packet:
        """A TCP segment (the seam for a virtual stream transport: DERP over TCP, issue 6)."""
        return cls(TCP, src, dst, bytes(payload), ttl, _build(TCP, src, dst, payload, ttl, info), info)

    def rewrite(self, src: Endpoint | None = None, dst: Endpoint | None = None, ttl: int | None = None) -> Packet:
        """This packet with a new source, destination or hop limit, checksums recomputed (NAT, forwarding)."""
        s = self.src if src is None else src
        d = self.dst if dst is None else dst
        t = self.ttl if ttl is None else ttl
        return Packet(
            self.proto, s, d, self.payload, t, _build(self.proto, s, d, self.payload, t, self.tcp_info), self.tcp_info
        )

    def summary(self) -> str:
        kind = "UDP" if self.proto == UDP else "TCP"
        return f"{kind} {self.src} > {self.dst} len={len(self.payload)} ttl={self.ttl}"

    # --- parsing ---------------------------------------------------------------------------------

    @classmethod
    def parse(cls, raw: bytes) -> Packet:
        """The packet in ``raw`` (IPv4 or IPv6, UDP or TCP). Raises :class:`~toolkit.errors.DecodeError`."""
        raw = bytes(raw)
        if not raw:
            raise TruncatedError("an empty packet")
        version = raw[0] >> 4
        if version == 4:
            if len(raw) < 20:
                raise TruncatedError(f"an IPv4 header has 20 bytes, got {len(raw)}")
            vihl, _, total, _, frag, ttl, proto, _, s, d = _V4.unpack_from(raw)
            ihl = (vihl & 0x0F) * 4
            if ihl < 20 or total < ihl or total > len(raw):
                raise BadLengthError(f"IPv4 header length {ihl} / total length {total} with {len(raw)} bytes")
            if inet_sum(raw[:ihl]) != 0xFFFF:
                raise BadChecksumError("IPv4 header checksum")
            if frag & 0x3FFF:
                raise BadValueError("IPv4 fragments are not simulated")
            l4 = raw[ihl:total]
        elif version == 6:
            if len(raw) < 40:
                raise TruncatedError(f"an IPv6 header has 40 bytes, got {len(raw)}")
            _, plen, proto, ttl, s, d = _V6.unpack_from(raw)
            if 40 + plen > len(raw):
                raise BadLengthError(f"IPv6 payload length {plen} with {len(raw) - 40} bytes")
            l4 = raw[40 : 40 + plen]
        else:
            raise BadValueError(f"IP version {version}")
        src_ip, dst_ip = ipaddress.ip_address(s), ipaddress.ip_address(d)
        if proto == UDP:
            if len(l4) < 8:
                raise TruncatedError(f"a UDP header has 8 bytes, got {len(l4)}")
            sport, dport, ulen, csum = _UDP.unpack_from(l4)
            if ulen < 8 or ulen > len(l4):
                raise BadLengthError(f"UDP length {ulen} with {len(l4)} bytes")
            l4 = l4[:ulen]
            if (csum or version == 6) and inet_sum(_pseudo(s, d, UDP, ulen) + l4) != 0xFFFF:
                raise BadChecksumError("UDP checksum")
            return cls(UDP, Endpoint(src_ip, sport), Endpoint(dst_ip, dport), l4[8:], ttl, raw)
        if proto == TCP:
            if len(l4) < 20:
                raise TruncatedError(f"a TCP header has 20 bytes, got {len(l4)}")
            sport, dport, seq, ack, off, flags, window, _, _ = _TCP.unpack_from(l4)
            doff = (off >> 4) * 4
            if doff < 20 or doff > len(l4):
                raise BadLengthError(f"TCP data offset {doff} with {len(l4)} bytes")
            if inet_sum(_pseudo(s, d, TCP, len(l4)) + l4) != 0xFFFF:
                raise BadChecksumError("TCP checksum")
            info = TcpInfo(seq, ack, flags, window)
            return cls(TCP, Endpoint(src_ip, sport), Endpoint(dst_ip, dport), l4[doff:], ttl, raw, info)
        raise BadValueError(f"IP protocol {proto} is not simulated")


def _build(proto: int, src: Endpoint, dst: Endpoint, payload: bytes, ttl: int, info: TcpInfo | None) -> bytes:
    s, d = src.ip.packed, dst.ip.packed
    if len(s) != len(d):
        raise BadValueError(f"mixed address families {src} -> {dst}")
    n = (8 if proto == UDP else 20) + len(payload)
    if proto == UDP:
        head = _UDP.pack(src.port, dst.port, n, 0)
        csum = inet_checksum(_pseudo(s, d, UDP, n) + head + payload) or 0xFFFF  # RFC 768
        l4 = head[:6] + csum.to_bytes(2, "big") + payload
    else:
        t = info or TcpInfo()
        head = _TCP.pack(src.port, dst.port, t.seq & 0xFFFFFFFF, t.ack & 0xFFFFFFFF, 5 << 4, t.flags, t.window, 0, 0)
        csum = inet_checksum(_pseudo(s, d, TCP, n) + head + payload)
        l4 = head[:16] + csum.to_bytes(2, "big") + head[18:] + payload
    if len(s) == 4:
        if n + 20 > 0xFFFF:
            raise BadLengthError(f"an IPv4 packet of {n + 20} bytes")
        hdr = _V4.pack(0x45, 0, 20 + n, 0, 0x4000, ttl, proto, 0, s, d)
        return hdr[:10] + inet_checksum(hdr).to_bytes(2, "big") + hdr[12:] + l4
    return _V6.pack(0x60000000, n, proto, ttl, s, d) + l4


__all__ = [
    "DEFAULT_TTL",
    "TCP",
    "TCP_ACK",
    "TCP_FIN",
    "TCP_PSH",
    "TCP_RST",
    "TCP_SYN",
    "UDP",
    "Packet",
    "TcpInfo",
    "inet_checksum",
    "inet_sum",
]
