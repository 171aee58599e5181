"""``PacketInspector``: a live table of the packets a lab's capture points see, dissected and decrypted.

Each row is one event of the sniffer's pipeline (:class:`toolkit.packets.dissect.Analyzer`, one per capture
point so DERP's TCP streams are cut per point): time, point (``r1/wan``), summary (STUN, disco with the box
opened, WireGuard, DERP frames) and path: ``direct`` (UDP disco or WireGuard between nodes), ``derp`` (TCP on a
DERP connection: a frame, or a segment to/from a DERP server) or ``other`` (STUN to a server, control, the
rest). A packet the pipeline shows nothing for (a bare TCP ACK) still gets a row, so table and pcap agree.

Keys (design.md §1): pass a :class:`~toolkit.packets.keyring.Keyring`, or a lab: ``await lab_keyring(lab)``
collects :meth:`~toolkit.lab.nodes.NodeHandle.keys` of every started node, on every backend (``sim``: from
the core; ``netns``/``docker``: the node's ``--keys-out`` file): disco private keys, WireGuard sessions, and
names for the keys (``from alice to bob``). An inspector that was given a lab and no keyring refreshes the
lab's keys while it follows captures (before a packet when a node started, a WireGuard transport names an
index it has no key for, over UDP or DERP, or a handshake response a new session: at once the first time,
then every ``KEYS_RETRY`` s; else every ``KEYS_INTERVAL`` seconds of capture time) and when it stops;
``await inspector.refresh_keys()`` does it by hand (before :meth:`PacketInspector.add`, say).

Times (``Row.time``) are seconds since the earliest packet of any capture point, and :attr:`PacketInspector.rows`
are in time order, so a capture point added later lines up with the others.

Updates are batched and throttled (at most ``rate`` renders per second); the table is an ipywidgets ``Select``
whose options are the row lines, so a saved notebook shows the last view. ``add``/``rows``/``select`` are the
synchronous API; :meth:`PacketInspector.watch` / :meth:`PacketInspector.follow` follow captures live.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ipaddress
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.codec import derp as derp_codec
from toolkit.codec import derp_base, pcapio
from toolkit.codec.demux import Kind
from toolkit.errors import DecodeError, NatkitError, UsageError
from toolkit.lab.backend import Capture, Lab
from toolkit.lab.nodes import started_nodes
from toolkit.lab.topology import Host
from toolkit.packets.bind import dissect_record
from toolkit.packets.dissect import DERP, Analyzer, Event, natkit_kind
from toolkit.packets.keyring import Keyring, keys_path_for
from toolkit.packets.wgopen import WireGuardSession
from toolkit.widgets.feed import CaptureFollower

PROTOCOLS = ("stun", "disco", "wireguard", "derp", "other")
PATHS = ("direct", "derp", "other")
KEYS_INTERVAL = 1.0  # seconds of capture time between two automatic refreshes of a lab's keys
KEYS_RETRY = 0.05  # ... when a WireGuard transport names a receiver index without a key
_KIND_PROTOCOL = {Kind.STUN: "stun", Kind.DISCO: "disco", Kind.GENEVE_DISCO: "disco", Kind.WIREGUARD: "wireguard",
                  Kind.GENEVE_WIREGUARD: "wireguard", DERP: "derp"}  # fmt: skip


class TimeBase:
    """The inspector's time zero: the earliest packet of any capture point so far (shared by its rows)."""

    __slots__ = ("t0",)

    def __init__(self) -> None:
        self.t0: float | None = None

    def see(self, ts: float) -> None:
        if self.t0 is None or ts < self.t0:
            self.t0 = ts


@dataclass(frozen=True, slots=True, eq=False)
class Row:
    """One row of the table; ``tags`` are the protocols a filter matches (DERP carrying disco: both)."""

    number: int  # position among all rows in arrival order, from 0 (``all_rows[number]``)
    base: TimeBase  # the inspector's time zero
    point: str  # capture point, "element/interface"
    src: str
    dst: str
    protocol: str  # one of PROTOCOLS
    tags: frozenset[str]
    path: str  # one of PATHS
    summary: str
    record: pcapio.Record
    event: Event | None = None

    @property
    def time(self) -> float:
        """Seconds since the inspector's earliest packet (of any capture point)."""
        return self.record.ts - (self.base.t0 if self.base.t0 is not None else self.record.ts)

    def line(self) -> str:
        return f"{self.number:5d} {self.time:9.3f}s  {self.point:<12} {self.path:<6}  {self.src} -> {self.dst}  {self.summary}"


