"""How widgets get trace records: :class:`TraceFeed`, one stream of public records with subscribers.

design.md §2: widgets read only the public :class:`~toolkit.sansio.trace.TraceRecord` s, and an
out-of-process node streams the very same records as JSON lines (:mod:`toolkit.sansio.tracejson`),
so a widget cannot tell which backend it watches. A feed gets its records three ways:

* **push** (``sim``): the feed is a tracer, ``lab = SimLab(topology, tracer=feed)``; the lab calls it
  with every record of every node, NAT router and server, as it is made;
* **pull** (any backend): :meth:`TraceFeed.pull` asks a :class:`~toolkit.lab.nodes.NodeHandle` for its
  ``records()`` and adds the ones not seen yet; :meth:`TraceFeed.follow` does that every ``interval``
  seconds in an asyncio task (``netns`` / ``docker`` nodes, whose records come from their trace stream);
* **JSON lines**: :meth:`TraceFeed.read_jsonl` reads a ``natkit node --trace FILE`` file (or any lines);
  a damaged line is counted in :attr:`TraceFeed.bad_lines` and skipped, never raised.

Do not combine push and pull for the same node: the feed does not deduplicate.

Subscribers (:meth:`TraceFeed.subscribe`) are called with each new record, in order, on the thread
that delivered it (the event loop for a tracer); by default a new subscriber first gets the records
already in the feed. A subscriber that raises is counted in :attr:`TraceFeed.errors` and the record
still reaches the others: a widget's bug must never stop the node whose tracer the feed is.

No ipywidgets and no scapy here: a feed is cheap and useful without a notebook.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Protocol

from toolkit.errors import DecodeError
from toolkit.lab.backend import Capture
from toolkit.sansio.trace import TraceRecord
from toolkit.sansio.tracejson import parse_line

Subscriber = Callable[[TraceRecord], None]


class RecordSource(Protocol):
    """What :meth:`TraceFeed.pull` needs of a node handle: its host name and its records so far."""

    host: str

    async def records(self) -> list[TraceRecord]: ...


class TraceFeed:
    """A tracer callable that keeps every record and hands each new one to its subscribers."""

    def __init__(self, records: Iterable[TraceRecord] = ()) -> None:
        self.records: list[TraceRecord] = list(records)
        self.bad_lines = 0  # JSON lines that did not parse (read_jsonl)
        self.errors = 0  # exceptions raised by subscribers
        self.last_error: BaseException | None = None
        self._subscribers: list[Subscriber] = []
        self._seen: dict[str, int] = {}  # per pulled host: how many of its records the feed has
        self._lock = threading.RLock()  # a thread may pull while the loop pushes

    # --- push ------------------------------------------------------------------------------------

    def __call__(self, record: TraceRecord) -> None:
        """Add one record (the tracer interface: ``SimLab(..., tracer=feed)``)."""
        with self._lock:
            self.records.append(record)
            for subscriber in tuple(self._subscribers):
                self._deliver(subscriber, record)

    def extend(self, records: Iterable[TraceRecord]) -> int:
        """Add records in order; how many."""
        n = 0
        for record in records:
            self(record)
            n += 1
        return n

    def _deliver(self, subscriber: Subscriber, record: TraceRecord) -> None:
        try:
            subscriber(record)
        except Exception as exc:  # a widget's bug must not stop the node that traces into the feed
            self.errors += 1
            self.last_error = exc

    def subscribe(self, subscriber: Subscriber, *, replay: bool = True) -> Callable[[], None]:
        """Call ``subscriber`` with every new record (first with the records so far if ``replay``);
        returns the function that unsubscribes it."""
        with self._lock:
            if replay:
                for record in tuple(self.records):
                    self._deliver(subscriber, record)
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # --- pull ------------------------------------------------------------------------------------

    async def pull(self, handle: RecordSource) -> int:
        """Add the records ``handle`` has made since the last pull; how many were new."""
        records = await handle.records()
        with self._lock:
            seen = self._seen.get(handle.host, 0)
            if len(records) < seen:  # the node was restarted: its records start again
                seen = 0
            self._seen[handle.host] = len(records)
            return self.extend(records[seen:])

    def follow(
        self,
        handle: RecordSource,
        interval: float = 0.2,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> asyncio.Task[None]:
        """An asyncio task that pulls ``handle`` every ``interval`` seconds until cancelled. ``sleep``
        defaults to :func:`asyncio.sleep` (wall time); a sim lab's ``lab.sleep`` would advance the
        lab's clock, so pass it only where this task alone drives the lab."""
        wait = sleep if sleep is not None else asyncio.sleep

        async def loop() -> None:
            while True:
                await self.pull(handle)
                await wait(interval)

        return asyncio.get_running_loop().create_task(loop(), name=f"trace feed: {handle.host}")

    # --- JSON lines ------------------------------------------------------------------------------

    def read_jsonl(self, source: str | Path | Iterable[str | bytes]) -> int:
        """Add the records of a JSON Lines file (a path) or of lines; how many were added. Blank lines
        are skipped; a line that is not a record is counted in :attr:`bad_lines`."""
        if isinstance(source, str | Path):
            with open(source, encoding="utf-8", errors="replace") as f:
                return self.read_jsonl(list(f))
        n = 0
        for line in source:
            if not line.strip():
                continue
            try:
                record = parse_line(line)
            except DecodeError:
                self.bad_lines += 1
                continue
            self(record)
            n += 1
        return n

    @classmethod
    def from_jsonl(cls, source: str | Path | Iterable[str | bytes]) -> TraceFeed:
        feed = cls()
        feed.read_jsonl(source)
        return feed

    # --- reading ---------------------------------------------------------------------------------

    def of_node(self, node: str) -> list[TraceRecord]:
        """The records a node made (its ``node`` field), in order."""
        with self._lock:
            return [r for r in self.records if r.node == node]

    def __len__(self) -> int:
        return len(self.records)


class CaptureFollower:
    """Captures a widget follows live: one asyncio task per capture hands each packet to ``on_packet(point,
    time, data)`` until :meth:`stop_following`, which closes the captures and ends the tasks. ``before``, if
    given, is awaited with the same arguments first (the packet inspector refreshes a lab's keys there); an
    error it raises is counted in :attr:`errors`, and the packet is still handed on."""

    def __init__(
        self,
        on_packet: Callable[[str, float, bytes], None],
        name: str,
        *,
        before: Callable[[str, float, bytes], Awaitable[None]] | None = None,
    ) -> None:
        self.on_packet, self.name, self.before = on_packet, name, before
        self.errors = 0
        self.captures: list[Capture] = []
        self.tasks: list[asyncio.Task[None]] = []

    def follow(self, capture: Capture, point: str | None = None) -> asyncio.Task[None]:
        """Follow an open ``capture``; ``point`` defaults to ``element/interface``."""
        point = point or f"{capture.element}/{capture.interface}"
        self.captures.append(capture)
        task = asyncio.create_task(self._follow(capture, point), name=f"natkit-{self.name}-{point}")
        self.tasks.append(task)
        return task

    async def _follow(self, capture: Capture, point: str) -> None:
        async for ts, data in capture:
            if self.before is not None:
                try:
                    await self.before(point, ts, data)
                except Exception:  # a widget's key refresh must not stop the capture
                    self.errors += 1
            self.on_packet(point, ts, data)

    async def stop_following(self) -> None:
        for capture in self.captures:
            await capture.aclose()
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks, self.captures = [], []


__all__ = ["CaptureFollower", "RecordSource", "Subscriber", "TraceFeed"]
