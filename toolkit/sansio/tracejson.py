"""Trace records as JSON: the line format out-of-process nodes stream (design.md §2).

A ``natkit node`` in a network namespace or a container cannot hand its :class:`TraceRecord` objects
to a notebook, so it writes each one as one JSON object on one line (JSON Lines: UTF-8, ``\\n``
after every object), to a file or a unix stream socket. A reader turns each line back into the
very record the node's core emitted, so widgets cannot tell an in-process node from another one.

One record, one object, every field present::

    {"at": 12.345678, "node": "alice", "peer": "nodekey:ab12...", "kind": "transition",
     "detail": "SendSTUN -> MultiProbe", "reason": "", "endpoint": null, "raw": ""}

* ``at``: the core's monotonic seconds (a float, written with full precision: the round trip is exact);
* ``peer``: the key's prefixed hex text (``nodekey:<64 hex>``, ``discokey:<64 hex>``; a bare
  :class:`~toolkit.types.Key32` as ``key:<64 hex>``) or null;
* ``endpoint``: ``1.2.3.4:5`` / ``[2001:db8::1]:5`` or null;
* ``raw``: the bytes in standard base64 (RFC 4648 §4), ``""`` when empty.

Readers are strict: :func:`record_from_json` and :func:`parse_line` raise
:class:`~toolkit.errors.BadValueError` (a :class:`~toolkit.errors.DecodeError`) naming the bad field,
nothing else, so a follower can count and skip a damaged line.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from toolkit.errors import BadValueError, DecodeError, UsageError
from toolkit.sansio.trace import TRACE_KINDS, TraceKind, TraceRecord
from toolkit.types import DiscoPublicKey, Endpoint, Key32, NodePublicKey

# the public key classes a record's ``peer`` may hold, by their text prefix
_PEER_KINDS: dict[str, type[Key32]] = {cls.prefix: cls for cls in (NodePublicKey, DiscoPublicKey, Key32)}
FIELDS = ("at", "node", "peer", "kind", "detail", "reason", "endpoint", "raw")


def record_to_json(record: TraceRecord) -> dict[str, Any]:
    """``record`` as a JSON-able dict with every field of the format (module docstring)."""
    return {
        "at": record.at,
        "node": record.node,
        "peer": record.peer.text() if record.peer is not None else None,
        "kind": record.kind,
        "detail": record.detail,
        "reason": record.reason,
        "endpoint": str(record.endpoint) if record.endpoint is not None else None,
        "raw": base64.b64encode(record.raw).decode("ascii"),
    }


def _text(obj: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = obj.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise BadValueError(f"trace record field {name!r}: not a string (got {type(value).__name__})")
    return value


def _peer(text: str | None) -> Key32 | None:
    if text is None:
        return None
    prefix, colon, digits = text.partition(":")
    cls = _PEER_KINDS.get(prefix + colon)
    if cls is None or len(digits) != 64:
        raise BadValueError(f"trace record field 'peer': {text[:80]!r} is not nodekey:/discokey:<64 hex>")
    try:
        return cls(bytes.fromhex(digits))
    except ValueError:
        raise BadValueError(f"trace record field 'peer': {text[:80]!r} is not hex") from None


def _endpoint(text: str | None) -> Endpoint | None:
    if text is None:
        return None
    try:
        return Endpoint.parse(text)
    except (UsageError, DecodeError):
        raise BadValueError(f"trace record field 'endpoint': {text[:80]!r} is not IP:port") from None


def _raw(text: str | None) -> bytes:
    try:
        return base64.b64decode(text or "", validate=True)
    except (binascii.Error, ValueError):
        raise BadValueError("trace record field 'raw': not standard base64") from None


def record_from_json(obj: object) -> TraceRecord:
    """The :class:`TraceRecord` a :func:`record_to_json` dict describes; raises :class:`BadValueError`."""
    if not isinstance(obj, dict):
        raise BadValueError(f"trace record: not a JSON object (got {type(obj).__name__})")
    at = obj.get("at")
    if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
        raise BadValueError(f"trace record field 'at': not a finite number (got {at!r:.40})")
    kind = _text(obj, "kind")
    if kind not in TRACE_KINDS:
        raise BadValueError(f"trace record field 'kind': {kind!r:.40} is not one of {', '.join(TRACE_KINDS)}")
    node = _text(obj, "node")
    detail = _text(obj, "detail")
    assert node is not None and detail is not None
    kind_: TraceKind = kind  # checked against TRACE_KINDS above
    return TraceRecord(
        at=float(at),
        node=node,
        peer=_peer(_text(obj, "peer", optional=True)),
        kind=kind_,
        detail=detail,
        reason=_text(obj, "reason", optional=True),
        raw=_raw(_text(obj, "raw", optional=True)),
        endpoint=_endpoint(_text(obj, "endpoint", optional=True)),
    )


def dumps_line(record: TraceRecord) -> str:
    """One JSON Lines line for ``record``, with its trailing ``\\n``."""
    return json.dumps(record_to_json(record), separators=(",", ":"), allow_nan=False) + "\n"


def parse_line(line: str | bytes) -> TraceRecord:
    """The record of one line (with or without its ``\\n``); raises :class:`BadValueError`."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise BadValueError(f"trace line is not JSON: {str(exc)[:80]}") from None
    return record_from_json(obj)


__all__ = ["FIELDS", "dumps_line", "parse_line", "record_from_json", "record_to_json"]