async def lab_keyring(lab: Lab, into: Keyring | None = None) -> Keyring:
    """The keys of ``lab``'s started nodes, any backend (``NodeHandle.keys()``); added to ``into`` if given.
    A node whose keys cannot be read (still starting, stopped on a kernel backend) is skipped."""
    ring = into if into is not None else Keyring()
    found = []
    for host, handle in started_nodes(lab).items():
        try:
            keys = await handle.keys()
        except (NatkitError, OSError):
            continue
        ring.name(ring.add_disco_private(keys.disco_private), host)
        ring.name(keys.node_public, host)
        found.append((host, keys))
    for host, keys in found:  # after naming every node: "alice bob in"
        for session in keys.sessions:
            label = f"{host} {ring.label(session.peer)}"
            ring.add_wireguard_session(WireGuardSession(session.local_index, session.recv_key, f"{label} in"))
            ring.add_wireguard_session(WireGuardSession(session.remote_index, session.send_key, f"{label} out"))
    return ring


def merge_keys(into: Keyring, keys: Keyring) -> Keyring:
    """Add every key and name of ``keys`` to ``into`` (returned)."""
    for priv in keys.disco_private:
        into.add_disco_private(priv)
    for pub in keys.disco_public:
        into.add_disco_public(pub)
    into.names.update(keys.names)
    for session in keys.wireguard:
        into.add_wireguard_session(session)
    return into


def _ips(text: str) -> str:
    """``1.2.3.4`` of ``1.2.3.4:5`` / ``[::1]:5``."""
    return text.rsplit(":", 1)[0].strip("[]") if ":" in text else text


