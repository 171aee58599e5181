"""Hole punching by hand: the theory table (RFC 4787) and the experiment, on any lab backend (issue 5).

**The procedure** (what Tailscale's disco does, stripped to the bone; protocols.md §4, §6.2). Two LAN
hosts, *first* and *second*, each with one UDP socket:

1. each asks the lab's STUN server for its public endpoint (RFC 8489 Binding, from that socket);
2. the harness exchanges the two endpoints (as a coordination server would);
3. both send probes to the other's endpoint every ``interval`` (100 ms) for ``duration`` (2 s); the
   first side starts ``skew`` (50 ms) earlier: no coordination server reaches both at one instant,
   and the order matters for a router that accepts WAN input (below);
4. a side that receives a probe from an endpoint it does not probe yet adds it to its targets (a
   peer-reflexive candidate, RFC 8445 §7.3.1.3; disco answers a ping with a pong to its source).

The outcome is **direct** when each side received a probe of the other; :class:`PunchResult` says
from which endpoint (the one STUN reported for the peer, or another one).

The theory (:func:`predict`, in :mod:`toolkit.lab.punch_theory`) walks the same procedure through an
abstract RFC 4787 NAT per side; the experiment must agree with it.

The experiment (:func:`run_punches`) runs on the ``sim`` backend with its virtual sockets and
scheduler, and on ``netns``/``docker`` with a probe program started on each host by
:meth:`Lab.run` (``python -m toolkit.packets.punchprobe``, which crafts and dissects the probe with
scapy: the wire format is :func:`encode_probe`). :func:`grid_topology` builds one lab with two NAT
routers per preset so every ordered pair runs at once, each pair on its own ports.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import struct
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.errors import DecodeError, NatkitError, UsageError
from toolkit.lab.punch_theory import Prediction, grid_markdown, predict, prediction_table
from toolkit.lab.topology import Topology
from toolkit.types import Endpoint

PROBE_MAGIC = b"NKPUNCH1"
PROBE_MODULE = "toolkit.packets.punchprobe"
DEFAULT_PORT = 41641  # Tailscale's default port

# --- the probe's wire format (the scapy layer in toolkit.packets.punchprobe builds the same bytes) ------


def encode_probe(sender: str, seq: int, target: Endpoint) -> bytes:
    """``NKPUNCH1`` ‖ seq u32 ‖ len u8 ‖ sender ‖ len u8 ‖ target ``ip:port`` (what the sender aimed at)."""
    name, tgt = sender.encode(), str(target).encode()
    return PROBE_MAGIC + struct.pack("!IB", seq, len(name)) + name + struct.pack("!B", len(tgt)) + tgt


def decode_probe(data: bytes) -> tuple[str, int, str]:
    """(sender, seq, target) of a probe; :class:`DecodeError` for anything else (a STUN reply, garbage)."""
    if not data.startswith(PROBE_MAGIC) or len(data) < len(PROBE_MAGIC) + 6:
        raise DecodeError("not a punch probe")
    seq, n = struct.unpack_from("!IB", data, len(PROBE_MAGIC))
    at = len(PROBE_MAGIC) + 5
    name = data[at : at + n]
    if len(name) != n or len(data) < at + n + 1:
        raise DecodeError("truncated punch probe")
    m = data[at + n]
    target = data[at + n + 1 : at + n + 1 + m]
    if len(target) != m:
        raise DecodeError("truncated punch probe")
    return name.decode(errors="replace"), seq, target.decode(errors="replace")


# --- the experiment ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pair:
    """One experiment: ``first`` (starts ``skew`` earlier) and ``second``, each on one UDP port."""

    first: str
    second: str
    first_port: int = DEFAULT_PORT
    second_port: int = DEFAULT_PORT

    @property
    def tags(self) -> tuple[str, str]:
        """What each side writes as the probe's sender (host:port: unique in one lab)."""
        return f"{self.first}:{self.first_port}", f"{self.second}:{self.second_port}"


