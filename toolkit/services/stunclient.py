"""asyncio STUN client: one Binding query (:func:`stun_query`) and NAT behaviour discovery (:func:`discover_nat`).

Thin drivers over the sans-IO cores: :class:`toolkit.sansio.stunclient.StunTransaction` (RFC 8489
§6.2.1 retransmissions, Tailscale's response parsing, protocols.md §3.3) and
:class:`toolkit.sansio.natbehavior.NatBehaviorDiscovery` (RFC 5780 §4). A driver opens the UDP
sockets, feeds every datagram and timer to the core with ``loop.time()`` as ``now``, sends what the
core returns and re-arms one timer; it decides nothing about the protocol.

Sockets are bound to a specific local address: the one given, else the one the kernel picks to
reach the server (a connected throwaway socket tells), because discovery compares that address
with the mapped one to see whether a NAT is in the way. :func:`stun_query` can use a socket the
caller owns (``sock=``, e.g. the one a node uses for WireGuard and disco) and leaves it open (but
non-blocking, as asyncio needs); nobody else may read it meanwhile.

Failures: no answer raises :class:`StunTimeout`, an error response :class:`StunErrorResponse`
(both :class:`~toolkit.errors.NatkitError`: the CLI prints one line and exits 1); a local address
that cannot be bound, or a name that does not resolve, is a :class:`~toolkit.errors.UsageError`.
The socket helpers are :mod:`toolkit.services.sockets`' (re-exported here).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from toolkit.codec import stun
from toolkit.errors import NatkitError, UsageError
from toolkit.sansio.natbehavior import NatBehaviorDiscovery
from toolkit.sansio.natreport import NatReport
from toolkit.sansio.stunclient import StunTransaction
from toolkit.sansio.trace import Tracer
from toolkit.services.sockets import endpoint_of, open_udp_socket, source_address
from toolkit.timing import DEFAULT, Timing
from toolkit.types import Endpoint, TxID

DEFAULT_PORT = 3478  # RFC 8489 §9: the default STUN port


class StunError(NatkitError):
    """A STUN query that produced no mapped address."""


class StunTimeout(StunError):
    """No answer after Rc requests and the final Rm x RTO wait (RFC 8489 §6.2.1)."""


class StunErrorResponse(StunError):
    """The server answered with a Binding error response (``code``, ``reason``)."""

    def __init__(self, message: str, code: int | None, reason: str) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


@dataclass(frozen=True, slots=True)
class StunResult:
    """One answered Binding request. ``rtt`` runs from the last request sent (exact when ``sends`` is 1)."""

    server: Endpoint
    local: Endpoint
    mapped: Endpoint
    rtt: float
    sends: int
    source: Endpoint
    software: str | None
    response_origin: Endpoint | None
    other_address: Endpoint | None
    message: stun.Message = field(repr=False)

    @property
    def karn_rtt(self) -> float | None:
        return self.rtt if self.sends == 1 else None

    def to_dict(self) -> dict[str, Any]:
        opt = {"response_origin": self.response_origin, "other_address": self.other_address}
        return {
            "server": str(self.server),
            "local": str(self.local),
            "mapped": str(self.mapped),
            "rtt_ms": round(self.rtt * 1000, 3),
            "sends": self.sends,
            "source": str(self.source),
            "software": self.software,
            **{k: None if v is None else str(v) for k, v in opt.items()},
        }


# --- addresses and sockets -------------------------------------------------------------------------


def split_host_port(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``1.2.3.4:5``, ``2001:db8::1``, ``[2001:db8::1]:5`` -> (host, port)."""
    t = text.strip()
    host, port = t, ""
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UsageError(f"{text!r}: write an IPv6 server as [2001:db8::1]:3478")
        port = rest[1:]
    elif t.count(":") == 1:
        host, _, port = t.partition(":")
    if not host:
        raise UsageError(f"{text!r}: give a server as HOST or HOST:PORT")
    if not port:
        return host, default_port
    if not port.isdigit() or not 1 <= int(port) <= 0xFFFF:
        raise UsageError(f"{text!r}: the port must be a number in 1..65535")
    return host, int(port)


async def resolve_server(text: str, default_port: int = DEFAULT_PORT) -> Endpoint:
    """The endpoint of ``HOST[:PORT]``; names are resolved (the resolver's first address)."""
    host, port = split_host_port(text, default_port)
    try:
        return Endpoint(ipaddress.ip_address(host), port)
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {host!r}: {exc.strerror}; check the name or give an IP address") from None
    return endpoint_of(infos[0][4], keep_scope=False)


# --- the pump: named sockets, one reader task each ------------------------------------------------


