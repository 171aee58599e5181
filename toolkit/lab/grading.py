"""Checks for the graded lab exercises (``labs/exercises/``): they grade what happened on the network.

Every check inspects the lab itself, never the student's text: the packets a capture point saw
(:class:`~toolkit.lab.backend.Capture`, raw IP bytes on every backend), a NAT router's mapping table
(:meth:`~toolkit.lab.backend.Lab.nat_table`), or the outcome of two nodes run on a topology
(:func:`toolkit.lab.noderun.run_scenario`). A check returns one line saying what it verified and
raises :class:`AssertionError` with a message that says what went wrong *on the network* and what to
try next ("your probe never left alice: did you send it to the STUN server's address
198.51.100.10:3478?"). nbgrader counts a check cell as passed when it raises nothing.

The checks are backend-neutral: they read only what every backend gives (captures of raw IP packets, NAT
tables, the topology, node reports), never the simulator's internals, so an exercise grades the same on
``sim``, ``netns`` and ``docker``. On the kernel backends a capture is fed by a reader (an ``AF_PACKET``
thread, tcpdump in a container) a moment after the packet crossed, so every check that reads captures
first lets them settle; reading captures is :mod:`toolkit.lab.gradingcapture` (re-exported here).

The vocabulary of the answers is RFC 4787's (:class:`~toolkit.lab.nat.Mapping`,
:class:`~toolkit.lab.nat.Filtering`); the discovery the student runs is RFC 5780's (§4.3 mapping
tests to OTHER-ADDRESS, §4.4 filtering tests with CHANGE-REQUEST, §7.2).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterable, Mapping
from ipaddress import IPv4Address

from toolkit.codec import stun
from toolkit.errors import UsageError
from toolkit.lab.backend import Capture, Lab
from toolkit.lab.gradingcapture import Seen, binding_requests, binding_responses, settle, udp_seen
from toolkit.lab.nat import Filtering, NatBehavior, preset
from toolkit.lab.nat import Mapping as NatMappingKind
from toolkit.lab.topology import Topology
from toolkit.types import Endpoint

STUN_SERVER = Endpoint.parse("198.51.100.10:3478")  # stun1 in every lab (labs/README.md)
STUN_OTHER = Endpoint.parse("198.51.100.11:3479")  # its OTHER-ADDRESS (RFC 5780 §7.4)
MYSTERY_PRESETS = ("easy", "easyaf", "hard", "full-cone")  # what exercise 02's mystery NAT may be


def lab_name(exercise: str, backend: str) -> str | None:
    """A lab name for ``exercise`` ("01") on ``backend``: None (the topology's) on sim; on the kernel backends
    one unique to this process, so that two notebooks (or a notebook and a test) never share a namespace or
    container name."""
    return None if backend == "sim" else f"x{exercise}-{os.getpid() % 100000}"


def parse_answer(value: object, name: str, example: str) -> Endpoint:
    """The student's ``ip:port`` answer as an Endpoint, or an AssertionError saying how to write it."""
    if value is None or value is Ellipsis:
        raise AssertionError(f"{name} is not set yet: give the ip:port you found as a string, e.g. {example!r}")
    if isinstance(value, Endpoint):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        value = f"{value[0]}:{value[1]}"
    try:
        return Endpoint.parse(str(value))
    except (UsageError, ValueError) as exc:
        raise AssertionError(f"{name} = {value!r} is not an ip:port like {example!r} ({exc})") from None


# --- exercise 01: find your public endpoint ----------------------------------------------------------


async def check_public_endpoint(
    lab: Lab,
    answer: object,
    *,
    host_capture: Capture,
    wan_capture: Capture,
    host: str = "alice",
    router: str = "r1",
    server: Endpoint = STUN_SERVER,
) -> str:
    """``answer`` is the public endpoint ``router`` maps ``host``'s probe to, and the probe really went out."""
    await settle(lab, (host_capture, wan_capture))
    sent = binding_requests(host_capture)
    if not sent:
        raise AssertionError(
            f"your probe never left {host}: did you send a STUN Binding request to the STUN server's address {server}?"
        )
    if not any(s.dst == server for s, _ in sent):
        where = ", ".join(sorted({str(s.dst) for s, _ in sent}))
        raise AssertionError(f"{host} sent STUN requests to {where}, but the lab's STUN server listens on {server}")
    outside = binding_requests(wan_capture, to=server)
    if not outside:
        raise AssertionError(f"{host}'s request to {server} never crossed {router}: look at the router's drops")
    answers = [(s, m) for s, m in binding_responses(host_capture) if s.src == server]
    if not answers:
        raise AssertionError(f"{server} never answered {host}: did your request have a valid STUN header?")
    got = parse_answer(answer, "MY_PUBLIC_ENDPOINT", "203.0.113.1:40000")
    own = {str(ip) for ip in lab.topology.host(host).addresses}
    if str(got.ip) in own:
        raise AssertionError(
            f"{got} is {host}'s own (private) address: the STUN server sees the packet after {router} rewrote it; "
            "read XOR-MAPPED-ADDRESS in the answer"
        )
    table = await lab.nat_table(router)
    mine = [m for m in table if str(m.private.ip) in own and m.proto == "udp"]
    if not any(m.public == got for m in mine):
        shown = ", ".join(str(m.public) for m in mine) or "none"
        raise AssertionError(f"{router} maps none of {host}'s sockets to {got} (its mappings for {host}: {shown})")
    reported = {m.mapped_endpoint for _, m in answers}
    if got not in reported:
        raise AssertionError(f"{got} is one of {router}'s mappings, but no STUN answer {host} received reported it")
    return f"✓ {host}'s public endpoint is {got}: {router}'s NAT table maps {host}'s socket to it, and STUN said so"


# --- exercise 02: classify a NAT -----------------------------------------------------------------------


def buildable(nat: NatBehavior, backend: str) -> bool:
    """Whether ``backend`` can build a router with ``nat``: ``sim`` models every NAT; ``netns`` and ``docker``
    run the kernel's nftables ruleset, which cannot express some (:func:`toolkit.lab.netns.nftables.inexpressible`)."""
    if backend == "sim":
        return True
    from toolkit.lab.netns.nftables import inexpressible

    return inexpressible(nat) is None


def mystery_presets(backend: str = "sim", candidates: Iterable[str] = MYSTERY_PRESETS) -> tuple[str, ...]:
    """The ``candidates`` exercise 02 may draw on ``backend``: those it can build, in order."""
    names = tuple(candidates)
    found = tuple(name for name in names if buildable(preset(name), backend))
    if not found:
        raise UsageError(f"none of the NAT presets {', '.join(names)} can run on the {backend} backend")
    return found


def mystery_nat(seed: int, backend: str = "sim", candidates: Iterable[str] = MYSTERY_PRESETS) -> NatBehavior:
    """Exercise 02's NAT: one of the :func:`mystery_presets` of ``backend``, picked by ``seed``, named ``mystery``.

    Every preset of :data:`MYSTERY_PRESETS` runs on every backend, so one seed is one NAT everywhere."""
    name = random.Random(seed).choice(mystery_presets(backend, candidates))
    return preset(name).replace(name="mystery", description="which NAT is this? (exercise 02)")


def mystery_topology(seed: int, backend: str = "sim") -> Topology:
    """alice behind ``r1`` (the :func:`mystery_nat` for ``backend``), the lab's STUN server with two addresses."""
    nat = mystery_nat(seed, backend)
    return Topology.from_dict(
        {
            "name": "ex02-classify-nat",
            "description": "alice behind a NAT of unknown behaviour (exercise 02)",
            "segments": [{"name": "home1", "kind": "lan", "index": 1}],
            "routers": [{"name": "r1", "wan": "internet", "lan": "home1", "nat": nat.to_dict()}],
            "hosts": [
                {"name": "stun1", "v4": str(STUN_SERVER.ip), "extra_v4": [str(STUN_OTHER.ip)],
                 "services": ["stun-server"]},
                {"name": "alice", "segment": "home1"},
            ],
        }
    )  # fmt: skip


def _behaviour(value: object, kind: type[NatMappingKind] | type[Filtering], what: str) -> str:
    choices = ", ".join(repr(m.value) for m in kind)
    if value is None or value is Ellipsis:
        raise AssertionError(f"ANSWER[{what!r}] is not set yet: use one of {choices}")
    text = str(getattr(value, "value", value)).strip().lower().replace("_", "-").replace(" ", "-")
    if text not in {m.value for m in kind}:
        raise AssertionError(f"ANSWER[{what!r}] = {value!r} is not an RFC 4787 {what} behaviour; use one of {choices}")
    return text


async def check_nat_classification(
    lab: Lab, answer: Mapping[str, object] | None, *, wan_capture: Capture, router: str = "r1"
) -> str:
    """The RFC 5780 tests really ran through ``router`` and ``answer`` names its mapping and filtering."""
    await settle(lab, (wan_capture,))
    requests = binding_requests(wan_capture)
    if not requests:
        raise AssertionError(f"no STUN request crossed {router}: run the RFC 5780 tests from alice first")
    changes = [m.get(stun.ChangeRequest) for _, m in requests]
    if not any(c is not None and c.change_ip and c.change_port for c in changes):
        raise AssertionError(
            f"no filtering test crossed {router}: RFC 5780 §4.4 test II is a Binding request with CHANGE-REQUEST "
            "(change IP and change port) to the primary address"
        )
    if not any(s.dst.ip == STUN_OTHER.ip for s, _ in requests):
        raise AssertionError(
            f"no mapping test crossed {router}: RFC 5780 §4.3 test II asks the server's OTHER-ADDRESS ({STUN_OTHER.ip})"
        )
    if not isinstance(answer, Mapping):
        raise AssertionError("ANSWER is not set yet: a dict {'mapping': ..., 'filtering': ...}")
    nat = lab.topology.router(router).nat
    assert nat is not None, f"{router} has no NAT"
    truth = {
        "mapping": nat.mapping.value,
        "filtering": "endpoint-independent" if nat.one_to_one else nat.filtering.value,
    }
    given = {
        "mapping": _behaviour(answer.get("mapping"), NatMappingKind, "mapping"),
        "filtering": _behaviour(answer.get("filtering"), Filtering, "filtering"),
    }
    wrong = [k for k in ("mapping", "filtering") if given[k] != truth[k]]
    if wrong:
        hints = {
            "mapping": "compare the XOR-MAPPED-ADDRESS of test I (primary address) and test II (the other IP) from one "
            "socket: equal means endpoint-independent",
            "filtering": "test II (change IP and port) answered means endpoint-independent; else test III (change port "
            "only) answered means address-dependent; use a fresh socket, one that has sent only to the primary address",
        }
        raise AssertionError(
            "; ".join(f"your {k} answer {given[k]!r} is not what {router} does: {hints[k]}" for k in wrong)
        )
    return f"✓ {router}: mapping {truth['mapping']}, filtering {truth['filtering']}, and the tests crossed it"


async def check_hard_side(lab: Lab, answer: object, *, wan_captures: Mapping[str, Capture]) -> str:
    """The RFC 5780 tests crossed every NAT router of ``wan_captures`` and ``answer`` names the hard one(s)."""
    await settle(lab, wan_captures.values())
    for router, capture in wan_captures.items():
        if not any((c := m.get(stun.ChangeRequest)) is not None and c.change_ip for _, m in binding_requests(capture)):
            behind = ", ".join(
                h.name for h in lab.topology.hosts if router in {r.name for r in lab.topology.path_to_internet(h.name)}
            )
            raise AssertionError(
                f"no RFC 5780 test crossed {router}: run the NAT discovery from {behind or 'its LAN'} too"
            )
    hard = sorted(r.name for r in lab.topology.routers if r.nat is not None and r.nat.is_hard)
    if answer is None or answer is Ellipsis:
        raise AssertionError("HARD_ROUTER is not set yet: name the router whose mapping varies by destination")
    names = sorted({answer} if isinstance(answer, str) else {str(a) for a in answer})  # type: ignore[attr-defined]
    if any(n in {h.name for h in lab.topology.hosts} for n in names):
        raise AssertionError(
            f"{', '.join(names)}: name the router ({', '.join(r.name for r in lab.topology.routers)}), not the host"
        )
    if names != hard:
        raise AssertionError(
            f"{', '.join(names)} is not it: the hard NAT gives a new public port per destination (RFC 4787 §4.1 "
            "address-and-port-dependent mapping); compare what each side's mapping tests reported"
        )
    return f"✓ {', '.join(hard)} is the hard NAT (mapping varies by destination), and your tests crossed it"


# --- exercise 03: punch a hole by hand ----------------------------------------------------------------------


def _public_ip(topo: Topology, host: str) -> IPv4Address:
    nats = [r for r in topo.path_to_internet(host) if r.nat is not None]
    return nats[-1].wan_v4 if nats else topo.host(host).v4


async def check_hole_punched(
    lab: Lab, captures: Mapping[str, Capture], *, a: str = "alice", b: str = "bob", server: Endpoint = STUN_SERVER
) -> str:
    """Each host received a datagram the other sent straight through both NATs (not via a relay or the STUN server).

    ``captures``: the ``eth0`` capture of ``a`` and of ``b``, and the ``wan`` capture of each one's router."""
    await settle(lab, captures.values())
    topo = lab.topology
    lines = []
    for me, peer in ((a, b), (b, a)):
        peer_ip, my_ip = _public_ip(topo, peer), _public_ip(topo, me)
        arrived = [s for s in udp_seen(captures[me]) if s.src.ip == peer_ip and s.src != server]
        if arrived:
            lines.append(f"{me} received {len(arrived)} datagram(s) of {peer} from {arrived[0].src}")
            continue
        router = next((r.name for r in topo.path_to_internet(me) if r.nat is not None), None)
        sent = [s for s in udp_seen(captures[peer]) if s.dst.ip == my_ip]
        if not sent:
            raise AssertionError(
                f"{peer} never sent anything to {me}'s public address {my_ip}: ask STUN for {me}'s public endpoint "
                f"and send {peer}'s probes there"
            )
        wan = captures.get(router or "")
        reached = [s for s in udp_seen(wan) if s.src.ip == peer_ip and s.dst.ip == my_ip] if wan is not None else []
        ports = sorted({s.dst.port for s in sent})
        if reached:
            raise AssertionError(
                f"{len(reached)} probe(s) of {peer} reached {router}'s WAN side (to port(s) {ports}) but {router} let "
                f"none through to {me}: its filter admits only sources {me} has sent to; did {me} send to {peer}'s "
                f"public endpoint from the same socket, before {peer}'s later probes arrived?"
            )
        raise AssertionError(f"{peer}'s probes to {me} (port(s) {ports}) never reached {router}: look at {peer}'s NAT")
    return "✓ hole punched: " + "; ".join(lines)


# --- exercises 04 and 05: change a topology until the pair goes direct --------------------------------------


def _nat_of(topo: Topology, router: str) -> NatBehavior | None:
    try:
        return topo.router(router).nat
    except UsageError:
        raise AssertionError(f"your topology has no router {router!r}: keep the lab's routers") from None


def check_only_changed(
    student: object, original: Topology, *, routers: Iterable[str], fields: Iterable[str] | None = None
) -> Topology:
    """``student`` is a Topology that differs from ``original`` only in the NATs of ``routers`` (only ``fields``)."""
    if not isinstance(student, Topology):
        raise AssertionError(f"your answer must be a Topology (toolkit.lab.topology.Topology), not {type(student)}")
    mine = set(routers)
    allowed = set(fields) if fields is not None else None
    if {h.name: h for h in student.hosts} != {h.name: h for h in original.hosts}:
        raise AssertionError("your topology changed the hosts: keep alice, bob and the servers as they are")
    for r in original.routers:
        old, new = r.nat, _nat_of(student, r.name)
        if r.name not in mine:
            if new != old:
                raise AssertionError(f"{r.name} is not yours to change (it is the other side's router): keep {old}")
            continue
        if new is None:
            raise AssertionError(f"{r.name} has no NAT any more: keep a NAT on it, change how it behaves")
        if allowed is not None and old is not None:
            changed = {f.name for f in dataclasses.fields(NatBehavior) if getattr(new, f.name) != getattr(old, f.name)}
            extra = sorted(changed - allowed - {"name", "description"})
            if extra:
                raise AssertionError(
                    f"you changed {', '.join(extra)} of {r.name}'s NAT: the fix needs only {', '.join(sorted(allowed))}"
                )
    return student


async def check_goes_direct(
    topology: Topology, backend: str = "sim", *, hint: str = "", name: str | None = None
) -> str:
    """Two nodes on ``topology`` end on a direct path (:func:`toolkit.lab.noderun.run_scenario`; on the kernel
    backends under the lab name ``name``, else one unique to this process: :func:`lab_name`)."""
    from toolkit.lab.noderun import run_scenario

    name = name if name is not None or backend == "sim" else lab_name("go", backend)
    report = await run_scenario(dataclasses.replace(topology, expect=None), backend, name=name)
    if report.final_path not in ("direct", "local"):
        walk = " -> ".join(report.states[-4:]) or "no states"
        raise AssertionError(
            f"{report.node} and {report.peer} still end on {report.final_path} ({report.final_state}; last states "
            f"{walk}){': ' + hint if hint else ''}"
        )
    took = f" after {report.time_to_direct_s:.2f} s" if report.time_to_direct_s is not None else ""
    return f"✓ {report.node} <-> {report.peer}: {report.final_path} ({report.final_state}){took} on {backend}"


__all__ = [
    "MYSTERY_PRESETS",
    "STUN_OTHER",
    "STUN_SERVER",
    "Seen",
    "binding_requests",
    "binding_responses",
    "buildable",
    "check_goes_direct",
    "check_hard_side",
    "check_hole_punched",
    "check_nat_classification",
    "check_only_changed",
    "check_public_endpoint",
    "lab_name",
    "mystery_nat",
    "mystery_presets",
    "mystery_topology",
    "parse_answer",
    "settle",
    "udp_seen",
]