@dataclass(frozen=True, slots=True)
class PunchResult:
    """What one experiment measured: the STUN-learned endpoints and where each side heard the other from."""

    pair: Pair
    public: tuple[Endpoint | None, Endpoint | None]
    heard: tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]]  # distinct sources of the peer's probes, in order
    sent: tuple[int, int] = (0, 0)
    error: str = ""

    @property
    def direct(self) -> bool:
        """Each side received a probe of the other."""
        return bool(self.heard[0]) and bool(self.heard[1])

    @property
    def via(self) -> tuple[str | None, str | None]:
        """Per side: "stun" (first heard from the endpoint STUN reported for the peer), "other", or None."""
        kinds: list[str | None] = []
        for mine, peer_public in ((self.heard[0], self.public[1]), (self.heard[1], self.public[0])):
            kinds.append(None if not mine else "stun" if mine[0] == peer_public else "other")
        return kinds[0], kinds[1]

    def summary(self) -> str:
        p = self.pair
        if self.error:
            return f"{p.first} -> {p.second}: not direct ({self.error})"
        pub = " / ".join(str(e) for e in self.public)
        heard = "; ".join(
            f"{who} heard {', '.join(map(str, h)) or 'nothing'}"
            for who, h in zip((p.first, p.second), self.heard, strict=True)
        )
        return f"{p.first} -> {p.second}: {'direct' if self.direct else 'not direct'} (public {pub}; {heard})"


def default_stun(topo: Topology) -> Endpoint:
    """The primary endpoint of the lab's first STUN server."""
    from toolkit.lab.labservices import hosts_running, listen_port

    for host in hosts_running(topo, "stun-server"):
        spec = next(s for s in host.services if s.kind == "stun-server")
        return Endpoint(host.v4, listen_port(host, spec))
    raise UsageError(f"lab {topo.name!r} runs no stun-server: the punch needs one to learn public endpoints")


async def run_punches(
    lab: object,
    pairs: Sequence[Pair],
    *,
    stun: Endpoint | None = None,
    duration: float = 2.0,
    interval: float = 0.1,
    skew: float = 0.05,
    margin: float | None = None,
) -> list[PunchResult]:
    """Run every experiment of ``pairs`` at once in a running ``lab`` (any backend); one result per pair."""
    from toolkit.lab.backend import Lab
    from toolkit.lab.sim.lab import SimLab

    assert isinstance(lab, Lab)
    stun = stun or default_stun(lab.topology)
    if isinstance(lab, SimLab):
        if lab.world is None:
            raise UsageError(f"lab {lab.name!r} is not up: call up() first")
        results = run_sim(lab.world, pairs, stun=stun, duration=duration, interval=interval, skew=skew)
        await asyncio.sleep(0)
        return results
    return await _run_processes(lab, pairs, stun, duration, interval, skew, margin)


async def punch(lab: object, first: str = "alice", second: str = "bob", **kw: object) -> PunchResult:
    """One experiment between two hosts of a running lab (see :func:`run_punches`)."""
    return (await run_punches(lab, [Pair(first, second)], **kw))[0]  # type: ignore[arg-type]


def _result(
    pair: Pair, public: dict[str, Endpoint | None], heard: dict[str, list[Endpoint]], sent: dict[str, int]
) -> PunchResult:
    a, b = pair.tags
    missing = [t for t in (a, b) if public.get(t) is None]
    error = f"no STUN answer at {', '.join(missing)}" if missing else ""
    return PunchResult(
        pair,
        (public.get(a), public.get(b)),
        (tuple(heard.get(a, ())), tuple(heard.get(b, ()))),
        (sent.get(a, 0), sent.get(b, 0)),
        error,
    )


