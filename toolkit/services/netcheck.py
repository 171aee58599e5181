"""The netcheck driver: real UDP sockets around the sans-IO :class:`~toolkit.sansio.netcheck.Netcheck`.

:class:`NetcheckClient` is what ``natkit netcheck`` runs (and what a node will run): it binds one UDP
socket per family (``0.0.0.0:0`` and ``[::]:0``, v6-only) or uses a node's own socket (``send=``, with
STUN replies handed to :meth:`NetcheckClient.receive_datagram` by the node's demux, as magicsock does,
protocols.md §3.3), resolves DERP host names that have no literal address, and runs one core per
report. It keeps the report history (5 min + 5 s, for the home region) and decides full versus
incremental reports like Tailscale's ``netcheck.Client``: the first report and then one every
``Timing.netcheck_full_report_interval`` (5 min) are full (protocols.md §5.2).

The driver makes no protocol decision: it feeds datagrams and timer ticks to the core, sends what the
core produces, tells it which sends failed (``IPv4CanSend``/``IPv6CanSend``), and re-arms one timer.
``OSHasIPv6`` is whether a UDP socket binds to ``[::1]:0`` (as Tailscale checks). A host with no usable
UDP at all still gets a report: ``UDP: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType

from toolkit.codec.derpmap import DERPMap
from toolkit.sansio.netcheck import ENOUGH_REGIONS, Netcheck
from toolkit.sansio.netcheck_plan import LastDERPActivity, hosts_to_resolve
from toolkit.sansio.netcheck_report import Report
from toolkit.sansio.trace import Tracer
from toolkit.services.sockets import bound_socket, endpoint_of
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, IPAddress

Sender = Callable[[bytes, Endpoint], None]
MAX_DATAGRAM = 2048


def os_has_ipv6() -> bool:
    """Tailscale's check: can a UDP socket bind to ``[::1]:0``?"""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


