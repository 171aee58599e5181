"""NAT behaviour as data: RFC 4787 mapping and filtering, port allocation, timeouts, presets.

One :class:`NatBehavior` describes what a NAT router does to UDP; every lab backend realises it
(issue 5): the ``sim`` backend exactly, ``netns`` and ``docker`` with nftables where the kernel can
express it (design.md §5: ``masquerade`` is endpoint-independent mapping with port preservation and
address-and-port-dependent filtering; ``masquerade random``/``fully-random`` allocates a random port
per destination; nftables cannot express port-preserving symmetric NAT or sequential allocation).

Vocabulary (RFC 4787):

* mapping (§4.1): which outbound flows share one public ``ip:port``: all flows of a private
  ``ip:port`` (endpoint-independent), flows to the same remote IP (address-dependent), or only
  flows to the same remote ``ip:port`` (address-and-port-dependent, "symmetric", Tailscale's "hard").
* filtering (§5): which inbound packets a mapping lets in: from anyone (endpoint-independent), from
  remote IPs the host sent to (address-dependent), or only from remote ``ip:port`` pairs it sent to.
* port allocation (§4.2.1): the public port of a new mapping keeps the private port when free
  (``preserve``), is the next free one (``sequential``), or is random (``random``).
* mapping timeout (§4.3, REQ-5: at least 2 min; Tailscale's natlab uses 30 s, vnet 300 s).
* hairpinning (§6): a host can reach another host behind the same NAT at its public address.
* WAN input (design.md §5): what the router does with unsolicited input on its WAN side before any
  mapping exists. Home routers drop it; a router that ``accept``s it breaks hole punching on Linux.

Presets (:data:`PRESETS`) are named after Tailscale's ``vnet`` NAT types (protocols.md §6.2) and
RFC 3489's cone names (RFC 3489 §5), plus ``udp-blocked`` (a firewall that drops outbound UDP) and
``broken-router`` (an ``easy`` NAT that accepts unsolicited WAN input). ``cgnat`` is two NATs in a
row and therefore a topology, not a behaviour: the topology module builds it from two ``easy`` NATs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from toolkit.errors import UsageError


class Mapping(StrEnum):
    """RFC 4787 §4.1 mapping behaviour."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class Filtering(StrEnum):
    """RFC 4787 §5 filtering behaviour."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


class PortAllocation(StrEnum):
    """RFC 4787 §4.2.1 port assignment of a new mapping."""

    PRESERVE = "preserve"
    SEQUENTIAL = "sequential"
    RANDOM = "random"


class WanInput(StrEnum):
    """Unsolicited input on the WAN side (no mapping yet): dropped, or accepted (the broken router)."""

    DROP = "drop"
    ACCEPT = "accept"


@dataclass(frozen=True, slots=True)
class NatBehavior:
    """What one NAT router does to UDP. ``one_to_one`` NATs map the LAN host 1:1 with no filtering."""

    name: str
    mapping: Mapping = Mapping.ENDPOINT_INDEPENDENT
    filtering: Filtering = Filtering.ADDRESS_AND_PORT_DEPENDENT
    allocation: PortAllocation = PortAllocation.PRESERVE
    mapping_timeout: float = 120.0
    hairpinning: bool = False
    wan_input: WanInput = WanInput.DROP
    block_udp: bool = False
    one_to_one: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        for attr, kind in (("mapping", Mapping), ("filtering", Filtering), ("allocation", PortAllocation)):
            value = getattr(self, attr)
            if not isinstance(value, kind):
                try:
                    object.__setattr__(self, attr, kind(value))
                except ValueError:
                    choices = ", ".join(m.value for m in kind)
                    raise UsageError(f"NAT {self.name!r}: {attr} {value!r} is not one of {choices}") from None
        if not isinstance(self.wan_input, WanInput):
            try:
                object.__setattr__(self, "wan_input", WanInput(self.wan_input))
            except ValueError:
                raise UsageError(f"NAT {self.name!r}: wan_input {self.wan_input!r} is not drop or accept") from None
        if not self.mapping_timeout > 0:
            raise UsageError(f"NAT {self.name!r}: mapping_timeout must be > 0 seconds, not {self.mapping_timeout!r}")

    @property
    def is_hard(self) -> bool:
        """Tailscale's "hard NAT": the mapping varies by destination (MappingVariesByDestIP)."""
        return self.mapping is not Mapping.ENDPOINT_INDEPENDENT

    def replace(self, **changes: Any) -> NatBehavior:
        """A copy with fields changed (a preset with a shorter timeout, hairpinning on, ...)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mapping": self.mapping.value,
            "filtering": self.filtering.value,
            "allocation": self.allocation.value,
            "mapping_timeout": self.mapping_timeout,
            "hairpinning": self.hairpinning,
            "wan_input": self.wan_input.value,
            "block_udp": self.block_udp,
            "one_to_one": self.one_to_one,
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> NatBehavior:
        """A behaviour from a dict: ``{"preset": "easy", "hairpinning": true}`` or every field spelled out."""
        if not isinstance(obj, dict):
            raise UsageError(f"a NAT must be a preset name or a mapping of fields, not {obj!r}")
        fields = dict(obj)
        base = preset(str(fields.pop("preset"))) if "preset" in fields else None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise UsageError(f"NAT: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if base is not None:
            return base.replace(**fields)
        if "name" not in fields:
            fields["name"] = "custom"
        return cls(**fields)


_M = Mapping
_F = Filtering
_P = PortAllocation

PRESETS: dict[str, NatBehavior] = {
    b.name: b
    for b in (
        NatBehavior(
            "one2one", _M.ENDPOINT_INDEPENDENT, _F.ENDPOINT_INDEPENDENT, _P.PRESERVE,
            one_to_one=True, wan_input=WanInput.ACCEPT,
            description="1:1 NAT, no filtering (a cloud VM; Tailscale vnet one2one)",
        ),
        NatBehavior(
            "easy", _M.ENDPOINT_INDEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT, _P.PRESERVE,
            description="Linux/home router: endpoint-independent mapping, address+port-dependent filtering",
        ),
        NatBehavior(
            "easyaf", _M.ENDPOINT_INDEPENDENT, _F.ADDRESS_DEPENDENT, _P.PRESERVE,
            description="endpoint-independent mapping, address-dependent filtering (Tailscale vnet easyaf)",
        ),
        NatBehavior(
            "hard", _M.ADDRESS_AND_PORT_DEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT, _P.RANDOM,
            description="symmetric NAT, a random port per destination (pfSense; Tailscale vnet hard)",
        ),
        NatBehavior(
            "full-cone", _M.ENDPOINT_INDEPENDENT, _F.ENDPOINT_INDEPENDENT, _P.PRESERVE,
            description="RFC 3489 full cone: anyone may send to a mapping",
        ),
        NatBehavior(
            "restricted-cone", _M.ENDPOINT_INDEPENDENT, _F.ADDRESS_DEPENDENT, _P.PRESERVE,
            description="RFC 3489 restricted cone: any port of an IP the host sent to",
        ),
        NatBehavior(
            "port-restricted-cone", _M.ENDPOINT_INDEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT, _P.PRESERVE,
            description="RFC 3489 port-restricted cone: only the ip:port the host sent to",
        ),
        NatBehavior(
            "symmetric", _M.ADDRESS_AND_PORT_DEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT, _P.RANDOM,
            description="RFC 3489 symmetric: a new mapping per destination ip:port",
        ),
        NatBehavior(
            "symmetric-preserving", _M.ADDRESS_AND_PORT_DEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT, _P.PRESERVE,
            description="symmetric, but the first mapping keeps the port (sim only: nftables cannot express it)",
        ),
        NatBehavior(
            "symmetric-sequential", _M.ADDRESS_AND_PORT_DEPENDENT, _F.ADDRESS_AND_PORT_DEPENDENT, _P.SEQUENTIAL,
            description="symmetric with sequential ports (sim only: nftables cannot express it)",
        ),
        NatBehavior(
            "udp-blocked", block_udp=True,
            description="a firewall that drops all outbound UDP (only DERP over TCP works)",
        ),
        NatBehavior(
            "broken-router", wan_input=WanInput.ACCEPT,
            description="easy NAT that accepts unsolicited WAN input: breaks hole punching on Linux (design.md §5)",
        ),
    )
}  # fmt: skip


def preset(name: str) -> NatBehavior:
    """The named preset; a :class:`UsageError` listing the names for an unknown one."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"unknown NAT preset {name!r}; presets: {', '.join(PRESETS)}") from None


__all__ = ["PRESETS", "Filtering", "Mapping", "NatBehavior", "PortAllocation", "WanInput", "preset"]
