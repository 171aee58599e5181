"""Socket plumbing the asyncio drivers share: socket addresses as endpoints, bound sockets, source addresses.

Every driver turns the ``(host, port[, flowinfo, scope_id])`` tuples of the socket API into
:class:`~toolkit.types.Endpoint` values (:func:`endpoint_of`) and binds its sockets the same way
(:func:`bound_socket`): non-blocking, IPv6 sockets IPv6-only (``IPV6_V6ONLY``, as asyncio does for TCP,
so ``0.0.0.0:P`` and ``[::]:P`` can be bound together), TCP listeners with ``SO_REUSEADDR`` so a
restarted server rebinds over ``TIME_WAIT``. Clients that compare their own address with what a STUN
server saw bind to the address the kernel would send from (:func:`source_address`,
:func:`open_udp_socket`), never to the wildcard.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from toolkit.errors import NatkitError, UsageError
from toolkit.types import Endpoint, IPAddress

LISTEN_BACKLOG = 128


def endpoint_of(addr: Any, *, keep_scope: bool = True) -> Endpoint:
    """A socket address tuple (v4, or v6 maybe with ``%scope``) as an :class:`Endpoint`.

    Servers keep the scope (a reply to a link-local client needs it); clients that compare the
    address with a STUN mapped address (which never has one) pass ``keep_scope=False``.
    """
    host = str(addr[0])
    if not keep_scope:
        host = host.split("%", 1)[0]
    return Endpoint(ipaddress.ip_address(host), int(addr[1]))


def dialable(ep: Endpoint) -> Endpoint:
    """Where a client on this machine reaches a server bound to ``ep``: a wildcard address becomes loopback."""
    if not ep.ip.is_unspecified:
        return ep
    return Endpoint(ipaddress.ip_address("::1" if ep.is_ipv6 else "127.0.0.1"), ep.port)


def bound_socket(
    family: int, host: str, port: int, kind: socket.SocketKind = socket.SOCK_DGRAM, *, listen: bool = False
) -> socket.socket:
    """A non-blocking socket of IP version ``family`` (4 or 6) bound to ``(host, port)``; IPv6 ones are
    IPv6-only. ``listen`` (TCP) sets ``SO_REUSEADDR`` and starts listening. Raises ``OSError`` (closed)."""
    sock = socket.socket(socket.AF_INET6 if family == 6 else socket.AF_INET, kind)
    try:
        if family == 6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if listen:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # rebind over TIME_WAIT after a restart
        sock.setblocking(False)
        sock.bind((host, port))
        if listen:
            sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def source_address(server: Endpoint) -> IPAddress:
    """The local IP the kernel sends from to reach ``server`` (a connected UDP socket, nothing sent)."""
    family = socket.AF_INET6 if server.is_ipv6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect(server.as_tuple())
        except OSError as exc:
            raise NatkitError(f"no route to {server}: {exc.strerror or exc}") from None
        return endpoint_of(s.getsockname(), keep_scope=False).ip


def open_udp_socket(server: Endpoint, local: Endpoint | None = None) -> socket.socket:
    """A non-blocking UDP socket bound to ``local`` (unspecified IP or None: the route's source address)."""
    ip = local.ip if local is not None and not local.ip.is_unspecified else source_address(server)
    where = Endpoint(ip, local.port if local is not None else 0)
    if where.family != server.family:
        raise UsageError(f"local address {where} and server {server} are not the same IP version")
    try:
        return bound_socket(where.family, str(where.ip), where.port)
    except OSError as exc:
        raise UsageError(f"cannot bind a UDP socket to {where}: {exc.strerror or exc}; pick another --local") from None


__all__ = ["bound_socket", "dialable", "endpoint_of", "open_udp_socket", "source_address"]