class NetcheckClient:
    """Runs netcheck reports over ``derp_map`` (see the module docstring).

    ``bind_v4``/``bind_v6`` are the local addresses of the client's own sockets (None: no socket of that
    family); ``port`` their port (0: any). With ``send`` no socket is opened: the caller sends, and
    passes received STUN replies to :meth:`receive_datagram`; ``have_v4``/``have_v6`` then say which
    families it can send.
    """

    def __init__(
        self,
        derp_map: DERPMap,
        *,
        timing: Timing = DEFAULT,
        bind_v4: str | None = "0.0.0.0",
        bind_v6: str | None = "::",
        port: int = 0,
        send: Sender | None = None,
        have_v4: bool = True,
        have_v6: bool = True,
        tracer: Tracer | None = None,
        last_derp_activity: LastDERPActivity | None = None,
        enough_regions: int = ENOUGH_REGIONS,
    ) -> None:
        self.derp_map = derp_map
        self.timing = timing
        self.history: list[Report] = []
        self._binds = {4: bind_v4, 6: bind_v6}
        self._port = port
        self._send = send
        self._have = {4: have_v4, 6: have_v6}
        self._tracer = tracer
        self._last_derp_activity = last_derp_activity
        self._enough_regions = enough_regions
        self._socks: dict[int, socket.socket] = {}
        self._core: Netcheck | None = None
        self._wake: asyncio.Event | None = None
        self._last_full: float | None = None
        self._opened = False
        self.os_has_ipv6 = False

    # --- sockets -----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Bind the sockets (a family whose bind fails is simply not used). Called by get_report."""
        if self._opened:
            return
        self._opened = True
        self.os_has_ipv6 = os_has_ipv6()
        if self._send is not None:
            return
        loop = asyncio.get_running_loop()
        for family in (4, 6):
            host = self._binds[family]
            if host is None:
                continue
            try:
                sock = bound_socket(family, host, self._port)
            except OSError:
                continue
            self._socks[family] = sock
            loop.add_reader(sock.fileno(), self._readable, sock)

    def local_endpoints(self) -> list[Endpoint]:
        """The bound sockets' addresses (``0.0.0.0:40000``, ``[::]:40001``)."""
        return [endpoint_of(s.getsockname(), keep_scope=False) for _, s in sorted(self._socks.items())]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._socks.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()
        self._opened = False

    async def __aenter__(self) -> NetcheckClient:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _readable(self, sock: socket.socket) -> None:
        while True:
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error queued on the socket: nothing to read
            self.receive_datagram(data, endpoint_of(addr, keep_scope=False))

    # --- the run -----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, src: Endpoint) -> bool:
        """A datagram for the running report (from our sockets or a node's demux); True if it was ours."""
        core = self._core
        if core is None:
            return False
        ours = core.receive_datagram(data, src, asyncio.get_running_loop().time())
        self._flush(core)
        if self._wake is not None:
            self._wake.set()
        return ours

    async def get_report(self, *, full: bool | None = None) -> Report:
        """Run one report. ``full=None`` lets the client choose (first, then every 5 min: full)."""
        if self._core is not None:
            raise RuntimeError("a netcheck report is already running on this client")
        await self.open()
        loop = asyncio.get_running_loop()
        started = loop.time()
        if full is None:
            full = self._last_full is None or started - self._last_full > self.timing.netcheck_full_report_interval
        resolved = await self._resolve()
        have = self._have if self._send is not None else {f: f in self._socks for f in (4, 6)}
        core = Netcheck(
            self.derp_map,
            timing=self.timing,
            previous=self.history,
            full=full,
            rng=os.urandom,
            tracer=self._tracer,
            have_v4=have[4],
            have_v6=have[6],
            os_has_ipv6=self.os_has_ipv6,
            resolved=resolved,
            last_derp_activity=self._last_derp_activity,
            enough_regions=self._enough_regions,
        )
        self._core, self._wake = core, asyncio.Event()
        try:
            core.start(loop.time())
            self._flush(core)
            while not core.done:
                due = core.get_timer()
                if due is None:
                    break
                if due > loop.time():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), due - loop.time())
                self._wake.clear()
                if loop.time() + 1e-6 >= due:
                    core.handle_timer(loop.time())
                self._flush(core)
        finally:
            if not core.done:
                core.cancel(loop.time())  # our caller was cancelled: keep what we measured
            self._core = self._wake = None
        report = core.report(datetime.now(UTC))
        if report.full:
            self._last_full = started
        keep_for = self.timing.netcheck_history_max_age
        self.history = [r for r in self.history if report.at - r.at <= keep_for] + [report]
        return report

    def _flush(self, core: Netcheck) -> None:
        for data, dst in core.datagrams_to_send():
            try:
                if self._send is not None:
                    self._send(data, dst)
                elif dst.family in self._socks:
                    self._socks[dst.family].sendto(data, dst.as_tuple())
                else:
                    core.send_failed(dst, asyncio.get_running_loop().time(), f"no IPv{dst.family} socket")
            except BlockingIOError:
                pass  # a full send buffer: the datagram is lost, as UDP may lose it anyway
            except OSError as exc:
                core.send_failed(dst, asyncio.get_running_loop().time(), exc.strerror or str(exc))

    async def _resolve(self) -> dict[str, Sequence[IPAddress]]:
        """DNS answers for DERP host names without literal addresses (bounded by the STUN probe timeout)."""
        names = hosts_to_resolve(self.derp_map)
        if not names:
            return {}
        loop = asyncio.get_running_loop()

        async def lookup(name: str) -> list[IPAddress]:
            try:
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_DGRAM)
            except OSError:
                return []
            ips: list[IPAddress] = []
            for info in infos:
                ip = endpoint_of(info[4], keep_scope=False).ip
                if ip not in ips:
                    ips.append(ip)
            return ips

        tasks = {name: asyncio.ensure_future(lookup(name)) for name in names}
        await asyncio.wait(tasks.values(), timeout=self.timing.netcheck_stun_probe_timeout)
        out: dict[str, Sequence[IPAddress]] = {}
        for name, task in tasks.items():
            if task.done() and not task.cancelled():
                out[name] = task.result()
            else:
                task.cancel()
        return out


async def netcheck(derp_map: DERPMap, **options: object) -> Report:
    """One full report with a fresh :class:`NetcheckClient` (options as its constructor's)."""
    async with NetcheckClient(derp_map, **options) as client:  # type: ignore[arg-type]
        return await client.get_report(full=True)


__all__ = ["NetcheckClient", "Sender", "netcheck", "os_has_ipv6"]
