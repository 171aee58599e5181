"""What a DERP client has received and the application has not read yet: packets and events.

:class:`~toolkit.services.derpclient.DerpClient` (one relay connection) and
:class:`~toolkit.services.derphome.DerpRegions` (one connection per region) both hand up two streams,
received packets (``recv()``) and everything else (``next_event()``). An :class:`Inbox` holds both
queues and wakes the coroutine waiting on each, so that a packet wakes ``recv()`` and an event wakes
``next_event()`` even when both wait at once. Packets are not bounded here (the DERP client pauses
reading instead, TCP back-pressure); events keep the newest ``max_events`` and count the rest in
:attr:`Inbox.events_dropped`. Nothing here reads a socket: the drivers put, the application gets.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

P = TypeVar("P")
E = TypeVar("E")


class _Wakeup:
    """One waiting coroutine at a time, woken by :meth:`set`."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def wait(self) -> None:
        self._future = asyncio.get_running_loop().create_future()
        try:
            await self._future
        finally:
            self._future = None

    def set(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)


class Inbox(Generic[P, E]):
    """Received packets (``P``) and events (``E``) with their waiters; see the module docstring."""

    def __init__(self, max_events: int) -> None:
        self.packets: deque[P] = deque()
        self.events: deque[E] = deque()
        self.max_events = max_events
        self.events_dropped = 0
        self._packet_ready = _Wakeup()
        self._event_ready = _Wakeup()

    def put_packet(self, packet: P) -> None:
        """Queue a packet without waking anyone (a batch ends with :meth:`wake_packets`)."""
        self.packets.append(packet)

    def wake_packets(self) -> None:
        self._packet_ready.set()

    def put_event(self, event: E) -> None:
        """Queue an event (the oldest goes when ``max_events`` are waiting) and wake ``next_event()``."""
        if len(self.events) >= self.max_events:
            self.events.popleft()
            self.events_dropped += 1
        self.events.append(event)
        self._event_ready.set()

    def wake(self) -> None:
        """Wake both waiters, e.g. to let them see the connection is gone."""
        self._packet_ready.set()
        self._event_ready.set()

    async def packet(self, check: Callable[[], None]) -> P:
        """The next packet; while there is none, ``check()`` (which raises when none can come) and wait."""
        while not self.packets:
            check()
            await self._packet_ready.wait()
        return self.packets.popleft()

    async def event(self, check: Callable[[], None]) -> E:
        """The next event; while there is none, ``check()`` and wait."""
        while not self.events:
            check()
            await self._event_ready.wait()
        return self.events.popleft()


__all__ = ["Inbox"]
