"""Trace records: what a sans-IO core tells a watcher about every packet and every state change.

design.md §2: every machine takes a ``tracer`` (a callable) and emits records for packets sent,
received and dropped (with the raw bytes and the reason of a drop) and for transitions of its state.
Widgets, sniffers and the JSON-lines stream of out-of-process nodes read only these public records,
never a core's private state, so a record is a small frozen value with plain fields.

A core builds records only when a tracer is set, so tracing costs nothing on the hot path otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from toolkit.types import Endpoint, Key32

TraceKind: TypeAlias = Literal["sent", "received", "dropped", "transition"]
TRACE_KINDS: tuple[TraceKind, ...] = ("sent", "received", "dropped", "transition")


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One traced fact.

    ``at`` is the core's ``now`` (monotonic seconds); ``node`` names the core (a device name or its
    short key); ``peer`` is the remote party when known; ``kind`` is one of :data:`TRACE_KINDS`;
    ``detail`` is a one-line human summary (``"Initiation sender=0x1234abcd"``, ``"Zeroed -> InitiationSent"``);
    ``reason`` is the machine-friendly tag of a drop (the same string the core counts) or the label
    of a transition's edge; ``raw`` holds the datagram or packet bytes (empty for transitions);
    ``endpoint`` is the remote address: the source of a received datagram, the destination of a sent one.
    """

    at: float
    node: str
    peer: Key32 | None
    kind: TraceKind
    detail: str
    reason: str | None = None
    raw: bytes = field(default=b"", repr=False)
    endpoint: Endpoint | None = None

    def __post_init__(self) -> None:
        if self.kind not in TRACE_KINDS:
            raise ValueError(f"trace kind must be one of {TRACE_KINDS}, got {self.kind!r}")

    def summary(self) -> str:
        """``at node kind [peer] detail (reason)`` on one line."""
        who = f" {self.peer.short()}" if self.peer is not None else ""
        where = f" {self.endpoint}" if self.endpoint is not None else ""
        why = f" ({self.reason})" if self.reason else ""
        return f"{self.at:.3f} {self.node} {self.kind}{who}{where} {self.detail}{why}"


Tracer: TypeAlias = Callable[[TraceRecord], None]


class TraceLog:
    """A tracer that keeps records in a list (tests, notebooks): pass the instance as ``tracer=``."""

    def __init__(self) -> None:
        self.records: list[TraceRecord] = []

    def __call__(self, record: TraceRecord) -> None:
        self.records.append(record)

    def of_kind(self, kind: TraceKind) -> list[TraceRecord]:
        return [r for r in self.records if r.kind == kind]

    def reasons(self) -> list[str]:
        """The reasons of the drops, in order."""
        return [r.reason for r in self.records if r.kind == "dropped" and r.reason is not None]


__all__ = ["TRACE_KINDS", "TraceKind", "TraceLog", "TraceRecord", "Tracer"]
