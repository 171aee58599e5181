"""Fast pcap / pcapng reading and pcap writing with the standard library only.

scapy's ``rdpcap`` builds a full packet object per record; the sniffer's fast path,
``natkit bench`` and the ``sim`` lab backend's capture points need raw bytes instead. It lives in
``codec`` (stdlib only) so that ``toolkit.lab`` can write pcaps; ``toolkit.packets.pcapio`` re-exports it. This module reads classic pcap (both byte orders,
micro- and nanosecond timestamps) and pcapng (SHB, IDB, EPB, SPB blocks), and strips link,
IP and UDP/TCP headers to hand out transport payloads.

Formats: pcap per the tcpdump "pcap-savefile" man page / draft-ietf-opsawg-pcap; pcapng per
draft-ietf-opsawg-pcapng. Link types (LINKTYPE_*): 1 Ethernet, 101 raw IP, 228 IPv4,
229 IPv6, 113 Linux SLL, 276 Linux SLL2, 0 BSD loopback.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from toolkit.errors import DecodeError, UsageError

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
_PCAPNG_SHB = 0x0A0D0D0A

IPPROTO_TCP = 6
IPPROTO_UDP = 17


@dataclass(frozen=True, slots=True)
class Record:
    """One captured frame: time, link type, the bytes as captured."""

    ts: float
    linktype: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Transport:
    """A UDP or TCP payload with its addresses; ``ip`` and ports as raw values for speed."""

    ts: float
    proto: int  # IPPROTO_UDP or IPPROTO_TCP
    src_ip: bytes
    src_port: int
    dst_ip: bytes
    dst_port: int
    payload: bytes
    tcp_seq: int = 0
    tcp_flags: int = 0

    @property
    def src(self) -> str:
        return _fmt(self.src_ip, self.src_port)

    @property
    def dst(self) -> str:
        return _fmt(self.dst_ip, self.dst_port)


def _fmt(ip: bytes, port: int) -> str:
    addr = ipaddress.ip_address(ip)
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def open_capture(path: str | Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such capture file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a .pcap or .pcapng file") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None


def read_records(path: str | Path) -> Iterator[Record]:
    """Every record of a pcap or pcapng file. A truncated last record ends the iteration."""
    with open_capture(path) as fh:
        head = fh.read(4)
        if head in _PCAP_MAGICS:
            yield from _read_pcap(fh, head)
        elif len(head) == 4 and struct.unpack("<I", head)[0] == _PCAPNG_SHB:
            yield from _read_pcapng(fh, head)
        else:
            raise UsageError(f"{path}: not a pcap or pcapng file (magic {head.hex() or 'empty'})")


def _read_pcap(fh: BinaryIO, magic: bytes) -> Iterator[Record]:
    order, unit = _PCAP_MAGICS[magic]
    rest = fh.read(20)
    if len(rest) < 20:
        return
    linktype = struct.unpack(order + "HHiIII", rest)[5] & 0x0FFFFFFF
    rec = struct.Struct(order + "IIII")
    data = fh.read()
    off, n = 0, len(data)
    while off + 16 <= n:
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += 16
        if off + incl > n:
            break
        yield Record(sec + frac * unit, linktype, data[off : off + incl])
        off += incl


def _read_pcapng(fh: BinaryIO, first: bytes) -> Iterator[Record]:
    data = first + fh.read()
    off, n = 0, len(data)
    order = "<"
    links: list[tuple[int, float]] = []
    while off + 12 <= n:
        btype = struct.unpack_from(order + "I", data, off)[0]
        if btype == _PCAPNG_SHB:
            bom = data[off + 8 : off + 12]
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
            links = []
        blen = struct.unpack_from(order + "I", data, off + 4)[0]
        if blen < 12 or off + blen > n:
            break
        body = data[off + 8 : off + blen - 4]
        if btype == 1 and len(body) >= 8:  # Interface Description Block
            linktype = struct.unpack_from(order + "H", body, 0)[0]
            links.append((linktype, _if_tsresol(body[8:], order)))
        elif btype == 6 and len(body) >= 20:  # Enhanced Packet Block
            ifid, hi, lo, cap, _orig = struct.unpack_from(order + "IIIII", body, 0)
            linktype, unit = links[ifid] if ifid < len(links) else (LINKTYPE_ETHERNET, 1e-6)
            yield Record(((hi << 32) | lo) * unit, linktype, body[20 : 20 + cap])
        elif btype == 3 and len(body) >= 4:  # Simple Packet Block
            linktype = links[0][0] if links else LINKTYPE_ETHERNET
            orig = struct.unpack_from(order + "I", body, 0)[0]
            yield Record(0.0, linktype, body[4 : 4 + orig])
        off += blen


def _if_tsresol(options: bytes, order: str) -> float:
    off = 0
    while off + 4 <= len(options):
        code, length = struct.unpack_from(order + "HH", options, off)
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol
            v = options[off + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
        off += 4 + ((length + 3) & ~3)
    return 1e-6


def ip_packet(rec: Record) -> bytes | None:
    """The IP packet inside a record, or None for other link content (ARP, ...)."""
    d, lt = rec.data, rec.linktype
    if lt == LINKTYPE_ETHERNET:
        off = 12
        etype = int.from_bytes(d[12:14], "big")
        while etype in (0x8100, 0x88A8) and len(d) >= off + 6:  # 802.1Q / 802.1ad tags
            off += 4
            etype = int.from_bytes(d[off : off + 2], "big")
        return d[off + 2 :] if etype in (0x0800, 0x86DD) else None
    if lt in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        return d
    if lt == LINKTYPE_LINUX_SLL:
        return d[16:] if d[14:16] in (b"\x08\x00", b"\x86\xdd") else None
    if lt == LINKTYPE_LINUX_SLL2:
        return d[20:] if d[0:2] in (b"\x08\x00", b"\x86\xdd") else None
    if lt == LINKTYPE_NULL:
        return d[4:]
    return None


def transport(rec: Record) -> Transport | None:
    """Strip link, IPv4/IPv6 and UDP/TCP headers. Non-first fragments and other protocols give None."""
    pkt = ip_packet(rec)
    if not pkt:
        return None
    version = pkt[0] >> 4
    if version == 4:
        if len(pkt) < 20:
            return None
        ihl = (pkt[0] & 0x0F) * 4
        total = int.from_bytes(pkt[2:4], "big") or len(pkt)
        if int.from_bytes(pkt[6:8], "big") & 0x1FFF:  # a later fragment
            return None
        proto, src, dst, l4 = pkt[9], pkt[12:16], pkt[16:20], pkt[ihl:total]
    elif version == 6:
        if len(pkt) < 40:
            return None
        proto, src, dst = pkt[6], pkt[8:24], pkt[24:40]
        l4 = pkt[40 : 40 + int.from_bytes(pkt[4:6], "big")]
    else:
        return None
    if proto == IPPROTO_UDP and len(l4) >= 8:
        sport, dport, ulen = struct.unpack_from("!HHH", l4, 0)
        end = ulen if 8 <= ulen <= len(l4) else len(l4)
        return Transport(rec.ts, proto, src, sport, dst, dport, l4[8:end])
    if proto == IPPROTO_TCP and len(l4) >= 20:
        sport, dport, seq = struct.unpack_from("!HHI", l4, 0)
        doff = (l4[12] >> 4) * 4
        return Transport(rec.ts, proto, src, sport, dst, dport, l4[doff:], seq, l4[13])
    return None


def udp_payloads(path: str | Path) -> Iterator[Transport]:
    """The UDP payloads of a capture, in order (the bench's and decoder's fast path)."""
    for rec in read_records(path):
        t = transport(rec)
        if t is not None and t.proto == IPPROTO_UDP:
            yield t


class PcapWriter:
    """Write classic little-endian pcap, microsecond timestamps, one link type per file."""

    def __init__(self, path: str | Path | BinaryIO, linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144) -> None:
        if isinstance(path, (str, Path)):
            try:
                self._fh: BinaryIO = open(path, "wb")
            except OSError as exc:
                raise UsageError(f"{path}: cannot write capture ({exc.strerror})") from None
        else:
            self._fh = path  # an open binary file (io.BytesIO for an in-memory capture); close() closes it
        self._fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        self.count = 0

    def write(self, data: bytes, ts: float = 0.0) -> None:
        sec = int(ts)
        usec = round((ts - sec) * 1e6)
        if usec >= 1_000_000:
            sec, usec = sec + 1, usec - 1_000_000
        self._fh.write(struct.pack("<IIII", sec, usec, len(data), len(data)))
        self._fh.write(data)
        self.count += 1

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip_frame(src: str, dst: str, proto: int, l4_no_csum: bytes, csum_at: int, ethernet: bool) -> bytes:
    """Wrap a UDP/TCP segment (checksum field zero at ``csum_at``) in IPv4/IPv6 (+ Ethernet), checksums set."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise DecodeError(f"mixed address families {src} -> {dst}")
    n = len(l4_no_csum)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, proto, n)
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", n, proto)
    csum = checksum(pseudo + l4_no_csum)
    if proto == IPPROTO_UDP and csum == 0:
        csum = 0xFFFF  # RFC 768: a computed zero is sent as all ones
    l4 = l4_no_csum[:csum_at] + struct.pack("!H", csum) + l4_no_csum[csum_at + 2 :]
    if s.version == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + n, 0, 0x4000, 64, proto, 0, s.packed, d.packed)
        hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
        ip, etype = hdr + l4, b"\x08\x00"
    else:
        ip = struct.pack("!IHBB16s16s", 0x60000000, n, proto, 64, s.packed, d.packed) + l4
        etype = b"\x86\xdd"
    if not ethernet:
        return ip
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + etype + ip


