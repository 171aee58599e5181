"""What NAT behaviour discovery found: the verdict, and the evidence every test left behind.

Terms are RFC 4787's: mapping behaviour (§4.1), filtering behaviour (§5), hairpinning (§6) and the
mapping lifetime (§4.3), measured with the tests of RFC 5780 §4.3-§4.6 by
:class:`toolkit.sansio.natbehavior.NatBehaviorDiscovery`. For lessons the report also gives the
classic RFC 3489 name (full cone ... symmetric) and Tailscale's word for it: a NAT whose mapping
varies with the destination is "hard" (netcheck's ``MappingVariesByDestIP``), any other is "easy".

Every test keeps an :class:`Evidence` record: which local socket sent what to where, with which
attributes, and what came back (the mapped address, where the answer came from, or nothing).
The records and the report are plain frozen values; :meth:`NatReport.to_dict` is their JSON form.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from toolkit.types import Endpoint


class Behavior(enum.StrEnum):
    """RFC 4787 §4.1 / §5: on what a mapping (or a filter) depends besides the internal endpoint."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"


@dataclass(frozen=True, slots=True)
class Evidence:
    """One test: what was sent and what came back.

    ``socket`` names the local socket that sent (``mapping``, ``filtering``, ``hairpin``,
    ``lifetime-3``, ...), ``local`` is its address; ``attributes`` describes what the request
    carried besides SOFTWARE and FINGERPRINT. ``outcome`` is ``answered``, ``no answer``,
    ``error response``, ``bad response`` or ``cancelled`` (a lifetime probe no longer needed);
    ``received_on`` is the socket the answer arrived on, ``source`` where it came from. ``wait``
    is, for a lifetime probe, how long its binding had been idle. ``note`` says what the test
    showed (``same mapping as test I``).
    """

    test: str
    socket: str
    local: Endpoint | None
    sent_to: Endpoint
    attributes: tuple[str, ...]
    outcome: str
    sends: int
    started: float
    received_on: str | None = None
    source: Endpoint | None = None
    mapped: Endpoint | None = None
    response_origin: Endpoint | None = None
    other_address: Endpoint | None = None
    rtt: float | None = None
    error: str | None = None
    wait: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "test": self.test,
            "socket": self.socket,
            "local": _s(self.local),
            "sent_to": str(self.sent_to),
            "attributes": list(self.attributes),
            "outcome": self.outcome,
            "sends": self.sends,
            "received_on": self.received_on,
            "source": _s(self.source),
            "mapped": _s(self.mapped),
            "response_origin": _s(self.response_origin),
            "other_address": _s(self.other_address),
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 3),
            "error": self.error,
            "note": self.note,
        }
        if self.wait is not None:
            out["wait_s"] = round(self.wait, 3)
        return out


@dataclass(frozen=True, slots=True)
class NatReport:
    """The verdict of one discovery run against ``server``.

    ``udp_blocked``: Test I got no answer at all. ``behind_nat``: the mapped address differs from
    the local one (None when unknown). ``mapping`` / ``filtering`` / ``hairpinning`` are None when
    not measured or not measurable (see ``notes``). ``lifetime_min`` is the longest idle time a
    binding survived, ``lifetime_max`` the shortest after which one was gone; the lifetime lies
    between them (either is None when the ladder did not reach that side). ``path`` lists the
    transitions the discovery machine took, as (from, label, to) state names.
    """

    server: Endpoint
    local: Endpoint | None = None
    mapped: Endpoint | None = None
    other_address: Endpoint | None = None
    server_software: str | None = None
    udp_blocked: bool = False
    behind_nat: bool | None = None
    mapping: Behavior | None = None
    filtering: Behavior | None = None
    hairpinning: bool | None = None
    lifetime_tested: bool = False
    lifetime_min: float | None = None
    lifetime_max: float | None = None
    notes: tuple[str, ...] = ()
    tests: tuple[Evidence, ...] = ()
    path: tuple[tuple[str, str, str], ...] = ()

    @property
    def classic_name(self) -> str | None:
        """The RFC 3489 name: full cone, restricted cone, port-restricted cone or symmetric."""
        if self.behind_nat is False:
            return "open internet" if self.filtering is Behavior.ENDPOINT_INDEPENDENT else "no NAT, firewalled"
        if self.mapping is None:
            return None
        if self.mapping is not Behavior.ENDPOINT_INDEPENDENT:
            return "symmetric NAT"
        return {
            Behavior.ENDPOINT_INDEPENDENT: "full-cone NAT",
            Behavior.ADDRESS_DEPENDENT: "restricted-cone NAT",
            Behavior.ADDRESS_AND_PORT_DEPENDENT: "port-restricted-cone NAT",
            None: None,
        }[self.filtering]

    @property
    def tailscale_kind(self) -> str | None:
        """``easy`` or ``hard``: does the mapping vary with the destination (netcheck, protocols.md §5.1)?"""
        if self.behind_nat is False:
            return "easy"
        if self.mapping is None:
            return None
        return "easy" if self.mapping is Behavior.ENDPOINT_INDEPENDENT else "hard"

    def verdict(self) -> str:
        """One line: ``behind a NAT: mapping endpoint-independent, filtering ...``."""
        if self.udp_blocked:
            return f"UDP blocked: no answer from {self.server}"
        head = {True: "behind a NAT", False: "no NAT", None: "NAT unknown"}[self.behind_nat]
        parts = [f"mapping {self.mapping or 'unknown'}", f"filtering {self.filtering or 'unknown'}"]
        if self.hairpinning is not None:
            parts.append(f"hairpinning {'yes' if self.hairpinning else 'no'}")
        if self.lifetime_tested:
            parts.append(f"mapping lifetime {self.lifetime_text()}")
        return f"{head}: {', '.join(parts)}"

    def lifetime_text(self) -> str:
        lo, hi = self.lifetime_min, self.lifetime_max
        if lo is not None and hi is not None:
            return f"{lo:.2f}-{hi:.2f} s"
        if lo is not None:
            return f"over {lo:.2f} s"
        if hi is not None:
            return f"under {hi:.2f} s"
        return "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": str(self.server),
            "local": _s(self.local),
            "mapped": _s(self.mapped),
            "other_address": _s(self.other_address),
            "server_software": self.server_software,
            "udp_blocked": self.udp_blocked,
            "behind_nat": self.behind_nat,
            "mapping": None if self.mapping is None else str(self.mapping),
            "filtering": None if self.filtering is None else str(self.filtering),
            "hairpinning": self.hairpinning,
            "lifetime": {"min_s": self.lifetime_min, "max_s": self.lifetime_max} if self.lifetime_tested else None,
            "classic_name": self.classic_name,
            "tailscale": self.tailscale_kind,
            "verdict": self.verdict(),
            "notes": list(self.notes),
            "tests": [e.to_dict() for e in self.tests],
            "path": [list(edge) for edge in self.path],
        }


def _s(ep: Endpoint | None) -> str | None:
    return None if ep is None else str(ep)


__all__ = ["Behavior", "Evidence", "NatReport"]
