"""One TCP connection to the STUN server: RFC 8489 §6.2.2 framing, garbage and idle closes.

Over TCP STUN messages come back to back, each as long as its header says (RFC 8489 §6.2.2); there is
no other framing, so bytes that cannot start a STUN message leave the stream unreadable and the
connection is closed. A client gives up on a TCP transaction after Ti = 39.5 s, so a connection without
data for ``Timing.stun_tcp_idle_timeout`` (40 s) is closed too. The decisions about each message are
:class:`~toolkit.sansio.stunserver.StunServerCore`'s; :meth:`StunServerCore.open_stream` makes a stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.codec.stun import HEADER_LEN, MAGIC_COOKIE
from toolkit.types import Endpoint

if TYPE_CHECKING:
    from toolkit.sansio.stunserver import Reply, StunServerCore

_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")


class StunStream:
    """One TCP connection; ``close_reason`` becomes "garbage" or "idle" (see the module docstring). The
    driver writes the replies of :meth:`receive_data` on the connection, closes it once ``close_reason``
    is set, and calls :meth:`handle_timer` at :meth:`get_timer`."""

    def __init__(self, core: StunServerCore, src: Endpoint, local: Endpoint, now: float) -> None:
        self.core = core
        self.src = src
        self.local = local
        self.close_reason: str | None = None
        self._buf = bytearray()
        self._last = now

    def receive_data(self, data: bytes, now: float) -> list[Reply]:
        if self.close_reason is not None:
            return []
        self._last = now
        self._buf += data
        out: list[Reply] = []
        while self._buf:
            buf = self._buf
            if buf[0] & 0xC0 or (len(buf) >= 8 and buf[4:8] != _COOKIE) or (len(buf) >= 4 and buf[3] % 4):
                self.close("garbage", now)
                break
            if len(buf) < HEADER_LEN or len(buf) < HEADER_LEN + int.from_bytes(buf[2:4], "big"):
                break
            end = HEADER_LEN + int.from_bytes(buf[2:4], "big")
            message = bytes(buf[:end])
            del buf[:end]
            out += self.core.handle(message, self.src, self.local, "tcp", now)
        return out

    def get_timer(self) -> float | None:
        """When the connection is idle for too long; None once it is closed."""
        return None if self.close_reason is not None else self._last + self.core.timing.stun_tcp_idle_timeout

    def handle_timer(self, now: float) -> None:
        deadline = self.get_timer()
        if deadline is not None and now >= deadline:
            self.close("idle", now)

    def close(self, reason: str, now: float) -> None:
        """Mark the connection closed: "garbage", "idle", or the driver's own reason ("eof")."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self.core.counters[f"tcp-closed:{reason}"] += 1
        if reason == "garbage":
            self.core._drop(now, self.src, bytes(self._buf), "tcp-garbage")
        self._buf.clear()


__all__ = ["StunStream"]
