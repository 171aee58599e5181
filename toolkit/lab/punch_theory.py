"""Hole punching by hand, the theory: what RFC 4787 behaviours predict for two NATs (issue 5).

The procedure is described in :mod:`toolkit.lab.punch`. :func:`predict` walks that procedure through
an abstract NAT per side, built from the RFC 4787 behaviours alone (no packets, no clock: every probe is delivered at once, the sides take
turns as their 100 ms ticks do), and narrates what each NAT does:

* mapping (§4.1) decides the source a peer sees. Endpoint-independent: the port STUN reported, for
  every destination. Address(-and-port)-dependent ("hard"): a new port per destination, so the peer
  sees a port nobody told it about;
* filtering (§5) decides what gets in at the STUN-reported port: anything (endpoint-independent,
  and 1:1 NAT), any port of an IP the host sent to (address-dependent), or only the exact ``ip:port``
  it sent to (address-and-port-dependent);
* allocation (§4.2.1) only matters to a punch that *predicts* ports (sequential allocation is
  predictable, port-preserving symmetric is only until a second mapping needs the same port, and a
  random one never is): this procedure, like Tailscale's, predicts none, so allocation changes no
  outcome here. Hairpinning (§6) is irrelevant between two NATs; a mapping timeout longer than the
  experiment (2 s) too;
* ``block_udp``: no STUN answer, no probes: never direct;
* WAN input ``accept`` (the broken router, design.md §5): a peer's probe that arrives before the
  host has sent to that peer becomes the router's own conntrack entry; when the host then sends to
  that peer, the reply tuple is taken and the router gives the flow another port, which the peer's
  NAT does not expect. So the *order* matters: ``predict(a, b)`` takes ``a`` as the side that starts
  first.

The anchors of protocols.md §6.2 follow: easy↔easy direct, anything↔one2one direct (unless UDP is
blocked), easyaf↔hard direct, hard↔hard and easy↔hard not. :func:`grid_markdown` renders the table
for ``labs/README.md``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from toolkit.lab.nat import PRESETS, Filtering, Mapping, NatBehavior, WanInput

Ep = tuple[str, int]  # an abstract public endpoint: (owner, port number); port 1 = what STUN reported
STUN: Ep = ("the STUN server", 0)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What theory says for one ordered pair: ``direct``, a one-paragraph ``why`` and the narrated ``steps``."""

    direct: bool
    why: str
    steps: tuple[str, ...] = ()
    via: tuple[str | None, str | None] = (None, None)  # how each side first hears the other: "stun" | "other"


def _label(nat: NatBehavior | None) -> str:
    return "no NAT" if nat is None else nat.name


@dataclass
class _Side:
    """One host behind an abstract RFC 4787 NAT (None: a public host)."""

    name: str
    nat: NatBehavior | None
    log: Callable[[str], None]
    maps: dict[tuple[object, ...], int] = field(default_factory=dict)
    sessions: dict[int, list[Ep]] = field(default_factory=dict)  # public port -> remotes sent to
    local: set[tuple[Ep, int]] = field(default_factory=set)  # broken router: its own conntrack flows
    flows: dict[Ep, int] = field(default_factory=dict)  # broken router: flows moved to a port of their own
    targets: list[Ep] = field(default_factory=list)
    heard: list[Ep] = field(default_factory=list)

    def ep(self, port: int) -> str:
        return f"{self.name}:P{port}"

    @property
    def open(self) -> bool:
        return self.nat is None or self.nat.one_to_one

    def out(self, remote: Ep, what: str) -> Ep | None:
        """The source the world sees for a packet to ``remote`` (None: dropped by the firewall)."""
        n = self.nat
        if n is not None and n.block_udp:
            self.log(f"{self.name}'s firewall ({n.name}) drops outbound UDP: {what} never leaves")
            return None
        if n is None or n.one_to_one:
            return (self.name, 1)
        key: tuple[object, ...] = ()
        if n.mapping is Mapping.ADDRESS_DEPENDENT:
            key = (remote[0],)
        elif n.mapping is Mapping.ADDRESS_AND_PORT_DEPENDENT:
            key = remote
        port = self.flows.get(remote) or self.maps.get(key)
        if port is not None and remote not in self.flows and (remote, port) in self.local:
            new = len(self.sessions) + 1
            self.log(
                f"{self.name}'s probes to {_ep(remote)} would leave from {self.ep(port)}, but the router already"
                f" holds that conntrack tuple as its own input: the flow gets {self.ep(new)} instead (design.md §5)"
            )
            self.flows[remote] = port = new
        elif port is None:
            port = self.maps[key] = len(self.sessions) + 1
            if port > 1:
                self.log(
                    f"{self.name}'s NAT ({n.name}, {n.mapping.value} mapping) gives {what} a new public port:"
                    f" it leaves from {self.ep(port)}, not from the {self.ep(1)} STUN reported"
                )
        elif port == 1 and remote != STUN and n.mapping is Mapping.ENDPOINT_INDEPENDENT:
            self.log(f"{self.name}'s NAT ({n.name}, endpoint-independent mapping) sends {what} from {self.ep(1)}")
        self.sessions.setdefault(port, [])
        if remote not in self.sessions[port]:
            self.sessions[port].append(remote)
        return (self.name, port)

    def inbound(self, src: Ep, port: int, sender: str) -> bool:
        """Does a packet from ``src`` to public port ``port`` reach the host?"""
        n = self.nat
        if n is None or n.one_to_one:
            self.log(f"{sender}'s probe from {_ep(src)} reaches {self.name} ({_label(n)}: nothing is filtered)")
            return True
        sent = self.sessions.get(port, [])
        f = n.filtering
        if f is Filtering.ENDPOINT_INDEPENDENT:
            ok, rule = True, "endpoint-independent filtering"
        elif f is Filtering.ADDRESS_DEPENDENT:
            ok, rule = any(r[0] == src[0] for r in sent), f"address-dependent filtering, {self.name} sent to {src[0]}"
        else:
            ok, rule = src in sent, f"address+port-dependent filtering, {self.name} sent to {_ep(src)}"
        where = f"{sender}'s probe from {_ep(src)} to {self.ep(port)}"
        if ok:
            self.log(f"{where} reaches {self.name} ({n.name}: {rule} from {self.ep(port)})")
            return True
        sent_to = ", ".join(_ep(r) for r in sent) or "nobody"
        if (src, port) in self.local:
            return False
        if n.wan_input is WanInput.ACCEPT:
            self.local.add((src, port))
            self.log(f"{where}: {self.name}'s router ({n.name}, WAN input accept) takes it as its own input")
            return False
        self.log(f"{where} is dropped by {self.name}'s NAT ({n.name}, {f.value} filtering: sent only to {sent_to})")
        return False


