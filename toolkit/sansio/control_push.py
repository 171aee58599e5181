"""How netmaps reach nodes: server-sent-event streams and long polls, and when each gets what.

:class:`~toolkit.sansio.control.ControlCore` decides what a node may see (its netmap, and the version
number every visible change bumps); a :class:`NetmapPush` keeps the open deliveries and says when each
one is due (the API is in :mod:`toolkit.sansio.control`):

* A stream (``GET /machine/map?stream=1``, WHATWG HTML §9.2) gets a ``netmap`` event as soon as the
  version differs from the one it last got (at once when it opens), and a ``: keepalive`` comment line
  every ``Timing.control_stream_keepalive`` (15 s) so that proxies and clients know it is alive.
* A long poll (``GET /machine/map?since=V``) is answered once the version is no longer ``V``, or with
  the current netmap after ``Timing.control_long_poll`` (30 s).

Streams and polls are numbered from one counter (the driver names its connections with them). No I/O:
``now`` comes from the caller and the bytes and answers are pulled by the driver.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from toolkit.sansio.control_api import SSE_KEEPALIVE, Response, sse_event
from toolkit.sansio.control_netmap import NetMap
from toolkit.timing import Timing

NetmapOf = Callable[[int], NetMap]  # node id -> the netmap that node is told now


@dataclass(slots=True)
class _Stream:
    node_id: int
    keepalive_at: float
    sent_version: int = -1
    out: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class _Poll:
    node_id: int
    since: int
    deadline: float
    expired: bool = False


class NetmapPush:
    """The open streams and waiting long polls of one control server; see the module docstring."""

    def __init__(self, timing: Timing) -> None:
        self.timing = timing
        self._streams: dict[int, _Stream] = {}
        self._polls: dict[int, _Poll] = {}
        self._next_id = 1

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # --- inputs -----------------------------------------------------------------------------------
    def open_stream(self, node_id: int, now: float) -> int:
        """A stream for ``node_id`` begins; its id. Its first netmap goes out at the next :meth:`stream_writes`."""
        stream_id = self._new_id()
        self._streams[stream_id] = _Stream(node_id, now + self.timing.control_stream_keepalive)
        return stream_id

    def close_stream(self, stream_id: int) -> int | None:
        """The stream's connection is gone: the node it belonged to (None if it was not open)."""
        stream = self._streams.pop(stream_id, None)
        return None if stream is None else stream.node_id

    def add_poll(self, node_id: int, since: int, now: float) -> int:
        """A long poll for ``node_id`` that waits for a version other than ``since``; its id."""
        poll_id = self._new_id()
        self._polls[poll_id] = _Poll(node_id, since, now + self.timing.control_long_poll)
        return poll_id

    def cancel_poll(self, poll_id: int) -> None:
        self._polls.pop(poll_id, None)

    def handle_timer(self, now: float) -> None:
        for stream in self._streams.values():
            if stream.keepalive_at <= now:
                stream.out += SSE_KEEPALIVE
                stream.keepalive_at = now + self.timing.control_stream_keepalive
        for poll in self._polls.values():
            if poll.deadline <= now:
                poll.expired = True

    # --- outputs ----------------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        times = [s.keepalive_at for s in self._streams.values()]
        times += [p.deadline for p in self._polls.values() if not p.expired]
        return min(times, default=None)

    def stream_writes(self, version: int, netmap_of: NetmapOf) -> list[tuple[int, bytes]]:
        """Bytes to write to each open stream: a netmap event when ``version`` moved, keepalives."""
        out: list[tuple[int, bytes]] = []
        for stream_id, stream in self._streams.items():
            if stream.sent_version < version:
                data = json.dumps(netmap_of(stream.node_id).to_obj(), separators=(",", ":"))
                stream.out += sse_event("netmap", data)
                stream.sent_version = version
            if stream.out:
                out.append((stream_id, bytes(stream.out)))
                stream.out.clear()
        return out

    def poll_answers(self, version: int, netmap_of: NetmapOf) -> list[tuple[int, Response]]:
        """Long polls that can be answered now: ``version`` is no longer their ``since``, or time ran out."""
        out: list[tuple[int, Response]] = []
        for poll_id, poll in list(self._polls.items()):
            if poll.expired or version != poll.since:  # since > version: a client of an older database
                out.append((poll_id, Response(200, netmap_of(poll.node_id).to_obj())))
                del self._polls[poll_id]
        return out


__all__ = ["NetmapOf", "NetmapPush"]
