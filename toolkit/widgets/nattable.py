"""``NatTableView``: a NAT router's mapping table, live (RFC 4787 §4.1 mappings, §4.3 their timeouts).

Each row is one :class:`~toolkit.lab.backend.NatMapping` that ``await lab.nat_table(router)`` reports: the
protocol, the inside endpoint (the host's own address and port), the outside endpoint the NAT maps it to,
the remote when the mapping is per destination (an endpoint-dependent, "hard" NAT), the age and the
timeout:

* age: seconds since this view first saw the mapping (on the lab's clock, virtual on ``sim``). A mapping
  that disappears and comes back is new again: its age restarts.
* timeout: seconds until the mapping expires unless traffic refreshes it (``expires_in``); ``-`` where
  the backend cannot tell.

:meth:`NatTableView.refresh` reads the table once; :meth:`NatTableView.follow` refreshes every
``interval`` seconds of wall time in a task. It waits with ``asyncio.sleep``, never ``lab.sleep``: on
``sim`` the view watches the virtual clock and does not drive it. The view is an ipywidgets ``HTML``
holding the table, so a saved notebook shows the last table.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
from dataclasses import dataclass
from typing import Any

from toolkit.lab.backend import Lab, NatMapping
from toolkit.types import Endpoint

MappingKey = tuple[str, Endpoint, Endpoint, Endpoint | None]
COLUMNS = ("proto", "inside", "outside", "remote", "age", "timeout")


@dataclass(frozen=True, slots=True)
class NatRow:
    """One mapping as the view shows it."""

    proto: str
    inside: Endpoint
    outside: Endpoint
    remote: Endpoint | None
    age: float  # seconds since first seen by the view
    timeout: float | None  # seconds left (expires_in); None when the backend cannot tell

    def cells(self) -> tuple[str, ...]:
        return (
            self.proto,
            str(self.inside),
            str(self.outside),
            str(self.remote) if self.remote is not None else "any",
            f"{self.age:.1f}s",
            f"{self.timeout:.1f}s" if self.timeout is not None else "-",
        )


class NatTableView:
    """See the module docstring."""

    def __init__(self, lab: Lab, router: str) -> None:
        self.lab, self.router = lab, router
        self.rows: list[NatRow] = []
        self.refreshed_at: float | None = None  # the lab's clock at the last refresh
        self.refreshes = 0
        self._first_seen: dict[MappingKey, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._html: Any = None

    async def refresh(self) -> list[NatRow]:
        """Read the router's table now; returns (and shows) the rows."""
        mappings = await self.lab.nat_table(self.router)
        self.update(mappings, self.lab.now())
        return self.rows

    def update(self, mappings: list[NatMapping], now: float) -> None:
        """Show ``mappings`` as read at ``now`` (the lab's clock): ages, forgetting vanished mappings."""
        seen: dict[MappingKey, float] = {}
        rows = []
        for m in mappings:
            key = (m.proto, m.private, m.public, m.remote)
            first = seen[key] = self._first_seen.get(key, now)
            rows.append(NatRow(m.proto, m.private, m.public, m.remote, now - first, m.expires_in))
        self._first_seen = seen
        rows.sort(key=lambda r: (r.proto, str(r.inside), str(r.outside), str(r.remote)))
        self.rows, self.refreshed_at = rows, now
        self.refreshes += 1
        if self._html is not None:
            self._html.value = self.html()

    def follow(self, interval: float = 1.0) -> asyncio.Task[None]:
        """Refresh every ``interval`` seconds (wall time) until :meth:`stop`; returns the task."""
        if self._task is not None and not self._task.done():
            return self._task
        self._task = asyncio.create_task(self._loop(interval), name=f"natkit-nat-{self.router}")
        return self._task

    async def _loop(self, interval: float) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the lab went down or the router is gone: say so, stop following
                if self._html is not None:
                    self._html.value += f"<p>stopped following: {html.escape(str(exc))}</p>"
                return
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def find(self, inside_port: int, proto: str = "udp") -> list[NatRow]:
        """The rows whose inside endpoint has port ``inside_port``."""
        return [r for r in self.rows if r.proto == proto and r.inside.port == inside_port]

    def text(self) -> str:
        """The table as aligned text (notebook prints, tests)."""
        lines = [COLUMNS, *(r.cells() for r in self.rows)]
        widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)

    def html(self) -> str:
        when = f" at {self.refreshed_at:.1f}s" if self.refreshed_at is not None else " (not read yet)"
        head = "".join(f"<th style='text-align:left'>{c}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td><code>{html.escape(c)}</code></td>" for c in r.cells()) + "</tr>" for r in self.rows
        )
        empty = "" if self.rows else f"<tr><td colspan='{len(COLUMNS)}'>no mappings</td></tr>"
        caption = f"<caption style='text-align:left'>NAT table of {html.escape(self.router)}{when}</caption>"
        return f"<table>{caption}<tr>{head}</tr>{body}{empty}</table>"

    @property
    def widget(self) -> Any:
        if self._html is None:
            import ipywidgets as w  # type: ignore[import-untyped]

            self._html = w.HTML(self.html())
        return self._html

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:  # a notebook shows the view as its widget
        return self.widget._repr_mimebundle_(**kwargs)


__all__ = ["COLUMNS", "NatRow", "NatTableView"]
