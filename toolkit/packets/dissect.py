"""From captured frames to lesson lines: classify, decode, open disco boxes, cut DERP streams.

The TCP stream reassembly that finds DERP frames lives in :mod:`toolkit.packets.reassembly`.

This is the sniffer's pipeline, shared by live capture and ``natkit decode FILE``. It is fast
where it must be: headers are stripped with :mod:`toolkit.packets.pcapio`, every UDP payload is
classified with the codec's demux (protocols.md §4.11) and decoded with the codecs, disco boxes
are opened with the :class:`~toolkit.packets.keyring.Keyring`, and TCP is put back in order by
:class:`DERPReassembler`, which cuts DERP connections into frames (protocols.md §2.1, §2.2).
scapy dissects a packet only when asked (:meth:`Event.packet`, :meth:`Event.dissection`, ``-v``).

DERP connections are recognised by content: a request head with ``Upgrade: DERP``, a ``101``
answer with ``Upgrade: DERP``, or a stream that starts with a ServerKey frame (fast start, §2.1).
A capture that starts in the middle of a connection cannot find frame boundaries: it is ignored.

Nothing stops the pipeline: a malformed packet becomes an :class:`Event` whose ``error`` says why
(its ``reason`` is counted in :class:`Stats`), and even an unexpected exception is counted as an
``internal-error`` event.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from toolkit.codec import demux, stun, wireguard
from toolkit.codec.demux import Kind
from toolkit.errors import BadChecksumError, DecodeError
from toolkit.packets import pcapio
from toolkit.packets.keyring import Keyring, OpenedDisco
from toolkit.packets.reassembly import DERPEvent, DERPReassembler
from toolkit.types import Endpoint

if TYPE_CHECKING:
    from scapy.packet import Packet

DERP = "derp"  # the kind of an event cut from a DERP connection (TCP)


def natkit_kind(payload: bytes) -> Kind:
    """The demux's kind (``demux.classify``), except that bytes the demux would hand to WireGuard
    but that do not even start like WireGuard (type 1..4, then three zero bytes, protocols.md §8.1)
    are :attr:`Kind.UNKNOWN`: they are not natkit traffic (DNS, mDNS, ...), not malformed WireGuard."""
    kind = demux.classify(payload)
    if kind is Kind.WIREGUARD and wireguard.message_type(payload) is None:
        return Kind.UNKNOWN
    return kind


@dataclass(slots=True)
class Event:
    """One line of output: a UDP datagram, or a DERP upgrade/frame cut from a TCP stream."""

    index: int  # number of the captured frame (1-based, as tshark counts)
    ts: float
    src: str
    dst: str
    transport: str  # "udp" or "tcp"
    kind: str  # a demux Kind value, "derp", or "internal-error"
    summary: str
    payload: bytes  # the UDP payload, or the whole DERP frame / HTTP head
    record: pcapio.Record | None = None
    error: DecodeError | None = None
    opened: OpenedDisco | None = None
    inner: bytes | None = None  # a WireGuard transport message's decrypted IP packet

    @property
    def malformed(self) -> bool:
        return self.error is not None

    def line(self, t0: float = 0.0) -> str:
        return f"{self.index:5d} {self.ts - t0:10.6f}  {self.src} -> {self.dst}  {self.summary}"

    def packet(self) -> Packet:
        """The scapy dissection (lazy); an opened disco box is attached under its wrapper."""
        from toolkit.packets.bind import dissect_event

        return dissect_event(self)

    def dissection(self) -> str:
        """``packet().show()`` as text, for ``-v``."""
        return str(self.packet().show(dump=True))


@dataclass
class Stats:
    """Counts of a capture, printed at the end."""

    packets: int = 0
    udp: int = 0
    tcp: int = 0
    other: int = 0  # not UDP/TCP over IP (ARP, ICMP, fragments, ...)
    kinds: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    derp_frames: Counter[str] = field(default_factory=Counter)
    disco_opened: int = 0
    disco_sealed: int = 0
    wg_decrypted: int = 0
    wg_sealed: int = 0
    internal_errors: int = 0

    @property
    def malformed_total(self) -> int:
        return sum(self.malformed.values())

    def format(self) -> str:
        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"

        lines = [
            f"{self.packets} packets: {self.udp} UDP, {self.tcp} TCP, {self.other} other",
            f"kinds: {counts(self.kinds)}",
            f"disco: {self.disco_opened} opened, {self.disco_sealed} left sealed",
            f"WireGuard transport: {self.wg_decrypted} decrypted, {self.wg_sealed} left sealed",
            f"malformed: {self.malformed_total}" + (f" ({counts(self.malformed)})" if self.malformed else ""),
        ]
        if self.derp_frames:
            lines.insert(2, f"DERP frames: {counts(self.derp_frames)}")
        if self.internal_errors:
            lines.append(f"internal errors: {self.internal_errors} (please report them)")
        return "\n".join(lines)


@dataclass(slots=True)
class _Described:
    kind: Kind
    summary: str
    error: DecodeError | None = None
    opened: OpenedDisco | None = None
    inner: bytes | None = None


class Analyzer:
    """Turns captured frames into :class:`Event` s and counts them in :attr:`stats`."""

    def __init__(self, keyring: Keyring | None = None) -> None:
        self.keyring = keyring if keyring is not None else Keyring()
        self.stats = Stats()
        self.derp = DERPReassembler()

    def process(self, record: pcapio.Record, index: int | None = None) -> list[Event]:
        """The events of one captured frame (none for traffic natkit does not show)."""
        self.stats.packets += 1
        index = self.stats.packets if index is None else index
        try:
            t = pcapio.transport(record)
            if t is None:
                self.stats.other += 1
                return []
            src, dst = _endpoint(t.src_ip, t.src_port), _endpoint(t.dst_ip, t.dst_port)
            if t.proto == pcapio.IPPROTO_UDP:
                self.stats.udp += 1
                d = self.describe(t.payload)
                self._count(d.kind.value, d.error)
                if self.keyring.names:
                    d.summary = self.keyring.rename(d.summary)
                return [Event(index, t.ts, str(src), str(dst), "udp", d.kind.value, d.summary, t.payload, record,
                              d.error, d.opened, d.inner)]  # fmt: skip
            self.stats.tcp += 1
            return self._tcp(index, record, t, src, dst)
        except Exception as exc:  # the capture must go on (design: count, show, continue)
            self.stats.internal_errors += 1
            text = f"natkit could not analyse this packet: {type(exc).__name__}: {exc}"
            return [Event(index, record.ts, "?", "?", "?", "internal-error", text, record.data, record)]

    def _count(self, kind: str, error: DecodeError | None) -> None:
        self.stats.kinds[kind] += 1
        if error is not None:
            self.stats.malformed[error.reason] += 1

    def _tcp(self, index: int, record: pcapio.Record, t: pcapio.Transport, src: Endpoint, dst: Endpoint) -> list[Event]:
        events = []
        for ev in self.derp.add_segment(src, dst, t.tcp_seq, t.tcp_flags, t.payload):
            summary, error, opened, inner = ev.summary(), ev.error, None, None
            if ev.frame is not None:
                self.stats.derp_frames[type(ev.frame).__name__] += 1
                inner = getattr(ev.frame, "packet", None)
                if isinstance(inner, bytes) and inner:
                    d = self.describe(inner)
                    summary = f"{summary}: {d.summary}"
                    error, opened, inner = d.error, d.opened, d.inner
            self._count(DERP, error)
            if self.keyring.names:
                summary = self.keyring.rename(summary)
            events.append(Event(index, t.ts, str(ev.src), str(ev.dst), "tcp", DERP, summary, ev.raw, record, error,
                                opened, inner))  # fmt: skip
        return events

    def describe(self, payload: bytes) -> _Described:
        """Classify and decode one datagram (a UDP payload or a DERP packet body)."""
        kind = natkit_kind(payload)
        if kind is Kind.UNKNOWN:
            return _Described(kind, f"UDP {len(payload)}B, not STUN, disco or WireGuard")
        decoded = demux.decode_datagram(payload)
        geneve = f"{decoded.geneve.summary()} | " if decoded.geneve is not None else ""
        if decoded.error is not None:
            err = decoded.error
            return _Described(kind, f"{geneve}{kind.value} malformed ({err.reason}): {err}", err)
        msg = decoded.message
        if isinstance(msg, stun.Message):
            if stun.verify_fingerprint(payload) is False:
                err = BadChecksumError("STUN FINGERPRINT does not match the message (RFC 8489 §14.7)")
                return _Described(kind, f"{msg.summary()}  [malformed: bad-checksum]", err)
            return _Described(kind, msg.summary())
        if kind in (Kind.DISCO, Kind.GENEVE_DISCO):
            return self._disco(kind, geneve, payload[8:] if decoded.geneve is not None else payload, msg)
        if isinstance(msg, wireguard.Transport):
            return self._wireguard(kind, geneve, msg)
        return _Described(kind, geneve + msg.summary())  # type: ignore[attr-defined]

    def _wireguard(self, kind: Kind, geneve: str, msg: wireguard.Transport) -> _Described:
        if not self.keyring.has_wireguard_keys:
            return _Described(kind, geneve + msg.summary())
        opened = self.keyring.open_wireguard(msg)
        if opened is None:
            self.stats.wg_sealed += 1
            return _Described(kind, f"{geneve}{msg.summary()} (no session key opens it)")
        self.stats.wg_decrypted += 1
        label = f" [{opened.session.label}]" if opened.session.label else ""
        return _Described(kind, f"{geneve}{msg.summary()}{label}: {opened.summary()}", inner=opened.inner)

    def _disco(self, kind: Kind, geneve: str, data: bytes, wrapper: object) -> _Described:
        opened = self.keyring.open_disco(data) if self.keyring.has_disco_keys else None
        if opened is None:
            self.stats.disco_sealed += 1
            why = "none of the keys opens it" if self.keyring.has_disco_keys else "no keys: --keys FILE opens it"
            return _Described(kind, f"{geneve}{wrapper.summary()} ({why})")  # type: ignore[attr-defined]
        self.stats.disco_opened += 1
        who = f"from {self.keyring.label(opened.sender)} to {self.keyring.label(opened.receiver)}"
        if opened.message is None:
            err = opened.error
            assert err is not None
            text = f"{geneve}disco {who}: opened, but the plaintext is malformed ({err.reason}): {err}"
            return _Described(kind, text, err, opened)
        return _Described(kind, f"{geneve}{opened.message.summary()} {who}", None, opened)


def _endpoint(ip: bytes, port: int) -> Endpoint:
    return Endpoint(ipaddress.ip_address(ip), port)


__all__ = ["DERP", "Analyzer", "DERPEvent", "DERPReassembler", "Event", "Stats", "natkit_kind"]