def run_sim(
    world: object,
    pairs: Sequence[Pair],
    *,
    stun: Endpoint,
    duration: float = 2.0,
    interval: float = 0.1,
    skew: float = 0.05,
    stun_timeout: float = 3.0,
) -> list[PunchResult]:
    """The experiment on a :class:`~toolkit.lab.sim.world.SimWorld`: virtual sockets, virtual time."""
    from toolkit.codec import stun as stunc
    from toolkit.lab.sim.sockets import UdpSocket
    from toolkit.lab.sim.world import SimWorld
    from toolkit.types import TxID

    assert isinstance(world, SimWorld)
    sched, topo = world.sched, world.topology
    rng = sched.rand_bytes("punch")
    public: dict[str, Endpoint | None] = {}
    heard: dict[str, list[Endpoint]] = {}
    sent: dict[str, int] = {}
    targets: dict[str, list[Endpoint]] = {}
    peer_of: dict[str, str] = {}
    socks: dict[str, UdpSocket] = {}
    txids: dict[bytes, str] = {}

    def datagram(tag: str, data: bytes, src: Endpoint, sock: UdpSocket) -> None:
        if stunc.is_stun(data):
            try:
                msg = stunc.decode(data)
            except DecodeError:
                return
            if txids.get(bytes(msg.txid)) == tag:
                public[tag] = msg.mapped_endpoint
            return
        try:
            sender, _seq, _target = decode_probe(data)
        except DecodeError:
            return
        if sender == peer_of.get(tag):
            if src not in heard[tag]:
                heard[tag].append(src)
            if src not in targets[tag]:
                targets[tag].append(src)  # a peer-reflexive candidate

    for pair in pairs:
        for (host, port), tag, peer in zip(
            ((pair.first, pair.first_port), (pair.second, pair.second_port)),
            pair.tags,
            reversed(pair.tags),
            strict=True,
        ):
            local = Endpoint(topo.host(host).v4, port)
            socks[tag] = UdpSocket(world.machine(host), local, functools.partial(datagram, tag))
            public[tag], heard[tag], sent[tag], targets[tag], peer_of[tag] = None, [], 0, [], peer

    def ask(tag: str, tries: int) -> None:
        if public[tag] is not None or tries == 0:
            return
        txid = TxID(rng(12))
        txids[bytes(txid)] = tag
        _send(socks[tag], stunc.binding_request(txid), stun)
        sched.call_later(0.5, ask, tag, tries - 1)

    for tag in socks:
        ask(tag, int(stun_timeout / 0.5))
    sched.run_while(lambda: any(v is None for v in public.values()), stun_timeout)

    def tick(tag: str, seq: int) -> None:
        for target in targets[tag]:
            if _send(socks[tag], encode_probe(tag, seq, target), target):
                sent[tag] += 1

    t0 = sched.now + interval
    count = max(1, round(duration / interval))
    for pair in pairs:
        a, b = pair.tags
        pa, pb = public[a], public[b]
        if pa is None or pb is None:
            continue
        targets[a].append(pb)  # the exchange a coordination server does
        targets[b].append(pa)
        for k in range(count):
            sched.call_at(t0 + k * interval, tick, a, k)
            sched.call_at(t0 + skew + k * interval, tick, b, k)
    sched.run_until(t0 + skew + duration + interval)
    for sock in socks.values():
        sock.close()
    return [_result(pair, public, heard, sent) for pair in pairs]


def _send(sock: object, data: bytes, dest: Endpoint) -> bool:
    try:
        sock.sendto(data, dest)  # type: ignore[attr-defined]
    except OSError:
        return False
    return True


