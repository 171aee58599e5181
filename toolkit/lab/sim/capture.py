"""Capture points: every simulated interface shows the packets crossing it, as real IP bytes.

Each :class:`~toolkit.lab.sim.net.Interface` has a :class:`CapturePoint` that costs nothing until
someone listens. A :class:`Capture` listens on one or more points and keeps every packet seen
(``out`` when the interface sends it, ``in`` when it arrives, like ``tcpdump -i``), with the
virtual time plus ``epoch`` as its timestamp. It writes classic pcap (link type 101, raw IP: the
simulator has no Ethernet) with :class:`toolkit.codec.pcapio.PcapWriter`, or pcapng with one
Interface Description Block per interface (draft-ietf-opsawg-pcapng §4.2, ``if_name`` option) so
Wireshark shows which interface saw what. ``on_packet`` callbacks receive each packet live as a
:class:`toolkit.codec.pcapio.Record`, which is what :mod:`toolkit.packets`' analyzer consumes.

The bytes depend only on the simulation, so the same seed gives the same file (issue 5).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolkit.codec.pcapio import LINKTYPE_RAW, PcapWriter, Record

Direction = Literal["in", "out"]
EPOCH = 1_700_000_000.0  # virtual t=0 in capture files (2023-11-14): readable dates in Wireshark
Listener = Callable[[float, Direction, "CapturePoint", bytes], None]


@dataclass(frozen=True, slots=True)
class CapturedPacket:
    """One packet as an interface saw it: virtual time, direction, the interface, the IP bytes."""

    time: float
    direction: Direction
    interface: str  # "machine/interface"
    raw: bytes

    def record(self, epoch: float = EPOCH) -> Record:
        return Record(self.time + epoch, LINKTYPE_RAW, self.raw)


class CapturePoint:
    """The tap of one interface; :meth:`emit` is called for every packet it sends or receives."""

    __slots__ = ("_listeners", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Listener] = []

    @property
    def active(self) -> bool:
        return bool(self._listeners)

    def emit(self, time: float, direction: Direction, raw: bytes) -> None:
        for listener in self._listeners:
            listener(time, direction, self, raw)

    def listen(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove


class Capture:
    """A recording of the packets crossing ``points`` from now until :meth:`close`."""

    def __init__(
        self,
        points: Iterable[CapturePoint],
        *,
        epoch: float = EPOCH,
        on_packet: Callable[[Record], None] | None = None,
        keep: bool = True,
    ) -> None:
        self.points = tuple(points)
        self.epoch = epoch
        self.on_packet = on_packet
        self.keep = keep
        self.packets: list[CapturedPacket] = []
        self._removers = [p.listen(self._seen) for p in self.points]

    def _seen(self, time: float, direction: Direction, point: CapturePoint, raw: bytes) -> None:
        pkt = CapturedPacket(time, direction, point.name, raw)
        if self.keep:
            self.packets.append(pkt)
        if self.on_packet is not None:
            self.on_packet(pkt.record(self.epoch))

    def close(self) -> None:
        """Stop recording (the packets stay readable)."""
        for remove in self._removers:
            remove()
        self._removers = []

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.packets)

    def records(self) -> list[Record]:
        """The packets as pcapio records (raw IP, absolute timestamps)."""
        return [p.record(self.epoch) for p in self.packets]

    def pcap_bytes(self, direction: Direction | None = None) -> bytes:
        """A classic pcap file (raw IP). With several interfaces a packet appears once per interface
        and direction that saw it; ``direction`` keeps only ``in`` or ``out``."""
        buf = io.BytesIO()
        writer = PcapWriter(buf, LINKTYPE_RAW)
        for p in self.packets:
            if direction is None or p.direction == direction:
                writer.write(p.raw, p.time + self.epoch)
        return buf.getvalue()

    def pcapng_bytes(self) -> bytes:
        """A pcapng file: one interface block per capture point, packets tagged with their interface."""
        index = {p.name: i for i, p in enumerate(self.points)}
        out = [_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))]  # Section Header Block
        for point in self.points:
            opts = _option(2, point.name.encode()) + _option(9, b"\x06") + b"\x00\x00\x00\x00"  # if_name, µs
            out.append(_block(1, struct.pack("<HHI", LINKTYPE_RAW, 0, 0) + opts))
        for p in self.packets:
            ts = round((p.time + self.epoch) * 1e6)
            body = struct.pack("<IIIII", index[p.interface], ts >> 32, ts & 0xFFFFFFFF, len(p.raw), len(p.raw))
            flags = _option(2, struct.pack("<I", 1 if p.direction == "in" else 2)) + b"\x00\x00\x00\x00"  # epb_flags
            out.append(_block(6, body + _pad(p.raw) + flags))
        return b"".join(out)

    def write(self, path: str | Path) -> Path:
        """Write pcapng for a ``.pcapng`` path, classic pcap otherwise; returns the path."""
        path = Path(path)
        data = self.pcapng_bytes() if path.suffix == ".pcapng" else self.pcap_bytes()
        path.write_bytes(data)
        return path


def _pad(data: bytes) -> bytes:
    return data + b"\x00" * (-len(data) % 4)


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + _pad(value)


def _block(btype: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


__all__ = ["EPOCH", "Capture", "CapturePoint", "CapturedPacket", "Direction"]
