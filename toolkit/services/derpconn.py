"""One DERP client connection on asyncio: the socket side of :class:`toolkit.sansio.derpclient.DerpClientConn`.

Used by :class:`toolkit.services.derpclient.DerpClient`, one instance per TCP (or TLS) connection. It
is the thin driver of design.md §2: bytes read go into the core, the core's output is written, one
timer (the handshake or read timeout, protocols.md §2.4) is re-armed, and the core's events go to the
owning client. Writes are batched: a packet is appended to the core's buffer and the buffer is written
once per event-loop iteration, or at once when it holds :data:`FLUSH_AT` bytes; the transport's
high-water mark (:data:`WRITE_HIGH`) is what makes ``DerpClient.send`` wait.

The timer is re-armed lazily: moving a deadline later (every received byte moves the read timeout)
does not touch the armed timer; when it fires early the core finds nothing due and the timer is armed
again at the new deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from toolkit.sansio.derpclient import DerpClientConn
from toolkit.sansio.derpevents import Closed, Connected, DerpEvent
from toolkit.types import NodePublicKey

if TYPE_CHECKING:
    from toolkit.services.derpclient import DerpClient

FLUSH_AT = 64 << 10  # write the core's buffer at once when it holds this much
WRITE_HIGH = 1 << 20  # transport write-buffer high-water mark: send() waits above it


class DerpConnection(asyncio.Protocol):
    """The asyncio protocol of one connection; ``ready`` resolves to None (connected) or the Closed event."""

    def __init__(self, owner: DerpClient, core: DerpClientConn) -> None:
        self.owner = owner
        self.core = core
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[Closed | None] = self.loop.create_future()
        self.established = False
        self.write_paused = False
        self.reading_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] = self.loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._flush_scheduled = False

    # --- asyncio.Protocol -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)

    def data_received(self, data: bytes) -> None:
        self.core.receive_data(data, self.loop.time())
        self._after_input()

    def eof_received(self) -> bool:
        self.core.receive_eof(self.loop.time())
        self._after_input()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.core.closed:
            if exc is None:
                self.core.receive_eof(self.loop.time())
            else:
                self.core.close(self.loop.time(), "transport-error", str(exc) or type(exc).__name__)
            self._after_input()
        self._cancel_timer()
        self.write_paused = False
        self._wake_writers()
        if not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writers()

    # --- driving the core ---------------------------------------------------------------------------
    def begin(self) -> None:
        """Queue the upgrade request (the transport is up)."""
        self.core.start(self.loop.time())
        self._after_input()

    def abort(self, reason: str, message: str) -> None:
        """Close from our side (close(), a connect timeout or cancellation)."""
        if self.transport is None:  # never connected: nothing to close, nothing to report
            if not self._lost.done():
                self._lost.set_result(None)
            return
        if not self.core.closed:
            self.core.close(self.loop.time(), reason, message)
            self._after_input()
        self.transport.close()

    def send_packet(self, dst: NodePublicKey, packet: bytes) -> bool:
        core = self.core
        ok = core.send_packet(dst, packet, self.loop.time() if core.bucket is not None or core.tracer else None)
        if core.pending_bytes >= FLUSH_AT:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._scheduled_flush)
        return ok

    def flush(self) -> None:
        data = self.core.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self.flush()

    def _after_input(self) -> None:
        self.flush()
        events = self.core.take_events()
        if events:
            self._dispatch(events)
        self._arm()

    def _dispatch(self, events: list[DerpEvent]) -> None:
        for ev in events:
            if isinstance(ev, Connected):
                self.established = True
                if not self.ready.done():
                    self.ready.set_result(None)
            elif isinstance(ev, Closed):
                if not self.ready.done():
                    self.ready.set_result(ev)
                if self.transport is not None:
                    self.transport.close()
        self.owner._on_events(self, events)

    # --- the one timer ------------------------------------------------------------------------------
    def _arm(self) -> None:
        when = self.core.get_timer()
        if when is None:
            self._cancel_timer()
            return
        if self._timer is not None and self._timer_when <= when:
            return  # fires earlier; handle_timer finds nothing due and we arm again then
        self._cancel_timer()
        self._timer = self.loop.call_at(when, self._on_timer)
        self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self.loop.time())
        self._after_input()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- flow control -------------------------------------------------------------------------------
    async def wait_writable(self) -> None:
        if not self.write_paused:
            return
        if self._writable is None or self._writable.done():
            self._writable = self.loop.create_future()
        await self._writable

    def _wake_writers(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    async def wait_closed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._lost)


__all__ = ["FLUSH_AT", "WRITE_HIGH", "DerpConnection"]