class _Core(Protocol):
    @property
    def done(self) -> bool: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class _Pump:
    """Reads named sockets into ``on_datagram``, sends, and runs a core's timer until it is done."""

    def __init__(self, on_datagram: Callable[[str, bytes, Endpoint, float], object]) -> None:
        self.loop = asyncio.get_running_loop()
        self.socks: dict[str, socket.socket] = {}
        self.send_errors: list[str] = []
        self._owned: list[socket.socket] = []
        self._readers: list[asyncio.Task[None]] = []
        self._on_datagram = on_datagram
        self._wake = asyncio.Event()

    def add(self, name: str, sock: socket.socket, *, owned: bool = True) -> Endpoint:
        sock.setblocking(False)
        self.socks[name] = sock
        if owned:
            self._owned.append(sock)
        self._readers.append(asyncio.create_task(self._read(name, sock), name=f"stun-read-{name}"))
        return endpoint_of(sock.getsockname(), keep_scope=False)

    def send(self, name: str, data: bytes, dest: Endpoint) -> None:
        try:
            self.socks[name].sendto(data, dest.as_tuple())
        except OSError as exc:  # no route, buffer full...: the transaction retransmits or times out
            self.send_errors.append(f"sending to {dest} failed: {exc.strerror or exc}")

    async def _read(self, name: str, sock: socket.socket) -> None:
        while True:
            try:
                data, addr = await self.loop.sock_recvfrom(sock, 65535)
            except OSError:  # an ICMP error reported on the socket: nothing to read, keep going
                await asyncio.sleep(0)
                continue
            self._on_datagram(name, data, endpoint_of(addr, keep_scope=False), self.loop.time())
            self._wake.set()

    async def run(self, core: _Core, flush: Callable[[], None]) -> None:
        while True:
            flush()
            if core.done:
                return
            deadline = core.get_timer()
            if deadline is None:
                raise RuntimeError("a STUN core is neither done nor waiting for a timer")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), max(0.0, deadline - self.loop.time()))
            except TimeoutError:
                pass
            now = self.loop.time()
            if now >= deadline:
                core.handle_timer(now)

    async def close(self) -> None:
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for sock in self._owned:
            sock.close()


# --- the two drivers ---------------------------------------------------------------------------------


async def stun_query(
    server: Endpoint,
    *,
    local: Endpoint | None = None,
    timing: Timing = DEFAULT,
    sock: socket.socket | None = None,
    software: str | None = "natkit",
    tracer: Tracer | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> StunResult:
    """Send one Binding request to ``server`` (retransmitted per RFC 8489 §6.2.1) and return the answer."""
    txid = TxID(rng(12))
    request = stun.binding_request(txid, software=software)
    holder: list[StunTransaction] = []
    pump = _Pump(lambda name, data, src, now: holder[0].receive_datagram(data, src, now))
    try:
        here = pump.add("query", sock if sock is not None else open_udp_socket(server, local), owned=sock is None)
        txn = StunTransaction(server, txid, request, timing, pump.loop.time(), tracer=tracer, node=f"stun {here}")
        holder.append(txn)

        def flush() -> None:
            for data, dest in txn.datagrams_to_send():
                pump.send("query", data, dest)

        await pump.run(txn, flush)
    finally:
        await pump.close()
    r, failed = txn.result, txn.failed
    if r is None or r.mapped is None:
        what = failed.describe() if failed is not None else "no answer"
        waited = txn.give_up_at - txn.started
        extra = f" ({pump.send_errors[-1]})" if pump.send_errors else ""
        if failed is not None and failed.kind == "timeout":
            raise StunTimeout(f"no answer from {server}: {txn.sends} requests in {waited:.3g} s{extra}")
        raise StunErrorResponse(f"{server} answered with {what}", failed.code if failed else None, what)
    origin, other = r.message.get(stun.ResponseOrigin), r.message.get(stun.OtherAddress)
    return StunResult(
        server=server,
        local=here,
        mapped=r.mapped,
        rtt=r.rtt,
        sends=r.sends,
        source=r.source,
        software=r.message.software,
        response_origin=origin.endpoint if origin is not None else None,
        other_address=other.endpoint if other is not None else None,
        message=r.message,
    )


async def discover_nat(
    server: Endpoint,
    *,
    hairpin: bool = False,
    lifetime: bool = False,
    timing: Timing = DEFAULT,
    local: Endpoint | None = None,
    max_lifetime: float = 60.0,
    lifetime_start: float = 1.0,
    lifetime_step: float = 1.2,
    software: str | None = "natkit",
    tracer: Tracer | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> NatReport:
    """RFC 5780 NAT behaviour discovery against ``server`` (see :mod:`toolkit.sansio.natbehavior`).

    ``local`` picks the local IP (and the port of socket ``mapping``); every other socket gets a
    free port on the same IP. The run takes a few RTTs when everything answers, plus one full
    transaction timeout (``timing``) per test that expects silence, plus ``max_lifetime`` at most
    when ``lifetime`` is set.
    """
    machine = NatBehaviorDiscovery(
        server,
        rng=rng,
        timing=timing,
        hairpin=hairpin,
        lifetime=lifetime,
        max_lifetime=max_lifetime,
        lifetime_start=lifetime_start,
        lifetime_step=lifetime_step,
        software=software,
        tracer=tracer,
    )
    ip = local.ip if local is not None and not local.ip.is_unspecified else source_address(server)
    pump = _Pump(machine.receive_datagram)

    def flush() -> None:
        for out in machine.datagrams_to_send():
            if out.socket not in pump.socks:
                port = local.port if local is not None and out.socket == "mapping" else 0
                machine.socket_bound(out.socket, pump.add(out.socket, open_udp_socket(server, Endpoint(ip, port))))
            pump.send(out.socket, out.data, out.dest)

    try:
        machine.start(pump.loop.time())
        await pump.run(machine, flush)
    finally:
        await pump.close()
    assert machine.report is not None
    report = machine.report
    if pump.send_errors:
        report = dataclasses.replace(report, notes=(*report.notes, *dict.fromkeys(pump.send_errors)))
    return report


__all__ = [
    "DEFAULT_PORT",
    "StunError",
    "StunErrorResponse",
    "StunResult",
    "StunTimeout",
    "discover_nat",
    "open_udp_socket",
    "resolve_server",
    "source_address",
    "split_host_port",
    "stun_query",
]