def udp_frame(src: str, sport: int, dst: str, dport: int, payload: bytes, *, ethernet: bool = True) -> bytes:
    """An Ethernet (or raw IP) frame carrying one UDP datagram, checksums correct (RFC 768, RFC 8200 §8.1)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    return _ip_frame(src, dst, IPPROTO_UDP, udp, 6, ethernet)


TCP_SYN, TCP_ACK, TCP_PSH = 0x02, 0x10, 0x08


def tcp_frame(
    src: str,
    sport: int,
    dst: str,
    dport: int,
    payload: bytes,
    *,
    seq: int,
    ack: int = 0,
    flags: int = TCP_PSH | TCP_ACK,
    ethernet: bool = True,
) -> bytes:
    """An Ethernet (or raw IP) frame carrying one TCP segment (RFC 9293 §3.1), checksums correct."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
    return _ip_frame(src, dst, IPPROTO_TCP, tcp + payload, 16, ethernet)


__all__ = [
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "LINKTYPE_ETHERNET",
    "LINKTYPE_IPV4",
    "LINKTYPE_IPV6",
    "LINKTYPE_LINUX_SLL",
    "LINKTYPE_LINUX_SLL2",
    "LINKTYPE_NULL",
    "LINKTYPE_RAW",
    "PcapWriter",
    "Record",
    "TCP_ACK",
    "TCP_PSH",
    "TCP_SYN",
    "Transport",
    "checksum",
    "ip_packet",
    "open_capture",
    "read_records",
    "tcp_frame",
    "transport",
    "udp_frame",
    "udp_payloads",
]