def _ep(ep: Ep) -> str:
    return ep[0] if ep == STUN else f"{ep[0]}:P{ep[1]}"


def predict(a: NatBehavior | None, b: NatBehavior | None, *, rounds: int = 6) -> Prediction:
    """The theory for hosts behind ``a`` (starts first) and ``b`` (None: a public host); see the module doc."""
    steps: list[str] = []

    def log(line: str) -> None:
        if line not in steps:
            steps.append(line)

    first, second = _Side("alice", a, log), _Side("bob", b, log)
    log(f"alice is behind {_label(a)} and starts first, bob is behind {_label(b)}; P1 is the public port STUN reports")
    for side in (first, second):
        if side.out(STUN, "the STUN request") is None:
            return Prediction(False, f"not direct: {steps[-1]}", tuple(steps))
    first.targets, second.targets = [(second.name, 1)], [(first.name, 1)]
    for _ in range(rounds):
        for me, peer in ((first, second), (second, first)):
            for target in list(me.targets):
                src = me.out(target, f"{me.name}'s probes to {_ep(target)}")
                if src is None or not peer.inbound(src, target[1], me.name):
                    continue
                if not peer.heard:
                    how = "the endpoint STUN reported" if src == (me.name, 1) else "a port nobody announced"
                    log(f"{peer.name} hears {me.name} first from {_ep(src)} ({how})")
                peer.heard.append(src)
                if src not in peer.targets:
                    peer.targets.append(src)
                    if src != (me.name, 1):
                        log(f"{peer.name} adds {_ep(src)} to its targets (peer-reflexive) and probes it too")
    direct = bool(first.heard and second.heard)
    via = tuple(None if not s.heard else "stun" if s.heard[0][1] == 1 else "other" for s in (first, second))
    verdict = "direct" if direct else "not direct"
    heard = [s for s in steps if " hears " in s]
    lost = [s for s in steps if "dropped" in s or "instead" in s or "own input" in s or "never leaves" in s]
    key = [*heard, *lost[:1]] if direct else lost[:3]
    return Prediction(direct, f"{verdict}: " + "; ".join(key or steps[1:3]), tuple(steps), (via[0], via[1]))


def prediction_table(names: Sequence[str] = tuple(PRESETS)) -> dict[tuple[str, str], Prediction]:
    """:func:`predict` for every ordered pair of the named presets."""
    return {(x, y): predict(PRESETS[x], PRESETS[y]) for x, y in itertools.product(names, repeat=2)}


def grid_markdown(names: Sequence[str] = tuple(PRESETS)) -> str:
    """The pair grid for labs/README.md: rows start first, columns second; ✓ direct, ✗ not."""
    table = prediction_table(names)
    lines = ["| first \\ second | " + " | ".join(f"`{n}`" for n in names) + " |", "|---" * (len(names) + 1) + "|"]
    for x in names:
        lines.append(f"| `{x}` | " + " | ".join("✓" if table[x, y].direct else "✗" for y in names) + " |")
    return "\n".join(lines)


__all__ = ["Prediction", "grid_markdown", "predict", "prediction_table"]