class PacketInspector:
    """See the module docstring. ``lab`` gives keys, names and capture points; ``keyring`` fixed keys."""

    def __init__(self, lab: Lab | None = None, keyring: Keyring | None = None, *, rate: float = 10.0,
                 max_shown: int = 2000) -> None:  # fmt: skip
        self.lab = lab
        self.keyring = keyring if keyring is not None else Keyring()
        self.lab_keys = keyring is None and lab is not None  # keep collecting the lab's keys as nodes start
        self.keys_lock: AbstractContextManager[Any] = contextlib.nullcontext()  # held while keys are added
        self.min_interval = 1.0 / rate
        self.max_shown = max_shown
        self.all_rows: list[Row] = []
        self.packets: list[tuple[str, float, bytes]] = []  # (point, time, raw IP), as captured
        self.protocols: frozenset[str] = frozenset(PROTOCOLS)
        self.peer: str | None = None
        self.renders = 0
        self._analyzers: dict[str, Analyzer] = {}
        self._derp_flows: set[frozenset[str]] = set()
        servers = [h for h in (lab.topology.hosts if lab else ()) if any(s.kind == "derp-server" for s in h.services)]
        self._derp_ips = {str(ip) for h in servers for ip in h.addresses}
        self.base = TimeBase()
        self._keys_nodes: dict[str, int] = {}  # host -> id of its handle, at the last key refresh
        self._keys_at: float | None = None  # capture time of the last automatic key refresh
        self._keys_tried: set[int] = set()  # WireGuard receiver indices a refresh was made for
        self._peer_ips: set[str] = set()
        self._pending: list[tuple[str, float, bytes]] = []
        self.following = CaptureFollower(self._queue, "inspect", before=self.keys_for)
        self._selected: int | None = None
        self._last_render = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._ui: dict[str, Any] | None = None
        self._updating = self._stale = False

    # --- feeding -----------------------------------------------------------------------------------

    def add(self, packets: Iterable[Any] | Capture, point: str = "") -> int:
        """Analyse ``packets`` now (a Capture, or ``Packet(time, data)``/``(time, data)`` pairs); rows added."""
        if isinstance(packets, Capture):
            point = point or f"{packets.element}/{packets.interface}"
            packets = list(packets.packets)
        return len(self.extend(packets, point))

    def extend(self, packets: Iterable[Any], point: str) -> list[Row]:
        """Like :meth:`add` (no Capture): the rows added, in the order they were added."""
        rows = self._ingest([(point, float(ts), bytes(data)) for ts, data in packets])
        self._changed()
        return rows

    # --- keys ----------------------------------------------------------------------------------------

    async def refresh_keys(self) -> Keyring:
        """Add the lab's keys now (every started node's :meth:`~toolkit.lab.nodes.NodeHandle.keys`)."""
        if self.lab is not None:
            self._keys_nodes = {h: id(n) for h, n in started_nodes(self.lab).items()}
            fresh = await lab_keyring(self.lab)
            with self.keys_lock:  # another thread may be opening packets with self.keyring
                merge_keys(self.keyring, fresh)
        return self.keyring

    async def keys_for(self, point: str, ts: float, data: bytes) -> None:
        """Before a followed packet is shown: refresh the lab's keys if they may be stale (module docstring)."""
        if not self.lab_keys or self.lab is None:
            return
        index = self._unknown_index(data)
        first_try = index is not None and index not in self._keys_tried
        due = KEYS_RETRY if index is not None else KEYS_INTERVAL
        nodes = {h: id(n) for h, n in started_nodes(self.lab).items()}
        if first_try or nodes != self._keys_nodes or self._keys_at is None or abs(ts - self._keys_at) >= due:
            if index is not None:
                self._keys_tried.add(index)
            self._keys_at = ts
            await self.refresh_keys()

    def _unknown_index(self, data: bytes) -> int | None:
        """The index of a session this packet shows that has no key yet: a WireGuard transport's receiver
        index, or a handshake response's sender index (a new session), over UDP or in the DERP frame a TCP
        segment starts with (protocols.md §8.1, §2.3); None for anything else."""
        tr = pcapio.transport(pcapio.Record(0.0, pcapio.LINKTYPE_RAW, data))
        if tr is None:
            return None
        p = tr.payload
        if tr.proto == pcapio.IPPROTO_TCP:  # SendPacket / RecvPacket: header, a node key, the packet
            start = derp_base.FRAME_HEADER_LEN + derp_base.KEY_LEN
            if len(p) < start or p[0] not in (derp_base.FrameType.SEND_PACKET, derp_base.FrameType.RECV_PACKET):
                return None
            p = p[start:]
        if len(p) < 32 or p[0] not in (2, 4) or p[1:4] != b"\0\0\0":
            return None
        index = int.from_bytes(p[4:8], "little")  # transport: receiver index; response: sender index
        return None if any(s.receiver_index == index for s in self.keyring.wireguard) else index

    async def watch(self, element: str, interface: str) -> Capture:
        """Open a capture on ``element``'s ``interface`` and show its packets as they come (batched)."""
        if self.lab is None:
            raise UsageError("PacketInspector(lab=None) cannot open captures: give it a lab, or add() packets")
        capture = await self.lab.open_capture(element, interface)
        self.follow(capture)
        return capture

    def follow(self, capture: Capture, point: str | None = None) -> asyncio.Task[None]:
        """Show the packets of an open ``capture`` as they come, in batches, until :meth:`stop`."""
        return self.following.follow(capture, point)

    def _queue(self, point: str, ts: float, data: bytes) -> None:
        self._pending.append((point, ts, data))
        self._changed()

    async def stop(self) -> None:
        """Stop following the captures (rows stay) and refresh the lab's keys (a selected row opens with
        them); the table shows everything received."""
        await self.following.stop_following()
        if self.lab_keys:
            await self.refresh_keys()
        self.flush()

    def _ingest(self, batch: list[tuple[str, float, bytes]]) -> list[Row]:
        start = len(self.all_rows)
        for point, ts, data in sorted(batch, key=lambda p: p[1]):  # a batch of several points, in time order
            self.base.see(ts)
            self.packets.append((point, ts, data))
            record = pcapio.Record(ts, pcapio.LINKTYPE_RAW, data)
            analyzer = self._analyzers.get(point) or self._analyzers.setdefault(point, Analyzer(self.keyring))
            events: list[Event | None] = list(analyzer.process(record, len(self.packets)))
            for ev in events if events else [None]:
                self.all_rows.append(self._row(point, record, ev))
        return self.all_rows[start:]

    def _row(self, point: str, record: pcapio.Record, ev: Event | None) -> Row:
        """The row of one event (or of a packet without one); classifies protocol, tags and path."""
        tr = pcapio.transport(record)
        src, dst = (tr.src, tr.dst) if tr is not None else ("?", "?")
        protocol, summary = "other", ev.summary if ev is not None else f"IP {len(record.data)}B, not UDP or TCP"
        if ev is not None and ev.kind in _KIND_PROTOCOL:
            protocol, src, dst = _KIND_PROTOCOL[ev.kind], ev.src, ev.dst
        elif tr is not None and ev is None:
            tcp = tr.proto == pcapio.IPPROTO_TCP
            summary = f"TCP [{_tcp_flags(tr.tcp_flags)}] {len(tr.payload)}B" if tcp else f"UDP {len(tr.payload)}B"
            if tcp and (frozenset((src, dst)) in self._derp_flows or {_ips(src), _ips(dst)} & self._derp_ips):
                protocol, summary = "derp", f"DERP connection: {summary}"
        tags = {protocol}
        if protocol == "derp" and ev is not None:
            self._derp_flows.add(frozenset((src, dst)))
            tags.add(_inner_protocol(ev))
        path = "derp" if protocol == "derp" else "direct" if protocol in ("disco", "wireguard") else "other"
        return Row(len(self.all_rows), self.base, point, src, dst, protocol, frozenset(tags), path, summary, record, ev)

    # --- filtering and selection ------------------------------------------------------------------

    def filter(self, protocols: Iterable[str] | str | None = None, peer: str | None = None) -> list[Row]:
        """Show only ``protocols`` (None: all) to or from ``peer`` (an IP or a host/node name; None: any)."""
        wanted = frozenset([protocols] if isinstance(protocols, str) else protocols or PROTOCOLS)
        unknown = sorted(wanted - set(PROTOCOLS))
        if unknown:
            raise UsageError(f"unknown protocol {unknown[0]!r}: choose from {', '.join(PROTOCOLS)}")
        self.protocols = wanted
        self.peer = (peer or "").strip() or None
        self._peer_ips = self._ips_of(self.peer) if self.peer else set()
        self._render()
        return self.rows

    def _ips_of(self, peer: str) -> set[str]:
        """An IP; a host's addresses and its NATs' public ones (how it looks beyond them); a router's."""
        try:
            return {str(ipaddress.ip_address(peer))}
        except ValueError:
            pass
        topo = self.lab.topology if self.lab is not None else None
        if topo is None:
            return set()
        try:
            element = topo.element(peer)
        except UsageError:
            return set()
        if isinstance(element, Host):
            return {str(ip) for ip in element.addresses} | {str(r.wan_v4) for r in topo.path_to_internet(peer)}
        return {str(element.wan_v4), str(element.lan_v4)}

    def _matches(self, row: Row) -> bool:
        if not row.tags & self.protocols:
            return False
        if self.peer is None:
            return True
        if {_ips(row.src), _ips(row.dst)} & self._peer_ips:
            return True
        return self.peer in row.summary.replace(",", " ").split()  # "from alice to bob", DERP's "bob"

    @property
    def rows(self) -> list[Row]:
        """The rows the table shows (all rows that pass the filter), in time order (then arrival order)."""
        self._drain()
        return sorted((r for r in self.all_rows if self._matches(r)), key=lambda r: (r.record.ts, r.number))

    def select(self, i: int) -> str:
        """Select the ``i``-th shown row; its scapy dissection, disco and WireGuard opened with the keys."""
        row = self.rows[i]
        self._selected = row.number
        text = self.dissection(row)
        self._render(text)
        return text

    def dissection(self, row: Row) -> str:
        """``show()``-like text of ``row``: a header line, then scapy's dissection with the boxes opened."""
        ev = row.event
        if ev is not None and ev.transport == "udp":  # re-open with the keys known now (keys arrive late)
            ev = next(iter(Analyzer(self.keyring).process(row.record, ev.index)), ev)
        head = f"#{row.number} {row.time:.6f}s at {row.point}, path {row.path}: {ev.summary if ev else row.summary}"
        try:
            body = ev.dissection() if ev is not None else str(dissect_record(row.record).show(dump=True))
        except Exception as exc:  # a dissection must not break the view (design: count, show, continue)
            body = f"scapy could not dissect this packet: {type(exc).__name__}: {exc}"
        return f"{head}\n{body}"

    # --- output ------------------------------------------------------------------------------------

    def export_pcap(self, path: str | Path, *, keys: bool = False) -> int:
        """Write every captured packet (all points, by time) as a raw-IP pcap; with ``keys`` also the keys
        file ``natkit decode FILE --keys`` reads (``FILE.keys.json``). Returns the packet count."""
        self._drain()
        with pcapio.PcapWriter(path, pcapio.LINKTYPE_RAW) as writer:
            for _point, ts, data in sorted(self.packets, key=lambda p: p[1]):
                writer.write(data, ts)
            count = writer.count
        if keys:
            self.keyring.save(keys_path_for(path))
        return count

    def text(self) -> str:
        return "\n".join(r.line() for r in self.rows)

    # --- the widget (throttled rendering) ----------------------------------------------------------

    def _drain(self) -> None:
        batch, self._pending = self._pending, []
        self._ingest(batch)

    def _changed(self) -> None:
        """Something new: render now if the last render is old enough, else once the interval has passed."""
        if self._timer is not None:
            return
        wait = self._last_render + self.min_interval - time.monotonic()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if wait <= 0 and not self._pending:
            self._render()
        elif loop is not None:  # in a notebook a cell runs inside the kernel's loop: the timer fires after it
            self._timer = loop.call_later(max(wait, 0.0), self.flush)
        else:  # a script without a loop: the next flush() or widget access renders
            self._stale = True

    def flush(self) -> None:
        """Analyse what is pending and render now (the end of a live run, a test)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._render()

    def _render(self, detail: str | None = None) -> None:
        self._drain()
        self._stale = False
        self._last_render = time.monotonic()
        if self._ui is None:
            return
        self.renders += 1
        shown = self.rows[-self.max_shown :]
        ui = self._ui
        self._updating = True
        try:
            ui["table"].options = [(r.line(), r.number) for r in shown]
            keep = self._selected if any(r.number == self._selected for r in shown) else None
            ui["table"].value = keep
            ui["count"].value = f"{len(shown)} of {len(self.all_rows)} rows"
            if detail is not None:
                ui["detail"].value = f"<pre>{html.escape(detail)}</pre>"
        finally:
            self._updating = False

    @property
    def widget(self) -> Any:
        """The ipywidgets view: protocol checkboxes, a peer box, the table, and the selected dissection."""
        if self._ui is None:
            self._ui = self._build()
            self._render()
        elif self._stale:
            self._render()
        return self._ui["box"]

    def _build(self) -> dict[str, Any]:
        import ipywidgets as w  # type: ignore[import-untyped]

        boxes = {p: w.Checkbox(value=p in self.protocols, description=p, indent=False,
                               layout=w.Layout(width="auto")) for p in PROTOCOLS}  # fmt: skip
        peer = w.Text(value=self.peer or "", placeholder="peer: IP or name", continuous_update=False)
        table = w.Select(options=[], rows=18, layout=w.Layout(width="100%"))
        count = w.Label()
        detail = w.HTML()
        style = w.HTML("<style>.natkit-packets select {font-family: monospace; font-size: 12px}</style>")

        def on_filter(_change: Any) -> None:
            if not self._updating:
                self.filter([p for p, b in boxes.items() if b.value], peer.value)

        def on_select(change: Any) -> None:
            if self._updating or change["new"] is None:
                return
            self._selected = change["new"]
            row = self.all_rows[change["new"]]
            detail.value = f"<pre>{html.escape(self.dissection(row))}</pre>"

        for b in boxes.values():
            b.observe(on_filter, "value")
        peer.observe(on_filter, "value")
        table.observe(on_select, "value")
        box = w.VBox([style, w.HBox([*boxes.values(), peer, count]), table, detail])
        box.add_class("natkit-packets")
        return {"box": box, "table": table, "count": count, "detail": detail, "boxes": boxes, "peer": peer}

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:  # a notebook shows the view as its widget
        return self.widget._repr_mimebundle_(**kwargs)


def _inner_protocol(ev: Event) -> str:
    """What a DERP frame carries: ``disco``, ``wireguard``, or ``derp`` (a frame of DERP's own)."""
    if ev.opened is not None:
        return "disco"
    if ev.inner:
        return "wireguard"
    try:
        inner = getattr(derp_codec.decode(ev.payload), "packet", None)
    except DecodeError:
        return "derp"
    return _KIND_PROTOCOL.get(natkit_kind(inner).value, "derp") if isinstance(inner, bytes) and inner else "derp"


def _tcp_flags(flags: int) -> str:
    names = [n for bit, n in ((0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH")) if flags & bit]
    return ",".join(names) or "none"


__all__ = ["KEYS_INTERVAL", "PATHS", "PROTOCOLS", "PacketInspector", "Row", "TimeBase", "lab_keyring", "merge_keys"]
