"""A node's DERP connections, one per region in use, and its home region (magicsock ``derp.go``).

protocols.md §4 and §5.2, as Tailscale's magicsock runs DERP: the node keeps a connection to its
*home* region for ever (the one it tells the coordination server about, where its peers send to it),
and dials any other region on demand when it must send to a peer whose home is there. It tells each
server whether it is home with NotePreferred, closes non-home connections not written to for
``derp_inactive_cleanup`` (60 s, checked every ``derp_clean_stale_interval``, 15 s), and hands up the
packets of every region as one stream tagged with the region id (magicsock's ``127.3.3.40:<region>``
address, :func:`toolkit.sansio.derphome.derp_magic_endpoint`).

The decisions are pure functions in :mod:`toolkit.sansio.derphome` (which home to pick, which
connections are stale); this class only dials, forwards and schedules. Dialing a region tries its
relay nodes in map order and keeps the first that completes the handshake; each connection
reconnects by itself (:class:`~toolkit.services.derpclient.DerpClient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from toolkit.codec.derpmap import DERPMap
from toolkit.crypto.keys import public_key
from toolkit.errors import NatkitError
from toolkit.sansio.derphome import pick_home, stale_regions
from toolkit.sansio.trace import TraceRecord
from toolkit.services.derpclient import ClientEvent, DerpClient, DerpClosedError, DerpConnectError
from toolkit.services.inbox import Inbox
from toolkit.timing import DEFAULT, Timing
from toolkit.types import NodePrivateKey, NodePublicKey


@dataclass(frozen=True, slots=True)
class RegionClosed:
    """This node closed its connection to a region (``idle``: not home and not written to for a while)."""

    reason: str


RegionEvent = ClientEvent | RegionClosed
MAX_EVENTS = 1024  # events kept for next_event(); the oldest go first


class DerpRegions:
    """The DERP connections of one node key over a DERP map; see the module docstring."""

    def __init__(
        self,
        derp_map: DERPMap,
        private_key: NodePrivateKey,
        *,
        timing: Timing = DEFAULT,
        ssl_context: ssl.SSLContext | None = None,
        mesh_key: str = "",
        tracer: Callable[[TraceRecord], None] | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.derp_map = derp_map
        self.public_key: NodePublicKey = public_key(private_key)
        self._private = private_key
        self.timing = timing
        self.ssl_context = ssl_context
        self.mesh_key = mesh_key
        self.tracer = tracer
        self.connect_timeout = timing.derp_handshake_timeout if connect_timeout is None else connect_timeout
        self.home_region: int | None = None
        self._clients: dict[int, DerpClient] = {}
        self._dialing: dict[int, asyncio.Future[DerpClient]] = {}
        self._pumps: dict[int, asyncio.Task[None]] = {}
        self._last_write: dict[int, float] = {}
        self._last_recv: dict[int, float] = {}
        self._inbox: Inbox[tuple[int, NodePublicKey, bytes], tuple[int, RegionEvent]] = Inbox(MAX_EVENTS)
        self._cleaner: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def clients(self) -> Mapping[int, DerpClient]:
        """The open connections by region id (read-only)."""
        return MappingProxyType(self._clients)

    # --- home region ----------------------------------------------------------------------------
    async def set_home(self, region_id: int) -> None:
        """Make ``region_id`` home: connect, NotePreferred(true) there and false to the previous home."""
        client = await self._client(region_id)
        old, self.home_region = self.home_region, region_id
        client.note_preferred(True)
        if old is not None and old != region_id:
            previous = self._clients.get(old)
            if previous is not None:
                previous.note_preferred(False)
                self._last_write[old] = asyncio.get_running_loop().time()  # its idle clock starts now

    def pick_home(self, latencies: Mapping[int, float], previous: int | None = None) -> int | None:
        """The home region for these latencies (protocols.md §5.2); ``previous`` defaults to the current home.

        A previous home from which DERP frames arrived recently counts as still working.
        """
        loop = asyncio.get_running_loop()
        return pick_home(
            self.derp_map,
            latencies,
            self.home_region if previous is None else previous,
            timing=self.timing,
            now=loop.time(),
            last_derp_activity=self._last_recv.get,
        )

    # --- sending and receiving ----------------------------------------------------------------------
    async def send(self, region_id: int, dst: NodePublicKey, packet: bytes) -> None:
        """Send ``packet`` to ``dst`` through region ``region_id``, dialing it first if needed."""
        client = self._clients.get(region_id) or await self._client(region_id)
        self._last_write[region_id] = asyncio.get_running_loop().time()
        await client.send(dst, packet)

    async def recv(self) -> tuple[int, NodePublicKey, bytes]:
        """The next packet from any region: ``(region id, source key, data)``."""
        return await self._inbox.packet(self._check_open)

    async def next_event(self) -> tuple[int, RegionEvent]:
        """The next event of any region's connection, tagged with the region id."""
        return await self._inbox.event(self._check_open)

    # --- connections ----------------------------------------------------------------------------------
    async def _client(self, region_id: int) -> DerpClient:
        if self._closed:
            raise DerpClosedError("the DERP regions are closed")
        client = self._clients.get(region_id)
        if client is not None:
            return client
        pending = self._dialing.get(region_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[DerpClient] = asyncio.get_running_loop().create_future()
        self._dialing[region_id] = fut
        try:
            client = await self._dial(region_id)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: only waiters that exist re-raise it
            raise
        finally:
            del self._dialing[region_id]
        fut.set_result(client)
        return client

    async def _dial(self, region_id: int) -> DerpClient:
        region = self.derp_map.region(region_id)
        nodes = region.relay_nodes()
        if not nodes:
            raise NatkitError(f"DERP region {region_id} ({region.region_code}) has no relay node")
        errors: list[str] = []
        for node in nodes:
            client = DerpClient(
                node,
                self._private,
                timing=self.timing,
                mesh_key=self.mesh_key,
                ssl_context=self.ssl_context if node.scheme == "https" else None,
                tracer=self.tracer,
                preferred=region_id == self.home_region,
                on_packet=functools.partial(self._on_packet, region_id),
                name=f"derp-{region_id} {node.name}",
            )
            try:
                await client.connect(self.connect_timeout)
            except DerpConnectError as exc:
                errors.append(str(exc))
                continue
            self._clients[region_id] = client
            loop = asyncio.get_running_loop()
            self._last_write[region_id] = loop.time()
            self._pumps[region_id] = loop.create_task(self._pump(region_id, client))
            if self._cleaner is None:
                self._cleaner = loop.create_task(self._clean_loop())
            return client
        raise DerpConnectError(f"no relay of DERP region {region_id} answered: {'; '.join(errors)}", "region")

    def _on_packet(self, region_id: int, src: NodePublicKey, data: bytes) -> None:
        self._inbox.put_packet((region_id, src, data))
        self._last_recv[region_id] = asyncio.get_running_loop().time()
        self._inbox.wake_packets()

    async def _pump(self, region_id: int, client: DerpClient) -> None:
        with contextlib.suppress(DerpClosedError):
            while True:
                self._inbox.put_event((region_id, await client.next_event()))

    async def _clean_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(self.timing.derp_clean_stale_interval)
            for region_id in stale_regions(self._last_write, self.home_region, loop.time(), self.timing):
                await self.close_region(region_id, "idle")

    async def close_region(self, region_id: int, reason: str = "closed") -> None:
        """Close the connection to one region (the home region too, if asked)."""
        client = self._clients.pop(region_id, None)
        self._last_write.pop(region_id, None)
        pump = self._pumps.pop(region_id, None)
        if client is None:
            return
        await client.close()
        if pump is not None:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        self._inbox.put_event((region_id, RegionClosed(reason)))

    def _check_open(self) -> None:
        if self._closed:
            raise DerpClosedError("the DERP regions are closed")

    async def close(self) -> None:
        """Close every connection; pending recv()/next_event() raise DerpClosedError."""
        self._closed = True
        if self._cleaner is not None:
            self._cleaner.cancel()
            await asyncio.gather(self._cleaner, return_exceptions=True)
        for region_id in list(self._clients):
            await self.close_region(region_id)
        self._inbox.wake()


__all__ = ["DerpRegions", "RegionClosed", "RegionEvent"]