async def _run_processes(
    lab: object, pairs: Sequence[Pair], stun: Endpoint, duration: float, interval: float, skew: float,
    margin: float | None,
) -> list[PunchResult]:  # fmt: skip
    """netns/docker: ``python -m toolkit.packets.punchprobe`` on each host, all hosts at once."""
    from toolkit.lab.backend import Lab

    assert isinstance(lab, Lab)
    topo = lab.topology
    python = ["python"] if lab.backend == "docker" else [sys.executable]
    binds: dict[str, list[tuple[str, Endpoint]]] = {}
    for pair in pairs:
        for host, port, tag in zip(
            (pair.first, pair.second), (pair.first_port, pair.second_port), pair.tags, strict=True
        ):
            binds.setdefault(host, []).append((tag, Endpoint(topo.host(host).v4, port)))

    async def run(host: str, argv: list[str], timeout: float) -> dict[str, object]:
        result = await lab.run(host, [*python, "-m", PROBE_MODULE, *argv], timeout=timeout)
        if result.exit != 0:
            raise NatkitError(f"punchprobe {argv[0]} on {host} failed ({result.exit}): {result.stderr.strip()[-300:]}")
        out: dict[str, object] = json.loads(result.stdout)
        return out

    stun_args = {h: ["stun", "--server", str(stun), *itertools.chain(*(("--bind", str(ep)) for _, ep in b))]
                 for h, b in binds.items()}  # fmt: skip
    answers = await asyncio.gather(*(run(h, a, 30.0) for h, a in stun_args.items()))
    public: dict[str, Endpoint | None] = {}
    for host, answer in zip(stun_args, answers, strict=True):
        for tag, ep in binds[host]:
            mapped = answer.get(str(ep))
            public[tag] = Endpoint.parse(mapped) if isinstance(mapped, str) else None
    probes: dict[str, list[str]] = {}
    for pair in pairs:
        a, b = pair.tags
        if public[a] is None or public[b] is None:
            continue
        for host, port, tag, peer, delay in (
            (pair.first, pair.first_port, a, b, 0.0), (pair.second, pair.second_port, b, a, skew)
        ):  # fmt: skip
            bind = Endpoint(topo.host(host).v4, port)
            probes.setdefault(host, []).append(f"{tag},{bind},{public[b if tag == a else a]},{peer},{delay}")
    if margin is None:
        margin = 1.0 + 0.25 * len(probes) + (2.0 if lab.backend == "docker" else 0.0)
    t0 = time.time() + margin
    hosts = list(probes)
    argvs = [["punch", "--start-at", f"{t0:.3f}", "--duration", str(duration), "--interval", str(interval),
              *itertools.chain(*(("--probe", p) for p in probes[h]))] for h in hosts]  # fmt: skip
    reports = await asyncio.gather(*(run(h, a, margin + duration + 30.0) for h, a in zip(hosts, argvs, strict=True)))
    heard: dict[str, list[Endpoint]] = {}
    sent: dict[str, int] = {}
    for host, report in zip(hosts, reports, strict=True):
        late = float(report.get("late", 0.0))  # type: ignore[arg-type]
        if late > 0.01:
            raise NatkitError(f"punchprobe on {host} started {late:.3f} s late: give run_punches a larger margin")
        for probe in report["probes"]:  # type: ignore[attr-defined]
            heard[probe["tag"]] = [Endpoint.parse(e) for e in probe["heard"]]
            sent[probe["tag"]] = int(probe["sent"])
    return [_result(pair, public, heard, sent) for pair in pairs]


# --- one lab for the whole grid ------------------------------------------------------------------------

GRID_BASE_PORT = 40000


def grid_topology(names: Sequence[str], name: str = "punch-grid") -> Topology:
    """Two NAT routers per preset (``fa<i>``/``sb<i>`` with hosts ``ha<i>``/``hb<i>``) and one STUN server."""
    from toolkit.lab.scenario import TopologyBuilder

    t = TopologyBuilder(name, "every ordered pair of NAT presets punches at once, each pair on its own ports")
    for i, preset_name in enumerate(names):
        for side in ("a", "b"):
            lan = t.lan(f"l{side}{i}")
            t.router(f"r{side}{i}", lan=lan, nat=preset_name)
            t.host(f"h{side}{i}", lan)
    t.host("stun1", v4="198.51.100.10", services=["stun-server"])
    return t.build()


def grid_pairs(names: Sequence[str]) -> dict[tuple[str, str], Pair]:
    """The ordered pairs of :func:`grid_topology`: ``ha<i>`` (first) with ``hb<j>``, on ports unique per host."""
    return {
        (x, y): Pair(f"ha{i}", f"hb{j}", GRID_BASE_PORT + j, GRID_BASE_PORT + i)
        for (i, x), (j, y) in itertools.product(enumerate(names), repeat=2)
    }


__all__ = [
    "DEFAULT_PORT",
    "PROBE_MAGIC",
    "PROBE_MODULE",
    "Pair",
    "Prediction",
    "PunchResult",
    "decode_probe",
    "default_stun",
    "encode_probe",
    "grid_markdown",
    "grid_pairs",
    "grid_topology",
    "predict",
    "prediction_table",
    "punch",
    "run_punches",
    "run_sim",
]
